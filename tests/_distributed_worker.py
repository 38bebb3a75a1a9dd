# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Worker for tests/test_distributed.py: 2 gloo processes with half a global batch each.

Launched by `torchrun --standalone --nproc_per_node 2 _distributed_worker.py OUT_DIR`. For every objective
it runs two cases on this rank's rows, backpropagates, and saves the loss terms and DDP-averaged gradients
to OUT_DIR/rank{r}.pt:

- `losses`: linear stand-in towers wrapped in DDP through `MCDLoss` (the gathers and the loss alone);
- `model`: the tiny `MCDForPreTraining` end to end (both views in one call, clean + masked text in one
  call, the teacher), in float64 with fixed views and MLM masks;
- `accumulation`: `MCDTrainer` with gradient accumulation, 2 micro-batches of 2 rows on each process (the
  views and masks it makes itself), against 1 process with one batch of all 8 rows (`test_accumulation.py`).

It also exercises the raw gathers. The test imports `run_case` too and calls it with world_size=1 for the
1-process reference; `test_local_loss.py` runs `run_case` and `run_accumulation` with and without the local loss.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from conftest import fixed_pretraining_batch, tiny_config
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from modeling_mcd.objective import OBJECTIVES, MCDLoss, ObjectiveInputs
from modeling_mcd.objective.distributed import gather_no_grad, gather_with_grad, world_info
from modeling_mcd.pretraining.model import MCDForPreTraining

CASES = ("losses", "model", "accumulation")
STUDENT_EMBEDDINGS = ("image_embeds", "text_embeds", "aug_image_embeds")
GLOBAL_BATCH = 6  # 3 rows per rank
WEIGHTS = {"lambda_dist": 0.7, "lambda_pos": 1.3, "lambda_neg": 0.6, "lambda_noisy": 1.7, "beta_mlm": 0.4}
ALPHA = 0.3
# Masked (row, token) positions: 2 on rank 0's rows (0-2), 5 on rank 1's rows (3-5), so a per-rank mean
# would weight the tokens wrongly and only the global-count normalisation of the MLM loss is exact.
MASKED = [(0, 2), (2, 1), (3, 1), (3, 4), (4, 2), (5, 3), (5, 6)]
CAPTIONS = [
    "a photo of a red circle",
    "two blue squares",
    "a cat",
    "a big green star on the left",
    "this is a dog",
    "three black crosses and a plane",
]
FEATURES, DIM, TOKENS, VOCAB = 5, 7, 7, 11


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


def _encoder_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    image_x, aug_x, text_x = torch.randn(3, GLOBAL_BATCH, FEATURES, generator=generator, dtype=torch.float64)
    tokens = torch.randn(GLOBAL_BATCH, TOKENS, FEATURES, generator=generator, dtype=torch.float64)
    labels = torch.full((GLOBAL_BATCH, TOKENS), -100)
    for row, token in MASKED:
        labels[row, token] = int(torch.randint(0, VOCAB, (), generator=generator))
    return {"image_x": image_x, "aug_x": aug_x, "text_x": text_x, "tokens": tokens, "mlm_labels": labels}


def _pretraining_model(objective: str) -> MCDForPreTraining:
    """The same float64 model on every rank, with a teacher that differs from the student (non-zero distillation)."""
    model = MCDForPreTraining(tiny_config(), loss_fn=MCDLoss(objective, **WEIGHTS)).double()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.teacher_student_parameters()[0]:
            param.add_(0.05 * torch.randn(param.shape, generator=generator, dtype=param.dtype))
    # Dropout off in the student: the only randomness left would differ between 1 and 2 processes.
    return model.eval()


def run_accumulation(objective: str, rank: int, world_size: int, out_dir: Path, **overrides) -> dict:
    """One optimizer step's micro-batches through `MCDTrainer` on this rank; the loss it reports and the gradients,
    averaged over the processes as DDP would. With world_size=1: one batch of all the rows (the reference).
    `overrides`: more `MCDTrainingArguments` fields (e.g. `local_loss=True`)."""
    from test_accumulation import ROWS, _trainer, batches_of

    micro_batches = 1 if world_size == 1 else 2
    rows = ROWS // (micro_batches * world_size)
    name = "-".join(["acc", objective, str(rank), *overrides])
    trainer = _trainer(out_dir / name, objective, micro_batches, **overrides)
    # Micro-batch j of process r holds global rows (j·W + r)·B ..: the order in which accelerate deals batches.
    mine = [batches_of(rows)[j * world_size + rank] for j in range(micro_batches)]
    trainer.model.zero_grad()
    batches, _ = trainer.get_batch_samples(iter(mine), micro_batches, trainer.args.device)
    loss = sum(trainer.training_step(trainer.model, batch).item() for batch in batches)
    grads = {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}
    if world_size > 1:
        for grad in grads.values():
            dist.all_reduce(grad)
            grad /= world_size
    return {"loss": loss, "grads": grads}


def run_case(
    case: str,
    objective: str,
    rank: int,
    world_size: int,
    local_loss: bool = False,
    pair_ids: torch.Tensor | None = None,
) -> dict:
    """One forward/backward on this rank's rows; returns the loss terms (floats), the parameter gradients and the
    gradients of this rank's student embeddings u, v, ũ (`None` where the objective does not use one).

    `local_loss`: the objective's option; `pair_ids` (GLOBAL_BATCH,): the global batch's ids (this rank's rows).
    """
    torch.manual_seed(0)
    local = slice(rank * GLOBAL_BATCH // world_size, (rank + 1) * GLOBAL_BATCH // world_size)
    ids = None if pair_ids is None else pair_ids[local]
    loss_fn = MCDLoss(objective, **WEIGHTS, local_loss=local_loss)
    if case == "losses":
        model = TinyEncoder().double()
        batch = {name: tensor[local] for name, tensor in _encoder_batch().items()}
        labels = batch.pop("mlm_labels")
        wrapped = DistributedDataParallel(model) if world_size > 1 else model
        outputs = wrapped(**batch)
        terms = loss_fn(ObjectiveInputs(**outputs, mlm_labels=labels, pair_ids=ids), ALPHA)
        teacher = [model.teacher_image.weight, model.teacher_image.bias]
    else:
        model = _pretraining_model(objective)
        model.loss_fn = loss_fn
        batch = fixed_pretraining_batch(CAPTIONS, MASKED, seed=0, dtype=torch.float64)
        wrapped = DistributedDataParallel(model) if world_size > 1 else model
        output = wrapped(**{name: tensor[local] for name, tensor in batch.items()}, alpha=ALPHA, pair_ids=ids)
        outputs, terms = {name: getattr(output.objective_inputs, name) for name in STUDENT_EMBEDDINGS}, output.losses
        teacher = model.teacher_student_parameters()[0]
    embeddings = {name: outputs[name] for name in STUDENT_EMBEDDINGS}
    for embedding in embeddings.values():
        if embedding is not None:
            embedding.retain_grad()
    terms["loss"].backward()
    return {
        "terms": {name: value.item() for name, value in terms.items()},
        "grads": {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad},
        "teacher_grads": [p.grad for p in teacher],
        "embedding_grads": {
            name: None if embedding is None or embedding.grad is None else embedding.grad.clone()
            for name, embedding in embeddings.items()
        },
    }


def main(out_dir: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world_size = world_info()
    results: dict = {
        (case, objective): run_case(case, objective, rank, world_size)
        for case in CASES
        if case != "accumulation"
        for objective in OBJECTIVES
    }
    for objective in OBJECTIVES:
        results[("accumulation", objective)] = run_accumulation(objective, rank, world_size, out_dir)
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
