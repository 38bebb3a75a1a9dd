"""The two views of docs/method.md §1: shapes, reproducibility, per-sample randomness, crop boxes, eval transform."""

from __future__ import annotations

import pytest
import torch

from modeling_mcd.data.augmentation import MCDViews, crop_overlap

SIZE = 21
MEAN = (0.48, 0.46, 0.41)
STD = (0.27, 0.26, 0.28)


def random_images(batch: int = 5, height: int = 37, width: int = 43, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, height, width), generator=gen, dtype=torch.uint8)


def coordinate_images(batch: int, height: int, width: int) -> torch.Tensor:
    """uint8 images whose red channel is the pixel's x and green channel its y (so crops can be decoded)."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    image = torch.stack([xs, ys, torch.zeros_like(xs)]).to(torch.uint8)  # (3, H, W)
    return image.expand(batch, -1, -1, -1).contiguous()


def unnormalise(x: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    return x * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)


def naive_overlap(boxes: torch.Tensor, aug_boxes: torch.Tensor) -> list[float]:
    out = []
    for (x0, y0, x1, y1), (a0, b0, a1, b1) in zip(boxes.tolist(), aug_boxes.tolist()):
        w = max(0.0, min(x1, a1) - max(x0, a0))
        h = max(0.0, min(y1, b1) - max(y0, b0))
        out.append(w * h / ((x1 - x0) * (y1 - y0)))
    return out


@pytest.fixture(scope="module")
def views() -> MCDViews:
    return MCDViews(SIZE, MEAN, STD)


def test_views_shapes_dtypes_ranges_and_boxes(views):
    images = random_images()
    out = views(images, seed=0)
    for pixels in (out.pixel_values, out.aug_pixel_values):
        assert pixels.shape == (5, 3, SIZE, SIZE) and pixels.dtype == torch.float32
        raw = unnormalise(pixels)
        assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
    for boxes, min_area in ((out.boxes, 0.5), (out.aug_boxes, 0.08)):
        assert boxes.shape == (5, 4)
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 43).all() and (boxes[:, 3] <= 37).all()
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        # Rounding of the crop side can take a pixel off the nominal minimum area.
        assert (area >= min_area * 37 * 43 * 0.9).all() and (area <= 37 * 43).all()
    assert out.overlap.shape == (5,)
    torch.testing.assert_close(out.overlap, torch.tensor(naive_overlap(out.boxes, out.aug_boxes)))


def test_same_seed_same_views_different_seed_different(views):
    images = random_images()
    a, b, c = views(images, seed=7), views(images, seed=7), views(images, seed=8)
    for field in ("pixel_values", "aug_pixel_values", "boxes", "aug_boxes", "overlap"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert not torch.equal(a.boxes, c.boxes)
    assert not torch.equal(a.aug_pixel_values, c.aug_pixel_values)


def test_seeded_forward_leaves_global_rng_untouched(views):
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    views(random_images(), seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(torch.rand(4), expected)


def test_unseeded_forward_draws_from_global_rng(views):
    images = random_images()
    torch.manual_seed(11)
    a = views(images)
    torch.manual_seed(11)
    b = views(images)
    assert torch.equal(a.aug_pixel_values, b.aug_pixel_values) and torch.equal(a.boxes, b.boxes)


def test_randomness_is_independent_per_sample(views):
    images = random_images(batch=1).expand(7, -1, -1, -1).contiguous()
    out = views(images, seed=1)
    # Identical inputs, yet every sample gets its own crops and its own augmented pixels.
    assert len({tuple(b) for b in out.boxes.tolist()}) > 1
    assert len({tuple(b) for b in out.aug_boxes.tolist()}) > 1
    aug = out.aug_pixel_values
    assert all(not torch.equal(aug[i], aug[j]) for i in range(7) for j in range(i + 1, 7))


@pytest.mark.parametrize("hflip_p", [0.0, 1.0])
def test_boxes_match_the_pixels_of_the_crops(hflip_p):
    """Decode the crops of a coordinate image: their corner pixels must sit at the box corners."""
    height, width = 47, 61
    views = MCDViews(SIZE, (0.0,) * 3, (1.0,) * 3, hflip_p=hflip_p, color_jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
    out = views(coordinate_images(9, height, width), seed=5)
    for pixels, boxes, flipped in (
        (out.pixel_values, out.boxes, False),
        (out.aug_pixel_values, out.aug_boxes, hflip_p == 1.0),
    ):
        coords = pixels * 255  # (B, 3, S, S): channel 0 = x, channel 1 = y of the sampled input pixel
        left, right = (
            (coords[:, 0, 0, -1], coords[:, 0, 0, 0]) if flipped else (coords[:, 0, 0, 0], coords[:, 0, 0, -1])
        )
        top, bottom = coords[:, 1, 0, 0], coords[:, 1, -1, 0]
        # Boxes are pixel edges (x1, y1 exclusive). Half-pixel resampling of a w-pixel crop to SIZE samples
        # output pixel 0 at x0 + 0.5 * w / SIZE - 0.5 (clamped to the crop), and the ramp is linear, so the
        # decoded corners are exact: an off-by-one box would be off by 1.
        inset_x = ((boxes[:, 2] - boxes[:, 0]) * 0.5 / SIZE - 0.5).clamp(min=0)
        inset_y = ((boxes[:, 3] - boxes[:, 1]) * 0.5 / SIZE - 0.5).clamp(min=0)
        torch.testing.assert_close(left, boxes[:, 0] + inset_x, atol=1e-3, rtol=0)
        torch.testing.assert_close(right, boxes[:, 2] - 1 - inset_x, atol=1e-3, rtol=0)
        torch.testing.assert_close(top, boxes[:, 1] + inset_y, atol=1e-3, rtol=0)
        torch.testing.assert_close(bottom, boxes[:, 3] - 1 - inset_y, atol=1e-3, rtol=0)


def test_crop_overlap_against_naive_and_edge_cases():
    gen = torch.Generator().manual_seed(3)
    corners = torch.rand(11, 2, 2, generator=gen) * 50
    boxes = torch.cat([corners.min(1).values, corners.max(1).values + 1], dim=-1)  # (11, 4)
    corners = torch.rand(11, 2, 2, generator=gen) * 50
    aug_boxes = torch.cat([corners.min(1).values, corners.max(1).values + 1], dim=-1)
    torch.testing.assert_close(crop_overlap(boxes, aug_boxes), torch.tensor(naive_overlap(boxes, aug_boxes)))
    torch.testing.assert_close(crop_overlap(boxes, boxes), torch.ones(11))
    inner = torch.tensor([[2.0, 2.0, 4.0, 4.0]])
    outer = torch.tensor([[0.0, 0.0, 8.0, 8.0]])
    assert crop_overlap(inner, outer).item() == 1.0  # the whole original view is still shown
    assert crop_overlap(outer, inner).item() == 4 / 64
    assert crop_overlap(inner, torch.tensor([[5.0, 5.0, 9.0, 9.0]])).item() == 0.0
    with pytest.raises(ValueError, match="aug_boxes"):
        crop_overlap(boxes, aug_boxes[:3])
    with pytest.raises(ValueError, match="boxes"):
        crop_overlap(boxes[:, :3], aug_boxes[:, :3])


def test_bad_inputs_raise_clear_errors(views):
    with pytest.raises(ValueError, match="uint8"):
        views(random_images().float())
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        views(random_images()[:, :2])
    with pytest.raises(ValueError, match="uint8"):
        views(random_images()[0])  # (3, H, W): one image, not a batch
    for kwargs, field in [
        (dict(image_size=0), "image_size"),
        (dict(image_mean=(0.5, 0.5)), "image_mean"),
        (dict(image_std=(0.5, 0.0, 0.5)), "image_std"),
        (dict(orig_scale=(0.5, 1.2)), "orig_scale"),
        (dict(aug_scale=(0.9, 0.1)), "aug_scale"),
        (dict(ratio=(0.0, 1.0)), "ratio"),
        (dict(hflip_p=1.5), "hflip_p"),
        (dict(color_jitter=(0.4, 0.4, 0.4)), "color_jitter"),
        (dict(color_jitter_p=-0.1), "color_jitter_p"),
        (dict(grayscale_p=2.0), "grayscale_p"),
        (dict(blur_sigma=(0.0, 2.0)), "blur_sigma"),
        (dict(blur_p=1.1), "blur_p"),
    ]:
        args = dict(image_size=SIZE, image_mean=MEAN, image_std=STD) | kwargs
        with pytest.raises(ValueError, match=field):
            MCDViews(**args)


def test_split_global_batch_gets_the_views_of_one_batch():
    """With one seed, the rows of a global batch get the same views however the batch is split (processes,
    micro-batches): each part draws the parameters of all rows and takes its own."""
    views = MCDViews(16, (0.5,) * 3, (0.5,) * 3)
    images = torch.randint(0, 256, (7, 3, 21, 19), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    whole = views(images, seed=11)
    for bounds in ((0, 3, 7), (0, 1, 5, 7)):
        parts = [views(images[lo:hi], seed=11, row_offset=lo, total_rows=7) for lo, hi in zip(bounds[:-1], bounds[1:])]
        for name in ("pixel_values", "aug_pixel_values", "boxes", "aug_boxes", "overlap"):
            joined = torch.cat([getattr(part, name) for part in parts])
            torch.testing.assert_close(joined, getattr(whole, name), rtol=0, atol=0, msg=name)
    assert not torch.equal(views(images, seed=12).aug_pixel_values, whole.aug_pixel_values)
    with pytest.raises(ValueError, match="do not fit"):
        views(images, seed=11, row_offset=1, total_rows=7)


def test_original_view_alone_is_the_original_view_of_both():
    views = MCDViews(16, (0.5,) * 3, (0.5,) * 3)
    images = torch.randint(0, 256, (5, 3, 21, 19), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    both, alone = views(images, seed=4), views(images, seed=4, augmented=False)
    torch.testing.assert_close(alone.pixel_values, both.pixel_values, rtol=0, atol=0)
    torch.testing.assert_close(alone.boxes, both.boxes, rtol=0, atol=0)
    assert alone.aug_pixel_values is None and alone.aug_boxes is None and alone.overlap is None
