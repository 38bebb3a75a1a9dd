# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Misalignment analysis: does the teacher see how much an augmented view still shows of its caption?

MCD's premise (docs/method.md §1, §3) is that a random crop misaligns an image with its caption by a continuous
amount, and that the EMA teacher's distance ratios measure it; L_pos regresses the student on exactly
`log d(v̄, ū̃) − log d(v̄, ū)`. This module computes that log ratio for every pair of an evaluation set, under
the training views (`MCDViews`, seeded), and puts it next to the physical misalignment:

- on the built-in synthetic scenes, the true fraction of the described objects left in the augmented crop
  (`synthetic.visible_fraction`);
- on any captioned images, the overlap of the two crop boxes (`data.augmentation.crop_overlap`).

A teacher that learned the misalignment gives a negative rank correlation: less left in the crop, augmented view
further from the caption. The same numbers for a model without a teacher (an exported `MCDModel`, a `CLIPModel`)
use the model itself as the encoder, which is the baseline to compare with. A checkpoint of a run whose objective
never read the teacher (`clip`, `mpnce`) still holds one, never updated since it was copied from the initial
student: its student is analysed instead, and the result says so (`encoder="student"`, `note`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.augmentation import MCDViews
from ..data.decoding import resize_center_crop
from ..modeling_mcd import encode_tower
from ..pretraining.model import MCDForPreTraining


@dataclass
class MisalignmentResult:
    r"""
    Per-pair log distance ratios next to the physical misalignment, and their rank correlation.

    Args:
        log_ratios (`list[float]`): `log d(v̄, ū̃) − log d(v̄, ū)` for each pair.
        misalignment (`list[float]`): what the augmented view still shows (visible fraction or crop overlap).
        measure (`str`): `"visible_fraction"` or `"crop_overlap"`.
        encoder (`str`): `"teacher"` (an EMA teacher), `"student"` (the student of a checkpoint whose teacher was
            never trained) or `"model"` (a dual encoder without a teacher).
        note (`str`, *optional*): why the encoder is not the one asked for.
        model (`str`, *optional*), data (`str`, *optional*): what was analysed, kept in the JSON.
    """

    log_ratios: list[float]
    misalignment: list[float]
    measure: str
    encoder: str
    spearman: float = field(init=False)
    note: str | None = None
    model: str | None = None
    data: str | None = None

    def __post_init__(self):
        self.spearman = spearman(self.log_ratios, self.misalignment)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "data": self.data,
            "measure": self.measure,
            "encoder": self.encoder,
            "note": self.note,
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


def _encoder_name(model: nn.Module, use_teacher: bool) -> str:
    if isinstance(model, MCDForPreTraining):
        return "teacher" if use_teacher else "student"
    return "model"


def _image_encoder(model: nn.Module, use_teacher: bool = True):
    """(B, 3, S, S) -> (B, P) normalised: the EMA teacher of a pretraining model (unless `use_teacher=False`: its
    student), else the model's own tower."""
    if isinstance(model, MCDForPreTraining) and use_teacher:
        config = model.config

        def teacher(pixel_values):
            out = encode_tower(
                model.teacher_vision_model, model.teacher_visual_projection, config.vision_pooling,
                pixel_values=pixel_values,
            )  # fmt: skip
            return nn.functional.normalize(out.pooler_output, dim=-1)

        return teacher, "teacher"

    target = model.mcd if isinstance(model, MCDForPreTraining) else model

    def own(pixel_values):
        out = target.get_image_features(pixel_values=pixel_values)
        return nn.functional.normalize(getattr(out, "pooler_output", out), dim=-1)

    return own, _encoder_name(model, use_teacher)


def _text_encoder(model: nn.Module, use_teacher: bool = True):
    """Token ids -> (B, P) normalised text embeddings: v̄ (the student's v, or the EMA text tower's)."""
    target = model.mcd if isinstance(model, MCDForPreTraining) else model
    if isinstance(model, MCDForPreTraining) and model.teacher_text == "ema" and use_teacher:
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
    use_teacher: bool = True,
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
        use_teacher (`bool`, *optional*, defaults to `True`): `False` encodes with the student of an
            `MCDForPreTraining` (its teacher was never trained).

    Returns:
        `(log_ratios (N,), aug_boxes (N, 4), overlap (N,))`: the boxes in base-image pixels, and the share of the
        original view the augmented one still shows (`data.augmentation.crop_overlap`).
    """
    model.eval()
    encode_image, _ = _image_encoder(model, use_teacher)
    encode_text = _text_encoder(model, use_teacher)
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
    model: nn.Module,
    tokenizer,
    config,
    views: MCDViews,
    base_size: int,
    num_samples: int = 500,
    seed: int = 0,
    use_teacher: bool = True,
) -> MisalignmentResult:
    """On the synthetic test scenes: the log ratios against the visible fraction of the described objects."""
    from ..synthetic import render_sample, visible_fraction

    samples = [render_sample(config, "test", i) for i in range(num_samples)]
    images = torch.stack([resize_center_crop(sample["image"], base_size) for sample in samples])  # (N, 3, B, B)
    captions = [s["caption"] for s in samples]
    ratios, aug_boxes, _ = log_distance_ratios(model, tokenizer, images, captions, views, seed, use_teacher=use_teacher)
    scale = config.image_size / base_size  # the scenes are square: the base image is a plain rescale
    visible = [
        visible_fraction(sample["objects"], tuple(float(v) * scale for v in box))
        for sample, box in zip(samples, aug_boxes.tolist())
    ]
    return MisalignmentResult(ratios.tolist(), visible, "visible_fraction", _encoder_name(model, use_teacher))


def crop_misalignment(
    model: nn.Module,
    tokenizer,
    images: torch.Tensor,
    captions: list[str],
    views: MCDViews,
    seed: int = 0,
    use_teacher: bool = True,
) -> MisalignmentResult:
    """On any captioned images: the log ratios against the overlap of the two crop boxes."""
    ratios, _, overlap = log_distance_ratios(model, tokenizer, images, captions, views, seed, use_teacher=use_teacher)
    return MisalignmentResult(ratios.tolist(), overlap.tolist(), "crop_overlap", _encoder_name(model, use_teacher))


def save_result(result: MisalignmentResult, output_dir: str | Path, name: str) -> dict[str, str]:
    r"""
    Write `{name}_misalignment.json` and a scatter plot `{name}_misalignment.png` (log ratio against the measure).

    Returns:
        `dict` with the paths written.
    """
    paths = result_paths(output_dir, name)
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    json_path, png_path = Path(paths["json"]), Path(paths["png"])
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
    figure.savefig(png_path, dpi=120)
    plt.close(figure)
    return paths


def result_paths(output_dir: str | Path, name: str) -> dict[str, str]:
    """The files [`save_result`] writes for `name`."""
    return {kind: str(Path(output_dir) / f"{name}_misalignment.{kind}") for kind in ("json", "png")}


def load_for_analysis(path: str | Path) -> tuple[nn.Module, object]:
    """A training checkpoint (its EMA teacher is analysed) or any saved dual encoder, and its tokenizer."""
    from safetensors import safe_open
    from transformers import AutoModel

    from .features import load_tokenizer

    weights = Path(path) / "model.safetensors"
    keys = list(safe_open(str(weights), "pt").keys()) if weights.is_file() else []
    if any(key.startswith("teacher_") for key in keys):
        # A run with `--teacher_text ema` saved a teacher text tower too: build the model that holds it.
        teacher_text = "ema" if any(key.startswith("teacher_text_model.") for key in keys) else "stopgrad"
        model = MCDForPreTraining.from_pretrained(path, teacher_text=teacher_text)
    else:
        model = AutoModel.from_pretrained(path, use_safetensors=True)
    return model.eval(), load_tokenizer(path)


def teacher_was_trained(path: str | Path) -> bool | None:
    r"""
    Whether the EMA teacher of a training checkpoint was ever updated, read from the Trainer's log in
    `trainer_state.json`: every training log of an objective that reads the teacher holds the EMA `momentum` (or a
    distillation term); `clip` and `mpnce` runs log neither, and their teacher is still the initial student.

    Returns:
        `True`, `False`, or `None` when the checkpoint holds no training log to tell.
    """
    state = Path(path) / "trainer_state.json"
    try:
        history = json.loads(state.read_text(encoding="utf-8")).get("log_history", [])
    except (OSError, ValueError, AttributeError):
        return None
    training_logs = [entry for entry in history if isinstance(entry, dict) and "loss" in entry]
    if not training_logs:
        return None
    return any("momentum" in entry or "distill_loss" in entry for entry in training_logs)


def output_name(path: str | Path, data: str, encoder: str) -> str:
    """`<run>-<folder>_<data>_<encoder>`: the checkpoints of two runs (`run-a/checkpoint-4`, `run-b/checkpoint-4`)
    and the teacher and student of one never share a name."""
    folder = Path(path).resolve()
    model = f"{folder.parent.name}-{folder.name}" if folder.parent.name else folder.name
    if data == "synthetic":
        source = "synthetic"
    else:
        source = Path(data).resolve()
        source = source.name if source.is_dir() else source.parent.name
    return f"{model}_{source}_{encoder}"


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
    overwrite: bool = False,
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
        overwrite (`bool`, *optional*): replace the files of an earlier analysis of the same name; without it they
            are a `ValueError`, raised before anything is computed.
    """
    model, tokenizer = load_for_analysis(path)
    use_teacher, note = True, None
    if isinstance(model, MCDForPreTraining) and teacher_was_trained(path) is False:
        use_teacher = False
        note = (
            f"{path} was trained without a teacher term (objective clip or mpnce: its Trainer log holds no EMA "
            "momentum), so its teacher is the untrained initial copy: the student is analysed instead"
        )
    name = output_name(path, data, _encoder_name(model, use_teacher))
    existing = [p for p in (result_paths(output_dir, name).values()) if Path(p).exists()]
    if existing and not overwrite:
        raise ValueError(
            f"{existing[0]} exists (an earlier analysis); give another --output-dir, or --overwrite to replace it"
        )
    config = model.config
    image_size = config.vision_config.image_size
    base_size = base_image_size or int(round(image_size * 8 / 7))  # the training script's default base size
    views = MCDViews(image_size, image_mean, image_std)
    if data == "synthetic":
        from ..synthetic import SyntheticConfig

        synthetic = SyntheticConfig(
            image_size=synthetic_image_size, num_train=1, num_validation=1, num_test=num_samples
        )
        result = synthetic_misalignment(model, tokenizer, synthetic, views, base_size, num_samples, seed, use_teacher)
    else:
        from .data import load_captioned_images

        captioned = load_captioned_images(data, split="test")
        count = min(num_samples, len(captioned.images))
        first = {}
        for caption, image in zip(captioned.captions, captioned.text_to_image.tolist()):
            first.setdefault(image, caption)
        images = torch.stack([resize_center_crop(captioned.images[i].convert("RGB"), base_size) for i in range(count)])
        result = crop_misalignment(model, tokenizer, images, [first[i] for i in range(count)], views, seed, use_teacher)
    result.note, result.model, result.data = note, str(path), str(data)
    return result, save_result(result, output_dir, name)


__all__ = [
    "MisalignmentResult",
    "analyze",
    "crop_misalignment",
    "load_for_analysis",
    "log_distance_ratios",
    "output_name",
    "result_paths",
    "save_result",
    "spearman",
    "synthetic_misalignment",
    "teacher_was_trained",
]
