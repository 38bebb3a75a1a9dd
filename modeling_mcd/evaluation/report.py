# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""The metrics table that `mcd eval` and the training script print."""

from __future__ import annotations

from collections.abc import Mapping


def format_metrics(title: str, metrics: Mapping[str, float | int], chance: Mapping[str, float] | None = None) -> str:
    r"""
    A text table of metrics, with a chance column when `chance` names any of them.

    Args:
        title (`str`): the first line.
        metrics (`Mapping[str, float | int]`): fractions are shown as they are (in [0, 1]), counts and ranks as
            numbers.
        chance (`Mapping[str, float]`, *optional*): what a random model scores, by metric name.

    Returns:
        `str`: the table, one metric per line.
    """
    if not metrics:
        return f"{title}\n(no metrics)"
    chance = chance or {}
    width = max(len(name) for name in metrics)
    show_chance = any(name in chance for name in metrics)
    header = f"{'metric':<{width}}  {'value':>10}" + (f"  {'chance':>10}" if show_chance else "")
    lines = [title, header, "-" * len(header)]
    for name, value in metrics.items():
        shown = f"{value:10.4f}" if isinstance(value, float) else f"{value:>10}"
        if show_chance and name in chance:
            shown += f"  {chance[name]:10.4f}"
        lines.append(f"{name:<{width}}  {shown}")
    return "\n".join(lines)


__all__ = ["format_metrics"]
