# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Evaluation images, decoded when the encoder asks for them as training decodes them, and never of an aspect
ratio that an image processor would blow up.

`LazyImages` holds image files and decodes one when indexed (`decoding.decode_image`, with its pixel limit);
`AspectCropped` wraps images decoded elsewhere (a `datasets` image column). Both centre-crop to at most
`decoding.MAX_ASPECT_RATIO` (`crop_to_aspect_ratio`), as training's `resize_center_crop` crops before it resizes:
an image processor resizes the shortest edge first, and a 1,000,000 x 1 strip would become 224,000,000 x 224.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from .decoding import DEFAULT_MAX_PIXELS, crop_to_aspect_ratio, decode_image


def _decode(path: Path) -> Image.Image:
    try:
        return crop_to_aspect_ratio(decode_image(path, max_pixels=DEFAULT_MAX_PIXELS))
    except ValueError as error:  # a BadSampleError: its reason, and the file
        raise ValueError(f"cannot read image {path}: {error}") from error


class LazyImages(Sequence):
    """A sequence of image files, each decoded to an RGB PIL image only when indexed (a `ValueError` naming the
    file when it cannot be, a decompression bomb included), centre-cropped to a sane aspect ratio."""

    def __init__(self, paths: Sequence[str | Path]):
        self.paths = [Path(path) for path in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return LazyImages(self.paths[index])
        return _decode(self.paths[index])

    def subset(self, indices: Sequence[int]) -> LazyImages:
        """The images at `indices`, still undecoded."""
        return LazyImages([self.paths[i] for i in indices])


class AspectCropped(Sequence):
    """Images decoded elsewhere (a `datasets` image column), each centre-cropped to a sane aspect ratio when
    indexed; what is not a PIL image is handed on as it is."""

    def __init__(self, images: Sequence):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return AspectCropped([self.images[i] for i in range(len(self))[index]])
        image = self.images[index]
        return crop_to_aspect_ratio(image) if isinstance(image, Image.Image) else image


__all__ = ["AspectCropped", "LazyImages"]
