# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""MCD on one GPU: samples/s and model FLOPs utilisation (MFU) of `clip` and `mcd`, the peer's samples/s, peak memory,
and the largest batch that fits.

    python bench/gpu.py                               # ViT-B/32 @ 224 + BERT-base, bf16, batch 256 per GPU
    python bench/gpu.py --peak-tflops 989 --json out.json
    python bench/gpu.py --tiny                        # slowly, on the CPU, tiny towers: the test

Everything is measured with bench/step.py's benchmark (imported, not copied): the same variants through the library's
code path (an `MCDTrainer` step: views on the device, the model, `MCDLoss`, the Trainer's AdamW, the EMA teacher) and
the peer (transformers' `VisionTextDualEncoderModel` trained as run_clip.py trains it). MFU = the FLOPs of one forward
+ backward counted by `torch.utils.flop_counter.FlopCounterMode` / the step's time / the GPU's peak dense bf16 FLOP/s
(`PEAK_TFLOPS`, chosen by `torch.cuda.get_device_name`, or `--peak-tflops`). The largest batch is found by doubling
the batch from `--batch` until a step raises `torch.cuda.OutOfMemoryError`, then bisecting to `--batch-step`; on the
CPU nothing runs out of memory, so the search stops at `--max-batch` and says so (`capped`).

The targets on one H100/H200, bf16, batch 256: `mcd` >= 1,000 samples/s and MFU >= 25 %.
The last line of the output is one JSON object; `--json PATH` also writes it. bench/gpu_check.sh runs this on a lent
GPU machine.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
from pathlib import Path
from typing import Any

import common
import step
import torch

#: Peak dense bf16 tensor-core TFLOP/s (no sparsity), by a substring of `torch.cuda.get_device_name`; first match wins.
PEAK_TFLOPS = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),  # SXM ("NVIDIA H100 80GB HBM3")
    ("A100", 312.0),
)
VARIANTS = ("clip", "mcd", common.PEER)
TARGET_SAMPLES_PER_S = 1000.0  # mcd, one H100/H200, bf16, batch 256
TARGET_MFU = 0.25


def peak_tflops(name: str) -> float | None:
    """The table's peak for a device name, None when it is not in the table."""
    for key, tflops in PEAK_TFLOPS:
        if key.lower() in name.lower():
            return tflops
    return None


def _is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


def step_fits(runner: common.Runner, size: common.Size, batch: int, device: torch.device) -> bool:
    """Whether one training step of `runner` at `batch` runs without running out of device memory."""
    runner.inputs = common.make_batch(size, batch, device)
    failed = False
    try:
        runner.step()
        common.synchronize(device)
    except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
        if not _is_oom(error):
            raise
        failed = True  # leave the except block first: its traceback holds the step's tensors
    if failed:
        runner.optimizer.zero_grad(set_to_none=True)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return not failed


def largest_batch(fits, start: int, max_batch: int, granularity: int) -> dict[str, Any]:
    """The largest batch for which `fits(batch)` holds: double from `start` until it fails (or `max_batch`), then
    bisect to a multiple of `granularity`. `capped` is True when nothing failed up to `max_batch`."""
    if not fits(start):
        low, high = 0, start
    else:
        low, high = start, None
        while high is None:
            trial = min(low * 2, max_batch)
            if trial <= low:
                return {"batch": low, "capped": True, "first_failing": None}
            if fits(trial):
                low = trial
            else:
                high = trial
    while high - low > granularity:
        middle = (low + high) // 2 // granularity * granularity
        if middle <= low:
            break
        if fits(middle):
            low = middle
        else:
            high = middle
    return {"batch": low, "capped": False, "first_failing": high}


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = args.device
    bench = step.run_benchmark(
        args.size, device, args.batch, args.dtype, args.warmup, args.steps, variants=list(VARIANTS)
    )
    name = bench["device_name"]
    peak = args.peak_tflops or (peak_tflops(name) if device.type == "cuda" else None)
    variants: dict[str, dict[str, Any]] = {}
    for variant in VARIANTS:
        seconds, flops = bench["time_s"][variant], bench["flops"][variant]
        variants[variant] = {
            "step_s": seconds,
            "samples_per_s": bench["samples_per_s"][variant],
            "flops_per_step": flops,
            "flops_per_sample": flops / args.batch,
            "achieved_tflops": flops / seconds / 1e12,
            "mfu": flops / seconds / (peak * 1e12) if peak else None,
            "peak_memory_gib": bench["peak_memory_gib"][variant],
        }
    search = None
    if args.max_batch:
        size = common.SIZES[args.size]
        runner = common.build_ours(size, "mcd", device, args.batch, args.dtype, tempfile.mkdtemp(prefix="mcd-bench-"))
        search = largest_batch(
            lambda batch: step_fits(runner, size, batch, device), args.batch, args.max_batch, args.batch_step
        )
        search["variant"] = "mcd"
        del runner
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    mcd = variants["mcd"]
    return {
        "device": device.type,
        "device_name": name,
        "date": bench["date"],
        "size": args.size,
        "batch": args.batch,
        "dtype": args.dtype,
        "peak_tflops": peak,
        "variants": variants,
        "mcd_samples_per_s": mcd["samples_per_s"],
        "mcd_mfu": mcd["mfu"],
        "clip_over_peer": bench["clip_over_peer"],
        "mcd_over_clip": bench["mcd_over_clip"],
        "flop_ratio": bench["flop_ratio"],
        "largest_batch": search,
        "targets": {
            "mcd_samples_per_s": TARGET_SAMPLES_PER_S,
            "mcd_mfu": TARGET_MFU,
            "samples_per_s_holds": mcd["samples_per_s"] >= TARGET_SAMPLES_PER_S,
            "mfu_holds": None if mcd["mfu"] is None else mcd["mfu"] >= TARGET_MFU,
        },
        "attention": bench["attention"],
        "versions": bench["versions"],
    }


def report(result: dict[str, Any]) -> None:
    peak = result["peak_tflops"]
    print(
        f"{result['device_name']} | size {result['size']} | batch {result['batch']} | {result['dtype']} | "
        f"peak {peak if peak else 'n/a'} TFLOP/s"
    )
    print(f"{'variant':<8}{'samples/s':>11}{'step s':>9}{'GFLOP/sample':>14}{'TFLOP/s':>9}{'MFU':>8}{'peak GiB':>10}")
    for name, v in result["variants"].items():
        mfu = "n/a" if v["mfu"] is None else f"{100 * v['mfu']:.1f}%"
        memory = "n/a" if v["peak_memory_gib"] is None else f"{v['peak_memory_gib']:.2f}"
        print(
            f"{name:<8}{v['samples_per_s']:>11.1f}{v['step_s']:>9.4f}{v['flops_per_sample'] / 1e9:>14.2f}"
            f"{v['achieved_tflops']:>9.2f}{mfu:>8}{memory:>10}"
        )
    search = result["largest_batch"]
    if search:
        bound = " (no failure up to --max-batch)" if search["capped"] else f" ({search['first_failing']} failed)"
        print(f"largest {search['variant']} batch that fits: {search['batch']}{bound}")
    targets = result["targets"]
    print(
        f"targets: mcd >= {targets['mcd_samples_per_s']:.0f} samples/s: {_holds(targets['samples_per_s_holds'])}; "
        f"MFU >= {100 * targets['mcd_mfu']:.0f}%: {_holds(targets['mfu_holds'])}"
    )


def _holds(value: bool | None) -> str:
    return "n/a" if value is None else ("holds" if value else "MISSED")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", help="default: cuda (cpu with --tiny)")
    parser.add_argument("--size", choices=sorted(common.SIZES), help="default: vitb32 (tiny with --tiny)")
    parser.add_argument("--batch", type=int, help="per GPU (default 256; 8 with --tiny)")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), help="default: bf16 (fp32 on the CPU)")
    parser.add_argument("--warmup", type=int, help="untimed steps per variant (default 5)")
    parser.add_argument("--steps", type=int, help="timed steps per variant (default 20)")
    parser.add_argument("--peak-tflops", type=float, help="peak dense bf16 TFLOP/s (default: by device name)")
    parser.add_argument("--max-batch", type=int, help="upper end of the batch search, 0 to skip (default 4096)")
    parser.add_argument("--batch-step", type=int, help="granularity of the batch search (default 32)")
    parser.add_argument("--threads", type=int, help="CPU threads (CPU runs only)")
    parser.add_argument("--tiny", action="store_true", help="tiny towers on the CPU (tests)")
    parser.add_argument("--json", type=Path, help="also write the JSON object here")
    args = parser.parse_args(argv)
    if args.tiny:
        defaults = {"device": "cpu", "size": "tiny", "batch": 8, "warmup": 1, "steps": 2, "max_batch": 32}
        defaults |= {"batch_step": 8}
    else:
        defaults = {"device": "cuda", "size": "vitb32", "batch": 256, "warmup": 5, "steps": 20, "max_batch": 4096}
        defaults |= {"batch_step": 32}
    common.fill_defaults(args, defaults)
    args.device = torch.device(args.device)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU machine, or with --tiny on the CPU")
    if args.dtype is None:
        args.dtype = "bf16" if args.device.type == "cuda" else "fp32"
    if args.threads is None and args.device.type == "cpu":
        args.threads = 2
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return common.run_cli(argv, parse_args, run, report)


if __name__ == "__main__":
    main()
