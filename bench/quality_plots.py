# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""The plots of a quality study (bench/quality.py): training curves, metrics against caption noise, the teacher's
misalignment correlation along a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quality_stats import short_names


def plot_curves(runs: list[dict[str, Any]], path: Path, title: str) -> None:
    """Training curves against step: the total loss, the contrastive term and the distillation term; one colour per
    variant, one line style per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("loss", "total loss"), ("contrastive_loss", "contrastive term (CLIP loss or L_con)")]
    panels.append(("distill_loss", "distillation term λ-weighted (mcd)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    colours = {cell: f"C{k % 10}" for k, cell in enumerate(dict.fromkeys(run["label"] for run in runs))}
    styles = ["-", "--", ":", "-."]
    for run in runs:
        for axis, (key, _) in zip(axes, panels):
            points = [p for p in run["curve"] if key in p]
            if points:
                axis.plot(
                    [p["step"] for p in points],
                    [p[key] for p in points],
                    color=colours[run["label"]],
                    linestyle=styles[run["seed"] % len(styles)],
                    label=f"{run['label']} s{run['seed']}",
                )
    for axis, (_, name) in zip(axes, panels):
        axis.set_title(name)
        axis.set_xlabel("optimizer step")
        if axis.lines:
            axis.legend(fontsize=6)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_noise(summary: dict, runs: list[dict[str, Any]], metrics: list[str], path: Path, title: str) -> None:
    """Each metric against the caption noise p, one line per variant (mean ± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.4), squeeze=False)
    cells = {run["label"]: (run["variant"], run.get("noise", 0.0)) for run in runs}
    for k, variant in enumerate(dict.fromkeys(variant for variant, _ in cells.values())):
        points = sorted((noise, cell) for cell, (v, noise) in cells.items() if v == variant)
        for axis, metric in zip(axes[0], metrics):
            shown = [(noise, summary[cell][metric]) for noise, cell in points if metric in summary[cell]]
            if shown:
                axis.errorbar(
                    [noise for noise, _ in shown],
                    [100 * value["mean"] for _, value in shown],
                    yerr=[100 * value["std"] for _, value in shown],
                    color=f"C{k}", marker="o", capsize=3, label=variant,
                )  # fmt: skip
    for axis, name in zip(axes[0], short_names(metrics)):
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("caption noise p")
        axis.set_ylabel("%")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_analysis(summary: dict[str, list[dict[str, Any]]], path: Path, title: str) -> None:
    """The misalignment Spearman along the run: one line per cell and encoder (mean ± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6, 4))
    for k, (cell, points) in enumerate(summary.items()):
        for encoder, style in (("teacher", "-"), ("student", "--")):
            mine = [p for p in points if p["encoder"] == encoder]
            if mine:
                axis.errorbar(
                    [p["step"] for p in mine], [p["mean"] for p in mine], yerr=[p["std"] for p in mine],
                    color=f"C{k}", linestyle=style, marker="o", capsize=3, label=f"{cell} {encoder}",
                )  # fmt: skip
    axis.axhline(0.0, color="grey", linewidth=0.5)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("Spearman: log distance ratio vs what the crop shows")
    axis.legend(fontsize=7)
    axis.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
