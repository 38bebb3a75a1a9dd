# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""User mistakes on every `mcd` command end in one `mcd: error: <message>` line and a non-zero exit code (2 for
mistakes in the command line, its files and folders; 1 when the Hub cannot be reached), never in a traceback;
an exception of an unexpected type (a bug) keeps its traceback, and `mcd --debug` shows the traceback of any."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config, tiny_tokenizer
from PIL import Image
from transformers import BertConfig, BertModel

from modeling_mcd.cli.main import main
from modeling_mcd.pretraining.model import MCDForPreTraining

REPO = Path(__file__).resolve().parents[1]


def run_mcd(argv: list[str], capsys) -> tuple[int, str, str]:
    """`mcd argv` in this process: (exit code, stdout, stderr); an argparse exit counts as its code."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(argv: list[str], capsys, *expected: str, code: int = 2) -> str:
    """`mcd argv` fails with `code`, no traceback, and its last stderr line is `mcd: error: ...` holding every
    `expected` text; returns that line."""
    got, _, err = run_mcd(argv, capsys)
    assert "Traceback" not in err
    assert err.strip(), f"mcd {argv} printed no error (exit {got})"
    last = err.strip().splitlines()[-1]
    assert got == code, f"exit {got}, stderr: {err[-2000:]}"
    assert last.startswith("mcd: error: "), last
    for text in expected:
        assert text in last, last
    return last


# -------------------------------------------------------------------------------------------- fixtures
@pytest.fixture
def folders(tmp_path, tiny_model_dir) -> dict[str, str]:
    """A good MCD folder and the broken ones a user hands to `mcd`."""
    root = tmp_path / "folders"
    root.mkdir()
    good = Path(tiny_model_dir)

    bert = root / "bert"  # a model folder of another type, with its tokenizer
    torch.manual_seed(0)
    BertModel(
        BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8, vocab_size=60)
    ).save_pretrained(bert)
    tiny_tokenizer().save_pretrained(bert)

    truncated = root / "truncated"  # a download or copy cut short
    shutil.copytree(good, truncated)
    weights = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[: len(weights) // 2])

    config_only = root / "config-only"
    config_only.mkdir()
    shutil.copy(good / "config.json", config_only)

    empty = root / "empty"
    empty.mkdir()

    no_tokenizer = root / "no-tokenizer"  # the image processor is there, the tokenizer files are not
    shutil.copytree(good, no_tokenizer)
    for name in os.listdir(no_tokenizer):
        if name.startswith(("tokenizer", "vocab", "special_tokens")):
            os.remove(no_tokenizer / name)

    pickled = root / "pickled"  # weights only as a pickle
    shutil.copytree(good, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")

    return {
        "good": str(good),
        "bert": str(bert),
        "truncated": str(truncated),
        "config-only": str(config_only),
        "empty": str(empty),
        "no-tokenizer": str(no_tokenizer),
        "pickled": str(pickled),
        "missing": str(root / "no-such-folder"),
        "a-file": str(good / "config.json"),
    }


@pytest.fixture
def data(tmp_path) -> dict[str, str]:
    """A class folder, a captions file and a SugarCrepe file, each with 3 images."""
    root = tmp_path / "data"
    for k, name in enumerate(("red", "blue")):
        (root / "classes" / name).mkdir(parents=True)
        for i in range(2):
            image = Image.fromarray(np.full((20, 24, 3), 60 * k + 20 * i, dtype=np.uint8))
            image.save(root / "classes" / name / f"{i}.png")
    (root / "captions").mkdir()
    rows = []
    for i in range(3):
        Image.fromarray(np.full((20, 24, 3), 40 * i, dtype=np.uint8)).save(root / "captions" / f"{i}.png")
        rows.append(json.dumps({"file_name": f"{i}.png", "captions": ["a red circle"], "split": "test"}))
    (root / "captions" / "captions.jsonl").write_text("\n".join(rows) + "\n")
    return {"classes": str(root / "classes"), "captions": str(root / "captions" / "captions.jsonl"), "root": str(root)}


def commands(model: str, data: dict[str, str], tmp_path) -> dict[str, list[str]]:
    """Each command that reads a model folder, run on `model`."""
    out = tmp_path / "out"
    return {
        "eval zero-shot": ["eval", "zero-shot", "--model", model, "--data", data["classes"], "--device", "cpu"],
        "eval retrieval": ["eval", "retrieval", "--model", model, "--data", data["captions"], "--device", "cpu"],
        "export": ["export", "--model", model, "--output-dir", str(out / "stock")],
        "analyze": ["analyze", model, "--samples", "4", "--synthetic-image-size", "32", "--output-dir", str(out)],
        "push": ["push", model, "org/name"],
    }


COMMANDS = ["eval zero-shot", "eval retrieval", "export", "analyze", "push"]


# ------------------------------------------------------------------------------------ model folders
@pytest.mark.parametrize("command", COMMANDS)
def test_a_folder_of_another_model_type_is_one_error_line(command, folders, data, tmp_path, fake_hub, capsys):
    argv = commands(folders["bert"], data, tmp_path)[command]
    assert_one_error_line(argv, capsys, folders["bert"], "'bert'")
    assert fake_hub.calls == []  # nothing pushed


@pytest.mark.parametrize("command", COMMANDS)
def test_truncated_weights_are_one_error_line_naming_the_file(command, folders, data, tmp_path, fake_hub, capsys):
    argv = commands(folders["truncated"], data, tmp_path)[command]
    assert_one_error_line(argv, capsys, os.path.join(folders["truncated"], "model.safetensors"), "truncated")
    assert fake_hub.calls == []


@pytest.mark.parametrize("case", ["missing", "a-file", "empty", "config-only", "pickled"])
@pytest.mark.parametrize("command", COMMANDS)
def test_a_missing_or_incomplete_folder_is_one_error_line(case, command, folders, data, tmp_path, fake_hub, capsys):
    expected = {
        "missing": "does not exist",
        "a-file": "is a file",
        "empty": "is empty",
        "config-only": "no model.safetensors",
        "pickled": "pytorch_model.bin",
    }[case]
    assert_one_error_line(commands(folders[case], data, tmp_path)[command], capsys, folders[case], expected)
    assert fake_hub.calls == []


@pytest.mark.parametrize("command", ["eval zero-shot", "eval retrieval", "export", "analyze"])
def test_a_missing_tokenizer_says_the_folder_has_no_tokenizer_files(command, folders, data, tmp_path, capsys):
    argv = commands(folders["no-tokenizer"], data, tmp_path)[command]
    line = assert_one_error_line(argv, capsys, folders["no-tokenizer"], "no tokenizer files")
    assert "sentencepiece" not in line


def test_a_trainer_checkpoint_is_not_evaluated_nor_exported(folders, data, tmp_path, capsys):
    """A checkpoint holds no image processor: say so before loading anything, and leave no half export."""
    checkpoint = tmp_path / "run" / "checkpoint-4"
    MCDForPreTraining(tiny_config()).save_pretrained(checkpoint)
    tiny_tokenizer().save_pretrained(checkpoint)
    (checkpoint / "trainer_state.json").write_text("{}")
    argv = commands(str(checkpoint), data, tmp_path)
    assert_one_error_line(argv["eval zero-shot"], capsys, "Trainer checkpoint", "mcd-model")
    assert_one_error_line(argv["export"], capsys, "Trainer checkpoint")
    assert not (tmp_path / "out" / "stock").exists()


# ------------------------------------------------------------------------------------------ devices
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_a_cuda_device_without_cuda_is_a_usage_error(device, folders, data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = [*commands(folders["good"], data, tmp_path)["eval zero-shot"], "--device", device]
    assert_one_error_line(argv, capsys, "--device", "CUDA is not available", "--device cpu")


def test_an_unknown_device_is_a_usage_error(folders, data, tmp_path, capsys):
    argv = [*commands(folders["good"], data, tmp_path)["eval retrieval"], "--device", "gpu0"]
    assert_one_error_line(argv, capsys, "--device", "'gpu0'")


def test_cuda_without_cuda_in_a_real_process_has_no_traceback(folders, data, tmp_path):
    """The installed entry point, in a process of its own, on a machine whose torch sees no GPU."""
    argv = commands(folders["good"], data, tmp_path)["eval zero-shot"]
    proc = subprocess.run(
        [sys.executable, "-m", "modeling_mcd.cli", *argv, "--device", "cuda"],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1"),
        timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("mcd: error: eval zero-shot: argument --device: cuda: ")


# ---------------------------------------------------------------------------------------- data files
@pytest.mark.parametrize("command", ["eval retrieval", "analyze"])
def test_a_captions_file_that_is_not_utf8_names_the_file_and_line(command, folders, data, tmp_path, capsys):
    captions = Path(data["captions"])
    lines = captions.read_bytes().splitlines(keepends=True)
    lines[1] = '{"file_name": "1.png", "captions": ["un caf\xe9"], "split": "test"}\n'.encode("latin-1")
    captions.write_bytes(b"".join(lines))
    argv = commands(folders["good"], data, tmp_path)[command]
    if command == "analyze":
        argv += ["--data", str(captions)]
    assert_one_error_line(argv, capsys, f"{captions}:2", "UTF-8")


def test_bad_files_and_folders_in_options_are_one_error_line(folders, data, tmp_path, capsys):
    argv = commands(folders["good"], data, tmp_path)
    folder = str(tmp_path)
    assert_one_error_line([*argv["eval zero-shot"], "--output-json", folder], capsys, "--output-json", "is a folder")
    assert_one_error_line([*argv["eval zero-shot"], "--classnames", folder], capsys, "--classnames", folder)
    latin = tmp_path / "classnames.json"
    latin.write_bytes('["caf\xe9", "tea"]'.encode("latin-1"))
    assert_one_error_line([*argv["eval zero-shot"], "--classnames", str(latin)], capsys, str(latin), "UTF-8")
    assert_one_error_line(["card", folders["good"], "--results", folder], capsys, "--results", folder)
    assert_one_error_line(["card", folders["missing"]], capsys, folders["missing"], "does not exist")
    assert_one_error_line(["card", folders["a-file"]], capsys, folders["a-file"], "is a file")
    assert_one_error_line(["analyze", folders["good"], "--output-dir", folders["a-file"]], capsys, "is a file")


def test_an_unreadable_file_is_one_error_line(folders, data, tmp_path, monkeypatch, capsys):
    """Permissions (the tests may run as root, which reads anything: the refusal is simulated where it is met)."""
    captions = Path(data["captions"])
    real_open = Path.open

    def refuse(self, *args, **kwargs):
        if self == captions:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)
    argv = commands(folders["good"], data, tmp_path)["eval retrieval"]
    assert_one_error_line(argv, capsys, str(captions), "Permission denied")


# ------------------------------------------------------------------------------------- flags, outputs
@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--batch-size", "many"], "--batch-size"),
    ],
)
def test_bad_numbers_are_usage_errors(extra, expected, folders, data, tmp_path, capsys):
    assert_one_error_line([*commands(folders["good"], data, tmp_path)["eval zero-shot"], *extra], capsys, expected)


def test_usage_errors_end_in_an_mcd_error_line(folders, tmp_path, capsys):
    assert_one_error_line(["eval", "retrieval"], capsys, "--model")
    assert_one_error_line(["analyze", folders["good"], "--samples", "2"], capsys, "--samples", "at least 3")
    assert_one_error_line(["frobnicate"], capsys, "frobnicate")


def test_linear_probe_refuses_to_train_on_its_test_split(folders, data, tmp_path, capsys):
    argv = ["eval", "linear-probe", "--model", folders["good"], "--data", data["root"], "--device", "cpu"]
    assert_one_error_line([*argv, "--train-split", "classes", "--test-split", "classes"], capsys, "--test-split")


def test_export_never_writes_over_its_model_or_a_file(folders, tmp_path, capsys):
    good = Path(folders["good"])
    before = {name: (good / name).read_bytes() for name in os.listdir(good)}
    export = ["export", "--model", str(good), "--output-dir"]
    assert_one_error_line([*export, str(good)], capsys, "--output-dir", "is the --model folder")
    assert_one_error_line([*export, str(good / "config.json")], capsys, "is a file")
    assert {name: (good / name).read_bytes() for name in os.listdir(good)} == before
    other = tmp_path / "other-model"
    shutil.copytree(good, other)
    assert_one_error_line(["export", "--model", str(good), "--output-dir", str(other)], capsys, "--overwrite")
    assert run_mcd(["export", "--model", str(good), "--output-dir", str(other), "--overwrite"], capsys)[0] == 0


def test_out_of_memory_is_one_error_line_that_names_the_batch_size(folders, data, tmp_path, monkeypatch, capsys):
    from modeling_mcd.cli import eval_command as cli_eval

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)\nmore")

    monkeypatch.setattr(cli_eval, "encode_images", out_of_memory)
    argv = commands(folders["good"], data, tmp_path)["eval retrieval"]
    assert_one_error_line(argv, capsys, "CUDA out of memory. Tried to allocate 2.00 GiB", "--batch-size")


# --------------------------------------------------------------------------------------- bugs, --debug
def test_a_bug_keeps_its_traceback_and_debug_shows_every_one(folders, data, tmp_path, monkeypatch, capsys):
    from modeling_mcd.cli import eval_command as cli_eval

    def broken(*args, **kwargs):
        raise KeyError("a bug, not a user mistake")

    monkeypatch.setattr(cli_eval, "eval_retrieval", broken)
    argv = commands(folders["good"], data, tmp_path)["eval retrieval"]
    with pytest.raises(KeyError):
        main(argv)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="does not exist"):  # a user mistake, shown with its traceback
        main(["--debug", *commands(folders["missing"], data, tmp_path)["eval retrieval"]])
