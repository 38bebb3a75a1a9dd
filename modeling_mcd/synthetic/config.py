# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""What a synthetic scene may hold: the vocabulary (colours, shapes, sizes, caption words and templates) and
`SyntheticConfig`, which picks from it and sets the image size, the split sizes and the seed.

Data, not code: `scenes` renders and captions a scene from these, `splits` builds the `datasets` splits.
"""

from __future__ import annotations

from dataclasses import dataclass

# ----------------------------------------------------------------------------------------------
# Vocabulary and caption templates (data, not code).
# ----------------------------------------------------------------------------------------------

#: Named colours, chosen far apart in RGB and bright against the dark background.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (40, 190, 60),
    "blue": (40, 90, 240),
    "yellow": (245, 225, 40),
    "purple": (160, 50, 210),
    "orange": (250, 140, 20),
    "white": (245, 245, 245),
    "pink": (250, 120, 190),
}

#: The `--dataset` value that names this built-in data.
SYNTHETIC = "synthetic"

#: Drawable shapes and their plural forms.
SHAPES: dict[str, str] = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "star": "stars",
    "cross": "crosses",
}

DEFAULT_COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
DEFAULT_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")

#: Object side length as a fraction of the image size, per size class (inclusive range).
SIZE_FRACTIONS: dict[str, tuple[float, float]] = {"small": (0.18, 0.26), "large": (0.34, 0.46)}

#: Words a caption may use for each size class.
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little", "tiny"), "large": ("large", "big")}

#: Words for an object count (1 takes "a"/"an", chosen by the next word).
COUNT_WORDS: dict[int, str] = {2: "two", 3: "three", 4: "four"}

#: Whole-caption templates; `{}` is the list of object phrases.
CAPTION_TEMPLATES: tuple[str, ...] = (
    "a photo of {}.",
    "a drawing of {}.",
    "a picture of {}.",
    "an image of {}.",
    "a rendering of {}.",
    "there is {}.",
    "{} on a dark background.",
    "{}.",
)

#: Zero-shot prompt templates; `{}` is a class name such as "red circle".
ZERO_SHOT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a drawing of a {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a rendering of a {}.",
    "there is a {}.",
    "a {} on a dark background.",
)

#: Probability that a caption names the size (resp. position) of an object group.
P_SIZE_WORD = 0.5
P_POSITION_WORD = 0.3

SPLITS: dict[str, int] = {"train": 0, "validation": 1, "test": 2}


@dataclass
class SyntheticConfig:
    """Configuration of the built-in synthetic dataset.

    Args:
        image_size (`int`, *optional*, defaults to 64):
            Side of the square RGB images, in pixels (at least 32).
        num_train (`int`, *optional*, defaults to 8000):
            Number of training images.
        num_validation (`int`, *optional*, defaults to 500):
            Number of validation images.
        num_test (`int`, *optional*, defaults to 1000):
            Number of test images (also the size of the zero-shot and retrieval test sets).
        min_objects (`int`, *optional*, defaults to 1):
            Fewest objects in a scene.
        max_objects (`int`, *optional*, defaults to 3):
            Most objects in a scene (at most 4, so that they fit without overlapping).
        captions_per_image (`int`, *optional*, defaults to 5):
            Length of each sample's `captions` list.
        seed (`int`, *optional*, defaults to 0):
            Non-negative seed; every sample is a pure function of `(seed, split, index)`.
        shapes (`tuple[str, ...]`, *optional*):
            Shapes to draw, a subset of `SHAPES`.
        colours (`tuple[str, ...]`, *optional*):
            Colour names to use, a subset of `COLOURS`.
    """

    image_size: int = 64
    num_train: int = 8000
    num_validation: int = 500
    num_test: int = 1000
    min_objects: int = 1
    max_objects: int = 3
    captions_per_image: int = 5
    seed: int = 0
    shapes: tuple[str, ...] = DEFAULT_SHAPES
    colours: tuple[str, ...] = DEFAULT_COLOURS

    def __post_init__(self) -> None:
        self.shapes, self.colours = tuple(self.shapes), tuple(self.colours)
        if self.image_size < 32:
            raise ValueError(f"`image_size` must be at least 32, got {self.image_size}.")
        for name in ("num_train", "num_validation", "num_test", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be non-negative, got {getattr(self, name)}.")
        if self.min_objects < 1:
            raise ValueError(f"`min_objects` must be at least 1, got {self.min_objects}.")
        if not self.min_objects <= self.max_objects <= max(COUNT_WORDS):
            raise ValueError(
                f"`max_objects` must be in [min_objects={self.min_objects}, {max(COUNT_WORDS)}], "
                f"got {self.max_objects}."
            )
        if self.captions_per_image < 1:
            raise ValueError(f"`captions_per_image` must be at least 1, got {self.captions_per_image}.")
        for name, known in (("shapes", SHAPES), ("colours", COLOURS)):
            values = getattr(self, name)
            unknown = [value for value in values if value not in known]
            if not values or unknown or len(set(values)) != len(values):
                raise ValueError(f"`{name}` must be distinct names from {sorted(known)}, got {list(values)}.")

    def num_examples(self, split: str) -> int:
        """Number of images in `split` ("train", "validation" or "test")."""
        split_id(split)  # validates the name
        return getattr(self, f"num_{split}")


def split_id(split: str) -> int:
    """The id of `split` in `SPLITS`, one of the keys of every sample's random stream."""
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {list(SPLITS)}, got {split!r}.")
    return SPLITS[split]
