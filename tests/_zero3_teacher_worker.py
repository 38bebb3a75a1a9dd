# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Worker for `tests/test_teacher.py::test_ema_under_zero3_matches_one_process`.

Launched by the test as `torchrun --nproc_per_node 2 tests/_zero3_teacher_worker.py CONFIG OUT_DIR`:
trains a toy student for `NUM_STEPS` DeepSpeed ZeRO-3 steps (gloo, CPU) with the EMA teacher updated
shard by shard after each step, saves a DeepSpeed checkpoint (which re-partitions every parameter and
re-gathers the persisted ones from their shards, so a stale shard would show), then gathers the full
parameters and saves them (rank 0) to OUT_DIR/result.pt.

The toy model and the batch live here so the test's 1-process reference uses exactly the same ones.
"""

from __future__ import annotations

import copy
import os
import sys

import torch
from torch import nn

from modeling_mcd.pretraining.teacher import ema_update_, momentum_at, paired_parameters

NUM_STEPS = 2
TOTAL_STEPS = 4  # schedule length T: m(1) ~ 0.57, m(2) = 0.75 with BASE_MOMENTUM, so the teacher visibly moves
BASE_MOMENTUM = 0.5
GLOBAL_BATCH = 6
LR = 0.05
#: `stage3_param_persistence_threshold`: the 17x29 weight (493) is partitioned, everything else persists.
PERSISTENCE_THRESHOLD = 100


class ToyStudentTeacher(nn.Module):
    """A student MLP and its frozen EMA copy inside one module, like `MCDForPreTraining`."""

    def __init__(self) -> None:
        super().__init__()
        self.student = nn.Sequential(nn.Linear(17, 29), nn.Tanh(), nn.Linear(29, 3))
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s = self.student(x)  # (B, 3)
        with torch.no_grad():
            t = self.teacher(x)  # (B, 3): the student's next step depends on the teacher's current weights
        return ((s - y) ** 2).mean() + ((s - t) ** 2).mean()


def make_model() -> ToyStudentTeacher:
    torch.manual_seed(0)
    return ToyStudentTeacher()


def make_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of one step: (GLOBAL_BATCH, 17) inputs and (GLOBAL_BATCH, 3) targets."""
    gen = torch.Generator().manual_seed(100 + step)
    return torch.randn(GLOBAL_BATCH, 17, generator=gen), torch.randn(GLOBAL_BATCH, 3, generator=gen)


def make_optimizer(student: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(student.parameters(), lr=LR, weight_decay=0.01)


def main(config_path: str, out_dir: str) -> None:
    import deepspeed

    torch.set_num_threads(1)
    # The CPU accelerator JIT-compiles a shared-memory all-reduce kernel (minutes of C++ on a fresh
    # machine) that only speeds up inference collectives; gloo does everything this test needs.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend="gloo")
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    model = make_model()
    engine, *_ = deepspeed.initialize(model=model, optimizer=make_optimizer(model.student), config=config_path)
    teacher_params, student_params = paired_parameters(engine.module.teacher, engine.module.student)
    persisted = [n for n, p in engine.module.teacher.named_parameters() if p.ds_persist]
    local = GLOBAL_BATCH // world
    for step in range(NUM_STEPS):
        x, y = make_batch(step)
        loss = engine(x[rank * local : (rank + 1) * local], y[rank * local : (rank + 1) * local])
        engine.backward(loss)
        engine.step()
        # Shard-wise, no communication: what the trainer's EMA callback does.
        ema_update_(teacher_params, student_params, momentum_at(step + 1, TOTAL_STEPS, BASE_MOMENTUM))
    engine.save_checkpoint(os.path.join(out_dir, "checkpoint"))
    with deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
        state = {n: p.detach().clone() for n, p in engine.module.named_parameters()}
    if rank == 0:
        torch.save({"state": state, "persisted": persisted, "world_size": world}, os.path.join(out_dir, "result.pt"))
    torch.distributed.barrier()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(f"usage: {os.path.basename(__file__)} CONFIG_JSON OUT_DIR")
    main(sys.argv[1], sys.argv[2])
