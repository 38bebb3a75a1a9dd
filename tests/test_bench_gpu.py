# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""bench/gpu.py: the GPU benchmark runs (slowly) on the CPU at a tiny size; its MFU from known FLOPs and times, its
batch search and its peak table."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from test_bench_step import last_json_line, load_bench

gpu = load_bench("gpu")


def test_tiny_run_on_the_cpu(capsys):
    result = gpu.main(["--tiny", "--threads", "1"])
    printed = last_json_line(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(result, default=str))  # the last line is the result
    assert printed["device"] == "cpu" and set(printed["variants"]) == {"clip", "mcd", "peer"}
    # A second view, the teacher and the masked captions: MCD's step does more than twice CLIP's arithmetic.
    assert printed["variants"]["mcd"]["flops_per_sample"] > 2 * printed["variants"]["clip"]["flops_per_sample"]
    # No peak FLOP/s for a CPU, so no MFU, and no target to hold or miss.
    assert printed["peak_tflops"] is None and printed["targets"]["mfu_holds"] is None
    assert all(variant["mfu"] is None for variant in printed["variants"].values())
    # Nothing runs out of memory on the CPU: the search doubles 8 -> 16 -> 32 and stops at --tiny's --max-batch.
    assert printed["largest_batch"] == {"batch": 32, "capped": True, "first_failing": None, "variant": "mcd"}


def _fake_benchmark(seconds: dict[str, float], flops: dict[str, float], batch: int):
    """`step.run_benchmark` as gpu.py reads it, with the times and FLOPs given."""

    def run_benchmark(size, device, batch_, dtype, warmup, steps, variants):
        assert batch_ == batch and list(variants) == ["clip", "mcd", "peer"]
        return {
            "device_name": "NVIDIA H100 PCIe" if device.type == "cuda" else "a CPU",
            "date": "today",
            "time_s": seconds,
            "samples_per_s": {name: batch / s for name, s in seconds.items()},
            "flops": flops,
            "peak_memory_gib": dict.fromkeys(seconds, 1.0),
            "clip_over_peer": 1.0,
            "mcd_over_clip": 2.5,
            "flop_ratio": 3.0,
            "attention": {},
            "versions": {},
        }

    return run_benchmark


def _args(device: str, peak: float | None) -> argparse.Namespace:
    return argparse.Namespace(
        device=torch.device(device), size="vitb32", batch=256, dtype="bf16", warmup=1, steps=1, peak_tflops=peak,
        max_batch=0, batch_step=32,
    )  # fmt: skip


def test_mfu_is_the_counted_flops_over_the_time_and_the_peak(monkeypatch):
    # mcd: 3 TFLOP a step in 25 ms = 120 TFLOP/s; clip: 1 TFLOP in 10 ms = 100 TFLOP/s; the peer: 1 TFLOP in 20 ms.
    seconds, flops = {"clip": 0.01, "mcd": 0.025, "peer": 0.02}, {"clip": 1e12, "mcd": 3e12, "peer": 1e12}
    monkeypatch.setattr(gpu.step, "run_benchmark", _fake_benchmark(seconds, flops, 256))
    result = gpu.run(_args("cuda", peak=400.0))
    mcd, clip, peer = (result["variants"][name] for name in ("mcd", "clip", "peer"))
    assert mcd["achieved_tflops"] == pytest.approx(120.0) and mcd["mfu"] == pytest.approx(0.30)
    assert clip["mfu"] == pytest.approx(0.25) and peer["mfu"] == pytest.approx(0.125)
    assert mcd["flops_per_sample"] == pytest.approx(3e12 / 256)
    assert result["mcd_samples_per_s"] == pytest.approx(256 / 0.025)  # 10,240 samples/s
    assert result["targets"]["mfu_holds"] is True and result["targets"]["samples_per_s_holds"] is True

    # Without --peak-tflops the peak comes from the device's name: an H100 PCIe's 756 TFLOP/s.
    result = gpu.run(_args("cuda", peak=None))
    assert result["peak_tflops"] == 756.0
    assert result["mcd_mfu"] == pytest.approx(120 / 756) and result["targets"]["mfu_holds"] is False


def test_a_slow_step_misses_the_samples_per_s_target(monkeypatch):
    seconds, flops = {"clip": 0.1, "mcd": 0.5, "peer": 0.1}, {"clip": 1e12, "mcd": 3e12, "peer": 1e12}
    monkeypatch.setattr(gpu.step, "run_benchmark", _fake_benchmark(seconds, flops, 256))
    result = gpu.run(_args("cuda", peak=400.0))
    assert result["mcd_samples_per_s"] == pytest.approx(512.0) and result["targets"]["samples_per_s_holds"] is False
    assert result["mcd_mfu"] == pytest.approx(6 / 400) and result["targets"]["mfu_holds"] is False


def test_largest_batch_doubles_then_bisects():
    tried = []

    def fits(batch):
        tried.append(batch)
        return batch <= 700

    assert gpu.largest_batch(fits, 256, 4096, 32) == {"batch": 672, "capped": False, "first_failing": 704}
    assert tried == [256, 512, 1024, 768, 640, 704, 672]
    assert gpu.largest_batch(lambda b: b <= 100, 256, 4096, 32) == {"batch": 96, "capped": False, "first_failing": 128}
    assert gpu.largest_batch(lambda b: True, 256, 1000, 32) == {"batch": 1000, "capped": True, "first_failing": None}


def test_peak_table_follows_the_device_name():
    sxm = gpu.peak_tflops("NVIDIA H100 80GB HBM3")
    assert gpu.peak_tflops("NVIDIA H200") == sxm  # the same tensor cores
    assert gpu.peak_tflops("NVIDIA H100 PCIe") < sxm  # not taken for the SXM part: the first match wins
    assert gpu.peak_tflops("NVIDIA A100-SXM4-80GB") < gpu.peak_tflops("NVIDIA H100 PCIe")
    assert gpu.peak_tflops("nvidia h100 pcie") == gpu.peak_tflops("NVIDIA H100 PCIe")  # any case
    assert gpu.peak_tflops("Tesla T4") is None  # not in the table: no MFU rather than a wrong one
