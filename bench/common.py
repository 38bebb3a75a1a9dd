# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""What the bench scripts share: the sizes, a batch as the collator makes it, a variant ready to step through the
library's code path (or transformers' peer), timing, peak memory, and their command line's defaults and output.

Not a script: bench/step.py, bench/data.py and bench/gpu.py import it as `common` (a script run as
`python bench/step.py` finds its siblings: bench/ is the first entry of its `sys.path`).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

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
    from modeling_mcd.trainer.arguments import ModelArguments
    from modeling_mcd.trainer.builder import build_pretraining_model
    from modeling_mcd.trainer.mcd_trainer import MCDTrainer
    from modeling_mcd.trainer.training_arguments import MCDTrainingArguments

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


# ------------------------------------------------------------------------------------- the machine and the command line


def default_size(device: torch.device) -> str:
    """The size a script runs by default on `device`: ViT-B/32 on a GPU, the small towers on the CPU."""
    return "vitb32" if device.type == "cuda" else "small"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return (
        f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    )


def package_version(package: str) -> str | None:
    """`package.__version__`, None when it is not installed."""
    try:
        return __import__(package).__version__
    except ImportError:
        return None


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
