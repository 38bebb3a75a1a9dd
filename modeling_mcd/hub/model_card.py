# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""The model card of an exported MCD model, rendered with `huggingface_hub.ModelCard` from the Jinja template in
`hub_cards/` (installed as the package data `modeling_mcd.hub_cards`); its metadata holds a `model-index` built
with `huggingface_hub.EvalResult` from every evaluation result of the run (`modeling_mcd.hub.run_record`).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers import AutoConfig, PretrainedConfig

from ..configuration_mcd import MCDConfig
from .run_record import RECORD_NAME, TrainingRecord, check_repo_id

#: The card template, found wherever the package is installed (a wheel, an editable checkout).
DEFAULT_TEMPLATE = Path(str(files("modeling_mcd.hub_cards") / "mcd_model_card.md.jinja"))


#: Config `model_type` of the stock export (`modeling_mcd.export`).
STOCK_MODEL_TYPE = "vision-text-dual-encoder"

#: Evaluation kinds (the middle of the metric names `{dataset}_{kind}_{metric}`) -> Hub task type and name.
EVAL_TASKS = {
    "zero_shot": ("zero-shot-image-classification", "Zero-shot image classification"),
    "retrieval": ("image-text-retrieval", "Image-text retrieval"),
    "linear_probe": ("image-classification", "Linear probe"),
    "compositionality": ("image-text-matching", "Compositionality (SugarCrepe)"),
}
_METRIC_NAME = re.compile(rf"(?P<dataset>.+?)_(?P<kind>{'|'.join(EVAL_TASKS)})_(?P<metric>.+)")


# ---------------------------------------------------------------------------------------- evaluation
def _describe_metric(metric: str) -> tuple[str, str]:
    """A metric's Hub id (`metric_type`) and its pretty name."""
    if match := re.fullmatch(r"top(\d+)", metric):
        k = int(match[1])
        return ("accuracy" if k == 1 else f"top_{k}_accuracy"), f"top-{k} accuracy"
    if "_R@" in metric:
        direction, k = metric.split("_R@", 1)
        return "recall", f"{direction.replace('_to_', '→')} R@{k}"
    return metric, metric.replace("_", " ")


def eval_results(record: TrainingRecord) -> list[EvalResult]:
    """Every metric of `record` named `{dataset}_{kind}_{metric}`, as a `huggingface_hub.EvalResult` (the card's
    `model-index`); counts (`num_*`) and metrics of other names stay out."""
    results = []
    for name, value in record.metrics.items():
        match = _METRIC_NAME.fullmatch(name)
        if match is None or match["metric"].startswith("num_") or not isinstance(value, (int, float)):
            continue
        task_type, task_name = EVAL_TASKS[match["kind"]]
        metric_type, metric_name = _describe_metric(match["metric"])
        results.append(
            EvalResult(
                task_type=task_type,
                task_name=task_name,
                dataset_type=match["dataset"],
                dataset_name=match["dataset"],
                dataset_split=record.splits.get(f"{match['dataset']}_{match['kind']}"),
                metric_type=metric_type,
                metric_name=metric_name,
                metric_value=float(value),
            )
        )
    return results


def _dataset_and_split(task: str, args: Mapping[str, Any]) -> tuple[str, str | None]:
    """The dataset name and split of one `mcd eval` result, from the arguments it recorded."""
    from ..evaluation.datasets import folder_dataset_and_split

    data = Path(str(args.get("data", "data")))
    if task == "retrieval":  # a captions file names its dataset by its folder, as a run's retrieval task does
        return (data.parent.name if data.suffix else data.name), args.get("split")
    name, split = folder_dataset_and_split(data)
    if task == "compositionality":
        return (data.stem if data.suffix else data.name), None
    if task == "linear_probe":
        return name, args.get("test_split")
    return (args.get("dataset") or name), (args.get("split") or split)


def load_results(path: str | os.PathLike) -> tuple[dict[str, float], dict[str, float], dict[str, str | None]]:
    r"""
    Read evaluation results for a card: the JSON that `mcd eval ... --output-json` writes, or a run's
    `eval_results.json` / `all_results.json` (metrics named `{dataset}_{kind}_{metric}`, chance levels
    prefixed `chance_`; other entries such as `train_runtime` are left out). The chance levels `mcd eval` saves
    come along.

    Returns:
        `(metrics, chance, splits)` as [`TrainingRecord`] holds them.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"--results {path}: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"--results {path}: expected a JSON object")
    if "task" in data and isinstance(data.get("metrics"), dict):  # `mcd eval --output-json`
        kind = str(data["task"]).replace("-", "_")
        if kind not in EVAL_TASKS:
            raise ValueError(f"--results {path}: unknown task {data['task']!r}; known: {sorted(EVAL_TASKS)}")
        dataset, split = _dataset_and_split(kind, data.get("args") or {})
        metrics = {
            f"{dataset}_{kind}_{name}": float(value)
            for name, value in data["metrics"].items()
            if not name.startswith("num_") and isinstance(value, (int, float))
        }
        chance = {
            f"{dataset}_{kind}_{name}": float(value)
            for name, value in (data.get("chance") or {}).items()
            if f"{dataset}_{kind}_{name}" in metrics and isinstance(value, (int, float))
        }
        return metrics, chance, {f"{dataset}_{kind}": split}
    metrics, chance = {}, {}
    for name, value in data.items():
        target, name = (chance, name[len("chance_") :]) if name.startswith("chance_") else (metrics, name)
        if _METRIC_NAME.fullmatch(name) and isinstance(value, (int, float)):
            target[name] = float(value)
    if not metrics:
        raise ValueError(f"--results {path}: no evaluation metrics (names like `cifar10_zero_shot_top1`) found")
    return metrics, chance, {}


# ----------------------------------------------------------------------------------------------- card
def _tower_description(config) -> str:
    parts = [config.model_type]
    for name in ("num_hidden_layers", "hidden_size", "num_attention_heads", "patch_size", "image_size", "vocab_size"):
        if hasattr(config, name):
            parts.append(f"{name}={getattr(config, name)}")
    return ", ".join(parts)


def _duration(seconds: float | None) -> str | None:
    if seconds is None or not math.isfinite(seconds):
        return None
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return " ".join(f"{v} {u}" for v, u in ((hours, "h"), (minutes, "min"), (rest, "s")) if v) or "0 s"


def _compute_lines(compute: Mapping[str, Any]) -> list[tuple[str, Any]]:
    device = compute.get("device")
    if device and compute.get("device_name"):
        device = f"{device} ({compute['device_name']})"
    lines = [
        ("device", device),
        ("processes", compute.get("num_processes")),
        ("distributed", compute.get("distributed_type")),
        ("precision", compute.get("precision")),
        ("training time", _duration(compute.get("train_runtime_s"))),
        ("wall time (whole job: data, training, evaluation, saving)", _duration(compute.get("wall_time_s"))),
    ]
    return [(label, value) for label, value in lines if value is not None]


def describe_image_view(folder: str | os.PathLike) -> str | None:
    """What the image processor saved in `folder` does to an image, in words (`None` without one)."""
    folder = Path(folder)
    settings = None
    if (folder / "processor_config.json").is_file():
        settings = json.loads((folder / "processor_config.json").read_text()).get("image_processor")
    if settings is None and (folder / "preprocessor_config.json").is_file():
        settings = json.loads((folder / "preprocessor_config.json").read_text())
    if not settings:
        return None
    size, crop = settings.get("size") or {}, settings.get("crop_size") or {}
    if "shortest_edge" in size and settings.get("do_center_crop") and crop:
        side = size["shortest_edge"]
        return (
            f"resizes the shorter side of an image to {side} px and centre-crops {crop['height']} × {crop['width']} "
            "(the evaluation view the model was evaluated with), then normalises"
        )
    if "height" in size and not settings.get("do_center_crop"):
        return (
            f"resizes every image to {size['height']} × {size['width']} without keeping its aspect ratio (it "
            "squashes non-square images, unlike the resize-and-centre-crop view of the run's evaluation)"
        )
    return None


def render_model_card(
    config: PretrainedConfig,
    record: TrainingRecord | None = None,
    template_path: str | os.PathLike | None = None,
    image_view: str | None = None,
) -> ModelCard:
    r"""
    Render the model card of an exported MCD model, or of its stock `VisionTextDualEncoderModel` export.

    Args:
        config (`MCDConfig` or `VisionTextDualEncoderConfig`): the exported model's config.
        record (`TrainingRecord`, *optional*): what the run recorded; without it the card says what is unknown.
        template_path (`str`, *optional*): a Jinja template; defaults to `hub_cards/mcd_model_card.md.jinja`.
        image_view (`str`, *optional*): what the saved image processor does (see [`describe_image_view`]).

    Returns:
        `huggingface_hub.ModelCard`: metadata (`license`, `library_name`, `pipeline_tag`, `tags`, `datasets`,
        `base_model`, `model-index`) and body.
    """
    template = Path(template_path) if template_path else DEFAULT_TEMPLATE
    if not template.is_file():
        raise FileNotFoundError(f"model card template not found: {template} (pass template_path=)")
    record = record or TrainingRecord()
    stock = config.model_type == STOCK_MODEL_TYPE
    model_name = record.repo_id.split("/")[-1]
    results = eval_results(record)
    card_data = ModelCardData(
        library_name="transformers",
        license="apache-2.0",
        pipeline_tag="zero-shot-image-classification",
        tags=["mcd", "clip", "vision-language", "contrastive-learning", "dual-encoder"],
        datasets=record.datasets or None,
        base_model=record.base_models or None,
        model_name=model_name if results else None,
        eval_results=results or None,
    )
    unknown = "unknown"
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        model_name=model_name,
        repo_id=record.repo_id,
        stock=stock,
        projection_dim=config.projection_dim,
        image_view=image_view,
        max_text_length=getattr(config.text_config, "max_position_embeddings", None),
        vision_description=_tower_description(config.vision_config),
        text_description=_tower_description(config.text_config),
        vision_pooling=getattr(config, "vision_pooling", "pooler"),
        text_pooling=getattr(config, "text_pooling", "pooler"),
        base_models=record.base_models,
        from_scratch=record.from_scratch,
        dataset_description=record.dataset_description,
        objective=record.objective or unknown,
        use_mlm=record.use_mlm,
        steps=unknown if record.steps is None else record.steps,
        global_batch=record.global_batch or unknown,
        learning_rate=record.learning_rate if record.learning_rate is not None else unknown,
        command=record.command,
        recipe_file=record.recipe_file,
        recipe_yaml=yaml.safe_dump(record.recipe, sort_keys=False).strip() if record.recipe else None,
        compute=_compute_lines(record.compute),
        num_processes=record.compute.get("num_processes"),
        metrics=record.metrics,
        chance=record.chance,
        evaluations=list(dict.fromkeys((r.task_name, r.dataset_name, r.dataset_split) for r in results)),
    )


def write_model_card(
    output_dir: str | os.PathLike,
    config: PretrainedConfig,
    record: TrainingRecord | None = None,
    template_path: str | os.PathLike | None = None,
) -> str:
    """Render the card (see [`render_model_card`]; the image processor saved in `output_dir` is described) into
    `output_dir/README.md`, and keep `record` (if given) in `output_dir/training_record.json` for later refreshes;
    returns the card's path."""
    path = os.path.join(output_dir, "README.md")
    render_model_card(config, record, template_path, describe_image_view(output_dir)).save(path)
    if record is not None:
        record.save(output_dir)
    return path


def _card_config(folder: str | os.PathLike) -> PretrainedConfig:
    if not Path(folder).is_dir():
        raise ValueError(f"{folder} {'is a file, not a model folder' if Path(folder).exists() else 'does not exist'}")
    if not (Path(folder) / "config.json").is_file():
        raise ValueError(
            f"{folder}: no config.json; give a folder written by save_pretrained (e.g. OUTPUT_DIR/mcd-model)"
        )
    config = AutoConfig.from_pretrained(folder)
    if config.model_type not in (MCDConfig.model_type, STOCK_MODEL_TYPE):
        raise ValueError(
            f"{folder}: a {config.model_type!r} model; cards are made for MCD folders and their stock "
            f"{STOCK_MODEL_TYPE!r} exports"
        )
    return config


def refresh_model_card(
    folder: str | os.PathLike,
    results: Sequence[str | os.PathLike] = (),
    repo_id: str | None = None,
    template_path: str | os.PathLike | None = None,
) -> str:
    r"""
    Render (or re-render) the card of a saved folder from its config and `training_record.json`.

    The record is what the card is rendered from: a folder whose card has no record next to it (a card written by
    hand, or a record deleted) is refused, and its card left as it is, since a render without the record would drop
    what the card says about the run. A folder with neither gets a first card and an empty record.

    Args:
        folder (`str`): an `MCDModel` folder (or its stock export).
        results (`Sequence[str]`, *optional*): evaluation JSON files to add (see [`load_results`]).
        repo_id (`str`, *optional*): the Hub repository the card's snippets load from; defaults to the recorded one.
        template_path (`str`, *optional*): a Jinja template.

    Returns:
        `str`: the path of the written `README.md` (the updated record is saved next to it).
    """
    config = _card_config(folder)
    if (Path(folder) / "README.md").is_file() and not (Path(folder) / RECORD_NAME).is_file():
        raise ValueError(
            f"{folder} has no {RECORD_NAME}, the record its README.md is rendered from: the card is left as it is "
            f"(re-rendering it without the record would drop what it says about the run); restore {RECORD_NAME}, "
            "or move README.md away to start a new card"
        )
    record = TrainingRecord.load(folder)
    for path in results:
        record.add_results(*load_results(path))
    if repo_id is not None:
        check_repo_id(repo_id, "REPO_ID")
        record.repo_id = repo_id
    return write_model_card(folder, config, record, template_path)


__all__ = [
    "DEFAULT_TEMPLATE",
    "EVAL_TASKS",
    "STOCK_MODEL_TYPE",
    "describe_image_view",
    "eval_results",
    "load_results",
    "refresh_model_card",
    "render_model_card",
    "write_model_card",
]
