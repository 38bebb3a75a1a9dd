# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""What `mcd` says when a command cannot run.

A user mistake (a wrong path, a folder of another model, weights cut short, a file that is not UTF-8, a device this
machine lacks, an unreachable Hub) ends a command in one line, `mcd: error: <message>`, and a non-zero exit code,
never in a traceback. Two parts make that hold:

- checks of what the command line names, made before anything is loaded or written, so the message names the
  flag, the file and what is wrong with it ([`check_model_folder`], [`check_utf8_lines`], the argparse types);
- [`describe_error`], which turns the exceptions that user mistakes raise deeper down (`ValueError`, `OSError`,
  unreadable safetensors, the Hub's errors) into that line. An exception of any other type is a bug: it keeps its
  traceback, as every error does under `mcd --debug`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..evaluation.features import TOKENIZER_FILES

#: Exit code of a mistake in the command line or in a file or folder it names (argparse's own code).
USAGE_ERROR = 2
#: Exit code of a failure outside the command: the Hugging Face Hub cannot be reached.
UNAVAILABLE = 1

#: `model_type` of the folders the `eval` and `analyze` commands read, and their classes.
MODEL_CLASSES = {"mcd": "MCDModel", "clip": "CLIPModel", "vision-text-dual-encoder": "VisionTextDualEncoderModel"}
DUAL_ENCODER_TYPES = tuple(MODEL_CLASSES)
#: The files an image processor is saved in (alone, or inside a processor's config).
IMAGE_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


# ------------------------------------------------------------------------------------------ the parser
class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, with its errors on one `mcd: error:` line like every other error of the command (the
    sub-command, when there is one, named in the message)."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        command = self.prog.split(" ", 1)[1] if " " in self.prog else ""
        self.exit(USAGE_ERROR, f"mcd: error: {command + ': ' if command else ''}{message}\n")


def positive_int(value: str) -> int:
    """argparse type: an integer >= 1."""
    return at_least(1)(value)


def at_least(minimum: int):
    """argparse type: an integer >= `minimum`."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {number}")
        return number

    return parse


def torch_device(value: str) -> str:
    """argparse type: a torch device this machine has (`cuda` needs a GPU that torch sees)."""
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{value!r} is not a torch device (cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "torch was built without CUDA" if torch.version.cuda is None else "torch sees no GPU"
            raise argparse.ArgumentTypeError(
                f"{value}: CUDA is not available on this machine ({why}); use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{value}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{value}: MPS is not available on this machine; use --device cpu")
    return value


# ------------------------------------------------------------------------------------ folders and files
def _named(path: str | os.PathLike, option: str | None) -> str:
    return f"{option} {path}" if option else str(path)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from error
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); the file may be cut short") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data


def check_weights(folder: Path, name: str) -> list[Path]:
    """The safetensors files of `folder` (one, or the shards its index names), each with a complete header;
    `ValueError` naming the file otherwise."""
    from safetensors import SafetensorError, safe_open

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = [folder / shard for shard in sorted(set(_read_json(index).get("weight_map", {}).values()))]
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickled = sorted(path.name for path in folder.glob("*.bin"))
        if pickled:
            raise ValueError(
                f"{name} holds only pickled weights ({', '.join(pickled)}); mcd loads safetensors only: "
                "re-save the model with save_pretrained"
            )
        raise ValueError(f"{name}: no model.safetensors; give a folder written by save_pretrained")
    for path in files:
        if not path.is_file():
            raise ValueError(f"{path} is missing ({index.name} names it)")
        try:
            with safe_open(str(path), framework="numpy") as handle:
                handle.keys()
        except PermissionError as error:
            raise ValueError(f"{path}: cannot read it ({error.strerror})") from error
        except (SafetensorError, OSError) as error:
            # safetensors checks that the header covers the file exactly: a cut copy or download fails here.
            raise ValueError(
                f"{path} is truncated or not a safetensors file ({error}); copy or download it again"
            ) from error
    return files


def check_model_folder(
    path: str | os.PathLike,
    option: str | None = "--model",
    model_types: tuple[str, ...] = DUAL_ENCODER_TYPES,
    image_processor: bool = False,
    tokenizer: bool = False,
) -> dict:
    r"""
    Check a saved model folder before anything is loaded from it: that it exists and is a folder, holds a
    `config.json` of one of `model_types`, complete safetensors weights and (if asked) the processor files.

    Args:
        path (`str`): the folder.
        option (`str`, *optional*): the flag that named it, for the message (`None`: a positional argument).
        model_types (`tuple[str]`, *optional*): the `model_type`s the command reads.
        image_processor (`bool`, *optional*): require an image processor's config.
        tokenizer (`bool`, *optional*): require tokenizer files.

    Returns:
        `dict`: the folder's `config.json`.

    Raises:
        `ValueError` naming the folder or file and what is wrong.
    """
    folder, name = Path(path), _named(path, option)
    if not folder.exists():
        raise ValueError(f"{name} does not exist")
    if not folder.is_dir():
        raise ValueError(f"{name} is a file, not a model folder: give the folder that holds config.json")
    try:
        entries = sorted(os.listdir(folder))
    except PermissionError as error:
        raise ValueError(f"{name}: cannot read the folder ({error.strerror})") from error
    if not entries:
        raise ValueError(f"{name} is empty: give a folder written by save_pretrained (e.g. OUTPUT_DIR/mcd-model)")
    if "config.json" not in entries:
        shown = ", ".join(entries[:6]) + (", ..." if len(entries) > 6 else "")
        raise ValueError(f"{name}: no config.json, so not a saved model (it holds {shown})")
    config = _read_json(folder / "config.json")
    model_type = config.get("model_type")
    if model_type not in model_types:
        classes = " or ".join(MODEL_CLASSES.get(kind, kind) for kind in model_types)
        raise ValueError(f"{name}: config.json is a {model_type!r} model; this command reads a saved {classes}")
    check_weights(folder, name)
    checkpoint = "trainer_state.json" in entries
    if image_processor and not any(file in entries for file in IMAGE_PROCESSOR_FILES):
        if checkpoint:
            raise ValueError(
                f"{name} is a Trainer checkpoint (trainer_state.json), which holds no image processor: use the "
                "run's exported OUTPUT_DIR/mcd-model"
            )
        raise ValueError(
            f"{name} has no image processor ({' or '.join(IMAGE_PROCESSOR_FILES)}): save the processor with the model"
        )
    if tokenizer and not any(file in entries for file in TOKENIZER_FILES):
        raise ValueError(
            f"{name} has no tokenizer files ({', '.join(TOKENIZER_FILES)}): save the tokenizer with the model "
            "(processor.save_pretrained or tokenizer.save_pretrained into the folder)"
        )
    return config


def check_utf8_lines(*paths: str | os.PathLike) -> None:
    """`ValueError` naming the file and the 1-based line of the first bytes of `paths` that are not UTF-8 (a path
    that is not a file is left to the reader, whose message names it)."""
    for path in map(Path, paths):
        if not path.is_file():
            continue
        with path.open("rb") as lines:
            for number, line in enumerate(lines, start=1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise ValueError(
                        f"{path}:{number}: not UTF-8 text (byte 0x{line[error.start]:02x} at column "
                        f"{error.start + 1}); save the file as UTF-8"
                    ) from None


def check_output_file(path: str | os.PathLike | None, option: str) -> None:
    """`ValueError` unless `path` can be written as a file (it is not a folder, nor below a file)."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder; give a file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{option} {path}: {parent} is a file, not a folder")
            break


def check_output_folder(path: str | os.PathLike, option: str) -> None:
    """`ValueError` unless `path` is, or can become, a folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path} is a file, not a folder")
    check_output_file(path / "_", option)


def check_model_output(path: str | os.PathLike, model: str | os.PathLike, overwrite: bool = False) -> None:
    """`ValueError` unless `--output-dir` `path` may receive a saved model: never the `--model` folder itself, and a
    folder that already holds a model only with `overwrite`."""
    path = Path(path)
    check_output_folder(path, "--output-dir")
    if path.exists() and path.resolve() == Path(model).resolve():
        raise ValueError(f"--output-dir {path} is the --model folder: the export would write over the model")
    if (path / "config.json").exists() and not overwrite:
        raise ValueError(f"--output-dir {path} already holds a model (config.json); give --overwrite to replace it")


# ---------------------------------------------------------------------------------------- exceptions
def _is_network_error(error: BaseException) -> bool:
    if isinstance(error, (ConnectionError, TimeoutError)):  # huggingface_hub's OfflineModeIsEnabled included
        return True
    # The HTTP clients' transport errors (httpx, requests), found by name: which client huggingface_hub uses varies.
    return any(
        cls.__name__ in ("TransportError", "ConnectionError", "Timeout")
        and cls.__module__.split(".")[0] in ("httpx", "httpx2", "requests", "urllib3")
        for cls in type(error).__mro__
    )


def describe_error(error: BaseException, command: str | None = None) -> tuple[str, int] | None:
    r"""
    The `mcd: error:` message and the exit code of an exception a user mistake raises; `None` for any other (a bug,
    which keeps its traceback).

    Args:
        error (`BaseException`): what the command raised.
        command (`str`, *optional*): the `mcd` command that raised it (`push` says that nothing was pushed).

    Returns:
        `(message, exit_code)`: the message on one line.
    """
    import torch
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError
    from safetensors import SafetensorError

    if isinstance(error, torch.OutOfMemoryError):  # a batch too large for the device: the user's to change
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "out of memory"
        message, code = f"{first_line}; lower --batch-size (or use --device cpu)", USAGE_ERROR
    elif _is_network_error(error):
        message = f"cannot reach the Hugging Face Hub ({error})" + ("; nothing was pushed" if command == "push" else "")
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        if offline and "HF_HUB_OFFLINE" not in message:
            message += " (HF_HUB_OFFLINE is set)"
        code = UNAVAILABLE
    elif isinstance(error, UnicodeDecodeError):
        message, code = f"a file is not UTF-8 text ({error.reason} at byte {error.start})", USAGE_ERROR
    elif isinstance(error, (ValueError, HfHubHTTPError, LocalTokenNotFoundError)):  # the Hub's errors name no token
        message, code = str(error), USAGE_ERROR
    elif isinstance(error, SafetensorError):
        message, code = f"unreadable safetensors weights, truncated or not safetensors ({error})", USAGE_ERROR
    elif isinstance(error, OSError):
        has_file = error.filename is not None and error.strerror
        message, code = (f"{error.filename}: {error.strerror}" if has_file else str(error)), USAGE_ERROR
    else:
        return None
    return " ".join(message.split()) or type(error).__name__, code


def run_command(command, args: argparse.Namespace, debug: bool = False) -> int:
    r"""
    Run `command(args)` and return its exit code; a user mistake's exception becomes one `mcd: error:` line on
    stderr and its exit code ([`describe_error`]), Ctrl-C the line `mcd: interrupted` and 130. A bug's exception
    propagates with its traceback, as every one does with `debug` (or the environment variable `MCD_DEBUG=1`).
    """
    debug = debug or os.environ.get("MCD_DEBUG", "") == "1"
    try:
        return command(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print("mcd: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        described = None if debug else describe_error(error, getattr(args, "command", None))
        if described is None:
            raise
        message, code = described
        print(f"mcd: error: {message}", file=sys.stderr)
        return code


__all__ = [
    "DUAL_ENCODER_TYPES",
    "MODEL_CLASSES",
    "UNAVAILABLE",
    "USAGE_ERROR",
    "ArgumentParser",
    "at_least",
    "check_model_folder",
    "check_model_output",
    "check_output_file",
    "check_output_folder",
    "check_utf8_lines",
    "check_weights",
    "describe_error",
    "positive_int",
    "run_command",
    "torch_device",
]
