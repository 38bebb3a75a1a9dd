# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Time one training step of MCD's objectives and of transformers' CLIP dual encoder on the same towers.

    python bench/step.py                      # CPU, 2 threads: ViT 64 px / patch 8 / 192 x 6, BERT 192 x 4, batch 64
    python bench/step.py --device cuda        # ViT-B/32 @ 224 + BERT-base, bf16 autocast, batch 256
    python bench/step.py --probes             # also time the views, the teacher forward, the EMA and the NaN guard
    python bench/step.py --compile            # torch.compile the towers (first step reported separately)
    python bench/step.py --tiny               # seconds, for the tests

Variants, all on the same towers, each step = forward + backward + AdamW step:

- `clip`, `mpnce`, `mcd_nomlm`, `mcd`: through the library's own code path. An `MCDForPreTraining` built by
  `modeling_mcd.builder.build_pretraining_model`, an `MCDTrainer` whose `compute_loss` makes both views on the device
  from uint8 images (`MCDViews`) and runs the model and `MCDLoss`; the optimizer the Trainer creates (AdamW, fused
  where torch has it, with the Trainer's weight-decay groups) behind accelerate's optimizer wrapper with the
  `NonFiniteStepGuard`; then the `TeacherEMACallback`, as after every optimizer step of a real run.
- `peer`: transformers' `VisionTextDualEncoderModel` with its own CLIP loss (`return_loss=True`), trained as
  transformers' `examples/pytorch/contrastive-image-text/run_clip.py` trains it: pre-made pixel values (no
  augmentation), `Trainer.compute_loss`, the same Trainer optimizer. Its towers are our student's, converted with
  `modeling_mcd.export.to_vision_text_dual_encoder` (same weights).

Each variant's time is the median of `--steps` steps after `--warmup` steps, the variants' steps interleaved (one step
of each in turn) so that a load change on a shared machine hits all of them alike. FLOPs are counted with
`torch.utils.flop_counter.FlopCounterMode` over one forward + backward of each variant (the optimizer step and the
EMA are not counted). Peak memory: CUDA, `torch.cuda.max_memory_allocated` during the variant's warm-up steps minus
what was allocated before the variant was built (its weights, gradients, AdamW states and activations); CPU, the
peak resident-set growth over the same span, sampled every 5 ms after `malloc_trim` (approximate).

The last line of the output is one JSON object (`device`, `mcd_over_clip`, `flop_ratio`, `clip_over_peer`, the times,
...); `--json PATH` also writes it to a file.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import gc
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop, sdpa_flop

# ------------------------------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Size:
    """The towers and the batch of one benchmark (the student's; the teacher mirrors the image tower)."""

    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    vision_heads: int
    text_width: int
    text_layers: int
    text_heads: int
    vocab_size: int
    text_length: int  # caption tokens (padded length)
    projection_dim: int
    base_image_size: int  # side of the uint8 images the collator hands over (training/run_mcd.py: 8/7 of the model's)


SIZES = {
    # The CPU size: ViT 64 px / patch 8 / 192 x 6, BERT 192 x 4; the flickr8k_cpu recipe's vocabulary (5,000
    # WordPiece tokens), caption length (32, --max_seq_length's default) and projection (256).
    "small": Size(64, 8, 192, 6, 3, 192, 4, 3, 5000, 32, 256, 73),
    # The paper's ViT-B/32 @ 224 + BERT-base (uncased vocabulary), the yfcc15m_vitb32 recipe's 77 tokens and base 256.
    "vitb32": Size(224, 32, 768, 12, 12, 768, 12, 12, 30522, 77, 512, 256),
    # For the tests: builds and steps in milliseconds.
    "tiny": Size(32, 8, 32, 2, 2, 32, 2, 2, 300, 12, 16, 36),
}

#: Objective variants through the library (MCDTrainingArguments fields), in the order they are reported.
VARIANTS: dict[str, dict[str, Any]] = {
    "clip": {"objective": "clip", "use_mlm": False},
    "mpnce": {"objective": "mpnce", "use_mlm": False},
    "mcd_nomlm": {"objective": "mcd", "use_mlm": False},
    "mcd": {"objective": "mcd", "use_mlm": True},
}
PEER = "peer"
ALL_VARIANTS = (*VARIANTS, PEER)

#: Targets of issue 12.
EFFICIENCY_TARGET = 1.05  # (mcd / clip time) / (mcd / clip FLOPs)
PEER_TARGET = {"cpu": 1.0, "cuda": 0.9}  # our clip step / the peer's step

# Token ids of the synthetic captions (BERT's layout of the special tokens in our WordPiece vocabularies).
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 1, 2, 3, 4
FIRST_WORD_ID = 5
MLM_PROBABILITY = 0.15


class _Vocabulary:
    """What `build_pretraining_model` reads from a tokenizer when it builds towers from scratch."""

    pad_token_id, mask_token, mask_token_id = PAD_ID, "[MASK]", MASK_ID

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size


# ------------------------------------------------------------------------------------------------- inputs


def make_batch(size: Size, batch: int, device: torch.device | str, seed: int = 0) -> dict[str, Any]:
    """A batch as `MCDCollator` makes it: uint8 images at the base size, caption ids (full length), their MLM copy
    (15 % of the word positions masked) and an empty `bad_samples`; on `device`."""
    generator = torch.Generator().manual_seed(seed)
    side, length = size.base_image_size, size.text_length
    images = torch.randint(0, 256, (batch, 3, side, side), generator=generator, dtype=torch.uint8)
    ids = torch.randint(FIRST_WORD_ID, size.vocab_size, (batch, length), generator=generator)
    ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
    masked = torch.rand(batch, length, generator=generator) < MLM_PROBABILITY
    masked[:, 0] = masked[:, -1] = False
    tensors = {
        "pixel_values": images,
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.zeros_like(ids),
        "mlm_input_ids": torch.where(masked, torch.full_like(ids, MASK_ID), ids),
        "mlm_labels": torch.where(masked, ids, torch.full_like(ids, -100)),
    }
    return {**{name: tensor.to(device) for name, tensor in tensors.items()}, "bad_samples": {}}


def peer_batch(batch: dict[str, Any], views: Callable) -> dict[str, Any]:
    """run_clip.py's batch: pre-made pixel values (here the original view of `batch`'s images, made once), ids and
    mask, `return_loss=True`."""
    pixel_values = views(batch["pixel_values"], seed=0).pixel_values
    return {
        "pixel_values": pixel_values,
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "return_loss": True,
    }


# ------------------------------------------------------------------------------------------------- runners


@dataclass
class Runner:
    """One variant ready to step: `step()` is a whole training step, `forward_backward()` its forward + backward.

    `model` went through `accelerator.prepare_model` as in `Trainer.train`: under bf16 its forward runs in autocast
    (the views, made before it, stay fp32). `autocast` is that precision, for timing parts of the model alone.
    """

    name: str
    model: torch.nn.Module
    trainer: Any
    optimizer: Any
    inputs: dict[str, Any]
    autocast: Callable[[], contextlib.AbstractContextManager]
    ours: bool
    warmup_times: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    def forward_backward(self) -> None:
        loss = self.trainer.compute_loss(self.model, self.inputs)
        loss.backward()

    def step(self) -> None:
        self.forward_backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ours:  # what the Trainer does after an optimizer step: count it, then the callbacks (the EMA)
            trainer = self.trainer
            trainer.state.global_step += 1
            trainer.ema_callback.on_step_end(trainer.args, trainer.state, trainer.control, model=self.model)


def autocast_for(device: torch.device, dtype: str) -> Callable[[], contextlib.AbstractContextManager]:
    """The mixed precision of the model's forward: bf16 autocast (the Trainer's `--bf16`), or none for fp32."""
    if dtype == "fp32":
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _training_kwargs(device: torch.device, dtype: str, output_dir: str) -> dict[str, Any]:
    # The recipes' optimizer settings; the rest are TrainingArguments' defaults (optim: adamw_torch_fused).
    return {
        "output_dir": output_dir,
        "report_to": "none",
        "use_cpu": device.type == "cpu",
        "bf16": dtype == "bf16",
        "learning_rate": 5e-4,
        "weight_decay": 0.2,
        "seed": 0,
    }


def _prepare(trainer) -> tuple[torch.nn.Module, Any]:
    """The model and the Trainer's optimizer prepared by accelerate, as `Trainer.train` hands them to its loop and the
    callbacks: under bf16 the model's forward runs in autocast, its outputs cast back to fp32."""
    model = trainer.accelerator.prepare_model(trainer.model)
    optimizer = trainer.accelerator.prepare_optimizer(trainer.create_optimizer())
    trainer.optimizer = optimizer
    return model, optimizer


def build_ours(
    size: Size, variant: str, device: torch.device, batch: int, dtype: str, output_dir: str, seed: int = 0
) -> Runner:
    """An `MCDTrainer` on a from-scratch `MCDForPreTraining` of `size` training objective `variant`."""
    from modeling_mcd.arguments import ModelArguments
    from modeling_mcd.training_arguments import MCDTrainingArguments
    from modeling_mcd.builder import build_pretraining_model
    from modeling_mcd.trainer import MCDTrainer

    model_args = ModelArguments(
        image_size=size.image_size,
        patch_size=size.patch_size,
        vision_hidden_size=size.vision_width,
        vision_layers=size.vision_layers,
        vision_heads=size.vision_heads,
        text_hidden_size=size.text_width,
        text_layers=size.text_layers,
        text_heads=size.text_heads,
        projection_dim=size.projection_dim,
    )
    torch.manual_seed(seed)  # every variant starts from the same weights
    model, _ = build_pretraining_model(model_args, _Vocabulary(size.vocab_size))
    args = MCDTrainingArguments(**_training_kwargs(device, dtype, output_dir), **VARIANTS[variant])
    trainer = MCDTrainer(model.to(device), args)
    trainer.state.max_steps = 1000  # α and the momentum at the start of a 1,000-step schedule
    model, optimizer = _prepare(trainer)
    trainer.nonfinite_guard.on_train_begin(args, trainer.state, trainer.control, optimizer=optimizer)
    trainer.ema_callback.on_train_begin(args, trainer.state, trainer.control, model=model)
    model.train()
    inputs = make_batch(size, batch, device, seed)
    return Runner(variant, model, trainer, optimizer, inputs, autocast_for(device, dtype), ours=True)


def build_peer(ours: Runner, device: torch.device, dtype: str, output_dir: str) -> Runner:
    """transformers' `VisionTextDualEncoderModel` with `ours`' student towers and weights, trained as run_clip.py."""
    from transformers import Trainer, TrainingArguments

    from modeling_mcd.export import to_vision_text_dual_encoder

    peer = to_vision_text_dual_encoder(ours.model.mcd).to(device).train()
    trainer = Trainer(model=peer, args=TrainingArguments(**_training_kwargs(device, dtype, output_dir)))
    peer, optimizer = _prepare(trainer)
    inputs = peer_batch(ours.inputs, ours.trainer.views)
    return Runner(PEER, peer, trainer, optimizer, inputs, autocast_for(device, dtype), ours=False)


# ------------------------------------------------------------------------------------------------- measuring


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds `fn` takes, the device's queue drained before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _trim_heap() -> None:
    """glibc's `malloc_trim(0)`: return the heap's free memory to the system (nothing elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory growth inside the block, in bytes (`peak`, None when it cannot be measured).

    CUDA: `max_memory_allocated` minus what was allocated on entry. CPU: resident set size sampled every 5 ms by a
    thread (Linux `/proc/self/statm`), its peak minus the value on entry, after glibc handed its free memory back.
    """

    def __init__(self, device: torch.device, interval: float = 0.005):
        self.device, self.interval = device, interval
        self.peak: int | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            synchronize(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        gc.collect()
        _trim_heap()  # hand freed memory back first, so that reusing it shows as growth
        self._base = _rss_bytes()
        self._max = self._base
        self._stop = threading.Event()
        if self._base is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            rss = _rss_bytes()
            if rss is not None and rss > self._max:
                self._max = rss

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._base
            return
        if self._base is None:
            return
        self._stop.set()
        self._thread.join()
        rss = _rss_bytes()
        self._max = max(self._max, rss or 0)
        self.peak = self._max - self._base


#: SDPA kernels that torch's FLOP counter does not know (the CPU's), counted with its own SDPA formulas.
_SDPA_FLOPS = {
    name: formula
    for names, formula in (
        (("_scaled_dot_product_flash_attention_for_cpu",), sdpa_flop),
        (("_scaled_dot_product_flash_attention_for_cpu_backward",), sdpa_backward_flop),
    )
    for name in names
    if hasattr(torch.ops.aten, name)
}


def _as_raw(formula: Callable) -> Callable:
    """`formula` (shape-wrapped by `register_flop_formula`) marked so that `FlopCounterMode` does not wrap it again."""

    def raw(*args, **kwargs):
        return formula(*args, **kwargs)

    raw._get_raw = True
    return raw


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of `fn` as `FlopCounterMode` counts them (matrix products, convolutions, attention)."""
    mapping = {getattr(torch.ops.aten, name): _as_raw(formula) for name, formula in _SDPA_FLOPS.items()}
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with counter:
        fn()
    return counter.get_total_flops()


def runner_flops(runner: Runner) -> int:
    """FLOPs of one forward + backward of `runner` (its gradients are dropped again)."""
    flops = count_flops(runner.forward_backward)
    runner.optimizer.zero_grad(set_to_none=True)
    return flops


def compile_towers(runner: Runner) -> None:
    """`torch.compile` every tower of `runner` in place (`nn.Module.compile`): student, teacher, peer."""
    model = runner.model
    if runner.ours:
        towers = [model.mcd.vision_model, model.mcd.text_model, model.teacher_vision_model]
        towers += [model.teacher_text_model] if hasattr(model, "teacher_text_model") else []
    else:
        towers = [model.vision_model, model.text_model]
    # Every variant's towers run the same forward code: let dynamo keep one graph per tower and shape.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    for tower in towers:
        tower.compile()


def attention_implementations(runner: Runner) -> dict[str, str]:
    """`config._attn_implementation` of each tower of `runner` (what transformers dispatches attention to)."""
    model = runner.model
    towers = (
        {"vision": model.mcd.vision_model, "text": model.mcd.text_model, "teacher_vision": model.teacher_vision_model}
        if runner.ours
        else {"vision": model.vision_model, "text": model.text_model}
    )
    return {name: str(tower.config._attn_implementation) for name, tower in towers.items()}


# ------------------------------------------------------------------------------------------------- probes


def _median_time(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    return statistics.median(timed(fn, device) for _ in range(repeats))


def _original_view(views, images: torch.Tensor) -> torch.Tensor:
    """Only the original view of `MCDViews` (its crop and normalisation): what the `clip` objective uses."""
    from modeling_mcd.augmentation import _apply_rows, _normalize

    with torch.no_grad():
        x = images.float() / 255.0
        return _normalize(_apply_rows(views.orig_crop, x, 0, x.shape[0]), views.image_mean, views.image_std)


def _finite_by_norms(grads: list[torch.Tensor]) -> bool:
    """A cheaper all-finite check: one fused norm per tensor group (inf or NaN anywhere makes its norm non-finite)."""
    return bool(torch.stack(torch._foreach_norm(grads)).isfinite().all())


def probe(runner: Runner, device: torch.device, repeats: int = 5) -> dict[str, float | None]:
    """Seconds of the parts of an `mcd` step that the issue's candidate optimisations touch (medians)."""
    from modeling_mcd import nonfinite

    model, trainer, inputs = runner.model, runner.trainer, runner.inputs
    images = inputs["pixel_values"]
    views = trainer.views(images, seed=1)
    both = torch.cat([views.pixel_values, views.aug_pixel_values])
    result: dict[str, float | None] = {}
    result["views_s"] = _median_time(lambda: trainer.views(images, seed=1), device, repeats)
    result["views_original_only_s"] = _median_time(lambda: _original_view(trainer.views, images), device, repeats)

    def teacher(context):
        def run():
            with context(), runner.autocast():
                model._teacher_image_embeds(both)

        return run

    result["teacher_no_grad_s"] = _median_time(teacher(torch.no_grad), device, repeats)
    result["teacher_inference_mode_s"] = _median_time(teacher(torch.inference_mode), device, repeats)

    def student_images():
        with runner.autocast():
            model.mcd.get_image_features(both).pooler_output.float().sum().backward()
        model.zero_grad(set_to_none=True)

    result["student_images_fwd_bwd_s"] = _median_time(student_images, device, repeats)
    momentum = 0.996
    result["ema_update_s"] = _median_time(lambda: model.update_teacher(momentum), device, repeats)
    runner.forward_backward()
    plain = runner.optimizer.optimizer
    result["nonfinite_check_s"] = _median_time(lambda: nonfinite._all_finite(plain), device, repeats)
    grads = [param.grad for group in plain.param_groups for param in group["params"] if param.grad is not None]
    result["nonfinite_check_foreach_norm_s"] = _median_time(lambda: _finite_by_norms(grads), device, repeats)
    runner.optimizer.zero_grad(set_to_none=True)
    return result


# ------------------------------------------------------------------------------------------------- the benchmark


def default_size(device: torch.device) -> str:
    return "vitb32" if device.type == "cuda" else "small"


def release(runners: dict[str, Runner]) -> None:
    """Drop the runners and return cached device memory."""
    runners.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def preload(device: torch.device) -> None:
    """Import the library and run the views once, so that lazy imports do not count as the first variant's memory."""
    from modeling_mcd.augmentation import MCDViews
    from modeling_mcd.trainer import MCDTrainer  # noqa: F401 - imported for its side effect (loading)

    MCDViews(16, (0.5,) * 3, (0.5,) * 3)(torch.zeros(1, 3, 18, 18, dtype=torch.uint8, device=device), seed=0)


def build_runners(
    size: Size,
    variants: list[str],
    device: torch.device,
    batch: int,
    dtype: str,
    warmup: int,
    output_dir: str,
    compile_: bool = False,
) -> tuple[dict[str, Runner], dict[str, int | None]]:
    """Build each variant in turn and run its warm-up steps, measuring its peak memory over both."""
    preload(device)
    runners: dict[str, Runner] = {}
    peaks: dict[str, int | None] = {}
    template: Runner | None = None
    for name in variants:
        with PeakMemory(device) as peak:
            if name == PEER:
                if template is None:
                    template = build_ours(size, "clip", device, batch, dtype, output_dir)
                runner = build_peer(template, device, dtype, output_dir)
            else:
                runner = build_ours(size, name, device, batch, dtype, output_dir)
                template = template or runner
            if compile_:
                compile_towers(runner)
            for _ in range(warmup):
                runner.warmup_times.append(timed(runner.step, device))
        runners[name], peaks[name] = runner, peak.peak
    return runners, peaks


def run_benchmark(
    size_name: str,
    device: torch.device,
    batch: int,
    dtype: str,
    warmup: int,
    steps: int,
    variants: list[str] | None = None,
    compile_: bool = False,
    with_probes: bool = False,
    with_flops: bool = True,
) -> dict[str, Any]:
    """Time, count and measure every variant; return the figures (the JSON object `main` prints)."""
    size = SIZES[size_name]
    variants = list(variants or ALL_VARIANTS)
    output_dir = tempfile.mkdtemp(prefix="mcd-bench-")
    runners, peaks = build_runners(size, variants, device, batch, dtype, max(warmup, 1), output_dir, compile_)
    for _ in range(steps):  # interleaved: one step of each variant in turn
        for runner in runners.values():
            runner.times.append(timed(runner.step, device))
    times = {name: statistics.median(runner.times) for name, runner in runners.items()}
    fastest = {name: min(runner.times) for name, runner in runners.items()}
    flops = {name: runner_flops(runner) for name, runner in runners.items()} if with_flops else {}
    result: dict[str, Any] = {
        "device": device.type,
        "device_name": device_name(device),
        "date": datetime.date.today().isoformat(),
        "size": size_name,
        "towers": asdict(size),
        "batch": batch,
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "warmup": max(warmup, 1),
        "steps": steps,
        "compile": compile_,
        "time_s": times,
        "min_time_s": fastest,
        "first_step_s": {name: runner.warmup_times[0] for name, runner in runners.items()},
        "samples_per_s": {name: batch / seconds for name, seconds in times.items()},
        "peak_memory_gib": {name: (peak / 1024**3 if peak is not None else None) for name, peak in peaks.items()},
        "flops": flops,
        "attention": {name: attention_implementations(runner) for name, runner in runners.items()},
        "versions": {
            "torch": torch.__version__,
            "transformers": _version("transformers"),
            "python": platform.python_version(),
        },
    }
    result.update(ratios(times, flops, device.type))
    # On a loaded machine the fastest step is the least disturbed one: the same ratios from it.
    by_min = ratios(fastest, flops, device.type)
    result["by_min_time"] = {key: by_min[key] for key in ("mcd_over_clip", "efficiency", "clip_over_peer")}
    if with_probes and "mcd" in runners:
        result["probes"] = probe(runners["mcd"], device)
    release(runners)
    return result


def ratios(times: dict[str, float], flops: dict[str, int], device_type: str) -> dict[str, Any]:
    """The issue's ratios and whether its targets hold (None where a variant was not run)."""

    def ratio(a: dict, x: str, y: str) -> float | None:
        return a[x] / a[y] if x in a and y in a and a[y] else None

    out: dict[str, Any] = {}
    for name in ("mcd", "mcd_nomlm", "mpnce"):
        suffix = "" if name == "mcd" else f"_{name.removeprefix('mcd_')}"
        time_ratio, flop_ratio = ratio(times, name, "clip"), ratio(flops, name, "clip")
        key = "mcd_over_clip" if name == "mcd" else f"{name}_over_clip"
        out[key] = time_ratio
        out[f"flop_ratio{suffix}"] = flop_ratio
        out[f"efficiency{suffix}"] = time_ratio / flop_ratio if time_ratio and flop_ratio else None
    out["clip_over_peer"] = ratio(times, "clip", PEER)
    out["clip_flops_over_peer"] = ratio(flops, "clip", PEER)
    peer_target = PEER_TARGET.get(device_type, 1.0)
    out["targets"] = {
        "efficiency": EFFICIENCY_TARGET,
        "clip_over_peer": peer_target,
        "efficiency_holds": None if out["efficiency"] is None else out["efficiency"] <= EFFICIENCY_TARGET,
        "clip_over_peer_holds": None if out["clip_over_peer"] is None else out["clip_over_peer"] <= peer_target,
    }
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return (
        f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    )


def _version(package: str) -> str | None:
    try:
        return __import__(package).__version__
    except ImportError:
        return None


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def report(result: dict[str, Any]) -> None:
    """Print every time, the ratios and the targets."""
    print(
        f"{result['device_name']} | size {result['size']} | batch {result['batch']} | {result['dtype']} | "
        f"median of {result['steps']} steps after {result['warmup']} warm-up"
        + (" | torch.compile" if result["compile"] else "")
    )
    print(f"{'variant':<11}{'step s':>9}{'min s':>9}{'samples/s':>11}{'1st step s':>11}{'GFLOP':>10}{'peak GiB':>10}")
    for name, seconds in result["time_s"].items():
        gflop = result["flops"].get(name)
        print(
            f"{name:<11}{seconds:>9.4f}{result['min_time_s'][name]:>9.4f}{result['samples_per_s'][name]:>11.1f}"
            f"{result['first_step_s'][name]:>11.3f}{_fmt(gflop / 1e9 if gflop else None, '.1f'):>10}"
            f"{_fmt(result['peak_memory_gib'][name], '.3f'):>10}"
        )
    targets = result["targets"]
    for name, suffix in (("mcd", ""), ("mcd_nomlm", "_nomlm"), ("mpnce", "_mpnce")):
        key = "mcd_over_clip" if name == "mcd" else f"{name}_over_clip"
        if result.get(key) is not None:
            line = f"{name}/clip time {result[key]:.3f}  FLOP ratio {_fmt(result[f'flop_ratio{suffix}'])}"
            line += f"  time/FLOP ratio {_fmt(result[f'efficiency{suffix}'])}"
            if name == "mcd":
                line += f" (target <= {targets['efficiency']}: {_holds(targets['efficiency_holds'])})"
            print(line)
    if result.get("clip_over_peer") is not None:
        print(
            f"clip/peer time {result['clip_over_peer']:.3f} (FLOPs {_fmt(result['clip_flops_over_peer'])})"
            f" (target <= {targets['clip_over_peer']} on {result['device']}: {_holds(targets['clip_over_peer_holds'])})"
        )
    by_min = result["by_min_time"]
    print(
        f"from the fastest steps: mcd/clip {_fmt(by_min['mcd_over_clip'])}, time/FLOP ratio "
        f"{_fmt(by_min['efficiency'])}, clip/peer {_fmt(by_min['clip_over_peer'])}"
    )
    for name, implementations in result["attention"].items():
        print(f"attention {name}: {implementations}")
    for name, seconds in (result.get("probes") or {}).items():
        print(f"probe {name}: {_fmt(seconds, '.4f')}")


def _holds(value: bool | None) -> str:
    return "n/a" if value is None else ("holds" if value else "MISSED")


def parse_args(argv: list[str] | None = None, description: str = __doc__) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--size", choices=sorted(SIZES), help="towers (default: small on CPU, vitb32 on CUDA)")
    parser.add_argument("--batch", type=int, help="images per step (default: 64 on CPU, 256 on CUDA)")
    parser.add_argument(
        "--dtype", choices=("fp32", "bf16"), help="bf16 autocast or fp32 (default: fp32 CPU, bf16 CUDA)"
    )
    parser.add_argument("--warmup", type=int, help="untimed steps per variant (default: 2 CPU, 5 CUDA)")
    parser.add_argument("--steps", type=int, help="timed steps per variant (default: 5 CPU, 20 CUDA)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: 2 on CPU)")
    parser.add_argument("--variants", nargs="+", choices=ALL_VARIANTS, help="default: all")
    parser.add_argument("--compile", action="store_true", help="torch.compile the towers")
    parser.add_argument("--probes", action="store_true", help="also time the parts of an mcd step")
    parser.add_argument("--tiny", action="store_true", help="tiny towers, batch 8, 1 warm-up + 2 steps (tests)")
    parser.add_argument("--json", type=Path, help="also write the JSON object here")
    args = parser.parse_args(argv)
    args.device = torch.device(args.device)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device")
    cuda = args.device.type == "cuda"
    if args.tiny:
        defaults = {"size": "tiny", "batch": 8, "warmup": 1, "steps": 2}
    else:
        defaults = {"size": default_size(args.device), "batch": 256 if cuda else 64}
        defaults |= {"warmup": 5 if cuda else 2, "steps": 20 if cuda else 5}
    defaults |= {"dtype": "bf16" if cuda else "fp32", "threads": None if cuda else 2}
    fill_defaults(args, defaults)
    return args


def _run_parsed(args: argparse.Namespace) -> dict[str, Any]:
    return run_benchmark(
        args.size,
        args.device,
        args.batch,
        args.dtype,
        args.warmup,
        args.steps,
        variants=args.variants,
        compile_=args.compile,
        with_probes=args.probes,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return run_cli(argv, parse_args, _run_parsed, report)


def fill_defaults(args: argparse.Namespace, defaults: dict[str, Any]) -> None:
    """Give every option the user left unset (`None`) its default for this run."""
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def run_cli(argv, parse_args, run, report) -> dict[str, Any]:
    """The shared `main` of the bench scripts: parse, set the thread count, run, print the table, emit the JSON."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args)
    report(result)
    emit(result, args.json)
    return result


def emit(result: dict[str, Any], path: Path | None) -> None:
    """The JSON object: written to `path` when given, and printed as the last line of the output."""
    line = json.dumps(result, default=str)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(line, flush=True)


if __name__ == "__main__":
    main()
