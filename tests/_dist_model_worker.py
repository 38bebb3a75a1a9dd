# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Worker for tests/test_distributed_model.py.

Launched by `torchrun --standalone --nproc_per_node 2 _dist_model_worker.py OUT_DIR`: each rank runs the tiny
`MCDForPreTraining` (float64, dropout off, wrapped in DDP) on its half of one fixed global batch (fixed views,
fixed MLM masks: no randomness), backpropagates, and saves its loss terms and DDP-averaged gradients to
OUT_DIR/rank{r}.pt. The test imports `run_objective` too and calls it with world_size=1 for the reference.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from modeling_mcd.distributed import world_info
from modeling_mcd.losses import MCDLoss
from modeling_mcd.pretraining import MCDForPreTraining

from conftest import fixed_pretraining_batch, tiny_config

OBJECTIVES = ("clip", "mpnce", "mcd")
GLOBAL_BATCH = 6  # 3 rows per rank
CAPTIONS = [
    "a photo of a red circle",
    "two blue squares",
    "a cat",
    "a big green star on the left",
    "this is a dog",
    "three black crosses and a plane",
]
WEIGHTS = {"lambda_dist": 0.7, "lambda_pos": 1.3, "lambda_neg": 0.6, "lambda_noisy": 1.7, "beta_mlm": 0.4}
ALPHA = 0.3
# Masked (row, token) positions: 2 on rank 0's rows (0-2), 5 on rank 1's rows (3-5), so only the
# global-count normalisation of the MLM loss gives the 1-process gradient.
MASKED = [(0, 2), (2, 1), (3, 1), (3, 4), (4, 2), (5, 3), (5, 6)]


def global_batch() -> dict[str, torch.Tensor]:
    """The fixed global batch: pre-made views (float64) and a fixed MLM copy of the captions."""
    return fixed_pretraining_batch(CAPTIONS, MASKED, seed=0, dtype=torch.float64)


def build_model(objective: str) -> MCDForPreTraining:
    """The same float64 model on every rank, with a teacher that differs from the student (non-zero distillation)."""
    torch.manual_seed(0)
    model = MCDForPreTraining(tiny_config(), loss_fn=MCDLoss(objective, **WEIGHTS)).double()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.teacher_student_parameters()[0]:
            param.add_(0.05 * torch.randn(param.shape, generator=generator, dtype=param.dtype))
    # Dropout off in the student: the only randomness left would differ between 1 and 2 processes.
    return model.eval()


def run_objective(objective: str, rank: int, world_size: int) -> dict:
    """One forward/backward on this rank's rows; returns the loss terms (floats) and the parameter gradients."""
    model = build_model(objective)
    wrapped = DistributedDataParallel(model) if world_size > 1 else model
    local = slice(rank * GLOBAL_BATCH // world_size, (rank + 1) * GLOBAL_BATCH // world_size)
    batch = {name: tensor[local] for name, tensor in global_batch().items()}
    outputs = wrapped(**batch, alpha=ALPHA)
    outputs.loss.backward()
    return {
        "terms": {name: value.item() for name, value in outputs.losses.items()},
        "grads": {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad},
        "teacher_grads": [p.grad for p in model.teacher_student_parameters()[0]],
    }


def main(out_dir: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world_size = world_info()
    results = {objective: run_objective(objective, rank, world_size) for objective in OBJECTIVES}
    torch.save(results, out_dir / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
