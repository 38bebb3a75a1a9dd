# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""bench/step.py: every variant steps at a tiny size, and the last line of its output is the JSON the README reads."""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def load_bench(name: str):
    """bench/<name>.py as the module `name`, as a script sees it when run (`python bench/step.py`: its siblings are
    top-level modules, `import common` is bench/common.py); the siblings it imports are loaded first, the same way."""
    path = BENCH / f"{name}.py"
    if getattr(sys.modules.get(name), "__file__", None) == str(path):
        return sys.modules[name]
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if (BENCH / f"{alias.name}.py").is_file():
                    load_bench(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and (BENCH / f"{node.module}.py").is_file():
            load_bench(node.module)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there; the siblings import it by this name
    spec.loader.exec_module(module)
    return module


common = load_bench("common")
step = load_bench("step")


def last_json_line(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_tiny_run_times_every_variant_and_prints_the_json_last(capsys, tmp_path):
    result = step.main(["--tiny", "--threads", "1", "--json", str(tmp_path / "step.json")])
    printed = last_json_line(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(result, default=str))
    assert json.loads((tmp_path / "step.json").read_text()) == printed
    assert printed["device"] == "cpu" and printed["size"] == "tiny"
    assert set(printed["time_s"]) == {"clip", "mpnce", "mcd_nomlm", "mcd", "peer"}
    for table in ("time_s", "first_step_s", "samples_per_s", "flops"):
        assert all(value > 0 for value in printed[table].values()), table
    # What MCD adds over CLIP, counted by FlopCounterMode: a second view, the teacher, the masked captions.
    assert 1 < printed["flop_ratio_mpnce"] < printed["flop_ratio_nomlm"] < printed["flop_ratio"] < 4
    assert printed["flop_ratio"] == pytest.approx(printed["flops"]["mcd"] / printed["flops"]["clip"])
    # Our clip step and the peer's run the same towers: the same arithmetic (the views' blur adds a little).
    assert printed["clip_flops_over_peer"] == pytest.approx(1.0, abs=0.05)
    for key in ("mcd_over_clip", "clip_over_peer", "efficiency"):
        assert printed[key] > 0
    assert printed["efficiency"] == pytest.approx(printed["mcd_over_clip"] / printed["flop_ratio"])
    assert isinstance(printed["targets"]["efficiency_holds"], bool)
    assert printed["targets"]["clip_over_peer"] == 1.0  # the CPU target
    assert all(impl == "sdpa" for towers in printed["attention"].values() for impl in towers.values())


def test_flop_counter_counts_cpu_attention():
    import torch

    q = torch.randn(2, 3, 5, 4, requires_grad=True)

    def attend():
        torch.nn.functional.scaled_dot_product_attention(q, q, q).sum().backward()

    # torch's SDPA formulas: 2 products of 2 x 3 heads of (5 x 4) @ (4 x 5) forward, 5 backward (the scores recomputed)
    assert step.count_flops(attend) == (2 + 5) * 6 * 2 * 5 * 4 * 5


def test_batch_looks_like_the_collator_output():
    import torch

    size = common.SIZES["tiny"]
    batch = common.make_batch(size, 6, "cpu")
    assert batch["pixel_values"].dtype == torch.uint8
    assert batch["pixel_values"].shape == (6, 3, size.base_image_size, size.base_image_size)
    masked = batch["mlm_labels"] != -100
    assert torch.equal(batch["mlm_input_ids"][masked], torch.full_like(batch["mlm_input_ids"][masked], common.MASK_ID))
    assert torch.equal(batch["mlm_input_ids"][~masked], batch["input_ids"][~masked])
    assert batch["bad_samples"] == {}


def test_ratios_and_targets():
    times = {"clip": 1.0, "mpnce": 1.5, "mcd_nomlm": 2.0, "mcd": 2.4, "peer": 1.1}
    flops = {"clip": 10, "mpnce": 16, "mcd_nomlm": 21, "mcd": 24, "peer": 10}
    out = step.ratios(times, flops, "cuda")
    assert out["mcd_over_clip"] == pytest.approx(2.4) and out["flop_ratio"] == pytest.approx(2.4)
    assert out["targets"]["efficiency_holds"] is True
    assert out["clip_over_peer"] == pytest.approx(1 / 1.1)
    assert out["targets"]["clip_over_peer"] == 0.9 and out["targets"]["clip_over_peer_holds"] is False
    partial = step.ratios({"mcd": 2.0}, {}, "cpu")
    assert partial["mcd_over_clip"] is None and partial["targets"]["efficiency_holds"] is None
