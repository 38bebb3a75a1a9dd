# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""The built-in default dataset: rendered scenes of coloured shapes with varied captions.

The default run (`accelerate launch training/run_mcd.py`) pretrains a tiny model on this data
with no download and no licence, so the scenes are designed to be learnable in a few hundred
steps by a tiny ViT (64 px, patch 8) and a tiny BERT:

- a dark, lightly textured background and 1-3 non-overlapping objects, each with a shape, a
  colour, a size (small/large) and a position; each object is described by its bbox
  `[x0, y0, x1, y1]` in pixel-edge coordinates (`x1`, `y1` exclusive);
- several captions per image that name every object with natural variation (count, size,
  position, template, order), e.g. "a drawing of two red circles and a big blue square on the
  left.", so the text side is not one constant string per class;
- captions describe objects that a random crop can cut away, so MCD's augmented view really is
  misaligned with the text; `visible_fraction` gives the ground truth for a crop box.

Every sample is rendered from its own `numpy.random.Generator`, seeded by
`(seed, split, stream, index)`, so any sample is reproducible on its own, independent of the
order in which samples are generated.

Evaluation sets: `zero_shot_dataset` (single-object images, class = "<colour> <shape>", chance
= 1 / number of classes) and `retrieval_dataset` (several captions per image, like COCO).

Modules: `config` (the vocabulary and `SyntheticConfig`), `scenes` (rendering one scene and its captions,
`render_sample`, `visible_fraction`, `zero_shot_classes`) and `splits` (the `datasets` splits built from
rendered scenes).
"""

from .config import (
    SYNTHETIC,
    CAPTION_TEMPLATES,
    COLOURS,
    COUNT_WORDS,
    DEFAULT_COLOURS,
    DEFAULT_SHAPES,
    P_POSITION_WORD,
    P_SIZE_WORD,
    SHAPES,
    SIZE_FRACTIONS,
    SIZE_WORDS,
    SPLITS,
    ZERO_SHOT_TEMPLATES,
    SyntheticConfig,
)
from .scenes import (
    BACKGROUND_GRADIENT,
    BACKGROUND_LEVEL,
    BACKGROUND_TINT,
    OBJECT_GAP,
    PLACEMENT_TRIES,
    render_sample,
    visible_fraction,
    zero_shot_classes,
)
from .splits import load_synthetic_dataset, retrieval_dataset, synthetic_pairs, zero_shot_dataset

__all__ = [
    "BACKGROUND_GRADIENT",
    "BACKGROUND_LEVEL",
    "BACKGROUND_TINT",
    "CAPTION_TEMPLATES",
    "COLOURS",
    "COUNT_WORDS",
    "DEFAULT_COLOURS",
    "DEFAULT_SHAPES",
    "OBJECT_GAP",
    "PLACEMENT_TRIES",
    "P_POSITION_WORD",
    "P_SIZE_WORD",
    "SHAPES",
    "SIZE_FRACTIONS",
    "SIZE_WORDS",
    "SPLITS",
    "SYNTHETIC",
    "ZERO_SHOT_TEMPLATES",
    "SyntheticConfig",
    "load_synthetic_dataset",
    "render_sample",
    "retrieval_dataset",
    "synthetic_pairs",
    "visible_fraction",
    "zero_shot_classes",
    "zero_shot_dataset",
]
