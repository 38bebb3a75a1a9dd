# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Rendering one synthetic scene and its captions, and the ground truth that goes with it.

Data flow: `render_sample(config, split, index)` seeds one `numpy.random.Generator` from
`(seed, split, stream, index)`, lays out 1-4 non-overlapping objects (`_place_objects`), draws them on a dark
gradient background (`_render_image`) and phrases several captions that name every object (`_captions`), so
any sample is reproducible on its own, whatever order samples are generated in. The zero-shot class of a
scene is "<colour> <shape>" of its largest object (`zero_shot_classes`); `visible_fraction` says how much of
what the captions describe survives a crop.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw

from .config import (
    CAPTION_TEMPLATES,
    COLOURS,
    COUNT_WORDS,
    P_POSITION_WORD,
    P_SIZE_WORD,
    SHAPES,
    SIZE_FRACTIONS,
    SIZE_WORDS,
    ZERO_SHOT_TEMPLATES,
    SyntheticConfig,
    split_id,
)

# ----------------------------------------------------------------------------------------------
# Layout and drawing knobs.
# ----------------------------------------------------------------------------------------------

#: Background grey level range and per-channel tint, in 0-255 units.
BACKGROUND_LEVEL = (30, 70)
BACKGROUND_TINT = 12
#: Largest brightness change across the image of the background's linear gradient (its texture).
BACKGROUND_GRADIENT = 24

#: Free pixels kept between objects (so bboxes never touch) and between objects and the border.
OBJECT_GAP = 2
#: Scene layouts tried before giving up (a layout fails when a small object finds no room).
PLACEMENT_TRIES = 20

_SCENE_STREAM, _SINGLE_OBJECT_STREAM = 0, 1


def _pick(rng: np.random.Generator, options: Any) -> Any:
    """A uniform choice from a sequence (`rng.integers` costs ~5x more per scalar draw)."""
    return options[int(rng.random() * len(options))]


# ----------------------------------------------------------------------------------------------
# Classes and ground truth.
# ----------------------------------------------------------------------------------------------


def zero_shot_classes(config: SyntheticConfig | None = None) -> tuple[list[str], list[str]]:
    """Class names and prompt templates of the zero-shot task.

    A class is "<colour> <shape>" of an image's single (or largest) object; the class id is
    `colour_index * len(config.shapes) + shape_index`. Chance accuracy is `1 / len(names)`.

    Args:
        config (`SyntheticConfig`, *optional*): dataset configuration (defaults if `None`).

    Returns:
        `tuple[list[str], list[str]]`: class names such as "red circle", and prompt templates
        such as "a photo of a {}." to be filled with a class name.
    """
    config = config or SyntheticConfig()
    names = [f"{colour} {shape}" for colour in config.colours for shape in config.shapes]
    return names, list(ZERO_SHOT_TEMPLATES)


def visible_fraction(
    objects: list[dict[str, Any]], crop_box: tuple[float, float, float, float], min_visible: float = 0.5
) -> float:
    """Fraction of the described objects that survive a crop.

    An object survives when at least `min_visible` of its bbox area lies inside the crop box.

    Args:
        objects (`list[dict]`): objects of a sample, each with a `bbox` `[x0, y0, x1, y1]`.
        crop_box (`tuple[float, float, float, float]`): crop `(x0, y0, x1, y1)` in image pixels.
        min_visible (`float`, *optional*, defaults to 0.5): visible area fraction, in (0, 1],
            for an object to count as visible.

    Returns:
        `float`: number of visible objects / number of objects, in [0, 1].
    """
    if not objects:
        raise ValueError("`objects` must hold at least one object.")
    if not 0.0 < min_visible <= 1.0:
        raise ValueError(f"`min_visible` must be in (0, 1], got {min_visible}.")
    cx0, cy0, cx1, cy1 = crop_box
    if cx1 <= cx0 or cy1 <= cy0:
        raise ValueError(f"`crop_box` must be (x0, y0, x1, y1) with x1 > x0 and y1 > y0, got {crop_box}.")
    boxes = np.asarray([obj["bbox"] for obj in objects], dtype=np.float64)  # (K, 4)
    width = np.clip(np.minimum(boxes[:, 2], cx1) - np.maximum(boxes[:, 0], cx0), 0.0, None)  # (K,)
    height = np.clip(np.minimum(boxes[:, 3], cy1) - np.maximum(boxes[:, 1], cy0), 0.0, None)  # (K,)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # (K,)
    return float(np.mean(width * height >= min_visible * area))


# ----------------------------------------------------------------------------------------------
# Rendering.
# ----------------------------------------------------------------------------------------------


@cache
def _shape_vertices(shape: str, side: int) -> tuple[tuple[int, int], ...]:
    """Integer polygon vertices of `shape` in a `side` x `side` box at the origin (inclusive)."""
    last = side - 1
    if shape == "square":
        return ((0, 0), (last, 0), (last, last), (0, last))
    if shape == "triangle":
        return ((last // 2, 0), (last, last), (0, last))
    if shape == "cross":
        arm = max(2, round(side / 3))
        a, b = (side - arm) // 2, (side - arm) // 2 + arm - 1
        return (
            (a, 0),
            (b, 0),
            (b, a),
            (last, a),
            (last, b),
            (b, b),
            (b, last),
            (a, last),
            (a, b),
            (0, b),
            (0, a),
            (a, a),
        )
    if shape == "star":
        # Five points, one pointing up; inner radius 0.45 of the outer radius.
        angles = -math.pi / 2 + np.arange(10) * math.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45) * last / 2
        xs, ys = np.round(last / 2 + radii * np.cos(angles)), np.round(last / 2 + radii * np.sin(angles))
        ys -= ys.min()  # the star is shorter than wide: move it to the top of its box
        return tuple(zip(xs.astype(int).tolist(), ys.astype(int).tolist()))
    raise ValueError(f"Unknown shape {shape!r}; known shapes: {sorted(SHAPES)}.")


@cache
def _ramp(size: int) -> np.ndarray:
    return np.linspace(-0.5, 0.5, size, dtype=np.float32)


@cache
def _shape_extent(shape: str, side: int) -> tuple[int, int]:
    """Width and height in pixels of `shape` drawn in a `side` box."""
    if shape == "circle":
        return side, side
    vertices = np.asarray(_shape_vertices(shape, side))
    return int(vertices[:, 0].max()) + 1, int(vertices[:, 1].max()) + 1


def _draw_object(draw: ImageDraw.ImageDraw, shape: str, x0: int, y0: int, side: int, rgb: tuple[int, int, int]) -> None:
    if shape == "circle":
        draw.ellipse((x0, y0, x0 + side - 1, y0 + side - 1), fill=rgb)
    else:
        draw.polygon([(x0 + x, y0 + y) for x, y in _shape_vertices(shape, side)], fill=rgb)


def _free_corners(objects: list[dict[str, Any]], image_size: int, width: int, height: int) -> np.ndarray:
    """Boolean grid `[y0, x0]` of top-left corners where a `width` x `height` bbox stays
    `OBJECT_GAP` pixels away from the border and from every placed object."""
    free = np.zeros((image_size, image_size), dtype=bool)  # (H, W)
    free[OBJECT_GAP : image_size - OBJECT_GAP - height + 1, OBJECT_GAP : image_size - OBJECT_GAP - width + 1] = True
    for obj in objects:
        x0, y0, x1, y1 = obj["bbox"]
        # Corners whose bbox would come closer than OBJECT_GAP to this object.
        top, left = max(0, y0 - OBJECT_GAP - height + 1), max(0, x0 - OBJECT_GAP - width + 1)
        free[top : y1 + OBJECT_GAP, left : x1 + OBJECT_GAP] = False
    return free


def _place_objects(
    config: SyntheticConfig, rng: np.random.Generator, num_objects: int
) -> tuple[list[dict[str, Any]], list[int]]:
    """Draw shape, colour, size and a non-overlapping position for each object.

    Returns the objects and the side length each one is drawn with.
    """
    for _ in range(PLACEMENT_TRIES):
        objects: list[dict[str, Any]] = []
        sides: list[int] = []
        for _ in range(num_objects):
            shape = _pick(rng, config.shapes)
            colour = _pick(rng, config.colours)
            # A large object that does not fit is drawn small instead (labels follow the drawing).
            for size_class in ("large", "small") if rng.random() < 0.5 else ("small",):
                low, high = (round(fraction * config.image_size) for fraction in SIZE_FRACTIONS[size_class])
                side = _pick(rng, range(low, high + 1))
                width, height = _shape_extent(shape, side)
                corners = np.flatnonzero(_free_corners(objects, config.image_size, width, height))
                if corners.size:
                    y0, x0 = divmod(int(_pick(rng, corners)), config.image_size)
                    bbox = [x0, y0, x0 + width, y0 + height]
                    objects.append({"shape": shape, "colour": colour, "size": size_class, "bbox": bbox})
                    sides.append(side)
                    break
        if len(objects) == num_objects:
            return objects, sides
    # Not reached at the validated sizes (at most 4 objects, image_size >= 32).
    raise RuntimeError(f"Could not place {num_objects} objects in a {config.image_size}-px image.")


def _render_image(
    config: SyntheticConfig, rng: np.random.Generator, objects: list[dict[str, Any]], sides: list[int]
) -> PILImage.Image:
    low, high = BACKGROUND_LEVEL
    level = low + (high - low) * rng.random() + BACKGROUND_TINT * (2 * rng.random(3) - 1)  # (3,)
    slope = BACKGROUND_GRADIENT * (2 * rng.random(2) - 1)  # (2,) brightness change along x and y
    ramp = _ramp(config.image_size)  # (S,) from -0.5 to 0.5
    row = level + slope[0] * ramp[:, None]  # (W, 3)
    # A smooth gradient, not pixel noise: PNG-encodes ~5x faster and the scene stays easy to read.
    # (Broadcasting over the leading axes is ~4x faster than over the channel axis.)
    background = (row[None, :, :] + slope[1] * ramp[:, None, None]).astype(np.uint8)  # (H, W, 3) in [0, 255]
    image = PILImage.frombytes("RGB", (config.image_size, config.image_size), background.tobytes())
    draw = ImageDraw.Draw(image)
    for obj, side in zip(objects, sides):
        _draw_object(draw, obj["shape"], obj["bbox"][0], obj["bbox"][1], side, COLOURS[obj["colour"]])
    return image


# ----------------------------------------------------------------------------------------------
# Captions.
# ----------------------------------------------------------------------------------------------


def _position_phrase(bbox: list[int], image_size: int) -> str:
    cx, cy = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
    third = image_size / 3
    if cx < third:
        return "on the left"
    if cx > 2 * third:
        return "on the right"
    if cy < third:
        return "at the top"
    if cy > 2 * third:
        return "at the bottom"
    return "in the middle"


def _group_phrase(group: list[dict[str, Any]], image_size: int, rng: np.random.Generator) -> str:
    """E.g. "two small red circles" or "a blue square on the left"."""
    words = []
    sizes = {obj["size"] for obj in group}
    if len(sizes) == 1 and rng.random() < P_SIZE_WORD:
        options = SIZE_WORDS[sizes.pop()]
        words.append(_pick(rng, options))
    words.append(group[0]["colour"])
    words.append(SHAPES[group[0]["shape"]] if len(group) > 1 else group[0]["shape"])
    if len(group) > 1:
        count = COUNT_WORDS[len(group)]
    else:
        count = "an" if words[0][0] in "aeiou" else "a"
    phrase = " ".join([count, *words])
    if len(group) == 1 and rng.random() < P_POSITION_WORD:
        phrase += " " + _position_phrase(group[0]["bbox"], image_size)
    return phrase


def _caption(objects: list[dict[str, Any]], image_size: int, rng: np.random.Generator) -> str:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for obj in objects:
        groups.setdefault((obj["colour"], obj["shape"]), []).append(obj)
    phrases = [_group_phrase(group, image_size, rng) for group in groups.values()]
    phrases = [phrases[i] for i in rng.permutation(len(phrases))]
    listing = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return _pick(rng, CAPTION_TEMPLATES).format(listing)


def _captions(objects: list[dict[str, Any]], image_size: int, rng: np.random.Generator, count: int) -> list[str]:
    """`count` captions, distinct where the phrasing leaves room for it."""
    captions: list[str] = []
    for _ in range(4 * count):
        caption = _caption(objects, image_size, rng)
        if caption not in captions:
            captions.append(caption)
        if len(captions) == count:
            return captions
    while len(captions) < count:  # too few distinct phrasings: repeat
        captions.append(captions[len(captions) % len(captions)])
    return captions


# ----------------------------------------------------------------------------------------------
# Samples.
# ----------------------------------------------------------------------------------------------


def render_sample(config: SyntheticConfig, split: str, index: int, single_object: bool = False) -> dict[str, Any]:
    """Render one captioned scene, a pure function of `(config, split, index, single_object)`.

    Args:
        config (`SyntheticConfig`): dataset configuration.
        split (`str`): "train", "validation" or "test".
        index (`int`): non-negative sample index.
        single_object (`bool`, *optional*, defaults to `False`): draw exactly one object, from a
            separate random stream (the zero-shot set), instead of `min_objects..max_objects`.

    Returns:
        `dict`: `image` (PIL RGB, `image_size` square), `caption` (`str`, equal to
        `captions[0]`), `captions` (`list[str]`, `captions_per_image` of them), `objects`
        (`list[dict]` with `shape`, `colour`, `size`, `bbox` `[x0, y0, x1, y1]`, exclusive
        ends) and `label` (zero-shot class id of the largest object, first one on ties).
    """
    if index < 0:
        raise ValueError(f"`index` must be non-negative, got {index}.")
    stream = _SINGLE_OBJECT_STREAM if single_object else _SCENE_STREAM
    rng = np.random.default_rng([config.seed, split_id(split), stream, index])
    num_objects = 1 if single_object else _pick(rng, range(config.min_objects, config.max_objects + 1))
    objects, sides = _place_objects(config, rng, num_objects)
    image = _render_image(config, rng, objects, sides)
    captions = _captions(objects, config.image_size, rng, config.captions_per_image)
    areas = [(obj["bbox"][2] - obj["bbox"][0]) * (obj["bbox"][3] - obj["bbox"][1]) for obj in objects]
    largest = objects[int(np.argmax(areas))]
    label = config.colours.index(largest["colour"]) * len(config.shapes) + config.shapes.index(largest["shape"])
    return {"image": image, "caption": captions[0], "captions": captions, "objects": objects, "label": label}
