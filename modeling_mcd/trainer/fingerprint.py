# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Fingerprints of a run's training data and model, kept with its checkpoints and its vocabulary.

A run folder resumes from its newest checkpoint and reuses its WordPiece vocabulary. Launched again on other data
(or with another model), it would resume another run's weights, take 0 steps if that run had finished, and export
them with a card naming the new data; or train on a vocabulary built from other captions. So each checkpoint holds
`mcd_fingerprint.json` (written with it, atomically: `modeling_mcd.trainer.checkpoints`), and the vocabulary
`mcd_vocabulary.json`, and a run compares them with its own before it uses them (`modeling_mcd.trainer.resume_checks`,
`builder.load_tokenizer`).

The data fingerprint is cheap: the source, the split, the row count and a SHA-256 of every row's image reference (its
path; for an image stored in the dataset, the length of its bytes, and the bytes themselves for the first
`EMBEDDED_IMAGE_ROWS` such rows) and caption(s), read from the Arrow columns without decoding an image. A stream is
fingerprinted by its source and split only: reading it to hash it would cost a pass over the data.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import datasets

#: The fingerprint file of a checkpoint.
FINGERPRINT_NAME = "mcd_fingerprint.json"
#: The record of what a vocabulary was built from, inside `output_dir/tokenizer`.
VOCABULARY_RECORD_NAME = "mcd_vocabulary.json"
#: Rows of embedded image bytes hashed whole; beyond them, only their lengths are.
EMBEDDED_IMAGE_ROWS = 256
#: The tower config fields that decide the weights' shapes (what a checkpoint must share with the model).
TOWER_SHAPE_KEYS = (
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "image_size",
    "patch_size",
    "num_channels",
    "vocab_size",
    "max_position_embeddings",
)
_BLOCK_ROWS = 8192


def data_fingerprint(
    dataset: datasets.Dataset | datasets.IterableDataset, source: str, split: str | None
) -> dict[str, Any]:
    r"""
    The fingerprint of training rows: `source`, `split`, and for a map-style dataset `rows` and `sha256`.

    Args:
        dataset (`datasets.Dataset` or `datasets.IterableDataset`): the raw training rows (`image`, `caption`).
        source (`str`): `--dataset`.
        split (`str`, *optional*): `--train_split`.
    """
    record: dict[str, Any] = {"source": source, "split": split}
    if not isinstance(dataset, datasets.Dataset):
        record["streaming"] = True
        return record
    digest, embedded = hashlib.sha256(), [0]
    arrow = dataset.with_format("arrow")  # the undecoded columns, through any row selection
    for start in range(0, len(dataset), _BLOCK_ROWS):
        block = arrow[start : start + _BLOCK_ROWS]
        for name in ("image", "caption"):
            if name in block.column_names:
                _hash_column(digest, block.column(name).combine_chunks(), embedded)
    record.update(rows=len(dataset), sha256=digest.hexdigest())
    return record


def _hash_column(digest, column, embedded: list[int]) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_struct(column.type) and column.type.get_field_index("bytes") >= 0:
        data = column.field("bytes")
        digest.update(json.dumps(pc.binary_length(data).to_pylist()).encode())
        if column.type.get_field_index("path") >= 0:
            digest.update(json.dumps(column.field("path").to_pylist(), ensure_ascii=False).encode())
        for value in data:
            if embedded[0] >= EMBEDDED_IMAGE_ROWS:
                break
            if value.is_valid:
                digest.update(value.as_py())
                embedded[0] += 1
        return
    digest.update(json.dumps(column.to_pylist(), ensure_ascii=False, default=str).encode())


def describe_data(record: dict[str, Any] | None) -> str:
    """`x.jsonl (split train, 12 rows)`, for messages."""
    if not record:
        return "unknown data"
    rows = f", {record['rows']} rows" if "rows" in record else ", streamed"
    return f"{record.get('source')} (split {record.get('split')}{rows})"


def model_summary(config: dict[str, Any]) -> dict[str, Any]:
    """The fields of an `MCDConfig` dict that decide the shapes of its weights, flattened (`"vision hidden_size"`)."""
    summary = {key: config.get(key) for key in ("projection_dim", "vision_pooling", "text_pooling")}
    for tower in ("vision", "text"):
        tower_config = config.get(f"{tower}_config") or {}
        summary.update({f"{tower} {key}": tower_config[key] for key in TOWER_SHAPE_KEYS if key in tower_config})
    return summary


def model_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """`["vision hidden_size 24 there, 32 here", ...]`: what differs between two [`model_summary`]s."""
    keys = sorted(set(saved) | set(current))
    return [
        f"{key} {saved.get(key)} there, {current.get(key)} here" for key in keys if saved.get(key) != current.get(key)
    ]


def write_json(folder: str, name: str, record: dict[str, Any]) -> None:
    """Write `record` as `folder/name`."""
    with open(os.path.join(folder, name), "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=2, sort_keys=True)
        handle.write("\n")


def read_json(folder: str, name: str) -> dict[str, Any] | None:
    """`folder/name` as a dict, or `None` where it is missing or unreadable (written before fingerprints existed, or
    cut short)."""
    try:
        with open(os.path.join(folder, name), encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


__all__ = [
    "EMBEDDED_IMAGE_ROWS",
    "FINGERPRINT_NAME",
    "TOWER_SHAPE_KEYS",
    "VOCABULARY_RECORD_NAME",
    "data_fingerprint",
    "describe_data",
    "model_differences",
    "model_summary",
    "read_json",
    "write_json",
]
