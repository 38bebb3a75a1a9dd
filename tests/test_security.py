# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Security guarantees (README "Reliability"): weights load from safetensors only and a pickled weights file is
refused; no code of the package unpickles a file; the package's own models never need `trust_remote_code` once it is
imported. (A token in the environment never reaching logs, cards or run folders is tested in test_run_mcd.py; relative
image paths leaving the data folder in test_data_text_files.py.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modeling_mcd import MCDModel
from modeling_mcd.evaluation import load_model_and_processor
from modeling_mcd.export import export_to_vision_text_dual_encoder
from modeling_mcd.pretraining.model import MCDForPreTraining

ROOT = Path(__file__).resolve().parent.parent
#: Calls that unpickle (run code from) a file.
UNPICKLING = re.compile(
    r"torch\.load\(|pickle\.loads?\(|\bdill\.|joblib\.load|allow_pickle\s*=\s*True|weights_only\s*=\s*False"
    r"|torch\.serialization\.load|load_state_dict_from_url|cloudpickle"
)


def pickled_copy(folder: str, tmp_path: Path) -> Path:
    """The folder with its weights as a pickled `pytorch_model.bin` instead of `model.safetensors`."""
    copy = tmp_path / "pickled"
    shutil.copytree(folder, copy)
    state = load_file(copy / "model.safetensors")
    (copy / "model.safetensors").unlink()
    torch.save(state, copy / "pytorch_model.bin")
    return copy


def test_a_folder_with_only_pickled_weights_is_refused_by_every_loader(tiny_model_dir, tmp_path, monkeypatch):
    pickled = pickled_copy(tiny_model_dir, tmp_path)
    loaders = {
        "MCDModel.from_pretrained": lambda: MCDModel.from_pretrained(pickled),
        "AutoModel (the package's route)": lambda: __import__("transformers").AutoModel.from_pretrained(pickled),
        "MCDForPreTraining.from_pretrained (resume)": lambda: MCDForPreTraining.from_pretrained(pickled),
        "mcd eval": lambda: load_model_and_processor(str(pickled)),
        "mcd export": lambda: export_to_vision_text_dual_encoder(pickled, tmp_path / "stock"),
    }
    for name, load in loaders.items():
        with pytest.raises(OSError, match="safetensors|model.safetensors"):
            load()
    # ... while the safetensors folder loads with torch.load (the unpickler) out of reach.
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    assert type(MCDModel.from_pretrained(tiny_model_dir)) is MCDModel
    model, _, _ = load_model_and_processor(tiny_model_dir)
    assert type(model) is MCDModel


def test_no_code_of_the_package_unpickles_a_file():
    """torch.load / pickle / joblib are not called anywhere in the library, the launch script or the benchmarks.
    The Trainer's own resume files (optimizer.pt, scheduler.pt, rng_state.pth, training_args.bin) are read by
    transformers' Trainer, with `weights_only` where torch allows it: the Trainer's business, not this package's."""
    sources = [*ROOT.glob("modeling_mcd/**/*.py"), *ROOT.glob("training/**/*.py"), *ROOT.glob("bench/**/*.py")]
    assert len(sources) > 20
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sources
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if UNPICKLING.search(line)
    ]
    assert found == []
    assert UNPICKLING.search("state = torch.load(path)") and UNPICKLING.search("pickle.loads(data)")


def test_no_pickled_weights_are_written(tiny_model_dir, tmp_path):
    model = MCDModel.from_pretrained(tiny_model_dir)
    model.save_pretrained(tmp_path / "saved")
    export_to_vision_text_dual_encoder(tiny_model_dir, tmp_path / "stock")
    written = [p.name for p in tmp_path.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
    assert written == [] and (tmp_path / "saved" / "model.safetensors").is_file()


def test_the_installed_package_never_needs_trust_remote_code(tiny_model_dir, tmp_path):
    """In a fresh process that imports `modeling_mcd`: the Auto classes and the pipeline load the folder without
    `trust_remote_code`, and no code from the folder is imported (no `transformers_modules`)."""
    script = textwrap.dedent(
        """
        import json, sys
        from PIL import Image
        import modeling_mcd
        from transformers import AutoModel, AutoModelForZeroShotImageClassification, AutoProcessor, pipeline
        folder = sys.argv[1]
        model = AutoModel.from_pretrained(folder)
        zero_shot = AutoModelForZeroShotImageClassification.from_pretrained(folder)
        processor = AutoProcessor.from_pretrained(folder)
        classifier = pipeline("zero-shot-image-classification", model=folder)
        scores = classifier(Image.new("RGB", (20, 20)), candidate_labels=["a cat", "a dog"])
        print(json.dumps({
            "classes": [type(x).__module__ + "." + type(x).__name__ for x in (model, zero_shot, processor)],
            "pipeline_model": type(classifier.model).__module__,
            "remote_modules": sorted(name for name in sys.modules if name.startswith("transformers_modules")),
            "scores": len(scores),
        }))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, tiny_model_dir],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["classes"] == [
        "modeling_mcd.modeling_mcd.MCDModel",
        "modeling_mcd.modeling_mcd.MCDModel",
        "modeling_mcd.processing_mcd.MCDProcessor",
    ]
    assert report["pipeline_model"] == "modeling_mcd.modeling_mcd" and report["remote_modules"] == []
    assert report["scores"] == 2
