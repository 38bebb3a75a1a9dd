# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""The `mcd` command (`main`): `eval`, `export`, `card`, `push`, `analyze`.

- `main`: the parser and every command but `eval`.
- `eval_command`: `mcd eval <task>`.
- `errors`: what `mcd` says when a command cannot run (one line, an exit code).
"""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
