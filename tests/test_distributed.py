# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""2 gloo processes with half a batch each == 1 process with the whole batch (docs/method.md §Notation).

Gathering with gradient + DDP's gradient averaging must give exactly the 1-process loss and gradients for
the `clip`, `mpnce` and `mcd` objectives, with the MLM tokens split unevenly (2 vs 5 masked) across the
ranks: for `MCDLoss` on stand-in towers, and for `MCDForPreTraining` end to end (`_distributed_worker.py`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import load_worker, run_two_process_worker

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

WORKER_PATH = Path(__file__).with_name("_distributed_worker.py")
worker = load_worker(WORKER_PATH)

# Terms over the global batch, identical on every rank. `mlm_loss` (and so `loss`) is each rank's share,
# whose mean over ranks is the global value.
SHARED_TERMS = ("contrastive_loss", "distill_pos_loss", "distill_neg_loss", "distill_noisy_loss", "distill_loss")
# The model runs ~20 float64 layers, the stand-ins one: the model's sums of products round a little more.
TOLERANCE = {"losses": {"rtol": 1e-7, "atol": 1e-9}, "model": {"rtol": 1e-8, "atol": 1e-12}}
# Every tower of the pretraining model, so a zero gradient in one of them cannot pass unnoticed.
MODEL_PREFIXES = ("mcd.vision_model.", "mcd.visual_projection", "mcd.text_model.", "mcd.text_projection", "mlm_head.")


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> list[dict]:
    return run_two_process_worker(WORKER_PATH, tmp_path_factory.mktemp("distributed"), timeout=240)


@pytest.mark.parametrize("objective", worker.OBJECTIVES)
def test_two_processes_with_accumulation_match_one_batch(rank_results, objective, tmp_path):
    """2 processes x 2 micro-batches of 2 rows == 1 process with one batch of 8, through MCDTrainer."""
    reference = worker.run_accumulation(objective, rank=0, world_size=1, out_dir=tmp_path)
    ranks = [results[("accumulation", objective)] for results in rank_results]
    # Each process reports the shared terms once and its own MLM share: their mean is the whole batch's loss.
    assert sum(rank["loss"] for rank in ranks) / 2 == pytest.approx(reference["loss"], rel=1e-9)
    for rank in ranks:
        assert set(rank["grads"]) == set(reference["grads"])
        for name, grad in reference["grads"].items():
            torch.testing.assert_close(rank["grads"][name], grad, rtol=1e-8, atol=1e-12, msg=name)


@pytest.mark.parametrize("objective", worker.OBJECTIVES)
@pytest.mark.parametrize("case", [case for case in worker.CASES if case != "accumulation"])
def test_two_processes_match_one(rank_results, case, objective):
    reference = worker.run_case(case, objective, rank=0, world_size=1)
    ranks = [results[(case, objective)] for results in rank_results]
    expected_terms = {"contrastive_loss", "mlm_loss", "loss"} | (set(SHARED_TERMS) if objective == "mcd" else set())
    assert set(reference["terms"]) == expected_terms
    for rank in ranks:
        assert set(rank["terms"]) == expected_terms
        for name in set(SHARED_TERMS) & expected_terms:
            assert reference["terms"][name] > 0
            assert rank["terms"][name] == pytest.approx(reference["terms"][name], rel=1e-9)
    # The uneven token split makes the per-rank MLM shares differ; their mean is the global mean.
    shares = [rank["terms"]["mlm_loss"] for rank in ranks]
    assert shares[0] != pytest.approx(shares[1])
    for name in ("mlm_loss", "loss"):
        mean = sum(rank["terms"][name] for rank in ranks) / 2
        assert mean == pytest.approx(reference["terms"][name], rel=1e-9)

    for rank in ranks:
        assert set(rank["grads"]) == set(reference["grads"])
        assert all(grad is None for grad in rank["teacher_grads"])  # the frozen teacher
        for name, grad in reference["grads"].items():
            torch.testing.assert_close(rank["grads"][name], grad, **TOLERANCE[case], msg=name)
    prefixes = MODEL_PREFIXES if case == "model" else tuple(reference["grads"])
    for prefix in prefixes:
        norm = sum(grad.norm() ** 2 for name, grad in reference["grads"].items() if name.startswith(prefix))
        assert norm > 0, prefix


def test_gathers_concatenate_in_rank_order(rank_results):
    for results in rank_results:
        torch.testing.assert_close(results["gathered"], torch.tensor([0.0, 0.0, 1.0, 1.0]))
        torch.testing.assert_close(results["gathered_no_grad"], torch.tensor([[0.0, 0.0], [1.0, 1.0]]))


def test_unequal_local_batches_raise_on_every_rank(rank_results):
    for results in rank_results:
        assert "same local batch shape" in results["unequal_error"]
        assert "(3, 2)" in results["unequal_error"] and "(2, 2)" in results["unequal_error"]
