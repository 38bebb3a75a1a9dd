# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Contrastive-correct gradient accumulation (modeling_mcd.trainer.accumulation through MCDTrainer): k micro-batches
give the loss and gradients of one batch of k times the rows, in float64, for every objective; the replay draws the
first pass's dropout; and a real training run with accumulation takes the same steps as one without."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config
from test_trainer import _collator, _dataset

from modeling_mcd.data import KeyedSamples, SeededCollator
from modeling_mcd.objective.mcd_loss import OBJECTIVES
from modeling_mcd.pretraining.model import MCDForPreTraining
from modeling_mcd.trainer.mcd_trainer import MCDTrainer
from modeling_mcd.trainer.training_arguments import MCDTrainingArguments

ROWS, MICRO_BATCHES = 8, 4
ABLATIONS = [(objective, {}) for objective in OBJECTIVES] + [("mcd", {"distill_neg": False, "use_mlm": False})]


def _trainer(tmp_path, objective: str, accumulation: int, dropout: float = 0.0, **overrides) -> MCDTrainer:
    settings = dict(
        output_dir=str(tmp_path),
        objective=objective,
        per_device_train_batch_size=ROWS // accumulation,
        gradient_accumulation_steps=accumulation,
        max_steps=10,
        use_cpu=True,
        report_to=[],
        seed=5,
        disable_tqdm=True,
    )
    args = MCDTrainingArguments(**{**settings, **overrides})
    config = tiny_config()
    for tower in (config.vision_config, config.text_config):
        tower.hidden_dropout_prob = tower.attention_probs_dropout_prob = dropout
    torch.manual_seed(0)
    model = MCDForPreTraining(config).double()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a teacher away from the student: the distillation terms are not zero
        for param in model.teacher_student_parameters()[0]:
            param.add_(0.05 * torch.randn(param.shape, generator=generator, dtype=param.dtype))
    trainer = MCDTrainer(model=model, args=args, train_dataset=_dataset(), data_collator=_collator())
    trainer.state.global_step, trainer.state.max_steps = 3, 10  # α > 0: the augmented-view weights matter
    return trainer


def batches_of(size: int) -> list[dict]:
    """The first ROWS samples as batches of `size` rows, each caption masked from its own key."""
    samples = KeyedSamples(_dataset())
    collate = SeededCollator(_collator(), seed=5)
    return [collate([samples[i] for i in range(start, start + size)]) for start in range(0, ROWS, size)]


def _batches(count: int) -> list[dict]:
    return batches_of(ROWS // count)


def _step(trainer: MCDTrainer, count: int, pair_ids: list[int] | None = None) -> tuple[float, dict[str, torch.Tensor]]:
    """One optimizer step's forward and backward, as the Trainer's loop runs it: the summed loss and the gradients.
    `pair_ids` replace the rows' own (their row indices)."""
    model = trainer.model
    model.zero_grad()
    batches = _batches(count)
    if pair_ids is not None:
        for index, batch in enumerate(batches):
            rows = batch["pair_ids"].shape[0]
            batch["pair_ids"] = torch.tensor(pair_ids[index * rows : (index + 1) * rows])
    batches, _ = trainer.get_batch_samples(iter(batches), count, trainer.args.device)
    loss = sum(trainer.training_step(model, batch).item() for batch in batches)
    return loss, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(("objective", "switches"), ABLATIONS)
def test_micro_batches_give_the_loss_and_gradients_of_one_batch(tmp_path, objective, switches):
    reference_loss, reference = _step(_trainer(tmp_path / "one", objective, 1, **switches), 1)
    loss, grads = _step(_trainer(tmp_path / "acc", objective, MICRO_BATCHES, **switches), MICRO_BATCHES)
    assert loss == pytest.approx(reference_loss, rel=1e-10)
    assert set(grads) == set(reference)
    for name, grad in reference.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-8, atol=1e-12, msg=name)
    assert reference["mcd.logit_scale"].abs() > 0 and any(g.abs().max() > 0 for g in reference.values())


@pytest.mark.parametrize("objective", ["clip", "mcd"])
def test_micro_batches_hand_the_whole_steps_pair_ids_to_the_loss(tmp_path, objective):
    """Pair ids (two rows of one image, a placeholder) reach the loss of one batch and of every replay alike."""
    pair_ids = [0, 1, 0, -1, 4, 5, 1, 7]
    reference_loss, reference = _step(_trainer(tmp_path / "one", objective, 1), 1, pair_ids)
    loss, grads = _step(_trainer(tmp_path / "acc", objective, MICRO_BATCHES), MICRO_BATCHES, pair_ids)
    assert loss == pytest.approx(reference_loss, rel=1e-10)
    for name, grad in reference.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-8, atol=1e-12, msg=name)
    plain_loss, _ = _step(_trainer(tmp_path / "plain", objective, MICRO_BATCHES), MICRO_BATCHES)
    assert plain_loss != pytest.approx(loss, rel=1e-6)  # the ids did change the objective


def test_replay_draws_the_first_pass_dropout(tmp_path):
    trainer = _trainer(tmp_path, "mcd", MICRO_BATCHES, dropout=0.3)
    batches, _ = trainer.get_batch_samples(iter(_batches(MICRO_BATCHES)), MICRO_BATCHES, trainer.args.device)
    cache = trainer._feature_cache
    for index, batch in enumerate(batches):
        trainer._micro_batch = index
        replayed = {}
        original_global = cache.global_inputs

        def spy(i, fresh):
            replayed.update(image=fresh.image_embeds.detach(), text=fresh.text_embeds.detach())
            return original_global(i, fresh)

        cache.global_inputs = spy
        trainer.training_step(trainer.model, batch)
        cache.global_inputs = original_global
        rows = replayed["image"].shape[0]
        torch.testing.assert_close(replayed["image"], cache.blocks[index]["image_embeds"][:rows], rtol=0, atol=0)
        torch.testing.assert_close(replayed["text"], cache.blocks[index]["text_embeds"][:rows], rtol=0, atol=0)
    # Dropout is really on: a fresh draw gives other embeddings.
    again = trainer._forward(
        trainer.model, trainer._prepare_inputs(batches[0]), True, 0, MICRO_BATCHES, embed_only=True
    ).objective_inputs
    assert not torch.allclose(again.text_embeds, cache.blocks[0]["text_embeds"][: again.text_embeds.shape[0]])


@pytest.mark.slow
def test_training_with_accumulation_follows_the_same_steps(tmp_path):
    """Three real optimizer steps: 4 micro-batches of 2 per step take the weights where batches of 8 take them."""
    runs = {}
    for accumulation in (1, MICRO_BATCHES):
        trainer = _trainer(
            tmp_path / str(accumulation), "mcd", accumulation, max_steps=3, learning_rate=1e-3, logging_steps=1
        )
        trainer.state.global_step = 0
        trainer.train()
        runs[accumulation] = trainer
    one, accumulated = (runs[k].model.state_dict() for k in (1, MICRO_BATCHES))
    for name, tensor in one.items():
        torch.testing.assert_close(accumulated[name], tensor, rtol=1e-7, atol=1e-9, msg=name)
    logs = [[entry for entry in runs[k].state.log_history if "loss" in entry] for k in (1, MICRO_BATCHES)]
    assert len(logs[0]) == len(logs[1]) == 3
    for a, b in zip(*logs):
        for name in ("loss", "contrastive_loss", "distill_loss", "mlm_loss"):
            assert b[name] == pytest.approx(a[name], rel=1e-5), name
