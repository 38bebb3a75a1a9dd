# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Model-card templates, installed with the library as `modeling_mcd.hub_cards` (package data).

`modeling_mcd.hub.model_card` renders them with huggingface_hub's `ModelCard`; a wheel install finds them through
`importlib.resources`, with no source checkout.
"""
