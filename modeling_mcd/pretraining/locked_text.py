# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""A locked text tower (LiT: Zhai et al., CVPR 2022, "LiT: Zero-Shot Transfer with Locked-image text Tuning", here
with the text side locked) and the memo of its features.

With `--lock_text_tower` the student's text tower, a pretrained BERT, gets no gradient and runs without dropout;
only its projection into the shared space (and the image side) trains. Its pooled output for a caption then never
changes, so [`TextFeatureMemo`] computes it once per distinct caption and keeps it: once every caption has been seen,
a step costs the image side only. `--text_features_cache DIR` keeps the memo on disk between runs of one tower
(a comparison of objectives computes the features once). This is what makes real-data pretraining learn on a CPU in
minutes (docs/results.md).

MCD needs nothing more from the text side: the teacher's text embedding v̄ is stopgrad(v) (`--teacher_text stopgrad`),
and MLM, which would train the tower, is refused with a locked tower.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..modeling_mcd import pool_tower_output
from .zero3 import is_partitioned


def text_features_file(folder: str | os.PathLike, tower: nn.Module, pooling: str) -> Path:
    """`folder/<fingerprint>.safetensors`, where a [`TextFeatureMemo`] of `tower` is kept (`--text_features_cache`): the
    fingerprint hashes the tower's weights and the pooling, so a file is only ever read back for the very tower and
    pooling that computed it."""
    if is_partitioned(tower.parameters()):
        raise ValueError("--text_features_cache needs whole weights to fingerprint the tower, not ZeRO-3 shards")
    digest = hashlib.sha256(pooling.encode())
    for name, tensor in sorted(tower.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return Path(folder) / f"{digest.hexdigest()[:32]}.safetensors"


class TextFeatureMemo:
    r"""
    The pooled outputs of a locked text tower, keyed by each caption's token ids (padding left out).

    A caption's features are computed the first time a batch holds it, with the batch's other new captions in one
    call; later batches read them back. They equal a fresh forward pass up to float rounding: a batched matrix
    product may round a row differently with other rows beside it. Keys ignore `token_type_ids` (one segment, all
    zeros, for a caption). The memo is not part of the model's weights: a resumed run fills it again.
    """

    def __init__(self) -> None:
        self._features: dict[tuple[int, ...], torch.Tensor] = {}
        self.file: Path | None = None  # where it is kept between runs (`--text_features_cache`): `text_features_file`

    def __len__(self) -> int:
        return len(self._features)

    # ------------------------------------------------------------------------------------ on disk
    def save(self, path: str | os.PathLike | None = None) -> None:
        """Write every memoised caption to `path` (default: `self.file`; neither: nothing to do): its ids, right-padded
        with -1, `(C, L)`, and its features, `(C, D)`. Written aside and renamed, so a crash never leaves a
        half-written file."""
        path = path if path is not None else self.file
        if path is None or not self._features:
            return
        keys = list(self._features)
        ids = torch.full((len(keys), max(map(len, keys))), -1, dtype=torch.long)
        for row, key in enumerate(keys):
            ids[row, : len(key)] = torch.tensor(key, dtype=torch.long)
        features = torch.stack([self._features[key].cpu() for key in keys])
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        save_file({"input_ids": ids, "features": features}, str(partial))
        os.replace(partial, path)

    def load(self, path: str | os.PathLike, device: torch.device | str = "cpu") -> int:
        """Add the captions of a file written by `save`; returns how many it held."""
        tensors = load_file(str(path))
        for ids, features in zip(tensors["input_ids"], tensors["features"]):
            self._features[tuple(ids[ids >= 0].tolist())] = features.to(device)
        return len(tensors["features"])

    @torch.no_grad()
    def pooled(
        self,
        tower: nn.Module,
        pooling: str,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        r"""
        The tower's pooled output for each caption, `(B, L)` ids -> `(B, D)`, computed for the captions not seen before.

        Args:
            tower (`nn.Module`): the locked text tower (in eval mode).
            pooling (`str`): `"pooler"`, `"cls"` or `"mean"` (`modeling_mcd.modeling_mcd.pool_tower_output`).
            input_ids, attention_mask, token_type_ids (`(B, L)`): the tokenised captions.
        """
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        # One host copy for the whole batch (on an accelerator, this step's only synchronisation for the text side).
        rows = [ids[keep].tolist() for ids, keep in zip(input_ids.cpu(), mask.cpu().bool())]
        keys = [tuple(row) for row in rows]
        new = list({key: index for index, key in enumerate(keys) if key not in self._features}.values())
        if new:
            index = torch.tensor(new, device=input_ids.device)
            outputs = tower(
                input_ids=input_ids[index],
                attention_mask=mask[index],
                token_type_ids=token_type_ids[index] if token_type_ids is not None else None,
                return_dict=True,
            )
            pooled = pool_tower_output(outputs, pooling, mask[index])  # (len(new), D)
            for row, features in zip(new, pooled):  # kept on the tower's device
                self._features[keys[row]] = features.to(
                    torch.float32, copy=True
                )  # fp32 whatever autocast did; not a view
        return torch.stack([self._features[key].to(input_ids.device) for key in keys])  # (B, D)


__all__ = ["TextFeatureMemo", "text_features_file"]
