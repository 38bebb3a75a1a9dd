# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""modeling_mcd.objective.mcd_loss.MCDLoss: each objective sums exactly the pure terms it names, with its weights."""

from __future__ import annotations

import pytest
import torch
from conftest import EMBED_ROWS as N
from conftest import fixed_pretraining_batch, objective_terms, tiny_config
from transformers.models.clip.modeling_clip import image_text_contrastive_loss

from modeling_mcd.objective.losses import (
    clip_loss,
    distill_neg_loss,
    distill_noisy_loss,
    distill_pos_loss,
    mlm_loss,
    mp_nce_loss,
    pairwise_distance,
)
from modeling_mcd.objective.mcd_loss import MCDLoss
from modeling_mcd.pretraining.model import MCDForPreTraining


@pytest.fixture
def loss_inputs(embeds) -> dict:
    generator = torch.Generator().manual_seed(6)
    labels = torch.randint(0, 11, (N, 3), generator=generator)
    labels[:, 1] = -100
    return {
        "image_embeds": embeds["image"],
        "text_embeds": embeds["text"],
        "logit_scale": torch.tensor(5.0, dtype=torch.float64),
        "aug_image_embeds": embeds["aug"],
        "teacher_image_embeds": embeds["t_image"],
        "teacher_aug_image_embeds": embeds["t_aug"],
        "teacher_text_embeds": embeds["t_text"],
        "mlm_logits": torch.randn(N, 3, 11, generator=generator, dtype=torch.float64),
        "mlm_labels": labels,
        "alpha": 0.25,
    }


WEIGHTS = {"lambda_dist": 0.7, "lambda_pos": 1.3, "lambda_neg": 0.6, "lambda_noisy": 1.7, "beta_mlm": 0.4}


def test_mcd_loss_clip_objective(loss_inputs):
    x = loss_inputs
    terms = objective_terms(MCDLoss("clip", **WEIGHTS), **x)
    assert set(terms) == {"contrastive_loss", "mlm_loss", "loss"}
    torch.testing.assert_close(
        terms["contrastive_loss"], image_text_contrastive_loss(5.0 * x["text_embeds"] @ x["image_embeds"].t())
    )
    torch.testing.assert_close(terms["mlm_loss"], mlm_loss(x["mlm_logits"], x["mlm_labels"]))
    torch.testing.assert_close(terms["loss"], terms["contrastive_loss"] + 0.4 * terms["mlm_loss"])
    assert set(
        objective_terms(
            MCDLoss("clip", use_mlm=False),
            image_embeds=x["image_embeds"],
            text_embeds=x["text_embeds"],
            logit_scale=x["logit_scale"],
        )
    ) == {
        "contrastive_loss",
        "loss",
    }


# Tab. 5 rows: MP-NCE (a), + L_pos (c), + L_neg (d), + L_noisy (e).
ABLATION_ROWS = [
    ("mpnce", {}, ()),
    ("mcd", {"use_neg": False, "use_noisy": False}, ("pos",)),
    ("mcd", {"use_noisy": False}, ("pos", "neg")),
    ("mcd", {}, ("pos", "neg", "noisy")),
]


@pytest.mark.parametrize(("objective", "switches", "distill_terms"), ABLATION_ROWS)
def test_mcd_loss_ablation_rows_sum_their_terms(loss_inputs, objective, switches, distill_terms):
    x = loss_inputs
    terms = objective_terms(MCDLoss(objective, **WEIGHTS, **switches), **x)
    contrastive = mp_nce_loss(
        x["image_embeds"], x["text_embeds"], x["aug_image_embeds"], x["logit_scale"], aug_weight=0.75
    )
    expected = {
        "pos": distill_pos_loss(
            x["image_embeds"],
            x["text_embeds"],
            x["aug_image_embeds"],
            x["teacher_image_embeds"],
            x["teacher_text_embeds"],
            x["teacher_aug_image_embeds"],
        ),
        "neg": distill_neg_loss(
            x["text_embeds"], x["aug_image_embeds"], x["teacher_text_embeds"], x["teacher_aug_image_embeds"]
        ),
        "noisy": distill_noisy_loss(
            x["image_embeds"], x["text_embeds"], x["teacher_image_embeds"], x["teacher_text_embeds"]
        ),
    }
    mlm = mlm_loss(x["mlm_logits"], x["mlm_labels"])
    names = {"contrastive_loss", "mlm_loss", "loss"} | {f"distill_{t}_loss" for t in distill_terms}
    assert set(terms) == names | ({"distill_loss"} if distill_terms else set())
    torch.testing.assert_close(terms["contrastive_loss"], contrastive)
    distill = sum(WEIGHTS[f"lambda_{t}"] * expected[t] for t in distill_terms)
    for t in distill_terms:
        torch.testing.assert_close(terms[f"distill_{t}_loss"], expected[t])
    if distill_terms:
        torch.testing.assert_close(terms["distill_loss"], distill)
    torch.testing.assert_close(terms["loss"], contrastive + 0.7 * distill + 0.4 * mlm)


@pytest.mark.parametrize("objective", ["clip", "mpnce", "mcd"])
def test_mcd_loss_hands_pair_ids_to_every_term(loss_inputs, objective):
    """Pair ids reach the contrastive and every distillation term (their masking is tested in test_losses.py);
    all-distinct ids are the plain objective, bit for bit."""
    x = loss_inputs
    pair_ids = torch.tensor([4, 1, 4, -1, 0])
    terms = objective_terms(MCDLoss(objective, **WEIGHTS), **x, pair_ids=pair_ids)
    plain = objective_terms(MCDLoss(objective, **WEIGHTS), **x)
    assert objective_terms(MCDLoss(objective, **WEIGHTS), **x, pair_ids=torch.tensor([9, 2, 5, 0, 1])) == plain
    if objective == "clip":
        expected = clip_loss(5.0 * x["text_embeds"] @ x["image_embeds"].t(), pair_ids)
    else:
        args = (x["image_embeds"], x["text_embeds"], x["aug_image_embeds"], x["logit_scale"])
        expected = mp_nce_loss(*args, aug_weight=0.75, pair_ids=pair_ids)
    torch.testing.assert_close(terms["contrastive_loss"], expected)
    if objective == "mcd":
        teacher = (x["teacher_image_embeds"], x["teacher_text_embeds"], x["teacher_aug_image_embeds"])
        student = (x["image_embeds"], x["text_embeds"], x["aug_image_embeds"])
        pos = distill_pos_loss(*student, *teacher, pair_ids=pair_ids)
        neg = distill_neg_loss(x["text_embeds"], x["aug_image_embeds"], *teacher[1:], pair_ids=pair_ids)
        noisy = distill_noisy_loss(*student[:2], *teacher[:2], pair_ids=pair_ids)
        for name, value in (("pos", pos), ("neg", neg), ("noisy", noisy)):
            torch.testing.assert_close(terms[f"distill_{name}_loss"], value)
            assert not torch.isclose(value, plain[f"distill_{name}_loss"])
    assert not torch.isclose(terms["contrastive_loss"], plain["contrastive_loss"])


def test_mcd_loss_default_teacher_text_is_stopgrad_student_text(loss_inputs):
    x = dict(loss_inputs, teacher_text_embeds=None, text_embeds=loss_inputs["text_embeds"].clone().requires_grad_())
    terms = objective_terms(MCDLoss("mcd"), **x)
    explicit = objective_terms(MCDLoss("mcd"), **dict(x, teacher_text_embeds=x["text_embeds"].detach()))
    torch.testing.assert_close(terms["loss"], explicit["loss"])
    # With v̄ = stopgrad(v) the teacher side carries no gradient: both graphs give the same text gradient.
    (grad,) = torch.autograd.grad(terms["loss"], x["text_embeds"])
    (explicit_grad,) = torch.autograd.grad(explicit["loss"], x["text_embeds"])
    torch.testing.assert_close(grad, explicit_grad)


def test_mcd_loss_gradients_finite_with_coinciding_embeddings(loss_inputs):
    """ũ = u, v_0 = u_0 and teacher = student give zero distances and log-ratios: gradients must stay finite."""
    image = loss_inputs["image_embeds"].clone().requires_grad_()
    text = torch.cat([loss_inputs["image_embeds"][:1], loss_inputs["text_embeds"][1:]]).requires_grad_()
    assert pairwise_distance(text, image)[0, 0] < 1e-5
    scale = torch.tensor(5.0, dtype=torch.float64, requires_grad=True)
    terms = objective_terms(
        MCDLoss("mcd"),
        image_embeds=image,
        text_embeds=text,
        logit_scale=scale,
        aug_image_embeds=image,
        teacher_image_embeds=image.detach(),
        teacher_aug_image_embeds=image.detach(),
        mlm_logits=loss_inputs["mlm_logits"],
        mlm_labels=loss_inputs["mlm_labels"],
    )
    terms["loss"].backward()
    for tensor in (image, text, scale):
        assert torch.isfinite(tensor.grad).all()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"objective": "simclr"}, "objective"),
        ({"lambda_dist": -1.0}, "lambda_dist"),
        ({"lambda_pos": -0.1}, "lambda_pos"),
        ({"lambda_neg": float("nan")}, "lambda_neg"),
        ({"lambda_noisy": -2.0}, "lambda_noisy"),
        ({"beta_mlm": -1.0}, "beta_mlm"),
        ({"distill_loss": "huber"}, "distill_loss"),
        ({"eps": 0.0}, "eps"),
    ],
)
def test_mcd_loss_rejects_bad_config(kwargs, field):
    with pytest.raises(ValueError, match=field):
        MCDLoss(**kwargs)


@pytest.mark.parametrize(
    ("objective", "missing"),
    [
        ("mpnce", "aug_image_embeds"),
        ("mcd", "aug_image_embeds"),
        ("mcd", "teacher_image_embeds"),
        ("mcd", "teacher_aug_image_embeds"),
        ("clip", "mlm_logits"),
        ("mpnce", "mlm_labels"),
    ],
)
def test_mcd_loss_names_missing_inputs(loss_inputs, objective, missing):
    with pytest.raises(ValueError, match=missing):
        objective_terms(MCDLoss(objective), **dict(loss_inputs, **{missing: None}))


def test_mcd_loss_rejects_alpha_out_of_range(loss_inputs):
    with pytest.raises(ValueError, match="alpha"):
        objective_terms(MCDLoss("mpnce"), **dict(loss_inputs, alpha=1.5))


def test_every_term_is_computed_in_float32_under_bf16_autocast():
    """The towers may run in bf16, the objective may not: with a teacher 1 % away from the student, L_pos and
    L_noisy computed in bf16 were 40 % off. Under CPU bf16 autocast every term must equal the float64 computation
    from the very embeddings the model returned."""
    torch.manual_seed(0)
    model = MCDForPreTraining(tiny_config(), loss_fn=MCDLoss("mcd")).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.teacher_student_parameters()[0]:
            param.add_(0.01 * param.std().nan_to_num() * torch.randn(param.shape, generator=generator))
    batch = fixed_pretraining_batch(["a red circle", "two blue squares", "a cat", "a dog"], [(0, 2), (1, 1), (3, 2)])
    projected = []  # the dtype the image projection computed in: the towers really ran in bf16
    model.mcd.visual_projection.register_forward_hook(lambda module, args, output: projected.append(output.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(**batch, alpha=0.3)
    out = output.objective_inputs
    assert projected == [torch.bfloat16]
    as_double = {
        name: getattr(out, name).double()
        for name in (
            "image_embeds",
            "text_embeds",
            "aug_image_embeds",
            "teacher_image_embeds",
            "teacher_aug_image_embeds",
        )
    }
    reference = objective_terms(
        MCDLoss("mcd"),
        **as_double,
        logit_scale=out.logit_scale.double(),
        mlm_logits=out.mlm_logits.double(),
        mlm_labels=out.mlm_labels,
        alpha=0.3,
    )
    assert set(output.losses) == set(reference)
    for name, value in reference.items():
        assert value > 0, name
        assert output.losses[name].dtype == torch.float32, name
        assert output.losses[name].item() == pytest.approx(value.item(), rel=1e-4), name


def test_embeddings_are_unit_vectors_in_float32_under_bf16_autocast():
    """Late in training the teacher sits about 1e-3 from the student, and the distillation terms compare small
    distances. Normalised in bf16 the embeddings have norms 1 ± 4e-3, which put L_pos 2 %, L_neg 0.8 % and L_noisy
    3 % off. Under CPU bf16 autocast the model must return float32 unit vectors, and every term must equal the
    float64 computation from the same directions renormalised in float64."""
    torch.manual_seed(0)
    model = MCDForPreTraining(tiny_config(), loss_fn=MCDLoss("mcd")).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.teacher_student_parameters()[0]:
            param.add_(1e-3 * param.std().nan_to_num() * torch.randn(param.shape, generator=generator))
    batch = fixed_pretraining_batch(["a red circle", "two blue squares", "a cat", "a dog"], [(0, 2), (1, 1), (3, 2)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(**batch, alpha=0.3)
    out = output.objective_inputs
    names = ("image_embeds", "text_embeds", "aug_image_embeds", "teacher_image_embeds", "teacher_aug_image_embeds")
    for name in names:
        embeds = getattr(out, name)
        assert embeds.dtype == torch.float32, name
        torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(len(embeds)), rtol=0, atol=1e-6)
    directions = {name: torch.nn.functional.normalize(getattr(out, name).double(), dim=-1) for name in names}
    reference = objective_terms(
        MCDLoss("mcd"),
        **directions,
        logit_scale=out.logit_scale.double(),
        mlm_logits=out.mlm_logits.double(),
        mlm_labels=out.mlm_labels,
        alpha=0.3,
    )
    for name in ("distill_pos_loss", "distill_neg_loss", "distill_noisy_loss"):
        assert reference[name] > 0, name
        assert output.losses[name].item() == pytest.approx(reference[name].item(), rel=1e-4), name
