"""The EMA teacher (docs/method.md §5): momentum schedule, update math, pairing, and ZeRO-3 shard-wise updates."""

from __future__ import annotations

import copy
import json
import math
import os
import socket
import subprocess
import sys

import pytest
import torch
from torch import nn

from modeling_mcd.pretraining.teacher import copy_params_, ema_update_, momentum_at, paired_parameters

WORKER = os.path.join(os.path.dirname(__file__), "_zero3_teacher_worker.py")


def tiny_student() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(7, 5), nn.GELU(), nn.Dropout(0.3), nn.Linear(5, 3))


def test_momentum_schedule_endpoints_midpoint_and_clamping():
    assert momentum_at(0, 10, 0.99) == pytest.approx(0.99)
    assert momentum_at(10, 10, 0.99) == pytest.approx(1.0)
    # Halfway the cosine term is 1/2: m = 1 - (1 - m0) / 2.
    assert momentum_at(5, 10, 0.99) == pytest.approx(0.995)
    assert momentum_at(3, 10, 0.9) == pytest.approx(1 - 0.1 * (math.cos(math.pi * 0.3) + 1) / 2)
    assert momentum_at(-4, 10, 0.99) == momentum_at(0, 10, 0.99)
    assert momentum_at(25, 10, 0.99) == momentum_at(10, 10, 0.99)
    values = [momentum_at(s, 13, 0.996) for s in range(14)]
    assert values == sorted(values)  # non-decreasing


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(step=1, total_steps=0), "total_steps"),
        (dict(step=1, total_steps=2.5), "total_steps"),
        (dict(step=1, total_steps=10, base_momentum=1.5), "base_momentum"),
        (dict(step=1, total_steps=10, base_momentum=-0.1), "base_momentum"),
    ],
)
def test_momentum_schedule_rejects_bad_values(kwargs, field):
    with pytest.raises(ValueError, match=field):
        momentum_at(**kwargs)


def test_ema_update_matches_hand_computation():
    gen = torch.Generator().manual_seed(1)
    teacher = [
        nn.Parameter(torch.randn(5, 3, generator=gen), requires_grad=False),
        nn.Parameter(torch.randn(7, generator=gen), requires_grad=False),
    ]
    student = [nn.Parameter(torch.randn(5, 3, generator=gen)), nn.Parameter(torch.randn(7, generator=gen))]
    before = [t.detach().clone() for t in teacher]
    ema_update_(teacher, student, 0.9)
    for t, t0, s in zip(teacher, before, student):
        expected = torch.empty_like(t0)
        for i, (a, b) in enumerate(zip(t0.flatten().tolist(), s.detach().flatten().tolist())):
            expected.view(-1)[i] = 0.9 * a + 0.1 * b
        torch.testing.assert_close(t.detach(), expected)
    # m = 1 leaves the teacher alone, m = 0 copies the student.
    frozen = [t.detach().clone() for t in teacher]
    ema_update_(teacher, student, 1.0)
    assert all(torch.equal(t, f) for t, f in zip(teacher, frozen))
    ema_update_(teacher, student, 0.0)
    assert all(torch.equal(t, s) for t, s in zip(teacher, student))


def frozen_copy(student: nn.Module) -> nn.Module:
    """The teacher as `MCDForPreTraining` holds one: a copy of the student, frozen, in eval mode."""
    return copy.deepcopy(student).requires_grad_(False).eval()


def test_copy_params_gives_an_exact_copy_of_a_moved_student():
    student = tiny_student()
    teacher = frozen_copy(student)
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    t_params, s_params = paired_parameters(teacher, student)
    assert all(torch.equal(t, s) and t.data_ptr() != s.data_ptr() for t, s in zip(t_params, s_params))
    # Train the student a little, then copy_params_ restores exact equality.
    with torch.no_grad():
        for s in s_params:
            s.add_(torch.randn_like(s))
    assert not any(torch.equal(t, s) for t, s in zip(t_params, s_params))
    copy_params_(t_params, s_params)
    assert all(torch.equal(t, s) for t, s in zip(t_params, s_params))


def test_teacher_gets_no_gradient_and_ema_builds_no_graph():
    student = tiny_student()
    teacher = frozen_copy(student)
    x = torch.randn(5, 7)
    loss = (student(x) - teacher(x)).pow(2).sum() + student(x).sum()
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())
    t_params, s_params = paired_parameters(teacher, student)
    ema_update_(t_params, s_params, 0.5)
    assert all(p.grad_fn is None and not p.requires_grad for p in t_params)


def test_paired_parameters_pairs_by_name_and_reports_mismatch():
    student = tiny_student()
    teacher = frozen_copy(student)
    t_params, s_params = paired_parameters(teacher, student)
    names = [n for n, _ in student.named_parameters()]
    t_by_name = dict(teacher.named_parameters())
    assert [id(p) for p in t_params] == [id(t_by_name[n]) for n in names]
    other = nn.Sequential(nn.Linear(7, 5), nn.GELU(), nn.Linear(5, 3))  # indices 0, 2 vs 0, 3
    with pytest.raises(ValueError, match=r"`3\.weight`"):
        paired_parameters(other, student)
    with pytest.raises(ValueError, match=r"`2\.weight`"):
        paired_parameters(student, other)


def test_ema_update_rejects_mismatched_lists_and_bad_momentum():
    a, b = nn.Parameter(torch.zeros(3, 2)), nn.Parameter(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="same length"):
        ema_update_([a], [a, a], 0.5)
    with pytest.raises(ValueError, match="shape"):
        ema_update_([a], [b], 0.5)
    with pytest.raises(ValueError, match="shape"):
        copy_params_([a], [b])
    with pytest.raises(ValueError, match="momentum"):
        ema_update_([a], [a], 1.5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
def test_ema_under_zero3_matches_one_process(tmp_path):
    pytest.importorskip("deepspeed")
    sys.path.insert(0, os.path.dirname(__file__))
    import _zero3_teacher_worker as w

    config = {
        "train_micro_batch_size_per_gpu": w.GLOBAL_BATCH // 2,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 0.0,  # DeepSpeed clips at 1.0 by default; the reference does not clip
        "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": w.PERSISTENCE_THRESHOLD},
        "zero_allow_untested_optimizer": True,  # torch AdamW as the client optimizer
        "bf16": {"enabled": False},
        "fp16": {"enabled": False},
        "steps_per_print": 10**9,
    }
    config_path = tmp_path / "zero3.json"
    config_path.write_text(json.dumps(config))
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=repo_root)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        WORKER, str(config_path), str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=repo_root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = torch.load(tmp_path / "result.pt")
    assert result["world_size"] == 2
    # The threshold really splits the toy: the big weight is partitioned, the rest persists.
    assert result["persisted"] == ["0.bias", "2.weight", "2.bias"]

    # 1-process reference: plain torch, full batch, same optimizer and the same EMA schedule.
    model = w.make_model()
    start = {n: p.detach().clone() for n, p in model.teacher.named_parameters()}
    optimizer = w.make_optimizer(model.student)
    t_params, s_params = paired_parameters(model.teacher, model.student)
    for step in range(w.NUM_STEPS):
        optimizer.zero_grad()
        model(*w.make_batch(step)).backward()
        optimizer.step()
        ema_update_(t_params, s_params, momentum_at(step + 1, w.TOTAL_STEPS, w.BASE_MOMENTUM))

    state = result["state"]
    for name, param in model.named_parameters():
        torch.testing.assert_close(state[name], param.detach(), atol=1e-4, rtol=0, msg=name)
    # Every teacher tensor moved, the persisted (never partitioned in training) small ones included.
    for name, before in start.items():
        assert (state[f"teacher.{name}"] - before).abs().max() > 1e-2, name
