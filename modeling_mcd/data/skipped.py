# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""The record of skipped rows: where each one is, why it was skipped, the running totals, and the run's
`skipped_samples.jsonl`.

Data flow: a row found bad while loading (`text_files`) or decoding (`image_text`) becomes a `SkippedRow`; a
skipped row's record rides in its sample's `skipped` dict ({reason: [record, ...]}), through DataLoader workers and
the collator's `bad_samples`, to the Trainer's `BadSampleCounter`. At the end of a run `save_skipped_samples` writes
every skipped row, one JSON object a line (`file`, `line`, `row`, `column`, `reason`, `detail`), beside the
checkpoints, and logs the counts by reason.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from transformers.utils import logging

from .decoding import BadSampleError, image_name

logger = logging.get_logger(__name__)

#: The file in the run folder that lists every skipped row.
SKIPPED_SAMPLES_FILE = "skipped_samples.jsonl"
#: Skipped rows logged one by one (per dataset, per DataLoader worker); the rest are only counted and saved.
LOGGED_ROWS = 20


@dataclass(frozen=True)
class SkippedRow:
    r"""
    Where a skipped row is, and why it was skipped.

    Args:
        reason (`str`): one of `BAD_SAMPLE_REASONS`.
        detail (`str`): what was wrong.
        file (`str`, *optional*): the caption file holding the row; for other sources the image's file.
        line (`int`, *optional*): the 1-based line of `file` where the row starts (caption files).
        row (`int`, *optional*): the row's index in the dataset (in a stream: its position in its shard).
        column (`str`, *optional*): the column holding the problem.
    """

    reason: str
    detail: str
    file: str | None = None
    line: int | None = None
    row: int | None = None
    column: str | None = None

    @classmethod
    def from_error(cls, error: BadSampleError, row: Mapping[str, Any], index: int) -> SkippedRow:
        """The record of a row of `load_image_text_dataset` that failed with `error`; a caption file's rows
        carry their `file` and `line`, other rows are named by their image."""
        file = row.get("file") or image_name(row.get("image"))
        return cls(error.reason, error.detail, file, row.get("line"), index, error.column)

    def where(self) -> str:
        """`"captions.jsonl:12"`, or `"row 7 (image.png)"`, with the column when known."""
        place = f"{self.file}:{self.line}" if self.line is not None else f"row {self.row} ({self.file})"
        return place + (f", column {self.column!r}" if self.column else "")

    def error(self) -> BadSampleError:
        """The error `on_bad_sample="raise"` stops with: location, column and reason."""
        return BadSampleError(self.reason, f"{self.where()}: {self.detail}", self.column)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe_counts(reasons: Iterable[str]) -> str:
    """`"corrupt=1, missing_file=2"`: how many times each reason occurs, reasons sorted."""
    return ", ".join(f"{reason}={count}" for reason, count in sorted(Counter(reasons).items()))


def log_skipped_row(record: SkippedRow, logged: int) -> None:
    """Log one skipped row at warning level, the first `LOGGED_ROWS` of a dataset (`logged` so far) only."""
    if logged < LOGGED_ROWS:
        logger.warning("skipping %s: %s: %s", record.where(), record.reason, record.detail)
    elif logged == LOGGED_ROWS:
        logger.warning("more rows are skipped; every one is counted and listed in %s", SKIPPED_SAMPLES_FILE)


def _key(record: Mapping[str, Any]) -> tuple:
    """What makes a skipped row that row (its detail may differ between two meetings: an object's address)."""
    return tuple(record.get(name) for name in ("file", "line", "row", "column", "reason"))


@dataclass
class BadSampleCounter:
    """Running totals of skipped samples by reason, and the distinct skipped rows, fed with the `skipped` dicts of
    the samples (or the collator's `bad_samples`): {reason: count} or {reason: [record, ...]}."""

    counts: Counter = field(default_factory=Counter)
    rows: dict[tuple, dict[str, Any]] = field(default_factory=dict)

    def update(self, skipped: Mapping[str, int | Iterable[Mapping[str, Any]]]) -> None:
        """Add one `skipped`/`bad_samples` dict: reason -> count, or reason -> the records of its rows."""
        for reason, value in skipped.items():
            if isinstance(value, int):
                self.counts[reason] += value
                continue
            for record in value:
                self.counts[reason] += 1
                self.rows.setdefault(_key(record), dict(record))  # a row skipped in every epoch is listed once

    def as_dict(self) -> dict[str, int]:
        """The counts by reason, reasons sorted."""
        return {reason: count for reason, count in sorted(self.counts.items()) if count}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """One line for the logs, e.g. `"3 bad samples skipped (corrupt=1, missing_file=2)"`."""
        if not self.total:
            return "0 bad samples skipped"
        return f"{self.total} bad samples skipped ({describe_counts(self.counts.elements())})"


def save_skipped_samples(output_dir: str, rows: Iterable[SkippedRow | Mapping[str, Any]]) -> str:
    r"""
    Write every skipped row to `output_dir/skipped_samples.jsonl` (sorted by file and line, each row once) and log
    the counts by reason at warning level (info level when nothing was skipped).

    Args:
        output_dir (`str`): the run folder.
        rows: `SkippedRow`s or their `as_dict()` records: the ones found while loading
            (`ImageTextDataset.skipped_rows`) and while training (`MCDTrainer.skipped_sample_rows()`).

    Returns:
        `str`: the path of the file written.
    """
    records = {}
    for row in rows:
        record = row.as_dict() if isinstance(row, SkippedRow) else dict(row)
        records.setdefault(_key(record), record)
    ordered = sorted(records.values(), key=lambda r: (str(r["file"]), r["line"] or 0, r["row"] or 0, r["reason"]))
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, SKIPPED_SAMPLES_FILE)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(record) + "\n" for record in ordered)
    if ordered:
        counts = describe_counts(record["reason"] for record in ordered)
        logger.warning(
            "%d rows of the training data were skipped (%s); each is listed in %s", len(ordered), counts, path
        )
    else:
        logger.info("no row of the training data was skipped")
    return path


__all__ = [
    "LOGGED_ROWS",
    "SKIPPED_SAMPLES_FILE",
    "BadSampleCounter",
    "SkippedRow",
    "describe_counts",
    "log_skipped_row",
    "save_skipped_samples",
]
