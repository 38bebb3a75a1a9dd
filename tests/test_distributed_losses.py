# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""2 gloo processes with half a batch each == 1 process with the whole batch (SPEC "Notation").

Checks the claim in `modeling_mcd.distributed`: gathering with gradient + DDP's gradient averaging
gives exactly the 1-process loss and gradients, for the `clip`, `mpnce` and `mcd` objectives, with the
MLM tokens split unevenly (2 vs 5 masked) across the ranks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import load_worker, run_two_process_worker

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

WORKER_PATH = Path(__file__).with_name("_dist_loss_worker.py")
worker = load_worker(WORKER_PATH)

# Terms computed over the global batch: identical on every rank. `mlm_loss` (and so `loss`) is each
# rank's share, whose mean over ranks is the global value.
SHARED_TERMS = ("contrastive_loss", "distill_pos_loss", "distill_neg_loss", "distill_noisy_loss", "distill_loss")


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("dist_losses")
    return run_two_process_worker(WORKER_PATH, out_dir, timeout=120)


@pytest.mark.parametrize("objective", worker.OBJECTIVES)
def test_two_processes_match_one(rank_results, objective):
    reference = worker.run_objective(objective, rank=0, world_size=1)
    ranks = [results[objective] for results in rank_results]
    assert set(ranks[0]["terms"]) == set(reference["terms"])
    for name in SHARED_TERMS:
        if name in reference["terms"]:
            for rank in ranks:
                assert rank["terms"][name] == pytest.approx(reference["terms"][name], rel=1e-9)
    # The uneven token split makes the per-rank MLM shares differ; their mean is the global mean.
    shares = [rank["terms"]["mlm_loss"] for rank in ranks]
    assert shares[0] != pytest.approx(shares[1])
    for name in ("mlm_loss", "loss"):
        mean = sum(rank["terms"][name] for rank in ranks) / 2
        assert mean == pytest.approx(reference["terms"][name], rel=1e-9)
    for rank in ranks:
        assert set(rank["grads"]) == set(reference["grads"])
        for name, grad in reference["grads"].items():
            assert grad.abs().max() > 0
            torch.testing.assert_close(rank["grads"][name], grad, rtol=1e-7, atol=1e-9, msg=name)


def test_gathers_concatenate_in_rank_order(rank_results):
    for results in rank_results:
        torch.testing.assert_close(results["gathered"], torch.tensor([0.0, 0.0, 1.0, 1.0]))
        torch.testing.assert_close(results["gathered_no_grad"], torch.tensor([[0.0, 0.0], [1.0, 1.0]]))


def test_unequal_local_batches_raise_on_every_rank(rank_results):
    for results in rank_results:
        assert "same local batch shape" in results["unequal_error"]
        assert "(3, 2)" in results["unequal_error"] and "(2, 2)" in results["unequal_error"]
