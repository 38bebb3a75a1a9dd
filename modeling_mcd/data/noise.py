# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Noisy pairs on purpose (`--caption_noise p`): a seeded fraction of the training pairs get another image's caption.

Web-scale image-text data holds pairs whose caption does not describe the image; MCD's L_noisy (docs/method.md §3)
exists for them. This makes such data from clean data, so that objectives can be compared as the noise grows: the
same seed picks the same rows and the same wrong captions for every objective, so runs pair up.

Only training rows change. A row's caption (all of its captions, for rows that hold several) is replaced by the
captions of another usable row showing another image; rows that a caption file marks as bad are never picked.
"""

from __future__ import annotations

from dataclasses import dataclass

import datasets
import numpy as np

from .image_text import known_bad
from .seeding import derive_seed

#: The key that separates the noise draw from the other draws of a seed (`seeding.derive_seed`).
NOISE_STREAM = 0x6E6F6973  # "nois"


@dataclass(frozen=True)
class NoiseReport:
    """What `mislabel_captions` did: `changed` of `usable` rows now hold another image's caption."""

    fraction: float
    seed: int
    usable: int
    changed: int

    def describe(self) -> str:
        return (
            f"--caption_noise {self.fraction:g}: {self.changed:,} of {self.usable:,} training pairs hold another "
            f"image's caption (seed {self.seed})"
        )


def mislabel_captions(rows: datasets.Dataset, fraction: float, seed: int) -> tuple[datasets.Dataset, NoiseReport]:
    r"""
    Give `round(fraction · usable rows)` seeded rows of `rows` the caption of another image.

    The picked rows, in a seeded random order, each take the caption of the next one (a cycle): every picked row
    gets a caption drawn from the picked set, never its own. Rows of the same image (`pair_id`) are not counted as
    changed when they happen to exchange captions.

    Args:
        rows (`datasets.Dataset`): training rows with `image` and `caption` (and `pair_id` / `bad_reason` for
            caption files), as `load_image_text_dataset` returns them.
        fraction (`float`): the share of usable rows to mislabel, in [0, 1].
        seed (`int`): the run's seed; the draw is `derive_seed(seed, NOISE_STREAM)`.

    Returns:
        `(rows with a `noisy` bool column, NoiseReport)`.

    Raises:
        ValueError: `fraction` outside [0, 1], or fewer than 2 rows to exchange captions between.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"--caption_noise must be in [0, 1], got {fraction}")
    if isinstance(rows, datasets.IterableDataset):
        raise ValueError("--caption_noise needs a dataset with random access: drop --streaming")
    columns = rows.column_names
    usable = np.flatnonzero(~known_bad(rows))  # a caption file's bad rows keep their captions
    picked_count = round(fraction * len(usable))
    rng = np.random.default_rng(derive_seed(seed, NOISE_STREAM))
    picked = rng.permutation(usable)[:picked_count]  # (k,) row indices, in a random order
    noisy = np.zeros(len(rows), dtype=bool)
    if picked_count == 0:
        return rows.add_column("noisy", noisy.tolist()), NoiseReport(fraction, seed, len(usable), 0)
    if picked_count < 2:
        raise ValueError(f"--caption_noise {fraction} picks {picked_count} row: captions need 2 rows to exchange")
    donors = np.roll(picked, -1)  # row picked[i] takes the caption of row picked[i + 1]
    captions = rows["caption"]
    new_captions = list(captions)
    for receiver, donor in zip(picked.tolist(), donors.tolist()):
        new_captions[receiver] = captions[donor]
    pair_ids = np.asarray(rows["pair_id"]) if "pair_id" in columns else np.arange(len(rows))
    changed = pair_ids[picked] != pair_ids[donors]
    noisy[picked[changed]] = True
    feature = rows.features["caption"]
    rows = rows.remove_columns("caption").add_column("caption", new_captions, feature=feature)
    return rows.add_column("noisy", noisy.tolist()), NoiseReport(fraction, seed, len(usable), int(changed.sum()))


__all__ = ["NOISE_STREAM", "NoiseReport", "mislabel_captions"]
