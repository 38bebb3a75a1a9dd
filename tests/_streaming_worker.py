# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""training/run_mcd.py with the data package's info lines shown, for tests/test_streaming_scale.py: each process's
stream logs what it read, kept and decoded at the end of every epoch (`image_text.IterableImageTextDataset`).

Launched by `torchrun --standalone --nproc_per_node 2 _streaming_worker.py FLAGS...`.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "training" / "run_mcd.py"

if __name__ == "__main__":
    logging.getLogger("modeling_mcd.data").setLevel(logging.INFO)
    spec = importlib.util.spec_from_file_location("run_mcd", SCRIPT)
    run_mcd = importlib.util.module_from_spec(spec)
    sys.modules["run_mcd"] = run_mcd  # dataclasses look their module up while the script executes
    spec.loader.exec_module(run_mcd)
    sys.exit(run_mcd.cli_main(sys.argv[1:]))
