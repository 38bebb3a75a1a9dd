"""MCDForPreTraining: the frozen EMA teacher, the tied MLM head, the named loss terms, save/load and export."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from conftest import fixed_pretraining_batch, objective_terms, tiny_config
from safetensors import safe_open
from transformers import AutoModel

from modeling_mcd import MCDModel
from modeling_mcd.objective.mcd_loss import MCDLoss
from modeling_mcd.pretraining.model import MCDForPreTraining

BATCH = 5
CAPTIONS = ["a photo of a red circle", "two blue squares", "a cat", "a big green star on the left", "this is a dog"]
# (row, token) positions replaced by [MASK] in the MLM copy; at least one per caption.
MASKED = [(0, 2), (0, 5), (1, 1), (2, 2), (3, 3), (3, 6), (4, 4)]
DISTILL_TERMS = ("distill_pos_loss", "distill_neg_loss", "distill_noisy_loss", "distill_loss")
WEIGHTS = {"lambda_dist": 0.7, "lambda_pos": 1.3, "lambda_neg": 0.6, "lambda_noisy": 1.7, "beta_mlm": 0.4}


def _model(objective: str = "mcd", teacher_text: str = "stopgrad", seed: int = 0, **loss_kwargs) -> MCDForPreTraining:
    torch.manual_seed(seed)
    return MCDForPreTraining(tiny_config(), loss_fn=MCDLoss(objective, **loss_kwargs), teacher_text=teacher_text)


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    return fixed_pretraining_batch(CAPTIONS, MASKED, seed)


@torch.no_grad()
def _perturb(params, scale: float = 0.05, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    for param in params:
        param.add_(scale * torch.randn(param.shape, generator=generator))


def _student_vision_parameters(model: MCDForPreTraining) -> list[torch.nn.Parameter]:
    return list(model.mcd.vision_model.parameters()) + list(model.mcd.visual_projection.parameters())


# ------------------------------------------------------------------------------------------ teacher


def test_teacher_starts_as_a_frozen_copy_of_the_student_image_tower():
    model = _model()
    teacher, student = model.teacher_student_parameters()
    # Every parameter of the student's image tower + projection has a twin, and only those.
    assert {id(p) for p in student} == {id(p) for p in _student_vision_parameters(model)}
    teacher_ids = {id(p) for module in model.teacher_modules() for p in module.parameters()}
    assert {id(p) for p in teacher} == teacher_ids
    for t, s in zip(teacher, student):
        assert t.data_ptr() != s.data_ptr()  # a copy, not shared storage
        torch.testing.assert_close(t, s, rtol=0, atol=0)
        assert not t.requires_grad and s.requires_grad


def test_teacher_gets_no_gradient_and_stays_in_eval_mode():
    model = _model().train()
    for module in model.teacher_modules():
        assert not module.training and not any(m.training for m in module.modules())
    assert model.mcd.training and model.mcd.vision_model.training and model.mlm_head.training
    model(**_batch(), alpha=0.3).loss.backward()
    teacher, student = model.teacher_student_parameters()
    assert all(t.grad is None for t in teacher)
    assert any(s.grad is not None and s.grad.abs().sum() > 0 for s in student)
    model.eval()
    assert not model.mcd.training and all(not module.training for module in model.teacher_modules())


def test_mlm_decoder_is_tied_to_the_word_embeddings_also_after_save_and_load(tmp_path):
    model = _model()
    decoder = model.mlm_head.predictions.decoder
    word_embeddings = model.mcd.text_model.embeddings.word_embeddings.weight
    assert decoder.weight is word_embeddings
    model.save_pretrained(tmp_path)
    loaded = MCDForPreTraining.from_pretrained(tmp_path)
    assert loaded.mlm_head.predictions.decoder.weight is loaded.mcd.text_model.embeddings.word_embeddings.weight
    torch.testing.assert_close(loaded.mlm_head.predictions.decoder.weight, word_embeddings, rtol=0, atol=0)
    # Training the embeddings trains the decoder: one tensor.
    with torch.no_grad():
        loaded.mcd.text_model.embeddings.word_embeddings.weight[3].add_(1.0)
    assert torch.equal(loaded.mlm_head.predictions.decoder.weight[3], word_embeddings[3] + 1.0)


@pytest.mark.parametrize("momentum", [0.0, 0.37, 1.0])
def test_update_teacher_is_the_ema_of_paper_eq_12(momentum):
    model = _model()
    teacher, student = model.teacher_student_parameters()
    _perturb(student, seed=1)
    _perturb(teacher, seed=2)  # a teacher that is neither the start nor the student
    teacher_before = [t.detach().double().clone() for t in teacher]
    student_before = [s.detach().clone() for s in student]
    model.update_teacher(momentum)
    for t, t_old, s, s_old in zip(teacher, teacher_before, student, student_before):
        expected = momentum * t_old + (1.0 - momentum) * s_old.double()  # by hand, in float64
        torch.testing.assert_close(t.double(), expected, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(s, s_old, rtol=0, atol=0)  # the student is left alone


# ------------------------------------------------------------------------------------------ forward


@pytest.mark.parametrize(
    ("objective", "use_mlm", "expected"),
    [
        ("clip", True, {"contrastive_loss", "mlm_loss", "loss"}),
        ("mpnce", True, {"contrastive_loss", "mlm_loss", "loss"}),
        ("mcd", True, {"contrastive_loss", *DISTILL_TERMS, "mlm_loss", "loss"}),
        ("mcd", False, {"contrastive_loss", *DISTILL_TERMS, "loss"}),
    ],
)
def test_forward_returns_the_objective_terms(objective, use_mlm, expected):
    model = _model(objective, use_mlm=use_mlm, **WEIGHTS).eval()
    batch = _batch()
    out = model(**batch, alpha=0.3)
    assert set(out.losses) == expected
    assert out.loss is out.losses["loss"] and torch.isfinite(out.loss)
    assert (out.objective_inputs.aug_image_embeds is None) == (objective == "clip")
    assert (out.objective_inputs.teacher_image_embeds is None) == (objective != "mcd")
    # The batched calls (both views at once, clean + masked ids at once) equal separate calls.
    features = F.normalize(model.mcd.get_image_features(batch["pixel_values"]).pooler_output, dim=-1)
    torch.testing.assert_close(out.objective_inputs.image_embeds, features)
    text_keys = ("input_ids", "attention_mask", "token_type_ids")
    text_features = model.mcd.get_text_features(**{k: batch[k] for k in text_keys}).pooler_output
    torch.testing.assert_close(out.objective_inputs.text_embeds, F.normalize(text_features, dim=-1))
    if objective != "clip":
        aug = F.normalize(model.mcd.get_image_features(batch["aug_pixel_values"]).pooler_output, dim=-1)
        torch.testing.assert_close(out.objective_inputs.aug_image_embeds, aug)


def test_forward_terms_equal_mcd_loss_on_the_returned_embeddings():
    model = _model("mcd", **WEIGHTS)
    teacher, _ = model.teacher_student_parameters()
    _perturb(teacher, seed=3)  # a teacher that differs, so every distillation term is non-trivial
    model.eval()
    batch = _batch()
    out = model(**batch, alpha=0.3)

    peer = objective_terms(
        MCDLoss("mcd", use_mlm=False, **WEIGHTS),
        image_embeds=out.objective_inputs.image_embeds,
        text_embeds=out.objective_inputs.text_embeds,
        logit_scale=model.mcd.get_logit_scale(),
        aug_image_embeds=out.objective_inputs.aug_image_embeds,
        teacher_image_embeds=out.objective_inputs.teacher_image_embeds,
        teacher_aug_image_embeds=out.objective_inputs.teacher_aug_image_embeds,
        alpha=0.3,
    )
    for name in ("contrastive_loss", *DISTILL_TERMS):
        assert out.losses[name] > 0
        torch.testing.assert_close(out.losses[name], peer[name])
    # MLM peer: the masked caption through the text tower and the head, CE over the masked tokens only.
    hidden = model.mcd.text_model(
        input_ids=batch["mlm_input_ids"],
        attention_mask=batch["attention_mask"],
        token_type_ids=batch["token_type_ids"],
    ).last_hidden_state  # (B, L, D)
    logits = model.mlm_head(hidden)  # (B, L, V)
    mlm = F.cross_entropy(logits.flatten(0, 1), batch["mlm_labels"].flatten(), ignore_index=-100)
    torch.testing.assert_close(out.losses["mlm_loss"], mlm)
    total = peer["contrastive_loss"] + WEIGHTS["lambda_dist"] * peer["distill_loss"] + WEIGHTS["beta_mlm"] * mlm
    torch.testing.assert_close(out.loss, total)
    # The teacher embeddings come from the teacher towers, without gradient.
    assert (
        not out.objective_inputs.teacher_image_embeds.requires_grad
        and not out.objective_inputs.teacher_aug_image_embeds.requires_grad
    )
    pooled = model.teacher_vision_model(pixel_values=batch["pixel_values"]).pooler_output
    torch.testing.assert_close(
        out.objective_inputs.teacher_image_embeds, F.normalize(model.teacher_visual_projection(pooled), dim=-1)
    )


def test_distillation_is_zero_when_teacher_equals_student_and_positive_after_the_student_moves():
    model = _model("mcd").eval()  # eval: no dropout, so teacher and student compute the same function
    out = model(**_batch(), alpha=0.3)
    for name in DISTILL_TERMS:
        assert out.losses[name].item() == 0.0, name  # the same computation on the same weights: exactly 0
    _perturb(_student_vision_parameters(model), scale=0.3, seed=4)
    moved = model(**_batch(), alpha=0.3)
    for name in DISTILL_TERMS:
        # L_neg stays small: at initialisation every image is nearly orthogonal to every text, so both
        # ratios d(ũ_i, v_i) / d(ũ_i, v_j) are close to 1.
        assert moved.losses[name].item() > 0.0, name


# ------------------------------------------------------------------------------------------ save / export


def test_save_and_load_keeps_the_teacher_for_resuming(tmp_path):
    model = _model()
    teacher, student = model.teacher_student_parameters()
    _perturb(student, seed=5)
    model.update_teacher(0.5)  # now teacher != student != initial weights
    assert not torch.equal(teacher[0], student[0])
    model.save_pretrained(tmp_path)
    loaded = MCDForPreTraining.from_pretrained(tmp_path)
    expected, actual = model.state_dict(), loaded.state_dict()
    assert set(actual) == set(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, rtol=0, atol=0, msg=name)
    assert all(not t.requires_grad for t in loaded.teacher_student_parameters()[0])
    batch = _batch()
    torch.testing.assert_close(loaded.eval()(**batch).loss, model.eval()(**batch).loss)


def test_export_student_is_a_plain_dual_encoder_without_teacher_or_mlm_head(tmp_path):
    model = _model()
    _perturb(_student_vision_parameters(model), seed=6)
    model.update_teacher(0.5)
    student = model.export_student()
    assert type(student) is MCDModel
    student.save_pretrained(tmp_path)
    with safe_open(os.path.join(tmp_path, "model.safetensors"), framework="pt") as weights:
        keys = list(weights.keys())
    assert keys and not [k for k in keys if "teacher" in k or "mlm" in k]
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "MCDModel"
    expected = model.mcd.state_dict()
    assert set(loaded.state_dict()) == set(expected)
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0, msg=name)
    batch = _batch()
    torch.testing.assert_close(
        loaded.eval().get_image_features(batch["pixel_values"]).pooler_output,
        model.eval().mcd.get_image_features(batch["pixel_values"]).pooler_output,
    )


def test_from_student_copies_the_weights_and_starts_the_teacher_from_them():
    torch.manual_seed(7)
    student = MCDModel(tiny_config())
    _perturb(student.parameters(), seed=8)
    model = MCDForPreTraining.from_student(student)
    for name, tensor in student.state_dict().items():
        torch.testing.assert_close(model.mcd.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    for t, s in zip(*model.teacher_student_parameters()):
        torch.testing.assert_close(t, s, rtol=0, atol=0)
    assert model.mlm_head.predictions.decoder.weight is model.mcd.text_model.embeddings.word_embeddings.weight
    # The copy is independent of the wrapped model.
    _perturb(model.mcd.parameters(), seed=9)
    assert not torch.equal(model.mcd.visual_projection.weight, student.visual_projection.weight)


def test_teacher_text_ema_builds_and_updates_a_text_teacher():
    model = _model("mcd", teacher_text="ema")
    text_teacher = list(model.teacher_text_model.parameters()) + list(model.teacher_text_projection.parameters())
    text_student = list(model.mcd.text_model.parameters()) + list(model.mcd.text_projection.parameters())
    teacher, student = model.teacher_student_parameters()
    assert {id(p) for p in text_teacher} <= {id(p) for p in teacher}
    assert {id(p) for p in text_student} <= {id(p) for p in student}
    assert all(not p.requires_grad for p in text_teacher)

    model.eval()
    out = model(**_batch(), alpha=0.3)
    assert (
        out.objective_inputs.teacher_text_embeds is not None
        and not out.objective_inputs.teacher_text_embeds.requires_grad
    )
    torch.testing.assert_close(
        out.objective_inputs.teacher_text_embeds, out.objective_inputs.text_embeds.detach(), rtol=0, atol=0
    )

    _perturb(text_student, seed=10)
    old_teacher = [p.detach().double().clone() for p in text_teacher]
    model.update_teacher(0.6)
    for t, t_old, s in zip(text_teacher, old_teacher, text_student):
        torch.testing.assert_close(t.double(), 0.6 * t_old + 0.4 * s.detach().double(), rtol=1e-6, atol=1e-7)
    moved = model(**_batch(), alpha=0.3)
    assert not torch.allclose(moved.objective_inputs.teacher_text_embeds, moved.objective_inputs.text_embeds)


# ------------------------------------------------------------------------------------------ errors


def test_invalid_teacher_text_raises():
    with pytest.raises(ValueError, match="teacher_text"):
        MCDForPreTraining(tiny_config(), teacher_text="frozen")


@pytest.mark.parametrize("objective", ["mpnce", "mcd"])
def test_missing_augmented_view_raises(objective):
    batch = _batch()
    del batch["aug_pixel_values"]
    with pytest.raises(ValueError, match="aug_pixel_values"):
        _model(objective)(**batch)


def test_clip_needs_no_augmented_view():
    batch = _batch()
    del batch["aug_pixel_values"]
    assert torch.isfinite(_model("clip")(**batch).loss)


@pytest.mark.parametrize("missing", ["mlm_input_ids", "mlm_labels"])
def test_missing_mlm_inputs_raise_when_the_objective_uses_mlm(missing):
    batch = _batch()
    del batch[missing]
    with pytest.raises(ValueError, match="mlm_input_ids"):
        _model("mcd", use_mlm=True)(**batch)
    assert set(_model("mcd", use_mlm=False)(**batch).losses) == {"contrastive_loss", *DISTILL_TERMS, "loss"}


def test_the_output_flattens_to_its_tensors_as_ddp_sees_them():
    """DDP routes a forward's output tensors through its backward hooks (`find_unused_parameters`, `static_graph`) by
    flattening the output as a pytree: the objective's tensors inside `objective_inputs` must be leaves, not hidden in
    one opaque object."""
    import torch.utils._pytree as pytree

    model = _model("mcd").eval()
    out = model(**_batch(), alpha=0.3)
    leaves, spec = pytree.tree_flatten(out)
    inputs = out.objective_inputs
    expected = [value for value in vars(inputs).values() if value is not None]
    assert len(expected) >= 8  # u, ũ, v, ū, ū̃, MLM logits and labels, the scale
    assert all(any(leaf is value for leaf in leaves) for value in expected)
    rebuilt = pytree.tree_unflatten(leaves, spec)
    assert torch.equal(rebuilt.objective_inputs.teacher_image_embeds, inputs.teacher_image_embeds)
