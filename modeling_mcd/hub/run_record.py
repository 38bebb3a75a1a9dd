# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""What a training run records about itself for its model card: the recipe (command line and YAML, tokens
redacted), the data, the compute and the evaluation. `TrainingRecord` is kept next to the weights as
`training_record.json`, so that `mcd card` can re-render the card of any saved folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

if TYPE_CHECKING:  # the training side is not needed to render a card or push a folder
    from accelerate import Accelerator
    from transformers import TrainingArguments

    from ..trainer.arguments import DataArguments, ModelArguments
    from ..trainer.training_arguments import MCDTrainingArguments

#: The repository the card's snippets load from until the model is pushed somewhere.
DEFAULT_REPO_ID = "org/mcd-model"

#: The file, next to the weights, that keeps what the card says about the run.
RECORD_NAME = "training_record.json"

_REDACTED = "<redacted>"
_SECRET_NAME = re.compile(r"(\w+_)?token")  # hub_token, token; not tokenizer_name_or_path


# ------------------------------------------------------------------------------------------- the record
@dataclass
class TrainingRecord:
    r"""
    What a run records about itself for its model card (every field is optional).

    Args:
        repo_id (`str`): the Hub repository the card's snippets load from.
        dataset_description (`str`): one line about the training data.
        datasets (`list[str]`): Hub dataset ids trained on (card metadata `datasets`).
        caption_noise (`float`): the share of training pairs given another image's caption on purpose.
        base_models (`list[str]`): Hub ids of the pretrained towers (card metadata `base_model`).
        from_scratch (`bool`): whether the towers were trained from scratch (`None`: not recorded).
        objective (`str`), use_mlm (`bool`), steps (`int`), global_batch (`int`), learning_rate (`float`):
            the run's objective, optimizer steps, global batch and peak learning rate.
        command (`str`): the launch command line, secrets redacted.
        recipe_file (`str`): the YAML recipe, as named on the command line.
        recipe (`dict`): the YAML recipe's content, secrets redacted.
        compute (`dict`): device, processes, distributed type, precision, train and wall time (seconds).
        metrics (`dict[str, float]`): every evaluation metric, named `{dataset}_{kind}_{metric}`.
        chance (`dict[str, float]`): the chance level of the headline metrics.
        splits (`dict[str, str | None]`): the dataset split of each `{dataset}_{kind}` evaluation.
    """

    repo_id: str = DEFAULT_REPO_ID
    dataset_description: str = "not recorded"
    datasets: list[str] = field(default_factory=list)
    caption_noise: float = 0.0
    base_models: list[str] = field(default_factory=list)
    from_scratch: bool | None = None
    objective: str | None = None
    use_mlm: bool | None = None
    steps: int | None = None
    global_batch: int | None = None
    learning_rate: float | None = None
    command: str | None = None
    recipe_file: str | None = None
    recipe: dict[str, Any] | None = None
    compute: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    chance: dict[str, float] = field(default_factory=dict)
    splits: dict[str, str | None] = field(default_factory=dict)

    def save(self, folder: str | os.PathLike) -> str:
        """Write the record to `folder/training_record.json`; returns its path."""
        path = os.path.join(folder, RECORD_NAME)
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike) -> TrainingRecord:
        """Read `folder/training_record.json`; a folder without one gives an empty record."""
        path = Path(folder) / RECORD_NAME
        if not path.is_file():
            return cls()
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError) as error:
            raise ValueError(f"{path}: not a training record ({error})") from error

    def add_results(self, metrics: Mapping[str, float], chance=None, splits=None) -> None:
        """Merge evaluation results in (a metric measured again replaces the old value)."""
        self.metrics.update(metrics)
        self.chance.update(chance or {})
        self.splits.update(splits or {})


def hub_ids(names: Iterable[str | None], exclude: Iterable[str] = ()) -> list[str]:
    """The names that are Hub repository ids: not empty, not in `exclude`, not a local path, glob or data file."""
    ids = []
    for name in names:
        if not name or name in exclude or os.path.exists(name) or any(c in name for c in "*?[]{},"):
            continue
        if Path(name).suffix in (".json", ".jsonl", ".csv", ".tar", ".parquet", ".txt", ".arrow"):
            continue
        try:
            validate_repo_id(name)
        except HFValidationError:
            continue
        ids.append(name)
    return ids


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every secret value replaced by `<redacted>`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, _REDACTED)
    return text


def _redact_argv(argv: Sequence[str], secrets: Sequence[str | None]) -> list[str]:
    """Command-line arguments with the value of every `--token` / `--*_token` flag and every secret redacted."""
    out: list[str] = []
    for arg in argv:
        name, has_value, _ = arg.partition("=")
        if arg.startswith("--") and has_value and _SECRET_NAME.fullmatch(name[2:]):
            arg = f"{name}={_REDACTED}"
        elif out and out[-1].startswith("--") and _SECRET_NAME.fullmatch(out[-1][2:]) and not arg.startswith("--"):
            arg = _REDACTED
        out.append(redact(arg, secrets))
    return out


def _shown_path(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """`path` relative to `root` when it lies inside it, else as given."""
    resolved, root = Path(path).resolve(), Path(root).resolve()
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(path)


def recipe_record(
    argv: Sequence[str],
    default_recipe: str | os.PathLike | None = None,
    program: str = "run_mcd.py",
    root: str | os.PathLike | None = None,
    secrets: Sequence[str | None] = (),
) -> dict[str, Any]:
    r"""
    The `command`, `recipe_file` and `recipe` fields of a [`TrainingRecord`], from a run's command line.

    Args:
        argv (`Sequence[str]`): the arguments as given (an optional YAML recipe first, then flags that override it).
        default_recipe (`str`, *optional*): the recipe the run falls back to when `argv` names none.
        program (`str`, *optional*): the script, as the recorded command shows it (e.g. `training/run_mcd.py`).
        root (`str`, *optional*): recipe paths inside this folder are shown relative to it; defaults to the
            working directory.
        secrets (`Sequence[str]`, *optional*): values never to record (the Hub token).

    Returns:
        `dict` with `command` (the command line as given), `recipe_file` and `recipe` (the YAML's content);
        the value of a `--token` / `--*_token` flag or recipe key, and every secret, reads `<redacted>`.
    """
    argv = list(argv)
    recipe_file = argv[0] if argv and argv[0].endswith((".yaml", ".yml")) else default_recipe
    recipe = None
    if recipe_file is not None:
        with open(recipe_file, encoding="utf-8") as handle:
            loaded = yaml.safe_load(handle) or {}
        recipe = {}
        for key, value in loaded.items():
            if _SECRET_NAME.fullmatch(str(key)):
                value = _REDACTED
            elif isinstance(value, str):
                value = redact(value, secrets)
            elif isinstance(value, list):
                value = [redact(v, secrets) if isinstance(v, str) else v for v in value]
            recipe[key] = value
    return {
        "command": shlex.join([program, *_redact_argv(argv, secrets)]),
        "recipe_file": None if recipe_file is None else _shown_path(recipe_file, root or os.getcwd()),
        "recipe": recipe,
    }


def compute_record(
    training_args: TrainingArguments,
    accelerator: Accelerator | None = None,
    train_runtime: float | None = None,
    wall_time: float | None = None,
) -> dict[str, Any]:
    r"""
    The `compute` field of a [`TrainingRecord`].

    Args:
        training_args (`TrainingArguments`): the run's arguments (device, processes, precision).
        accelerator (`accelerate.Accelerator`, *optional*): the Trainer's, for the distributed type.
        train_runtime (`float`, *optional*): seconds spent in `Trainer.train`.
        wall_time (`float`, *optional*): seconds of the whole job.
    """
    import torch

    device = training_args.device
    compute: dict[str, Any] = {"device": str(device), "num_processes": int(training_args.world_size)}
    if device.type == "cuda":
        compute["device_name"] = torch.cuda.get_device_name(device)
    if accelerator is not None:
        compute["distributed_type"] = str(getattr(accelerator.distributed_type, "value", accelerator.distributed_type))
    compute["precision"] = "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32"
    compute["train_runtime_s"] = train_runtime
    compute["wall_time_s"] = wall_time
    return compute


def training_record(
    training_args: MCDTrainingArguments | None,
    model_args: ModelArguments | None = None,
    data_args: DataArguments | None = None,
    repo_id: str | None = None,
    **fields: Any,
) -> TrainingRecord:
    r"""
    A [`TrainingRecord`] from a run's arguments.

    Args:
        training_args (`MCDTrainingArguments`, *optional*): objective, MLM, batch, learning rate.
        model_args (`ModelArguments`, *optional*): the pretrained model or towers (`base_model`).
        data_args (`DataArguments`, *optional*): the training data (description and Hub `datasets`).
        repo_id (`str`, *optional*): the Hub repository the card loads from.
        fields: any other [`TrainingRecord`] field (`steps`, `metrics`, `chance`, `splits`, `compute`, `command`,
            `recipe_file`, `recipe`, `dataset_description`).
    """
    values: dict[str, Any] = {"repo_id": repo_id or DEFAULT_REPO_ID}
    if training_args is not None:
        values.update(
            objective=training_args.objective,
            use_mlm=bool(training_args.use_mlm),
            global_batch=training_args.per_device_train_batch_size * training_args.world_size,
            learning_rate=training_args.learning_rate,
        )
    if model_args is not None:
        towers = (
            model_args.init_model_name_or_path,
            model_args.vision_model_name_or_path,
            model_args.text_model_name_or_path,
        )
        values["base_models"] = hub_ids(towers)
        values["from_scratch"] = not any(towers)
    if data_args is not None:
        from ..synthetic import SYNTHETIC

        values["dataset_description"] = data_args.describe()
        values["datasets"] = hub_ids([data_args.dataset], exclude=[SYNTHETIC])
        values["caption_noise"] = data_args.caption_noise
    return TrainingRecord(**{**values, **fields})


def check_repo_id(repo_id: str, flag: str) -> str:
    """`repo_id` if it is a valid Hub repository id (`name` or `org/name`), else `ValueError` naming `flag`."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"{flag} {repo_id!r} is not a Hub repository id (org/name): {error}") from error
    return repo_id


__all__ = [
    "DEFAULT_REPO_ID",
    "RECORD_NAME",
    "TrainingRecord",
    "check_repo_id",
    "compute_record",
    "hub_ids",
    "recipe_record",
    "redact",
    "training_record",
]
