# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""`python -m modeling_mcd.cli ...`: the `mcd` command without its console script."""

import sys

from .main import main

sys.exit(main())
