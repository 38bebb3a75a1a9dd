# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Checks of a run's flags shared by its argument dataclasses: each error names the flag (`--name`) and its value."""

from __future__ import annotations


def positive(args, *names: str, optional: bool = False) -> None:
    """Raise `ValueError` naming the flag unless each field is > 0 (`None` allowed when `optional`)."""
    for name in names:
        value = getattr(args, name)
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"--{name} must be a positive number, got {value!r}")


def non_negative(args, *names: str) -> None:
    """Raise `ValueError` naming the flag unless each field is >= 0."""
    for name in names:
        value = getattr(args, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"--{name} must be a number >= 0, got {value!r}")


def divides(args, divisor: str, dividend: str, why: str) -> None:
    """Raise `ValueError` naming both flags unless `--divisor` divides `--dividend`; `why` says what needs it."""
    if getattr(args, dividend) % getattr(args, divisor):
        raise ValueError(
            f"--{dividend} {getattr(args, dividend)} is not a multiple of --{divisor} {getattr(args, divisor)}: {why}"
        )


__all__ = ["divides", "non_negative", "positive"]
