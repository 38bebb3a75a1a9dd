# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Time one training step of MCD's objectives and of transformers' CLIP dual encoder on the same towers.

    python bench/step.py                      # CPU, 2 threads: ViT 64 px / patch 8 / 192 x 6, BERT 192 x 4, batch 64
    python bench/step.py --device cuda        # ViT-B/32 @ 224 + BERT-base, bf16 autocast, batch 256
    python bench/step.py --probes             # also time the views, the teacher forward, the EMA and the NaN guard
    python bench/step.py --compile            # torch.compile the towers (first step reported separately)
    python bench/step.py --tiny               # seconds, for the tests

Variants, all on the same towers, each step = forward + backward + AdamW step:

- `clip`, `mpnce`, `mcd_nomlm`, `mcd`: through the library's own code path. An `MCDForPreTraining` built by
  `modeling_mcd.trainer.builder.build_pretraining_model`, an `MCDTrainer` whose `compute_loss` makes both views on the
  device from uint8 images (`MCDViews`) and runs the model and `MCDLoss`; the optimizer the Trainer creates (AdamW,
  fused where torch has it, with the Trainer's weight-decay groups) behind accelerate's optimizer wrapper with the
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
import datetime
import gc
import platform
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import common
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop, sdpa_flop

#: The targets: an mcd step takes at most 5 % more time per FLOP than a clip step, and our clip step at most the
#: peer's time on the CPU, 90 % of it on a GPU.
EFFICIENCY_TARGET = 1.05  # (mcd / clip time) / (mcd / clip FLOPs)
PEER_TARGET = {"cpu": 1.0, "cuda": 0.9}  # our clip step / the peer's step


# ------------------------------------------------------------------------------------------------- FLOPs


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


def runner_flops(runner: common.Runner) -> int:
    """FLOPs of one forward + backward of `runner` (its gradients are dropped again)."""
    flops = count_flops(runner.forward_backward)
    runner.optimizer.zero_grad(set_to_none=True)
    return flops


# ------------------------------------------------------------------------------------------------- probes


def _median_time(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    return statistics.median(common.timed(fn, device) for _ in range(repeats))


def _original_view(views, images: torch.Tensor) -> torch.Tensor:
    """Only the original view of `MCDViews` (its crop and normalisation): what the `clip` objective uses."""
    from modeling_mcd.data.augmentation import _apply_rows, _normalize

    with torch.no_grad():
        x = images.float() / 255.0
        return _normalize(_apply_rows(views.orig_crop, x, 0, x.shape[0]), views.image_mean, views.image_std)


def _finite_by_norms(grads: list[torch.Tensor]) -> bool:
    """A cheaper all-finite check: one fused norm per tensor group (inf or NaN anywhere makes its norm non-finite)."""
    return bool(torch.stack(torch._foreach_norm(grads)).isfinite().all())


def probe(runner: common.Runner, device: torch.device, repeats: int = 5) -> dict[str, float | None]:
    """Seconds of the parts of an `mcd` step that candidate optimisations touch (medians)."""
    from modeling_mcd.trainer import nonfinite

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


def release(runners: dict[str, common.Runner]) -> None:
    """Drop the runners and return cached device memory."""
    runners.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def preload(device: torch.device) -> None:
    """Import the library and run the views once, so that lazy imports do not count as the first variant's memory."""
    from modeling_mcd.data.augmentation import MCDViews
    from modeling_mcd.trainer.mcd_trainer import MCDTrainer  # noqa: F401 - imported for its side effect (loading)

    MCDViews(16, (0.5,) * 3, (0.5,) * 3)(torch.zeros(1, 3, 18, 18, dtype=torch.uint8, device=device), seed=0)


def build_runners(
    size: common.Size,
    variants: list[str],
    device: torch.device,
    batch: int,
    dtype: str,
    warmup: int,
    output_dir: str,
    compile_: bool = False,
) -> tuple[dict[str, common.Runner], dict[str, int | None]]:
    """Build each variant in turn and run its warm-up steps, measuring its peak memory over both."""
    preload(device)
    runners: dict[str, common.Runner] = {}
    peaks: dict[str, int | None] = {}
    template: common.Runner | None = None
    for name in variants:
        with common.PeakMemory(device) as peak:
            if name == common.PEER:
                if template is None:
                    template = common.build_ours(size, "clip", device, batch, dtype, output_dir)
                runner = common.build_peer(template, device, dtype, output_dir)
            else:
                runner = common.build_ours(size, name, device, batch, dtype, output_dir)
                template = template or runner
            if compile_:
                common.compile_towers(runner)
            for _ in range(warmup):
                runner.warmup_times.append(common.timed(runner.step, device))
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
    size = common.SIZES[size_name]
    variants = list(variants or common.ALL_VARIANTS)
    output_dir = tempfile.mkdtemp(prefix="mcd-bench-")
    runners, peaks = build_runners(size, variants, device, batch, dtype, max(warmup, 1), output_dir, compile_)
    for _ in range(steps):  # interleaved: one step of each variant in turn
        for runner in runners.values():
            runner.times.append(common.timed(runner.step, device))
    times = {name: statistics.median(runner.times) for name, runner in runners.items()}
    fastest = {name: min(runner.times) for name, runner in runners.items()}
    flops = {name: runner_flops(runner) for name, runner in runners.items()} if with_flops else {}
    result: dict[str, Any] = {
        "device": device.type,
        "device_name": common.device_name(device),
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
        "attention": {name: common.attention_implementations(runner) for name, runner in runners.items()},
        "versions": {
            "torch": torch.__version__,
            "transformers": common.package_version("transformers"),
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
    """The ratios and whether their targets hold (None where a variant was not run)."""

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
    out["clip_over_peer"] = ratio(times, "clip", common.PEER)
    out["clip_flops_over_peer"] = ratio(flops, "clip", common.PEER)
    peer_target = PEER_TARGET.get(device_type, 1.0)
    out["targets"] = {
        "efficiency": EFFICIENCY_TARGET,
        "clip_over_peer": peer_target,
        "efficiency_holds": None if out["efficiency"] is None else out["efficiency"] <= EFFICIENCY_TARGET,
        "clip_over_peer_holds": None if out["clip_over_peer"] is None else out["clip_over_peer"] <= peer_target,
    }
    return out


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
    parser.add_argument("--size", choices=sorted(common.SIZES), help="towers (default: small on CPU, vitb32 on CUDA)")
    parser.add_argument("--batch", type=int, help="images per step (default: 64 on CPU, 256 on CUDA)")
    parser.add_argument(
        "--dtype", choices=("fp32", "bf16"), help="bf16 autocast or fp32 (default: fp32 CPU, bf16 CUDA)"
    )
    parser.add_argument("--warmup", type=int, help="untimed steps per variant (default: 2 CPU, 5 CUDA)")
    parser.add_argument("--steps", type=int, help="timed steps per variant (default: 5 CPU, 20 CUDA)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: 2 on CPU)")
    parser.add_argument("--variants", nargs="+", choices=common.ALL_VARIANTS, help="default: all")
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
        defaults = {"size": common.default_size(args.device), "batch": 256 if cuda else 64}
        defaults |= {"warmup": 5 if cuda else 2, "steps": 20 if cuda else 5}
    defaults |= {"dtype": "bf16" if cuda else "fp32", "threads": None if cuda else 2}
    common.fill_defaults(args, defaults)
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
    return common.run_cli(argv, parse_args, _run_parsed, report)


if __name__ == "__main__":
    main()
