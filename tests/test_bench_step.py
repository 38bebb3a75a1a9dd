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
    # What MCD adds over CLIP, counted by FlopCounterMode: a second view, the teacher, the masked captions.
    assert 1 < printed["flop_ratio_mpnce"] < printed["flop_ratio_nomlm"] < printed["flop_ratio"] < 4
    # The FLOP ratio is taken from the FLOPs (the time ratio from the times: see test_ratios_and_targets).
    assert printed["flop_ratio"] == pytest.approx(printed["flops"]["mcd"] / printed["flops"]["clip"])
    # Our clip step and the peer's run the same towers: the same arithmetic (the views' blur adds a little).
    assert printed["clip_flops_over_peer"] == pytest.approx(1.0, abs=0.05)
    # Every variant ran: every ratio and every target's verdict is reported, from the medians and the fastest steps.
    targets = printed["targets"]
    assert None not in (printed["mcd_over_clip"], printed["clip_over_peer"], printed["efficiency"])
    assert None not in (targets["efficiency_holds"], targets["clip_over_peer_holds"], *printed["by_min_time"].values())
    assert all(impl == "sdpa" for towers in printed["attention"].values() for impl in towers.values())


def test_flop_counter_counts_cpu_attention():
    import torch

    q = torch.randn(2, 3, 5, 4, requires_grad=True)

    def attend():
        torch.nn.functional.scaled_dot_product_attention(q, q, q).sum().backward()

    # torch's SDPA formulas: 2 products of 2 x 3 heads of (5 x 4) @ (4 x 5) forward, 5 backward (the scores recomputed)
    assert step.count_flops(attend) == (2 + 5) * 6 * 2 * 5 * 4 * 5


def test_batch_looks_like_the_collator_output():
    """The synthetic batch has the keys, dtypes and token layout of `MCDCollator`'s on a WordPiece vocabulary."""
    import torch

    from modeling_mcd.data import MCDCollator
    from modeling_mcd.trainer.wordpiece import train_wordpiece_tokenizer

    size = common.SIZES["tiny"]
    batch = common.make_batch(size, 6, "cpu")
    tokenizer = train_wordpiece_tokenizer(["a red circle", "two blue squares"], vocab_size=60)
    examples = [
        {"pixel_values": torch.zeros(3, size.base_image_size, size.base_image_size, dtype=torch.uint8), "caption": c}
        for c in ("a red circle", "two blue squares")
    ]
    collated = MCDCollator(tokenizer=tokenizer, max_length=size.text_length)(examples)
    assert batch.keys() == collated.keys()
    assert {name: value.dtype for name, value in batch.items() if torch.is_tensor(value)} == {
        name: value.dtype for name, value in collated.items() if torch.is_tensor(value)
    }
    tokens = {"[PAD]": common.PAD_ID, "[UNK]": common.UNK_ID, "[CLS]": common.CLS_ID, "[SEP]": common.SEP_ID}
    tokens["[MASK]"] = common.MASK_ID
    assert {token: tokenizer.convert_tokens_to_ids(token) for token in tokens} == tokens
    assert batch["pixel_values"].shape == (6, 3, size.base_image_size, size.base_image_size)
    assert (batch["input_ids"][:, 0] == common.CLS_ID).all() and (batch["input_ids"][:, -1] == common.SEP_ID).all()
    masked = batch["mlm_labels"] != -100
    assert masked.any() and not masked[:, [0, -1]].any()  # words are masked, [CLS] and [SEP] never
    assert torch.equal(batch["mlm_input_ids"][masked], torch.full_like(batch["mlm_input_ids"][masked], common.MASK_ID))
    assert torch.equal(batch["mlm_labels"][masked], batch["input_ids"][masked])
    assert torch.equal(batch["mlm_input_ids"][~masked], batch["input_ids"][~masked])


def test_ratios_and_targets():
    times = {"clip": 1.0, "mpnce": 1.5, "mcd_nomlm": 2.0, "mcd": 2.4, "peer": 1.05}
    flops = {"clip": 10, "mpnce": 16, "mcd_nomlm": 21, "mcd": 20, "peer": 10}
    out = step.ratios(times, flops, "cuda")
    assert (out["mcd_over_clip"], out["flop_ratio"], out["efficiency"]) == pytest.approx((2.4, 2.0, 1.2))
    assert out["targets"]["efficiency_holds"] is False  # 2.4 x the time for 2 x the FLOPs: 20 % over, not 5 %
    assert (out["mpnce_over_clip"], out["flop_ratio_mpnce"]) == pytest.approx((1.5, 1.6))
    assert (out["mcd_nomlm_over_clip"], out["flop_ratio_nomlm"]) == pytest.approx((2.0, 2.1))
    assert step.ratios({**times, "mcd": 2.0}, flops, "cuda")["targets"]["efficiency_holds"] is True
    # Our clip step at 1 / 1.05 of the peer's time: no slower (the CPU target), but not 10 % faster (the GPU's).
    assert out["clip_over_peer"] == pytest.approx(1 / 1.05) and out["targets"]["clip_over_peer_holds"] is False
    assert step.ratios(times, flops, "cpu")["targets"]["clip_over_peer_holds"] is True
    partial = step.ratios({"mcd": 2.0}, {}, "cpu")
    assert partial["mcd_over_clip"] is None and partial["targets"]["efficiency_holds"] is None
