# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Streaming data (`--streaming`, webdataset shards) resumes where it stopped: a run interrupted after a checkpoint
and resumed ends with the weights of the uninterrupted run, so it saw the same samples in the same order, with the
same views and MLM masks, also when the checkpoint falls in a later epoch (a stream runs epoch after epoch, each
reshuffled from the seed and the epoch)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch
from conftest import tiny_tokenizer
from PIL import Image
from safetensors.torch import load_file
from test_run_mcd import SCRIPT, TINY_RUN, _load_script

from modeling_mcd.trainer.mcd_trainer import MCDTrainer

pytestmark = pytest.mark.slow

CAPTIONS = ["a red circle", "two blue squares", "a green star on the left", "a big yellow cross", "a small triangle"]


def _shards(folder, shards: int = 3, per_shard: int = 10) -> str:
    """`shards` webdataset tar files of `per_shard` (jpg, txt) samples; returns the brace pattern naming them."""
    rng = np.random.default_rng(0)
    for shard in range(shards):
        with tarfile.open(folder / f"part-{shard:03d}.tar", "w") as tar:
            for i in range(per_shard):
                key = f"{shard:03d}{i:04d}"
                pixels = rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, format="JPEG")
                caption = CAPTIONS[(shard * per_shard + i) % len(CAPTIONS)].encode()
                for suffix, data in (("jpg", buffer.getvalue()), ("txt", caption)):
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(folder / f"part-{{000..{shards - 1:03d}}}.tar")


class Crash(Exception):
    """The interrupted run's end, right after its checkpoint of step 2 is written."""


def _interrupted_run_ends_like_the_whole_one(tmp_path, monkeypatch, pattern, max_steps, save_steps, extra=()):
    run_mcd = _load_script()
    tiny_tokenizer().save_pretrained(tmp_path / "tokenizer")
    flags = [*TINY_RUN, "--dataset", pattern, "--streaming", "true", "--eval_synthetic", "false", *extra]
    flags += ["--tokenizer_name_or_path", str(tmp_path / "tokenizer"), "--per_device_train_batch_size", "4"]
    flags += ["--max_steps", str(max_steps), "--save_strategy", "steps", "--save_steps", str(save_steps)]
    flags += ["--save_total_limit", "3"]
    run_mcd.main([*flags, "--output_dir", str(tmp_path / "whole")])

    save = MCDTrainer._save_checkpoint

    def save_then_crash(self, model, trial):
        save(self, model, trial)
        if self.state.global_step == save_steps:
            raise Crash

    monkeypatch.setattr(MCDTrainer, "_save_checkpoint", save_then_crash)
    with pytest.raises(Crash):
        run_mcd.main([*flags, "--output_dir", str(tmp_path / "cut")])
    monkeypatch.undo()
    run_mcd.main([*flags, "--output_dir", str(tmp_path / "cut")])  # resumes from checkpoint-{save_steps}
    last = f"checkpoint-{save_steps * (max_steps // save_steps)}"
    expected = load_file(tmp_path / "whole" / last / "model.safetensors")
    actual = load_file(tmp_path / "cut" / last / "model.safetensors")
    assert not torch.equal(
        actual["mcd.logit_scale"],
        load_file(tmp_path / "cut" / f"checkpoint-{save_steps}" / "model.safetensors")["mcd.logit_scale"],
    )
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, rtol=0, atol=0, msg=name)


def test_interrupted_streaming_run_resumes_at_the_same_position(tmp_path, monkeypatch):
    _interrupted_run_ends_like_the_whole_one(tmp_path, monkeypatch, _shards(tmp_path), max_steps=5, save_steps=2)


def test_a_resume_after_the_first_epoch_replays_the_later_epochs_order(tmp_path, monkeypatch):
    # 10 samples, 4 a step: the checkpoint of step 3 falls in the second epoch, whose shard order and buffer differ.
    pattern = _shards(tmp_path, shards=2, per_shard=5)
    flags = ("--shuffle_buffer_size", "3")
    _interrupted_run_ends_like_the_whole_one(tmp_path, monkeypatch, pattern, max_steps=7, save_steps=3, extra=flags)


@pytest.mark.distributed
def test_two_processes_stream_with_a_bad_sample(tmp_path):
    """Two processes on streamed shards, one image corrupt: each process reads the stream and keeps its share of
    the batches (accelerate cannot send a batch of captions padded to another length, nor skipped-row records),
    and the bad sample is skipped and logged."""
    pattern = _shards(tmp_path, shards=2, per_shard=12)
    with tarfile.open(tmp_path / "part-001.tar", "a") as tar:
        for suffix, data in (("jpg", b"not a jpeg"), ("txt", b"a broken picture")):
            info = tarfile.TarInfo(f"9999999.{suffix}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tiny_tokenizer().save_pretrained(tmp_path / "tokenizer")
    flags = [*TINY_RUN, "--dataset", pattern, "--streaming", "true", "--eval_synthetic", "false", "--max_steps", "4"]
    flags += ["--tokenizer_name_or_path", str(tmp_path / "tokenizer"), "--output_dir", str(tmp_path / "out")]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([*command, *flags], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "9999999.jpg" in result.stderr and "not_an_image" in result.stderr
    assert (tmp_path / "out" / "mcd-model" / "model.safetensors").is_file()
