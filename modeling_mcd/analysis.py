# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Misalignment analysis: does the teacher see how much an augmented view still shows of its caption?

MCD's premise (docs/method.md §1, §3) is that a random crop misaligns an image with its caption by a continuous
amount, and that the EMA teacher's distance ratios measure it; L_pos regresses the student on exactly
`log d(v̄, ū̃) − log d(v̄, ū)`. This module computes that log ratio for every pair of an evaluation set, under
the training views (`MCDViews`, seeded), and puts it next to the physical misalignment:

- on the built-in synthetic scenes, the true fraction of the described objects left in the augmented crop
  (`synthetic.visible_fraction`);
- on any captioned images, the overlap of the two crop boxes (`augmentation.crop_overlap`).

A teacher that learned the misalignment gives a negative rank correlation: less left in the crop, augmented view
further from the caption. The same numbers for a model without a teacher (an exported `MCDModel`, a `CLIPModel`)
use the model itself as the encoder, which is the baseline to compare with.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .augmentation import MCDViews
from .data.decoding import resize_center_crop
from .modeling_mcd import encode_tower
from .pretraining import MCDForPreTraining


@dataclass
class MisalignmentResult:
    r"""
    Per-pair log distance ratios next to the physical misalignment, and their rank correlation.

    Args:
        log_ratios (`list[float]`): `log d(v̄, ū̃) − log d(v̄, ū)` for each pair.
        misalignment (`list[float]`): what the augmented view still shows (visible fraction or crop overlap).
        measure (`str`): `"visible_fraction"` or `"crop_overlap"`.
        encoder (`str`): `"teacher"` (an EMA teacher) or `"model"` (a dual encoder without one).
    """

    log_ratios: list[float]
    misalignment: list[float]
    measure: str
    encoder: str
    spearman: float = field(init=False)

    def __post_init__(self):
        self.spearman = spearman(self.log_ratios, self.misalignment)

    def to_dict(self) -> dict:
        return {
            "measure": self.measure,
            "encoder": self.encoder,
            "num_pairs": len(self.log_ratios),
            "spearman": self.spearman,
            "log_ratios": self.log_ratios,
            "misalignment": self.misalignment,
        }


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties), NaN when either side is constant."""
    from scipy.stats import spearmanr

    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"need two equally long series of >= 3 values, got {len(x)} and {len(y)}")
    if len(set(x)) < 2 or len(set(y)) < 2:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def _image_encoder(model: nn.Module):
    """(B, 3, S, S) -> (B, P) normalised: the EMA teacher of a pretraining model, else the model's own tower."""
    if isinstance(model, MCDForPreTraining):
        config = model.config

        def teacher(pixel_values):
            out = encode_tower(
                model.teacher_vision_model, model.teacher_visual_projection, config.vision_pooling,
                pixel_values=pixel_values,
            )  # fmt: skip
            return nn.functional.normalize(out.pooler_output, dim=-1)

        return teacher, "teacher"

    def own(pixel_values):
        out = model.get_image_features(pixel_values=pixel_values)
        return nn.functional.normalize(getattr(out, "pooler_output", out), dim=-1)

    return own, "model"


def _text_encoder(model: nn.Module):
    """Token ids -> (B, P) normalised text embeddings: v̄ (the student's v, or the EMA text tower's)."""
    target = model.mcd if isinstance(model, MCDForPreTraining) else model
    if isinstance(model, MCDForPreTraining) and model.teacher_text == "ema":
        return lambda **inputs: model._teacher_text_embeds(
            inputs["input_ids"], inputs.get("attention_mask"), inputs.get("token_type_ids")
        )

    def student(**inputs):
        out = target.get_text_features(**inputs)
        return nn.functional.normalize(getattr(out, "pooler_output", out), dim=-1)

    return student


@torch.no_grad()
def log_distance_ratios(
    model: nn.Module,
    tokenizer,
    images: torch.Tensor,
    captions: list[str],
    views: MCDViews,
    seed: int = 0,
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""
    The teacher's (or the model's) `log d(v̄, ū̃) − log d(v̄, ū)` for each pair, and the pairs' augmented crop boxes.

    Args:
        model (`nn.Module`): an `MCDForPreTraining` (its EMA teacher is used) or any dual encoder.
        tokenizer: the model's tokenizer.
        images (`torch.ByteTensor` of shape `(N, 3, H, W)`): uint8 base images, as the collator makes them.
        captions (`list[str]`): one caption per image.
        views (`MCDViews`): the training views (same crop scales as the run).
        seed (`int`, *optional*): the views' seed; the whole set is one global batch of the views.
        batch_size (`int`, *optional*): pairs encoded at once.

    Returns:
        `(log_ratios (N,), aug_boxes (N, 4), overlap (N,))`: the boxes in base-image pixels, and the share of the
        original view the augmented one still shows (`augmentation.crop_overlap`).
    """
    model.eval()
    encode_image, _ = _image_encoder(model)
    encode_text = _text_encoder(model)
    accepted = {"input_ids", "attention_mask", "token_type_ids"}
    ratios, boxes, overlaps = [], [], []
    total = images.shape[0]
    for start in range(0, total, batch_size):
        chunk = images[start : start + batch_size]
        out = views(chunk, seed=seed, row_offset=start, total_rows=total)
        original, augmented = encode_image(out.pixel_values), encode_image(out.aug_pixel_values)  # (b, P)
        tokens = tokenizer(captions[start : start + batch_size], padding=True, truncation=True, return_tensors="pt")
        text = encode_text(**{k: v for k, v in tokens.items() if k in accepted})  # (b, P)
        d_orig = (text - original).norm(dim=-1).clamp(min=1e-6)  # (b,)
        d_aug = (text - augmented).norm(dim=-1).clamp(min=1e-6)
        ratios.append(torch.log(d_aug) - torch.log(d_orig))
        boxes.append(out.aug_boxes)
        overlaps.append(out.overlap)
    return torch.cat(ratios).float(), torch.cat(boxes), torch.cat(overlaps)


def synthetic_misalignment(
    model: nn.Module, tokenizer, config, views: MCDViews, base_size: int, num_samples: int = 500, seed: int = 0
) -> MisalignmentResult:
    """On the synthetic test scenes: the log ratios against the visible fraction of the described objects."""
    from .synthetic import render_sample, visible_fraction

    samples = [render_sample(config, "test", i) for i in range(num_samples)]
    images = torch.stack([resize_center_crop(sample["image"], base_size) for sample in samples])  # (N, 3, B, B)
    ratios, aug_boxes, _ = log_distance_ratios(model, tokenizer, images, [s["caption"] for s in samples], views, seed)
    scale = config.image_size / base_size  # the scenes are square: the base image is a plain rescale
    visible = [
        visible_fraction(sample["objects"], tuple(float(v) * scale for v in box))
        for sample, box in zip(samples, aug_boxes.tolist())
    ]
    return MisalignmentResult(ratios.tolist(), visible, "visible_fraction", _image_encoder(model)[1])


def crop_misalignment(
    model: nn.Module, tokenizer, images: torch.Tensor, captions: list[str], views: MCDViews, seed: int = 0
) -> MisalignmentResult:
    """On any captioned images: the log ratios against the overlap of the two crop boxes."""
    ratios, _, overlap = log_distance_ratios(model, tokenizer, images, captions, views, seed)
    return MisalignmentResult(ratios.tolist(), overlap.tolist(), "crop_overlap", _image_encoder(model)[1])


def save_result(result: MisalignmentResult, output_dir: str | Path, name: str) -> dict[str, str]:
    r"""
    Write `{name}_misalignment.json` and a scatter plot `{name}_misalignment.png` (log ratio against the measure).

    Returns:
        `dict` with the paths written.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / f"{name}_misalignment.json"
    json_path.write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 4))
    x = np.asarray(result.misalignment)
    jitter = (
        np.random.default_rng(0).uniform(-0.015, 0.015, size=x.shape) if result.measure == "visible_fraction" else 0
    )
    axis.scatter(x + jitter, result.log_ratios, s=6, alpha=0.5)
    axis.set_xlabel(
        {"visible_fraction": "described objects left in the augmented crop", "crop_overlap": "crop overlap"}[
            result.measure
        ]
    )
    axis.set_ylabel(f"{result.encoder}: log d(v, aug) - log d(v, orig)")
    rho = "n/a" if math.isnan(result.spearman) else f"{result.spearman:.3f}"
    axis.set_title(f"{name}: Spearman {rho} ({len(x)} pairs)")
    figure.tight_layout()
    png_path = output_dir / f"{name}_misalignment.png"
    figure.savefig(png_path, dpi=120)
    plt.close(figure)
    return {"json": str(json_path), "png": str(png_path)}


def load_for_analysis(path: str | Path) -> tuple[nn.Module, object]:
    """A training checkpoint (its EMA teacher is analysed) or any saved dual encoder, and its tokenizer."""
    from safetensors import safe_open
    from transformers import AutoModel, AutoTokenizer

    weights = Path(path) / "model.safetensors"
    keys = list(safe_open(str(weights), "pt").keys()) if weights.is_file() else []
    if any(key.startswith("teacher_") for key in keys):
        model = MCDForPreTraining.from_pretrained(path)
    else:
        model = AutoModel.from_pretrained(path, use_safetensors=True)
    return model.eval(), AutoTokenizer.from_pretrained(path)


def analyze(
    path: str | Path,
    data: str,
    output_dir: str | Path,
    num_samples: int = 500,
    seed: int = 0,
    synthetic_image_size: int = 64,
    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5),
    image_std: tuple[float, ...] = (0.5, 0.5, 0.5),
    base_image_size: int | None = None,
) -> tuple[MisalignmentResult, dict[str, str]]:
    r"""
    `mcd analyze`: the misalignment analysis of a checkpoint or a saved model on `data`, written to `output_dir`.

    Args:
        path (`str`): a training checkpoint (`checkpoint-N`, with the teacher) or a saved dual encoder folder.
        data (`str`): `"synthetic"` (the built-in scenes' test split) or a `captions.jsonl` (its test split; the
            first caption of each image).
        output_dir (`str`): where the JSON and the PNG go.
        num_samples (`int`): pairs analysed.
        seed (`int`): the views' seed.
        synthetic_image_size (`int`): side of the synthetic scenes the model trained on.
        image_mean, image_std: the views' normalisation (the run's image processor's).
        base_image_size (`int`, *optional*): the run's `--base_image_size`; default: the training script's default,
            8/7 of the model's image size.
    """
    model, tokenizer = load_for_analysis(path)
    config = model.config
    image_size = config.vision_config.image_size
    base_size = base_image_size or int(round(image_size * 8 / 7))  # the training script's default base size
    views = MCDViews(image_size, image_mean, image_std)
    if data == "synthetic":
        from .synthetic import SyntheticConfig

        synthetic = SyntheticConfig(
            image_size=synthetic_image_size, num_train=1, num_validation=1, num_test=num_samples
        )
        result = synthetic_misalignment(model, tokenizer, synthetic, views, base_size, num_samples, seed)
    else:
        from .evaluation.data import load_captioned_images

        captioned = load_captioned_images(data, split="test")
        count = min(num_samples, len(captioned.images))
        first = {}
        for caption, image in zip(captioned.captions, captioned.text_to_image.tolist()):
            first.setdefault(image, caption)
        images = torch.stack([resize_center_crop(captioned.images[i].convert("RGB"), base_size) for i in range(count)])
        result = crop_misalignment(model, tokenizer, images, [first[i] for i in range(count)], views, seed)
    name = f"{Path(path).name}_{'synthetic' if data == 'synthetic' else Path(data).parent.name}"
    return result, save_result(result, output_dir, name)


__all__ = [
    "MisalignmentResult",
    "analyze",
    "load_for_analysis",
    "crop_misalignment",
    "log_distance_ratios",
    "save_result",
    "spearman",
    "synthetic_misalignment",
]
