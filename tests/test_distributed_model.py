# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""MCDForPreTraining under DDP: 2 gloo processes with half a batch each == 1 process with the whole batch.

The model end to end (both views in one call, clean + masked text in one call, the teacher, `MCDLoss`
gathering over processes), in float64 with fixed views and MLM masks, for the `clip`, `mpnce` and `mcd`
objectives: the same loss terms and the same DDP-averaged parameter gradients as one process.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import load_worker, run_two_process_worker

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

WORKER_PATH = Path(__file__).with_name("_dist_model_worker.py")
worker = load_worker(WORKER_PATH)

# Terms over the global batch, identical on every rank. `mlm_loss` (and so `loss`) is each rank's share,
# whose mean over ranks is the global value.
SHARED_TERMS = ("contrastive_loss", "distill_pos_loss", "distill_neg_loss", "distill_noisy_loss", "distill_loss")


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("dist_model")
    return run_two_process_worker(WORKER_PATH, out_dir, timeout=180)


@pytest.mark.parametrize("objective", worker.OBJECTIVES)
def test_two_processes_match_one(rank_results, objective):
    reference = worker.run_objective(objective, rank=0, world_size=1)
    ranks = [results[objective] for results in rank_results]
    expected_terms = {"contrastive_loss", "mlm_loss", "loss"}
    if objective == "mcd":
        expected_terms |= set(SHARED_TERMS)
    assert set(reference["terms"]) == expected_terms
    for rank in ranks:
        assert set(rank["terms"]) == expected_terms
        for name in SHARED_TERMS:
            if name in reference["terms"]:
                assert reference["terms"][name] > 0
                assert rank["terms"][name] == pytest.approx(reference["terms"][name], rel=1e-10)
    # The uneven token split (2 vs 5 masked) makes the MLM shares differ; their mean is the global mean.
    shares = [rank["terms"]["mlm_loss"] for rank in ranks]
    assert shares[0] != pytest.approx(shares[1])
    for name in ("mlm_loss", "loss"):
        mean = sum(rank["terms"][name] for rank in ranks) / 2
        assert mean == pytest.approx(reference["terms"][name], rel=1e-10)

    for rank in ranks:
        assert set(rank["grads"]) == set(reference["grads"])
        assert all(grad is None for grad in rank["teacher_grads"])  # the frozen teacher
        for name, grad in reference["grads"].items():
            torch.testing.assert_close(rank["grads"][name], grad, rtol=1e-8, atol=1e-12, msg=name)
    # The check covers every tower: each one's gradient is non-zero.
    for prefix in ("mcd.vision_model.", "mcd.visual_projection", "mcd.text_model.", "mcd.text_projection", "mlm_head."):
        norm = sum(grad.norm() ** 2 for name, grad in reference["grads"].items() if name.startswith(prefix))
        assert norm > 0, prefix
    assert reference["grads"]["mcd.logit_scale"].abs() > 0
