# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Worker for tests/test_distributed_losses.py.

Launched by `torchrun --standalone --nproc_per_node 2 _dist_loss_worker.py OUT_DIR`: each rank takes
its half of one seeded global batch, runs a tiny linear "encoder" wrapped in DDP through `MCDLoss`,
backpropagates, and saves its loss terms and DDP-averaged gradients to OUT_DIR/rank{r}.pt.
The test imports `run_objective` too and calls it with world_size=1 for the 1-process reference.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from modeling_mcd.distributed import gather_no_grad, gather_with_grad, world_info
from modeling_mcd.losses import MCDLoss

GLOBAL_BATCH, FEATURES, DIM, TOKENS, VOCAB = 6, 5, 7, 4, 11
OBJECTIVES = ("clip", "mpnce", "mcd")
WEIGHTS = {"lambda_dist": 0.7, "lambda_pos": 1.3, "lambda_neg": 0.6, "lambda_noisy": 1.7, "beta_mlm": 0.4}
ALPHA = 0.3
# Masked (row, token) positions: 2 on rank 0's rows (0-2), 5 on rank 1's rows (3-5), so a per-rank
# mean would weight the tokens wrongly and only the global-count normalisation is exact.
MASKED = [(0, 1), (2, 3), (3, 0), (3, 2), (4, 1), (5, 0), (5, 3)]


class TinyEncoder(nn.Module):
    """Linear stand-ins for the towers: u, ũ share `image`; MLM logits go through `text` then a head."""

    def __init__(self):
        super().__init__()
        self.image = nn.Linear(FEATURES, DIM)
        self.text = nn.Linear(FEATURES, DIM)
        self.mlm_head = nn.Linear(DIM, VOCAB)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.teacher_image = nn.Linear(FEATURES, DIM).requires_grad_(False)

    def forward(self, image_x, aug_x, text_x, tokens) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            teacher_image_embeds = F.normalize(self.teacher_image(image_x), dim=-1)
            teacher_aug_image_embeds = F.normalize(self.teacher_image(aug_x), dim=-1)
        return {
            "image_embeds": F.normalize(self.image(image_x), dim=-1),  # (B, D)
            "aug_image_embeds": F.normalize(self.image(aug_x), dim=-1),
            "text_embeds": F.normalize(self.text(text_x), dim=-1),
            "teacher_image_embeds": teacher_image_embeds,
            "teacher_aug_image_embeds": teacher_aug_image_embeds,
            "mlm_logits": self.mlm_head(self.text(tokens)),  # (B, L, V)
            "logit_scale": self.logit_scale.exp(),
        }


def global_batch() -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    image_x, aug_x, text_x = torch.randn(3, GLOBAL_BATCH, FEATURES, generator=generator, dtype=torch.float64)
    tokens = torch.randn(GLOBAL_BATCH, TOKENS, FEATURES, generator=generator, dtype=torch.float64)
    labels = torch.full((GLOBAL_BATCH, TOKENS), -100)
    for row, token in MASKED:
        labels[row, token] = int(torch.randint(0, VOCAB, (), generator=generator))
    return image_x, aug_x, text_x, tokens, labels


def run_objective(objective: str, rank: int, world_size: int) -> dict:
    """One forward/backward on this rank's rows; returns loss terms (floats) and parameter gradients."""
    torch.manual_seed(0)
    model = TinyEncoder().double()
    wrapped = DistributedDataParallel(model) if world_size > 1 else model
    local = slice(rank * GLOBAL_BATCH // world_size, (rank + 1) * GLOBAL_BATCH // world_size)
    image_x, aug_x, text_x, tokens, labels = (t[local] for t in global_batch())
    outputs = wrapped(image_x, aug_x, text_x, tokens)
    terms = MCDLoss(objective, **WEIGHTS)(**outputs, mlm_labels=labels, alpha=ALPHA)
    terms["loss"].backward()
    return {
        "terms": {name: value.item() for name, value in terms.items()},
        "grads": {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad},
    }


def main(out_dir: Path) -> None:
    dist.init_process_group("gloo")
    rank, world_size = world_info()
    results: dict = {objective: run_objective(objective, rank, world_size) for objective in OBJECTIVES}
    results["gathered"] = gather_with_grad(torch.full((2,), float(rank)))
    results["gathered_no_grad"] = gather_no_grad(torch.full((1, 2), float(rank)))
    try:
        gather_with_grad(torch.zeros(3 - rank, 2))  # unequal local batches
    except ValueError as error:
        results["unequal_error"] = str(error)
    torch.save(results, out_dir / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
