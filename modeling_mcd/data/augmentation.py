# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""The two views of docs/method.md §1 ("Misalign"), made in one batched call on the accelerator.

The collator hands over uint8 images of a fixed base size; `MCDViews` turns each of them into

- the original view x_i: RandomResizedCrop(scale 0.5-1.0) to the model's image size (SLIP's CLIP view),
- the augmented view x̃_i: SimCLR's recipe (RandomResizedCrop(0.08-1.0), horizontal flip, colour
  jitter, grayscale, Gaussian blur),

with independent randomness per sample (kornia, `same_on_batch=False`), reproducible from a seed, and
returns both crop boxes so analysis tools can relate the teacher's ratios to how much of the original
view the augmented view still shows (`overlap`).

Box convention: `(x0, y0, x1, y1)` in the input image's pixel-edge coordinates, right/bottom edges
exclusive: a crop of columns 3..9 (inclusive) is `x0=3, x1=10`, so `x1 - x0` is its width in pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import kornia.augmentation as K
import torch


@dataclass
class ViewsOutput:
    r"""
    Output of [`MCDViews`].

    Args:
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`):
            The original view, normalised with the model's mean/std.
        aug_pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`, *optional*):
            The augmented view, normalised the same way (`None` when only the original view was asked for).
        boxes (`torch.FloatTensor` of shape `(batch_size, 4)`):
            Crop box `(x0, y0, x1, y1)` of the original view in input pixel coordinates (x1, y1 exclusive).
        aug_boxes (`torch.FloatTensor` of shape `(batch_size, 4)`):
            Crop box of the augmented view, same convention.
        overlap (`torch.FloatTensor` of shape `(batch_size,)`):
            `area(box ∩ aug_box) / area(box)`: the fraction of the original view that the augmented view
            still shows (1 = fully aligned, 0 = disjoint crops).
    """

    pixel_values: torch.Tensor
    aug_pixel_values: torch.Tensor
    boxes: torch.Tensor
    aug_boxes: torch.Tensor
    overlap: torch.Tensor


def crop_overlap(boxes: torch.Tensor, aug_boxes: torch.Tensor) -> torch.Tensor:
    """Fraction of each original crop covered by its augmented crop.

    Args:
        boxes (`torch.Tensor` of shape `(B, 4)`): original crops `(x0, y0, x1, y1)`.
        aug_boxes (`torch.Tensor` of shape `(B, 4)`): augmented crops, same convention.

    Returns:
        `torch.Tensor` of shape `(B,)`: `area(boxes ∩ aug_boxes) / area(boxes)`, in [0, 1].
    """
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"`boxes` must have shape (B, 4), got {tuple(boxes.shape)}")
    if aug_boxes.shape != boxes.shape:
        raise ValueError(
            f"`aug_boxes` must have the shape of `boxes` {tuple(boxes.shape)}, got {tuple(aug_boxes.shape)}"
        )
    top_left = torch.maximum(boxes[:, :2], aug_boxes[:, :2])  # (B, 2)
    bottom_right = torch.minimum(boxes[:, 2:], aug_boxes[:, 2:])  # (B, 2)
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)  # (B,)
    area = (boxes[:, 2:] - boxes[:, :2]).prod(dim=-1)  # (B,)
    if bool((area <= 0).any()):
        raise ValueError("every box in `boxes` must have a positive area")
    return inter / area


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        got = (
            f"{images.dtype} tensor of shape {tuple(images.shape)}"
            if isinstance(images, torch.Tensor)
            else type(images)
        )
        raise ValueError(f"`images` must be a uint8 tensor of shape (B, 3, H, W), got {got}")


def _check_range(name: str, value: Sequence[float], low: float, high: float) -> tuple[float, float]:
    """Validate a `(min, max)` range inside `(low, high]`."""
    if len(value) != 2 or not (low < value[0] <= value[1] <= high):
        raise ValueError(f"`{name}` must be (min, max) with {low} < min <= max <= {high}, got {tuple(value)}")
    return float(value[0]), float(value[1])


def _check_probability(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be a probability in [0, 1], got {value}")
    return float(value)


def _check_mean_std(image_mean: Sequence[float], image_std: Sequence[float]) -> None:
    if len(image_mean) != 3:
        raise ValueError(f"`image_mean` must hold 3 values (RGB), got {list(image_mean)}")
    if len(image_std) != 3 or any(s <= 0 for s in image_std):
        raise ValueError(f"`image_std` must hold 3 positive values (RGB), got {list(image_std)}")


def _normalize(x: torch.Tensor, image_mean: Sequence[float], image_std: Sequence[float]) -> torch.Tensor:
    mean = torch.as_tensor(image_mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.as_tensor(image_std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _boxes_from_params(src: torch.Tensor) -> torch.Tensor:
    """kornia's crop corners `(B, 4, 2)`, inclusive pixel indices, -> `(B, 4)` boxes with exclusive x1, y1."""
    top_left = src[:, 0]  # (B, 2) (x0, y0)
    bottom_right = src[:, 2] + 1  # (B, 2) last pixel index -> exclusive edge
    return torch.cat([top_left, bottom_right], dim=-1).float()


#: Parameters kornia draws once for the whole batch (not one per sample): never sliced by row.
_BATCH_WIDE_PARAMS = ("forward_input_shape", "order")


def _apply_rows(module: K.AugmentationBase2D, x: torch.Tensor, offset: int, total: int) -> torch.Tensor:
    """Apply `module` to `x`, rows `offset ..` of a global batch of `total`: the random parameters are drawn for
    all `total` rows (one call, so the draws do not depend on how the batch is split) and `x` takes its rows'."""
    rows = x.shape[0]
    params = module.forward_parameters(torch.Size((total, *x.shape[1:])))
    local = {
        key: value[offset : offset + rows] if key not in _BATCH_WIDE_PARAMS and torch.is_tensor(value) else value
        for key, value in params.items()
    }
    local["forward_input_shape"] = torch.tensor(x.shape)
    return module(x, params=local)


def _blur_kernel_size(image_size: int) -> int:
    """SimCLR's kernel: 10% of the image size, made odd (at least 3)."""
    return max(3, 2 * (int(0.1 * image_size) // 2) + 1)


class MCDViews(torch.nn.Module):
    r"""
    Makes the original and the augmented view of a batch of uint8 images (docs/method.md §1), on the images' device.

    Args:
        image_size (`int`): side of both (square) views, the vision tower's `image_size`.
        image_mean (`Sequence[float]`): per-channel mean used to normalise both views (the image processor's).
        image_std (`Sequence[float]`): per-channel std used to normalise both views.
        orig_scale (`tuple[float, float]`): area fraction range of the original view's crop.
        aug_scale (`tuple[float, float]`): area fraction range of the augmented view's crop.
        ratio (`tuple[float, float]`): aspect ratio (width / height) range of both crops.
        hflip_p (`float`): probability of a horizontal flip of the augmented view.
        color_jitter (`tuple[float, float, float, float]`): brightness, contrast, saturation, hue strengths.
        color_jitter_p (`float`): probability of colour jitter.
        grayscale_p (`float`): probability of grayscale.
        blur_sigma (`tuple[float, float]`): range of the Gaussian blur's sigma (pixels of the output view).
        blur_p (`float`): probability of Gaussian blur.

    Distributed training: pass the same `seed` on every rank with each rank's `row_offset` and the global
    `total_rows`; every sample then gets the views it would get in one process.
    """

    def __init__(
        self,
        image_size: int,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        orig_scale: tuple[float, float] = (0.5, 1.0),
        aug_scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip_p: float = 0.5,
        color_jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
        color_jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        blur_p: float = 0.5,
    ) -> None:
        super().__init__()
        if not isinstance(image_size, int) or image_size <= 0:
            raise ValueError(f"`image_size` must be a positive int, got {image_size!r}")
        _check_mean_std(image_mean, image_std)
        orig_scale = _check_range("orig_scale", orig_scale, 0.0, 1.0)
        aug_scale = _check_range("aug_scale", aug_scale, 0.0, 1.0)
        ratio = _check_range("ratio", ratio, 0.0, math.inf)
        blur_sigma = _check_range("blur_sigma", blur_sigma, 0.0, math.inf)
        if len(color_jitter) != 4 or any(c < 0 for c in color_jitter) or color_jitter[3] > 0.5:
            raise ValueError(
                "`color_jitter` must be 4 non-negative strengths (brightness, contrast, saturation, hue) "
                f"with hue <= 0.5, got {tuple(color_jitter)}"
            )
        self.image_size = image_size
        self.image_mean = tuple(float(m) for m in image_mean)
        self.image_std = tuple(float(s) for s in image_std)
        size = (image_size, image_size)
        # align_corners=False: torchvision's RandomResizedCrop resampling (SLIP / SimCLR).
        crop = dict(size=size, ratio=ratio, resample="bilinear", align_corners=False, same_on_batch=False)
        self.orig_crop = K.RandomResizedCrop(scale=orig_scale, **crop)
        self.aug_crop = K.RandomResizedCrop(scale=aug_scale, **crop)
        # ColorJitter (not ColorJiggle): torchvision's formulas, as in SimCLR.
        self.aug_pixels = torch.nn.Sequential(
            K.RandomHorizontalFlip(p=_check_probability("hflip_p", hflip_p)),
            K.ColorJitter(*color_jitter, p=_check_probability("color_jitter_p", color_jitter_p)),
            K.RandomGrayscale(p=_check_probability("grayscale_p", grayscale_p)),
            K.RandomGaussianBlur(_blur_kernel_size(image_size), blur_sigma, p=_check_probability("blur_p", blur_p)),
        )

    def _draw(self, images: torch.Tensor, offset: int, total: int, augmented: bool = True) -> ViewsOutput:
        x = images.float() / 255.0  # (B, 3, H, W) in [0, 1]
        orig = _apply_rows(self.orig_crop, x, offset, total)  # (B, 3, S, S)
        boxes = _boxes_from_params(self.orig_crop._params["src"]).to(images.device)  # (B, 4)
        if not augmented:  # the original crop's parameters are drawn first: they are the same either way
            pixel_values = _normalize(orig, self.image_mean, self.image_std)
            return ViewsOutput(
                pixel_values=pixel_values, aug_pixel_values=None, boxes=boxes, aug_boxes=None, overlap=None
            )
        aug = _apply_rows(self.aug_crop, x, offset, total)
        for module in self.aug_pixels:
            aug = _apply_rows(module, aug, offset, total)
        aug = aug.clamp(0.0, 1.0)  # float rounding back into [0, 1]
        # The boxes are the crops kornia actually applied, read from the parameters of these rows.
        aug_boxes = _boxes_from_params(self.aug_crop._params["src"]).to(images.device)  # (B, 4)
        return ViewsOutput(
            pixel_values=_normalize(orig, self.image_mean, self.image_std),
            aug_pixel_values=_normalize(aug, self.image_mean, self.image_std),
            boxes=boxes,
            aug_boxes=aug_boxes,
            overlap=crop_overlap(boxes, aug_boxes),
        )

    @torch.no_grad()
    def forward(
        self,
        images: torch.Tensor,
        seed: int | None = None,
        row_offset: int = 0,
        total_rows: int | None = None,
        augmented: bool = True,
    ) -> ViewsOutput:
        r"""
        Args:
            images (`torch.ByteTensor` of shape `(batch_size, 3, height, width)`):
                uint8 RGB images, on the device where the views should be made.
            seed (`int`, *optional*):
                Makes the views reproducible: the same seed gives bit-identical views on the same device.
                The caller's RNG streams are restored afterwards. `None` draws from the caller's RNG.
            row_offset (`int`, *optional*, defaults to 0), total_rows (`int`, *optional*):
                `images` are rows `row_offset .. row_offset + batch_size` of a global batch of `total_rows`
                (default: `batch_size`). The random parameters are drawn for the whole global batch and these
                rows take theirs, so with one seed a sample gets the same views however the global batch is
                split across processes (or micro-batches).
            augmented (`bool`, *optional*, defaults to `True`): `False` makes the original view only (the `clip`
                objective), the same as it is with the augmented one; the `aug_*` fields and `overlap` are then `None`.

        Returns:
            [`ViewsOutput`].
        """
        _check_images(images)
        total_rows = images.shape[0] if total_rows is None else total_rows
        if row_offset < 0 or row_offset + images.shape[0] > total_rows:
            raise ValueError(
                f"rows {row_offset}..{row_offset + images.shape[0]} do not fit a global batch of {total_rows}"
            )
        device = images.device
        # kornia samples its parameters on its "rng device" (CPU unless moved): sample where the images are.
        if self.orig_crop.device != device:
            self.to(device)
        if seed is None:
            return self._draw(images, row_offset, total_rows, augmented)
        forked = [] if device.type == "cpu" else [device]
        with torch.random.fork_rng(devices=forked, device_type=device.type):
            torch.random.default_generator.manual_seed(seed)
            if device.type != "cpu":
                # Seed only the images' device, not every device (torch.manual_seed would touch all GPUs).
                backend = torch.get_device_module(device.type)
                with backend.device(device):
                    backend.manual_seed(seed)
            return self._draw(images, row_offset, total_rows, augmented)


__all__ = ["MCDViews", "ViewsOutput", "crop_overlap"]
