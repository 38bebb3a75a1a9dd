# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Push a trained MCD model to the Hugging Face Hub: the exported inference folder (never a Trainer checkpoint,
never the teacher or the MLM head), or its stock `VisionTextDualEncoderModel` export, with `huggingface_hub.HfApi`;
the card is re-rendered for the target repository (`modeling_mcd.hub.model_card`).

Tokens are only ever handed to `HfApi`: they are not logged, not written to a record or a card.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from huggingface_hub import CommitInfo, HfApi
from transformers import AutoConfig

from .. import __version__
from ..configuration_mcd import MCDConfig
from .model_card import STOCK_MODEL_TYPE, refresh_model_card, write_model_card
from .run_record import RECORD_NAME, TrainingRecord, check_repo_id

if TYPE_CHECKING:  # the training side is not needed to render a card or push a folder
    from transformers import TrainingArguments


#: Files that only a Trainer checkpoint or run folder holds: a folder with one of them is not pushed.
TRAINING_STATE_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "trainer_state.json", "training_args.bin")

#: Parameter prefixes of the training-only modules of `MCDForPreTraining`, which the inference model never holds.
TRAINING_ONLY_PREFIXES = ("teacher", "mlm_head")


# ----------------------------------------------------------------------------------------------- push
@dataclass
class HubTarget:
    r"""
    Where the end of a run pushes its inference model: the `--push_to_hub` wish of `TrainingArguments`.

    Args:
        repo_id (`str`): `--hub_model_id`.
        private (`bool`, *optional*): `--hub_private_repo` (`None`: the account's default).
        token (`str`, *optional*): `--hub_token` (`None`: the usual lookup, `HF_TOKEN` or `hf auth login`); never
            shown in the dataclass's repr.
    """

    repo_id: str
    private: bool | None = None
    token: str | None = field(default=None, repr=False)

    @classmethod
    def from_training_args(cls, training_args: TrainingArguments) -> HubTarget | None:
        """The push the arguments ask for (`None` without `--push_to_hub`)."""
        if not training_args.push_to_hub:
            return None
        if not training_args.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id org/name: the repository the inference model goes to")
        check_repo_id(training_args.hub_model_id, "--hub_model_id")
        return cls(training_args.hub_model_id, training_args.hub_private_repo, training_args.hub_token)


def _safetensors_keys(path: Path) -> list[str]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            return list(handle.keys())
    except SafetensorError as error:
        raise ValueError(f"{path} is truncated or not a safetensors file ({error})") from error


@contextmanager
def restored_on_failure(folder: str | os.PathLike, names: tuple[str, ...]) -> Iterator[None]:
    """Give the files `names` of `folder` back their bytes (or absence) if the block raises: a push that fails
    leaves the local folder as it was, although it re-rendered the card for the repository first."""
    paths = [Path(folder) / name for name in names]
    saved = {path: path.read_bytes() if path.is_file() else None for path in paths}
    try:
        yield
    except BaseException:
        for path, content in saved.items():
            if content is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(content)
        raise


def check_inference_folder(folder: str | os.PathLike) -> None:
    """Raise `ValueError` naming the file unless `folder` is an exported model: a `config.json`, safetensors
    weights without the teacher or the MLM head, and no Trainer checkpoint state."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"{folder}: no config.json; push a folder written by save_pretrained (e.g. OUTPUT_DIR/mcd-model)"
        )
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise ValueError(f"{folder}: no *.safetensors weights")
    state = [
        p.name
        for p in folder.iterdir()
        if p.name in TRAINING_STATE_FILES or p.name.startswith(("rng_state", "checkpoint-", "global_step"))
    ]
    if state:
        raise ValueError(
            f"{folder} holds Trainer checkpoint state ({', '.join(sorted(state))}); push the exported inference "
            "folder (OUTPUT_DIR/mcd-model) instead"
        )
    for path in weights:
        training_only = [key for key in _safetensors_keys(path) if key.startswith(TRAINING_ONLY_PREFIXES)]
        if training_only:
            raise ValueError(
                f"{path} holds training-only weights ({training_only[0]}, ...): push MCDModel.save_pretrained's "
                "folder (the student only), not MCDForPreTraining's"
            )


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> CommitInfo:
    r"""
    Push a model folder as it is: `HfApi.create_repo(exist_ok=True)`, then one `HfApi.upload_folder` commit.

    Args:
        folder (`str`): checked with [`check_inference_folder`] first.
        repo_id (`str`): `org/name` (or `name`, in the token's namespace).
        private (`bool`, *optional*): visibility of a repository created here (an existing one keeps its own).
        token (`str`, *optional*): defaults to the usual lookup (`HF_TOKEN`, then `hf auth login`'s).
        commit_message (`str`, *optional*)

    Returns:
        `huggingface_hub.CommitInfo` of the upload.
    """
    check_repo_id(repo_id, "REPO_ID")
    check_inference_folder(folder)
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type="model",
        commit_message=commit_message or f"Upload MCD model (mcd {__version__})",
    )


def push_model(
    model_dir: str | os.PathLike,
    repo_id: str,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    stock: bool = False,
) -> CommitInfo:
    r"""
    Push a saved `MCDModel` folder (weights, config with `auto_map`, modeling code, processor, card) to the Hub,
    or with `stock=True` its exact `VisionTextDualEncoderModel` export (made in a temporary folder).

    The card of an MCD folder (or of a stock export) is re-rendered first, in place, so its snippets load from
    `repo_id`; a README.md without `training_record.json` (a card written by hand) and the folders of other
    models are pushed as they are. If the push fails (offline, refused, interrupted), the card and the record are
    given back their former bytes: the folder is left as it was.

    Args:
        model_dir (`str`): the folder (`OUTPUT_DIR/mcd-model` of a run).
        repo_id (`str`): `org/name`.
        private (`bool`, *optional*), token (`str`, *optional*), commit_message (`str`, *optional*): see
            [`push_folder`].
        stock (`bool`, *optional*, defaults to `False`): push the stock export instead.
    """
    from ..export import export_to_vision_text_dual_encoder

    check_repo_id(repo_id, "REPO_ID")
    model_dir = Path(model_dir)
    if not stock:
        check_inference_folder(model_dir)
        model_type = json.loads((model_dir / "config.json").read_text()).get("model_type")
        ours = model_type in (MCDConfig.model_type, STOCK_MODEL_TYPE)
        refresh = ours and ((model_dir / RECORD_NAME).is_file() or not (model_dir / "README.md").is_file())
        with restored_on_failure(model_dir, ("README.md", RECORD_NAME)) if refresh else nullcontext():
            if refresh:
                refresh_model_card(model_dir, repo_id=repo_id)
            return push_folder(model_dir, repo_id, private, token, commit_message)
    with tempfile.TemporaryDirectory(prefix="mcd-stock-") as staging:
        export_to_vision_text_dual_encoder(model_dir, staging)
        record = dataclasses.replace(TrainingRecord.load(model_dir), repo_id=repo_id)
        write_model_card(staging, AutoConfig.from_pretrained(staging), record)
        message = (
            commit_message or f"Upload the stock VisionTextDualEncoderModel export of an MCD model (mcd {__version__})"
        )
        return push_folder(staging, repo_id, private, token, message)


__all__ = [
    "TRAINING_ONLY_PREFIXES",
    "TRAINING_STATE_FILES",
    "HubTarget",
    "check_inference_folder",
    "push_folder",
    "push_model",
    "restored_on_failure",
]
