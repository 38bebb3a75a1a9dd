# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Tests of modeling_mcd.data.decoding: image decoding and mode conversion, captions, the bad-sample reasons and
`SampleDecoder`'s arguments."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from _data_helpers import SIZE, color, encode, solid, write_bad_files
from PIL import Image

from modeling_mcd.data import (
    BadSampleError,
    SampleDecoder,
    decode_image,
    resize_center_crop,
    select_caption,
    validate_caption,
)


def rgb(image: Image.Image, via_png: bool) -> np.ndarray:
    value = encode(image) if via_png else image
    decoded = decode_image(value)
    assert decoded.mode == "RGB"
    return np.asarray(decoded)


@pytest.mark.parametrize("via_png", [False, True])
def test_mode_conversions(via_png):
    gray = np.array([[0, 100, 255]], dtype=np.uint8)
    assert np.array_equal(rgb(Image.fromarray(gray, "L"), via_png), np.repeat(gray[..., None], 3, -1))

    # 16-bit: 0 -> 0, 257 * 100 -> 100, 65535 -> 255 (PIL's own conversion would clip 25700 to 255).
    sixteen = np.array([[0, 25700, 65535]], dtype=np.uint16)
    images = [Image.fromarray(sixteen)] + ([] if via_png else [Image.fromarray(sixteen.astype(np.int32), "I")])
    for image in images:
        assert image.mode in ("I;16", "I")
        assert rgb(image, via_png)[0, :, 0].tolist() == [0, 100, 255]

    # Alpha is composited on white: out = a * c + (1 - a) * 255.
    rgba = np.array([[[200, 10, 50, 255], [200, 10, 50, 0], [200, 10, 50, 128]]], dtype=np.uint8)
    alpha = rgba[..., 3:] / 255.0
    naive = np.rint(rgba[..., :3] * alpha + 255 * (1 - alpha))
    assert np.abs(rgb(Image.fromarray(rgba, "RGBA"), via_png).astype(int) - naive).max() <= 1
    la = Image.fromarray(rgba[..., [0, 3]], "LA")
    naive_la = np.rint(rgba[..., 0] * alpha[..., 0] + 255 * (1 - alpha[..., 0]))
    assert np.abs(rgb(la, via_png)[..., 0].astype(int) - naive_la).max() <= 1

    palette = Image.new("P", (3, 1))
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (253 * 3))
    palette.putdata([0, 1, 2])
    assert rgb(palette, via_png).tolist() == [[[255, 0, 0], [0, 255, 0], [0, 0, 255]]]
    palette.info["transparency"] = 1  # palette index 1 is transparent -> white
    assert rgb(palette, via_png).tolist() == [[[255, 0, 0], [255, 255, 255], [0, 0, 255]]]

    if not via_png:  # PNG has no CMYK nor float modes
        cmyk = Image.new("CMYK", (2, 1))
        cmyk.putdata([(0, 0, 0, 0), (255, 0, 0, 0)])  # no ink -> white; full cyan -> (0, 255, 255)
        assert rgb(cmyk, False).tolist() == [[[255, 255, 255], [0, 255, 255]]]
        floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F")
        assert rgb(floats, False)[0, :, 0].tolist() == [0, 128, 255]
        binary = Image.fromarray(gray, "L").convert("1", dither=Image.Dither.NONE)  # threshold at 128
        assert rgb(binary, False)[0, :, 0].tolist() == [0, 0, 255]


def test_decode_accepts_every_input_kind(tmp_path):
    path = tmp_path / "x.png"
    solid(3).save(path)
    data = path.read_bytes()
    as_dicts = ({"bytes": data, "path": "x.png"}, {"bytes": None, "path": str(path)})
    for value in (solid(3), data, str(path), path, *as_dicts):
        assert decode_image(value).getpixel((0, 0)) == color(3)


def test_resize_center_crop_matches_a_naive_crop():
    # A 12 x 8 image (W x H): the shorter side is already 8, so a size-8 result is the centre crop.
    array = np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    out = resize_center_crop(Image.fromarray(array), 8)
    assert out.dtype == torch.uint8 and out.shape == (3, 8, 8)
    assert torch.equal(out, torch.from_numpy(array[:, 2:10]).permute(2, 0, 1))
    assert resize_center_crop(solid(5, (30, 17)), SIZE).shape == (3, SIZE, SIZE)


def test_every_bad_image_kind_is_named(tmp_path):
    paths = write_bad_files(tmp_path)
    for reason, path in paths.items():
        with pytest.raises(BadSampleError) as error:
            decode_image(path, max_pixels=1_000_000)
        assert error.value.reason == reason, (reason, error.value)
        assert os.path.basename(path) in str(error.value)
        assert isinstance(error.value, ValueError)
    # The bomb is refused from its header; without the limit the same bytes fail as a truncated file.
    with pytest.raises(BadSampleError) as error:
        decode_image(paths["decompression_bomb"], max_pixels=None)
    assert error.value.reason == "truncated"


def test_pil_decompression_bomb_is_mapped(monkeypatch):
    data = encode(Image.new("L", (100, 100)))
    for limit in (6000, 4000):  # 10000 pixels: PIL warns above its limit, raises above twice the limit
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        with pytest.raises(BadSampleError) as error:
            decode_image(data, max_pixels=None)
        assert error.value.reason == "decompression_bomb"


def test_validate_caption():
    assert validate_caption("  a red cat \n") == "a red cat"
    cases = [("", "empty_caption"), (" \t\n", "empty_caption")]
    cases += [(value, "non_text_caption") for value in (None, 3, 2.5, b"bytes")]
    for value, reason in cases:
        with pytest.raises(BadSampleError) as error:
            validate_caption(value)
        assert error.value.reason == reason


@pytest.mark.parametrize(
    "caption",
    ["\u200b\u200c\u200d\u2060\ufeff", "\x00\x00\x00", "\u200b \x00\t\u00ad", "\u3164", "\u2800\u180e", "\x7f"],
)
def test_a_caption_without_a_visible_character_is_empty(caption):
    """Zero-width and format characters, NUL and other control bytes, fillers: the tokenizer would make them
    `[CLS][SEP]`, a caption that says nothing."""
    for check in (validate_caption, select_caption, lambda value: select_caption([value, None])):
        with pytest.raises(BadSampleError) as error:
            check(caption)
        assert error.value.reason == "empty_caption"


def test_a_caption_keeps_its_visible_text_and_loses_invisible_edges():
    assert validate_caption("\ufeff\u200b a red cat\u2060\x00 ") == "a red cat"
    assert validate_caption("cafe\u0301 au lait") == "cafe\u0301 au lait"  # a combining accent is text
    assert validate_caption("a\u200bb") == "a\u200bb"  # what is inside is the tokenizer's to clean


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("on_bad_sample", {"on_bad_sample": "ignore"}),
        ("image_size", {"image_size": 0}),
        ("max_consecutive_bad", {"max_consecutive_bad": 0}),
    ],
)
def test_sample_decoder_checks_its_arguments(field, kwargs):
    with pytest.raises(ValueError, match=field):
        SampleDecoder(**{"image_size": SIZE, **kwargs})
