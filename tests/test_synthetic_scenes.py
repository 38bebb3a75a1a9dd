"""Tests of modeling_mcd.synthetic.scenes and .config: determinism, captions vs. drawing, ground truth,
argument checks."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
from _synthetic_helpers import TINY, scenes

from modeling_mcd.synthetic import (
    COLOURS,
    SHAPES,
    SIZE_WORDS,
    SyntheticConfig,
    render_sample,
    visible_fraction,
    zero_shot_classes,
    zero_shot_dataset,
)

COUNTS = {"a": 1, "an": 1, "two": 2, "three": 3, "four": 4}


def parse_caption(caption: str, config: SyntheticConfig) -> list[dict]:
    """Object phrases of a caption, read back with a grammar written independently of the module."""
    sizes = "|".join(word for words in SIZE_WORDS.values() for word in words)
    colours = "|".join(config.colours)
    shapes = "|".join(list(SHAPES) + list(SHAPES.values()))
    pattern = (
        rf"\b(?P<count>{'|'.join(COUNTS)}) (?:(?P<size>{sizes}) )?(?P<colour>{colours}) (?P<shape>{shapes})\b"
        r"(?: (?P<position>on the left|on the right|at the top|at the bottom|in the middle))?"
    )
    return [match.groupdict() for match in re.finditer(pattern, caption)]


def image_bytes(sample: dict) -> bytes:
    return sample["image"].tobytes()


# ------------------------------------------------------------------------------- determinism


def test_render_is_deterministic_and_seed_dependent():
    first, again = render_sample(TINY, "train", 3), render_sample(TINY, "train", 3)
    assert image_bytes(first) == image_bytes(again)
    assert first["captions"] == again["captions"] and first["objects"] == again["objects"]
    other_seed = SyntheticConfig(**{**TINY.__dict__, "seed": 12})
    others = [render_sample(other_seed, "train", index) for index in range(5)]
    originals = [render_sample(TINY, "train", index) for index in range(5)]
    assert all(image_bytes(a) != image_bytes(b) for a, b in zip(originals, others))
    assert [a["caption"] for a in originals] != [b["caption"] for b in others]


def test_render_is_independent_of_generation_order_and_streams_differ():
    forward = [render_sample(TINY, "validation", index) for index in range(6)]
    backward = [render_sample(TINY, "validation", index) for index in reversed(range(6))][::-1]
    assert [image_bytes(s) for s in forward] == [image_bytes(s) for s in backward]
    assert [s["captions"] for s in forward] == [s["captions"] for s in backward]
    # Splits and the single-object stream draw from different seeds for the same index.
    train, single = render_sample(TINY, "train", 2), render_sample(TINY, "validation", 2, single_object=True)
    assert len({image_bytes(forward[2]), image_bytes(train), image_bytes(single)}) == 3


# ------------------------------------------------------------------------------- captions


def test_captions_name_exactly_the_rendered_objects():
    for sample in scenes():
        objects = sample["objects"]
        assert TINY.min_objects <= len(objects) <= TINY.max_objects
        assert len(sample["captions"]) == TINY.captions_per_image and sample["caption"] == sample["captions"][0]
        expected = Counter((obj["colour"], obj["shape"]) for obj in objects)
        for caption in sample["captions"]:
            phrases = parse_caption(caption, TINY)
            said = Counter()
            for phrase in phrases:
                count = COUNTS[phrase["count"]]
                singular = phrase["shape"] in SHAPES
                assert singular == (count == 1), caption
                shape = phrase["shape"] if singular else next(s for s, p in SHAPES.items() if p == phrase["shape"])
                said[(phrase["colour"], shape)] += count
                group = [obj for obj in objects if (obj["colour"], obj["shape"]) == (phrase["colour"], shape)]
                if phrase["size"]:
                    size = next(size for size, words in SIZE_WORDS.items() if phrase["size"] in words)
                    assert all(obj["size"] == size for obj in group), caption
                if phrase["position"]:
                    assert len(group) == 1, caption
                    x0, y0, x1, y1 = group[0]["bbox"]
                    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, TINY.image_size / 2
                    check = {
                        "on the left": cx < half,
                        "on the right": cx > half,
                        "at the top": cy < half,
                        "at the bottom": cy > half,
                        "in the middle": abs(cx - half) < half / 2 and abs(cy - half) < half / 2,
                    }
                    assert check[phrase["position"]], (caption, group[0]["bbox"])
            assert said == expected, (caption, objects)
            # Every colour word in the caption belongs to a parsed phrase (nothing unparsed is named).
            assert sum(caption.split().count(colour) for colour in COLOURS) == len(phrases), caption


def test_captions_vary_beyond_the_class_name():
    captions = [caption for sample in scenes(count=20) for caption in sample["captions"]]
    prefixes = Counter(caption.split(" ")[0] for caption in captions)
    assert len(prefixes) >= 4  # several templates are in use
    assert any(parse_caption(c, TINY)[0]["size"] for c in captions)
    assert any(parse_caption(c, TINY)[0]["position"] for c in captions)
    assert all(len(set(sample["captions"])) > 1 for sample in scenes(count=20))


# ------------------------------------------------------------------------------- drawing vs bbox


def test_objects_are_drawn_exactly_in_their_bbox():
    for sample in scenes(count=30):
        pixels = np.asarray(sample["image"])  # (H, W, 3)
        assert pixels.shape == (TINY.image_size, TINY.image_size, 3)
        for obj in sample["objects"]:
            x0, y0, x1, y1 = obj["bbox"]
            assert 0 <= x0 < x1 <= TINY.image_size and 0 <= y0 < y1 <= TINY.image_size
            mask = np.all(pixels == COLOURS[obj["colour"]], axis=-1)  # (H, W)
            # Look one pixel around the bbox: objects are kept apart, so nothing else is there.
            top, left = max(y0 - 1, 0), max(x0 - 1, 0)
            window = mask[top : y1 + 1, left : x1 + 1]
            rows, cols = np.nonzero(window)
            assert (rows.min() + top, rows.max() + top + 1) == (y0, y1), obj
            assert (cols.min() + left, cols.max() + left + 1) == (x0, x1), obj
            assert mask[(y0 + y1) // 2, (x0 + x1) // 2], obj  # every shape covers its centre
            assert window.sum() >= 0.3 * (x1 - x0) * (y1 - y0), obj


def test_size_classes_match_pixel_sizes():
    widths = {"small": [], "large": []}
    for sample in scenes(count=60):
        for obj in sample["objects"]:
            widths[obj["size"]].append(obj["bbox"][2] - obj["bbox"][0])
    assert widths["small"] and widths["large"]
    assert max(widths["small"]) < min(widths["large"])


# ------------------------------------------------------------------------------- visible_fraction


def naive_visible_fraction(objects: list[dict], crop: tuple[int, int, int, int], min_visible: float) -> float:
    """Pixel-counting reference for integer boxes."""
    visible = 0
    for obj in objects:
        x0, y0, x1, y1 = obj["bbox"]
        inside = sum(crop[0] <= x < crop[2] and crop[1] <= y < crop[3] for x in range(x0, x1) for y in range(y0, y1))
        visible += inside >= min_visible * (x1 - x0) * (y1 - y0)
    return visible / len(objects)


def test_visible_fraction_known_crops():
    objects = [{"bbox": [0, 0, 10, 10]}, {"bbox": [20, 20, 30, 30]}]
    assert visible_fraction(objects, (0, 0, 40, 40)) == 1.0
    assert visible_fraction(objects, (0, 0, 15, 15)) == 0.5  # covers only the first object
    assert visible_fraction(objects, (32, 32, 40, 40)) == 0.0  # empty corner
    # Exactly half of the first object is inside: visible at min_visible 0.5, not above it.
    assert visible_fraction(objects, (5, 0, 40, 40)) == 1.0
    assert visible_fraction(objects, (5.5, 0, 40, 40)) == 0.5
    assert visible_fraction(objects, (5, 0, 40, 40), min_visible=0.6) == 0.5
    assert visible_fraction(objects, (0, 0, 25, 25), min_visible=0.25) == 1.0
    assert visible_fraction(objects, (0, 0, 25, 25), min_visible=0.26) == 0.5


def test_visible_fraction_matches_pixel_count_on_random_crops():
    rng = np.random.default_rng(5)
    for sample in scenes(count=15):
        for _ in range(7):
            x0, y0 = rng.integers(0, TINY.image_size - 1, size=2)
            x1, y1 = rng.integers(x0 + 1, TINY.image_size + 1), rng.integers(y0 + 1, TINY.image_size + 1)
            crop = (int(x0), int(y0), int(x1), int(y1))
            for min_visible in (0.3, 0.5, 1.0):
                expected = naive_visible_fraction(sample["objects"], crop, min_visible)
                assert visible_fraction(sample["objects"], crop, min_visible) == pytest.approx(expected)


def test_custom_vocabulary_is_used():
    config = SyntheticConfig(image_size=33, num_test=3, shapes=("star", "circle"), colours=("white", "pink", "blue"))
    names, _ = zero_shot_classes(config)
    assert names == ["white star", "white circle", "pink star", "pink circle", "blue star", "blue circle"]
    for index in range(10):
        for obj in render_sample(config, "test", index)["objects"]:
            assert obj["shape"] in config.shapes and obj["colour"] in config.colours


# ------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("image_size", {"image_size": 31}),
        ("num_train", {"num_train": -1}),
        ("num_test", {"num_test": -3}),
        ("seed", {"seed": -1}),
        ("min_objects", {"min_objects": 0}),
        ("max_objects", {"max_objects": 5}),
        ("max_objects", {"min_objects": 3, "max_objects": 2}),
        ("captions_per_image", {"captions_per_image": 0}),
        ("shapes", {"shapes": ("circle", "hexagon")}),
        ("colours", {"colours": ()}),
        ("colours", {"colours": ("red", "red")}),
    ],
)
def test_config_validation_names_the_field(field, kwargs):
    with pytest.raises(ValueError, match=f"`{field}`"):
        SyntheticConfig(**kwargs)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="`split`"):
        render_sample(TINY, "dev", 0)
    with pytest.raises(ValueError, match="`index`"):
        render_sample(TINY, "train", -1)
    with pytest.raises(ValueError, match="`split`"):
        zero_shot_dataset(TINY, split="val")
    with pytest.raises(ValueError, match="`crop_box`"):
        visible_fraction([{"bbox": [0, 0, 4, 4]}], (5, 0, 5, 9))
    with pytest.raises(ValueError, match="`min_visible`"):
        visible_fraction([{"bbox": [0, 0, 4, 4]}], (0, 0, 5, 5), min_visible=0.0)
    with pytest.raises(ValueError, match="`objects`"):
        visible_fraction([], (0, 0, 5, 5))
