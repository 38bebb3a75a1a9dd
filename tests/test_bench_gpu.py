# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""bench/gpu.py: the GPU benchmark runs (slowly) on the CPU at a tiny size; its batch search and its peak table."""

from __future__ import annotations

import pytest

from test_bench_step import last_json_line, load_bench

gpu = load_bench("gpu")


def test_tiny_run_on_the_cpu(capsys):
    result = gpu.main(["--tiny", "--threads", "1", "--peak-tflops", "1"])
    printed = last_json_line(capsys.readouterr().out)
    assert printed["device"] == "cpu" and printed["peak_tflops"] == 1.0
    assert set(printed["variants"]) == {"clip", "mcd", "peer"}
    for variant in printed["variants"].values():
        assert variant["samples_per_s"] > 0 and variant["flops_per_sample"] > 0
        assert 0 < variant["mfu"] < 1  # a 2-core CPU against 1 TFLOP/s
        assert variant["mfu"] == pytest.approx(variant["flops_per_step"] / variant["step_s"] / 1e12)
    assert printed["variants"]["mcd"]["flops_per_sample"] > 2 * printed["variants"]["clip"]["flops_per_sample"]
    assert printed["largest_batch"] == {"batch": 32, "capped": True, "first_failing": None, "variant": "mcd"}
    assert printed["mcd_samples_per_s"] == result["variants"]["mcd"]["samples_per_s"]
    assert isinstance(printed["targets"]["mfu_holds"], bool)


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
    assert gpu.peak_tflops("NVIDIA H200") == 989
    assert gpu.peak_tflops("NVIDIA H100 80GB HBM3") == 989
    assert gpu.peak_tflops("NVIDIA H100 PCIe") == 756
    assert gpu.peak_tflops("NVIDIA A100-SXM4-80GB") == 312
    assert gpu.peak_tflops("Tesla T4") is None
