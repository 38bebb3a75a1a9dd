# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""`--local_loss` (docs/method.md §9, open_clip's `--local-loss`): each process computes only the loss rows of its
own samples against the whole global batch, and gets the loss and the gradients of the global objective.

1. One process, simulated shards: the anchor-row shares of every term (`MCDLoss.terms(anchor_rows=...)`) add up,
   in value and gradient, to the global term, for every objective, with and without pair ids, for a contiguous and
   an interleaved split of N = 7 rows into 3 + 4 (the interleaved one is what gradient accumulation hands a process).
2. Two gloo processes (this file is also the `torchrun` entry point, reusing `_distributed_worker.py`'s cases): the
   loss terms, the DDP-averaged parameter gradients and the gradients of each process's embeddings are the same
   with and without `local_loss`, through `MCDLoss`, `MCDForPreTraining` and `MCDTrainer` with accumulation.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import load_worker, objective_terms, run_two_process_worker, unit
from transformers import HfArgumentParser

from modeling_mcd.objective import OBJECTIVES, MCDLoss, ObjectiveInputs
from modeling_mcd.objective.distributed import world_info
from modeling_mcd.objective.pairs import negative_pair_count, same_pair_mask
from modeling_mcd.trainer.training_arguments import MCDTrainingArguments

WORKER_PATH = Path(__file__).with_name("_distributed_worker.py")
worker = load_worker(WORKER_PATH)

N, D, TOKENS, VOCAB = 7, 5, 4, 11
WEIGHTS = {"lambda_dist": 0.7, "lambda_pos": 1.3, "lambda_neg": 0.6, "lambda_noisy": 1.7, "beta_mlm": 0.4}
ALPHA = 0.3
#: Two ways to split the 7 rows between 2 simulated processes: 3 + 4 rows each.
SPLITS = {"contiguous": ([0, 1, 2], [3, 4, 5, 6]), "interleaved": ([0, 2, 5], [1, 3, 4, 6])}
#: Rows 0/2 and 1/6 show one image each (the pairs straddle the contiguous split), row 3 is a placeholder.
PAIR_IDS = torch.tensor([0, 1, 0, -1, 4, 5, 1])
#: The 2-process global batch (`_distributed_worker.GLOBAL_BATCH` = 6, 3 rows per rank): rows 3 and 5 repeat the
#: ids of rank 0's rows 0 and 1, row 4 is a placeholder.
TWO_PROCESS_PAIR_IDS = torch.tensor([0, 1, 2, 0, -1, 1])
#: The student tensors whose gradients are compared (MLM logits: per-token, the local rows' own).
LEAVES = ("image_embeds", "text_embeds", "aug_image_embeds", "logit_scale", "mlm_logits")


def _inputs() -> dict[str, torch.Tensor]:
    """Seeded float64 inputs of `MCDLoss.terms` for N rows: student leaves with gradient, a perturbed teacher,
    MLM logits (N, TOKENS, VOCAB) with 1 to 3 masked tokens per caption."""
    student = {name: unit(N, D, seed=seed).requires_grad_() for seed, name in enumerate(LEAVES[:3])}
    teacher = {
        name: torch.nn.functional.normalize(student[source].detach() + 0.4 * unit(N, D, seed=10 + seed), dim=-1)
        for seed, (name, source) in enumerate(
            [
                ("teacher_image_embeds", "image_embeds"),
                ("teacher_aug_image_embeds", "aug_image_embeds"),
                ("teacher_text_embeds", "text_embeds"),
            ]
        )
    }
    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(0, VOCAB, (N, TOKENS), generator=generator)
    labels[torch.rand(N, TOKENS, generator=generator) < 0.5] = -100
    labels[:, 0] = torch.randint(0, VOCAB, (N,), generator=generator)  # every caption has a masked token
    return {
        **student,
        **teacher,
        "logit_scale": torch.tensor(4.3, dtype=torch.float64, requires_grad=True),
        "mlm_logits": torch.randn(N, TOKENS, VOCAB, generator=generator, dtype=torch.float64, requires_grad=True),
        "mlm_labels": labels,
    }


def _terms(loss_fn: MCDLoss, x: dict, pair_ids: torch.Tensor | None, rows: list[int] | None) -> dict:
    """`loss_fn.terms` over the whole batch (`rows=None`), or the share of the simulated process holding `rows`:
    those anchors, and its own captions' MLM tokens normalised by the batch's count."""
    embeddings = {name: value for name, value in x.items() if name not in ("mlm_logits", "mlm_labels")}
    mlm = {"mlm_logits": x["mlm_logits"], "mlm_labels": x["mlm_labels"]}
    if rows is not None:
        mlm = {name: value[rows] for name, value in mlm.items()}
    return loss_fn.terms(
        ObjectiveInputs(**embeddings, **mlm, pair_ids=pair_ids),
        ALPHA,
        mlm_count=(x["mlm_labels"] != -100).sum(),
        anchor_rows=None if rows is None else torch.tensor(rows),
    )


def _gradients(x: dict) -> dict[str, torch.Tensor]:
    return {name: torch.zeros_like(x[name]) if x[name].grad is None else x[name].grad.clone() for name in LEAVES}


@pytest.mark.parametrize("split", sorted(SPLITS))
@pytest.mark.parametrize("pair_ids", [None, PAIR_IDS], ids=["plain", "pair_ids"])
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_shares_of_the_processes_add_up_to_the_global_loss(objective, pair_ids, split):
    loss_fn = MCDLoss(objective, **WEIGHTS)
    x = _inputs()
    reference = _terms(loss_fn, x, pair_ids, rows=None)
    reference["loss"].backward()
    expected = _gradients(x)

    x = _inputs()
    shares = [_terms(loss_fn, x, pair_ids, rows) for rows in SPLITS[split]]
    for share in shares:
        share["loss"].backward()  # in one process (W = 1) the gradients of the shares add up in `.grad`
    assert set(reference) == set(shares[0]) == set(shares[1])
    for name, value in reference.items():
        assert value > 0, name
        assert (shares[0][name] + shares[1][name]).item() == pytest.approx(value.item(), rel=1e-12, abs=0), name
        assert 0 < shares[0][name] < value, name  # a real share: each process computes a part of every term
    got = _gradients(x)
    for name in LEAVES:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-10, atol=1e-14, msg=name)
    assert all(expected[name].abs().max() > 0 for name in LEAVES if objective != "clip" or name != "aug_image_embeds")


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_local_loss_in_one_process_is_the_global_loss(objective):
    """One process holds every row: `MCDLoss(local_loss=True)` anchors all of them, and is the plain objective."""
    x = _inputs()
    inputs = {name: value for name, value in x.items() if name != "mlm_logits"}
    plain = objective_terms(
        MCDLoss(objective, **WEIGHTS), **inputs, mlm_logits=x["mlm_logits"], alpha=ALPHA, pair_ids=PAIR_IDS
    )
    local = objective_terms(
        MCDLoss(objective, **WEIGHTS, local_loss=True),
        **inputs,
        mlm_logits=x["mlm_logits"],
        alpha=ALPHA,
        pair_ids=PAIR_IDS,
    )
    assert set(local) == set(plain)
    for name, value in plain.items():
        torch.testing.assert_close(local[name], value, rtol=1e-13, atol=0, msg=name)


def test_negative_pair_count_is_the_number_of_negatives_in_the_mask():
    for ids in (PAIR_IDS, torch.arange(N), torch.full((N,), -1), torch.tensor([3, 3, 3, -1, 3, 2, 2])):
        assert int(negative_pair_count(ids)) == int((~same_pair_mask(ids)).sum())


def test_flag_reaches_the_objective(tmp_path):
    (args,) = HfArgumentParser(MCDTrainingArguments).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--use_cpu", "true", "--report_to", "none", "--max_steps", "1"]
        + ["--local_loss", "true"]
    )
    assert args.local_loss and args.build_loss().local_loss
    assert "local_loss=True" in repr(args.build_loss())
    assert not MCDTrainingArguments(output_dir=str(tmp_path), max_steps=1).build_loss().local_loss


def test_accumulation_with_local_loss_in_one_process(tmp_path):
    """4 micro-batches through `MCDTrainer` with `local_loss`: the replays' anchors are the cached rows of every
    micro-batch, and the step has the loss and gradients of the step without it."""
    from test_accumulation import MICRO_BATCHES, _step, _trainer

    reference_loss, reference = _step(_trainer(tmp_path / "global", "mcd", MICRO_BATCHES), MICRO_BATCHES)
    trainer = _trainer(tmp_path / "local", "mcd", MICRO_BATCHES, local_loss=True)
    with recorded_anchor_rows() as seen:
        loss, grads = _step(trainer, MICRO_BATCHES)
    assert seen == [list(range(8))] * MICRO_BATCHES
    assert loss == pytest.approx(reference_loss, rel=1e-10)
    for name, grad in reference.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-8, atol=1e-12, msg=name)


# ---- 2 processes ------------------------------------------------------------------------------------------------


@contextmanager
def recorded_anchor_rows() -> Iterator[list]:
    """Record the `anchor_rows` of every `MCDLoss.terms` call (a list per call, `None` for the global loss)."""
    seen: list = []
    terms = MCDLoss.terms

    def spy(self, *args, **kwargs):
        rows = kwargs.get("anchor_rows")
        seen.append(None if rows is None else rows.tolist())
        return terms(self, *args, **kwargs)

    MCDLoss.terms = spy
    try:
        yield seen
    finally:
        MCDLoss.terms = terms


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> list[dict]:
    return run_two_process_worker(Path(__file__), tmp_path_factory.mktemp("local_loss"), timeout=420)


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("pair_ids", ["plain", "pair_ids"])
@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("case", ["losses", "model"])
def test_two_processes_local_loss_equals_global_loss(rank_results, case, objective, pair_ids):
    """Stand-in towers through `MCDLoss` (`losses`) and the tiny `MCDForPreTraining` end to end (`model`), float64,
    2 processes of 3 rows, MLM tokens split 2 vs 5."""
    rows = worker.GLOBAL_BATCH // 2
    for rank, results in enumerate(rank_results):
        plain, local = (results[(case, objective, pair_ids, flag)] for flag in (False, True))
        assert plain["anchor_rows"] == [None]
        assert local["anchor_rows"] == [list(range(rank * rows, (rank + 1) * rows))]  # its own rows only
        assert set(local["terms"]) == set(plain["terms"])
        for name, value in plain["terms"].items():  # each process reports the global terms (MLM: its share)
            assert local["terms"][name] == pytest.approx(value, rel=1e-12), name
        assert set(local["grads"]) == set(plain["grads"])
        for name, grad in plain["grads"].items():  # averaged over the processes by DDP
            torch.testing.assert_close(local["grads"][name], grad, rtol=1e-9, atol=1e-13, msg=name)
        for name, grad in plain["embedding_grads"].items():  # this process's u, v, ũ, before any averaging
            if grad is None:
                assert local["embedding_grads"][name] is None, name
                continue
            assert grad.abs().max() > 0, name
            torch.testing.assert_close(local["embedding_grads"][name], grad, rtol=1e-9, atol=1e-13, msg=name)
        assert all(grad is None for grad in local["teacher_grads"])


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_two_processes_local_loss_with_accumulation(rank_results, objective):
    """`MCDTrainer`, 2 processes x 2 micro-batches of 2 rows: each replay anchors the process's rows of BOTH
    micro-batches (row j·W·B + r·B + b of the cache), and the step's loss and gradients are those without it."""
    for rank, results in enumerate(rank_results):
        plain, local = (results[("accumulation", objective, flag)] for flag in (False, True))
        own_rows = [micro_batch * 4 + rank * 2 + row for micro_batch in range(2) for row in range(2)]
        assert plain["anchor_rows"] == [None, None]
        assert local["anchor_rows"] == [own_rows, own_rows]
        assert local["loss"] == pytest.approx(plain["loss"], rel=1e-12)
        assert set(local["grads"]) == set(plain["grads"])
        for name, grad in plain["grads"].items():
            torch.testing.assert_close(local["grads"][name], grad, rtol=1e-9, atol=1e-13, msg=name)


def main(out_dir: Path) -> None:
    """`torchrun --nproc_per_node 2 test_local_loss.py OUT_DIR`: every case with and without the local loss on this
    rank, saved to OUT_DIR/rank{r}.pt with the anchor rows each loss call got."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world_size = world_info()
    results: dict = {}
    with recorded_anchor_rows() as seen:
        for case in ("losses", "model"):
            for objective in OBJECTIVES:
                for ids_name, ids in (("plain", None), ("pair_ids", TWO_PROCESS_PAIR_IDS)):
                    for local_loss in (False, True):
                        seen.clear()
                        result = worker.run_case(case, objective, rank, world_size, local_loss, ids)
                        results[(case, objective, ids_name, local_loss)] = {**result, "anchor_rows": list(seen)}
        for objective in OBJECTIVES:
            for local_loss in (False, True):
                seen.clear()
                overrides = {"local_loss": True} if local_loss else {}
                result = worker.run_accumulation(objective, rank, world_size, out_dir, **overrides)
                results[("accumulation", objective, local_loss)] = {**result, "anchor_rows": list(seen)}
    torch.save(results, out_dir / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
