#!/usr/bin/env python
# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Choose each objective's setting from val studies of `bench/quality.py`, by one criterion, tuned equally.

    python bench/quality_select.py docs/results/quality_flickr8k_val_*.json
    python bench/quality_select.py A.json B.json --metric flickr8k_retrieval_mean_recall --json selection.json

Each JSON is one study (one setting: its flags after `--`); each of its variants is a candidate for that objective.
For every (study, variant): the criterion's mean ± std over the seeds every candidate of the objective has (so
settings are compared on the same seeds), the seeds themselves, and the winner per objective (highest mean). Then,
per study that ran the baseline (`--baseline`, default `clip`), each other objective's paired difference of the
criterion with it (same seed), mean and 95 % t-interval: how the gap moves with the setting. It trains nothing;
the settings are then run on test with `bench/quality.py` (docs/results.md §3).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from quality_stats import difference_cell, paired_differences

DEFAULT_METRIC = "flickr8k_retrieval_mean_recall"  # evaluated on val by the sweep's `--eval_retrieval_split val`


def study_flags(command: str) -> str:
    """The flags a study gave every run (what follows `--` in its command), or `recipe` for none."""
    _, separator, flags = command.partition(" -- ")
    return flags.strip() if separator else "recipe"


def candidates(studies: dict[str, dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Every (study, run label) and its criterion, on the seeds that all candidates of its objective have."""
    found: list[dict[str, Any]] = []
    for name, study in studies.items():
        for variant in dict.fromkeys(run["label"] for run in study["runs"]):
            values = {run["seed"]: run["metrics"][metric] for run in study["runs"] if run["label"] == variant}
            found.append({"study": name, "flags": study_flags(study["command"]), "variant": variant, "values": values})
    for objective in dict.fromkeys(entry["variant"] for entry in found):
        group = [entry for entry in found if entry["variant"] == objective]
        common = sorted(set.intersection(*(set(entry["values"]) for entry in group)))
        for entry in group:
            values = [entry["values"][seed] for seed in common]
            entry.update(
                seeds=common,
                mean=statistics.fmean(values) if values else float("nan"),
                std=statistics.stdev(values) if len(values) > 1 else 0.0,
            )
    return found


def best_per_objective(found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The candidate with the highest mean criterion, per objective (ties: the first study given)."""
    best: dict[str, dict[str, Any]] = {}
    for entry in found:
        if entry["seeds"] and (entry["variant"] not in best or entry["mean"] > best[entry["variant"]]["mean"]):
            best[entry["variant"]] = entry
    return best


def paired_with_baseline(studies: dict[str, dict[str, Any]], metric: str, baseline: str) -> list[dict[str, Any]]:
    """Per study that ran `baseline`, per other objective: its paired differences of `metric` with `baseline` over
    the seeds both ran (`quality_stats.paired_differences`), labelled with the study."""
    rows: list[dict[str, Any]] = []
    for name, study in studies.items():
        for cell, by_metric in paired_differences(study["runs"], [metric], baseline).items():
            if metric in by_metric:
                rows.append(
                    {"study": name, "flags": study_flags(study["command"]), "variant": cell, **by_metric[metric]}
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("studies", nargs="+", type=Path, help="the val studies' JSON files (bench/quality.py --json)")
    parser.add_argument("--metric", default=DEFAULT_METRIC, help=f"the criterion (default: {DEFAULT_METRIC})")
    parser.add_argument("--baseline", default="clip", help="pair every other objective with it, per study")
    parser.add_argument("--json", type=Path, help="write the table and the choice here")
    args = parser.parse_args(argv)
    studies: dict[str, dict[str, Any]] = {}
    for path in args.studies:
        try:
            studies[path.stem.removeprefix("quality_")] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            print(f"quality_select.py: error: {path}: {error}", file=sys.stderr)
            return 2
    try:
        for study in studies.values():
            for run in study["runs"]:
                # A run's label is its variant, with its caption noise if any (noise levels are different data, not
                # settings); a record without one ran at no noise.
                run.setdefault("label", run["variant"])
        found = candidates(studies, args.metric)
    except KeyError as error:
        print(f"quality_select.py: error: a run lacks the metric or field {error}", file=sys.stderr)
        return 2
    best = best_per_objective(found)
    paired = paired_with_baseline(studies, args.metric, args.baseline)
    print(f"| objective | setting (study) | seeds | {args.metric} (%) |\n|---|---|---|---|")
    for entry in sorted(found, key=lambda e: (e["variant"], -e["mean"])):
        mark = "**" if best.get(entry["variant"]) is entry else ""
        seeds = ",".join(map(str, entry["seeds"])) or "none in common"
        print(
            f"| `{entry['variant']}` | `{entry['flags']}` ({entry['study']}) | {seeds} | "
            f"{mark}{100 * entry['mean']:.2f} ± {100 * entry['std']:.2f}{mark} |"
        )
    for objective, entry in best.items():
        print(f"best {objective}: {entry['flags']} ({entry['study']})")
    if paired:
        print(f"\n| study | cell − {args.baseline} | seeds | {args.metric}, paired (points) |\n|---|---|---|---|")
        for row in paired:
            seeds = ",".join(map(str, row["seeds"]))
            print(f"| {row['study']} | `{row['variant']}` | {seeds} | {difference_cell(row)} |")
    if args.json:
        choice = {"metric": args.metric, "candidates": found, "best": best, "paired": paired}
        args.json.write_text(json.dumps(choice, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
