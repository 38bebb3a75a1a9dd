# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""The statistics of a quality study (bench/quality.py): mean ± std per cell, the paired difference of each cell with
`clip` at the same seed and noise, what the noise costs each objective, the teacher's analysis along a run; and their
markdown tables. Pure functions of the run records."""

from __future__ import annotations

import statistics
from typing import Any


def label(variant: str, noise: float) -> str:
    """A cell's name in the summary: the variant, with its caption noise when there is some."""
    return variant if not noise else f"{variant} p={noise:g}"


def summarise(runs: list[dict[str, Any]], metrics: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """Per cell (variant and noise) and metric: mean, std (sample std over seeds; 0 for one seed) and the seed
    count."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for cell in dict.fromkeys(run["label"] for run in runs):
        mine = [run for run in runs if run["label"] == cell]
        summary[cell] = {}
        for metric in metrics:
            values = [run["metrics"][metric] for run in mine if metric in run["metrics"]]
            if values:
                summary[cell][metric] = {
                    "mean": statistics.fmean(values),
                    "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "n": len(values),
                }
    return summary


def t_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """The two-sided Student-t confidence interval of the mean of `values` (at least 2)."""
    from scipy import stats

    mean, n = statistics.fmean(values), len(values)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * statistics.stdev(values) / n**0.5
    return float(mean - half), float(mean + half)


def paired_differences(
    runs: list[dict[str, Any]], metrics: list[str], baseline: str = "clip"
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per cell other than `baseline` at the same noise, and metric: the per-seed differences `cell - baseline`
    over the seeds both ran (same seed: same initialisation, data order and noisy pairs), their mean, and its 95 %
    t-interval (with 2 seeds or more). `excludes_zero` says whether the interval lies on one side of 0."""
    by_key = {(run["label"], run["seed"]): run for run in runs}
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for cell in dict.fromkeys(run["label"] for run in runs):
        mine = [run for run in runs if run["label"] == cell]
        if mine[0]["variant"] == baseline:
            continue
        reference = label(baseline, mine[0].get("noise", 0.0))
        result[cell] = {}
        for metric in metrics:
            pairs = [
                (run["seed"], run["metrics"][metric] - by_key[(reference, run["seed"])]["metrics"][metric])
                for run in mine
                if (reference, run["seed"]) in by_key and metric in run["metrics"]
            ]
            if not pairs:
                continue
            result[cell][metric] = {"baseline": reference, **_difference_entry(pairs)}
    return result


def _difference_entry(pairs: list[tuple[int, float]]) -> dict[str, Any]:
    """Per-seed differences `(seed, difference)` -> seeds, differences, their mean and, with 2 seeds or more, its 95 %
    t-interval; `excludes_zero` says whether the interval lies on one side of 0."""
    differences = [difference for _, difference in pairs]
    entry: dict[str, Any] = {
        "seeds": [seed for seed, _ in pairs],
        "differences": differences,
        "mean": statistics.fmean(differences),
    }
    if len(differences) > 1:
        low, high = t_interval(differences)
        entry.update(ci95=[low, high], excludes_zero=bool(low > 0 or high < 0))
    return entry


def noise_costs(
    runs: list[dict[str, Any]], metrics: list[str], baseline: str = "clip"
) -> dict[str, dict[str, dict[str, Any]]]:
    """What the noise costs each objective, and whether one loses less than `baseline`.

    Per cell with noise p > 0 other than `baseline`'s, and metric: `cost` (mean over its seeds of metric(p) −
    metric(0) at the same seed, for the cell and for `baseline`), and the per-seed difference of the two costs,
    `(cell(p) − cell(0)) − (baseline(p) − baseline(0))` (positive: the cell loses less), with its 95 % t-interval.
    Only seeds where all four runs finished count."""
    by_key = {(run["variant"], run.get("noise", 0.0), run["seed"]): run["metrics"] for run in runs}
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for variant, noise in dict.fromkeys((run["variant"], run.get("noise", 0.0)) for run in runs):
        if variant == baseline or not noise:
            continue
        result[label(variant, noise)] = {}
        for metric in metrics:
            keys = [(variant, noise), (variant, 0.0), (baseline, noise), (baseline, 0.0)]
            seeds = sorted(
                seed
                for (v, p, seed) in by_key
                if (v, p) == keys[0] and all(metric in by_key.get((*key, seed), {}) for key in keys)
            )
            if not seeds:
                continue
            values = {seed: [by_key[(*key, seed)][metric] for key in keys] for seed in seeds}
            pairs = [(seed, (a - b) - (c - d)) for seed, (a, b, c, d) in values.items()]
            result[label(variant, noise)][metric] = {
                "cost": statistics.fmean(a - b for a, b, _, _ in values.values()),
                "baseline_cost": statistics.fmean(c - d for _, _, c, d in values.values()),
                **_difference_entry(pairs),
            }
    return result


def cost_table(costs: dict, metrics: list[str], baseline: str = "clip") -> str:
    """A markdown table of `noise_costs` (in points), `*` where the 95 % interval excludes 0."""
    lines = [
        f"| cell | metric | seeds | {baseline}: cost | cell: cost | cell − {baseline} | per seed |",
        "|---|---|---|---|---|---|---|",
    ]
    for cell, values in costs.items():
        for metric, name in zip(metrics, short_names(metrics)):
            entry = values.get(metric)
            if entry is None:
                continue
            difference = difference_cell(entry)
            per_seed = ", ".join(f"{100 * d:+.2f}" for d in entry["differences"])
            lines.append(
                f"| {cell} | {name} | {len(entry['seeds'])} | {100 * entry['baseline_cost']:+.2f} | "
                f"{100 * entry['cost']:+.2f} | {difference} | {per_seed} |"
            )
    return "\n".join(lines)


def difference_cell(entry: dict[str, Any]) -> str:
    """A paired difference in points: its mean, with its 95 % interval and `*` where that excludes 0 (2 seeds or
    more; one seed has no interval)."""
    if "ci95" not in entry:
        return f"{100 * entry['mean']:+.2f}"
    low, high = entry["ci95"]
    star = "*" if entry["excludes_zero"] else ""
    return f"{100 * entry['mean']:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]{star}"


def _cell(value: dict[str, float]) -> str:
    """Mean ± std in %; one seed has no spread to show."""
    if value["n"] == 1:
        return f"{100 * value['mean']:.2f}"
    return f"{100 * value['mean']:.2f} ± {100 * value['std']:.2f}"


def short_names(metrics: list[str]) -> list[str]:
    short = [metric.split("_", 1)[1].replace("retrieval_", "").replace("image_to_text", "i2t") for metric in metrics]
    return [name.replace("text_to_image", "t2i").replace("zero_shot_", "zs ") for name in short]


def difference_table(differences: dict, metrics: list[str], baseline: str = "clip") -> str:
    """A markdown table of the paired differences with `baseline` (in points), `*` where the 95 % interval excludes
    0."""
    header = f"| cell − {baseline} | seeds | " + " | ".join(short_names(metrics)) + " |"
    lines = [header, "|---|---|" + "---|" * len(metrics)]
    for cell, values in differences.items():
        n = max((len(v["differences"]) for v in values.values()), default=0)
        cells = [difference_cell(values[metric]) if metric in values else "n/a" for metric in metrics]
        lines.append(f"| {cell} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(summary: dict, metrics: list[str]) -> str:
    """A markdown table of mean ± std over seeds (in %), one row per variant."""
    lines = ["| variant | seeds | " + " | ".join(short_names(metrics)) + " |", "|---|---|" + "---|" * len(metrics)]
    for variant, values in summary.items():
        n = max((v["n"] for v in values.values()), default=0)
        cells = [_cell(values[m]) if m in values else "n/a" for m in metrics]
        lines.append(f"| {variant} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def analysis_summary(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per cell: the misalignment Spearman of each analysed model, by step and encoder, mean ± std over seeds."""
    summary: dict[str, list[dict[str, Any]]] = {}
    for cell in dict.fromkeys(run["label"] for run in runs if run.get("analysis")):
        points: dict[tuple[int, str], list[float]] = {}
        for run in runs:
            if run["label"] == cell:
                seen: set[tuple[int, str]] = set()
                for point in run.get("analysis", []):
                    # A checkpoint is analysed as its EMA teacher (or, trained without one, as its student); the
                    # exported model is the student. Without a teacher the last checkpoint and the exported model
                    # are one model: it counts once per run.
                    key = (point["step"], "student" if point["model"] == "mcd-model" else point["encoder"])
                    if key not in seen:
                        seen.add(key)
                        points.setdefault(key, []).append(point["spearman"])
        summary[cell] = [
            {
                "step": step,
                "encoder": encoder,
                "n": len(values),
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            }  # fmt: skip
            for (step, encoder), values in sorted(points.items())
        ]
    return summary


def analysis_table(summary: dict[str, list[dict[str, Any]]]) -> str:
    """A markdown table of `analysis_summary`: one row per step, one column per cell and encoder (in the order
    they first appear), each entry the misalignment Spearman's mean ± std over seeds; empty where that model was not
    analysed at that step (an `mcd` student only at the end)."""
    columns = list(dict.fromkeys((cell, p["encoder"]) for cell, points in summary.items() for p in points))
    values = {(cell, p["encoder"], p["step"]): p for cell, points in summary.items() for p in points}
    steps = sorted({p["step"] for points in summary.values() for p in points})
    lines = [
        "| step | " + " | ".join(f"{cell} {encoder}" for cell, encoder in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for step in steps:
        cells = []
        for cell, encoder in columns:
            point = values.get((cell, encoder, step))
            cells.append("" if point is None else f"{point['mean']:+.3f} ± {point['std']:.3f} ({point['n']})")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
