# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""A real wheel works: `pip wheel .` builds one that holds every module and data file the package reads at run
time, and, installed into a new virtualenv outside the checkout, it runs `mcd eval --help`, renders a model card
and loads a saved model with `AutoModel` and the zero-shot pipeline.

The new virtualenv gets the package only from the wheel. Its third-party dependencies (torch, transformers,
...) come from the test's own environment through a `.pth` path line: installing torch again would take minutes
and test nothing of ours. A path line adds a directory to `sys.path` without running that directory's `.pth`
files, so the editable install of the checkout stays invisible there (the test checks where the package came
from).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "modeling_mcd"


def _expected_files() -> set[str]:
    """Every file of the checkout that the installed package must carry, as paths inside the wheel."""
    expected = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*") if p.suffix in (".py", ".json")}
    expected |= {f"modeling_mcd/hub_cards/{p.name}" for p in (ROOT / "hub_cards").iterdir() if p.is_file()}
    return {path for path in expected if "__pycache__" not in path}


#: What git tracks at the top of the checkout and a build reads; copied so that the build writes nothing here.
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "modeling_mcd", "hub_cards")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> tuple[Path, str]:
    """The wheel built from a copy of the checkout's sources, and pip's build log."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, source / name)
    # No build isolation: setuptools is already here, and CI must not need the index to build.
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = out.glob("mcd-*.whl")
    return path, proc.stdout + proc.stderr


def test_wheel_version_is_the_package_version(wheel):
    import modeling_mcd

    # One version string: setup.cfg reads it from the package, so the wheel is named after it.
    assert wheel[0].name.startswith(f"mcd-{modeling_mcd.__version__}-")


def test_wheel_holds_every_module_and_data_file(wheel):
    path, log = wheel
    names = set(zipfile.ZipFile(path).namelist())
    missing = _expected_files() - names
    assert not missing, f"the wheel lacks {sorted(missing)}"
    # setuptools warns when a folder with package files is left out of the packages configuration.
    assert "absent from the `packages` configuration" not in log
    assert not any(name.startswith(("tests/", "training/", "bench/")) for name in names)


@pytest.fixture(scope="module")
def clean_venv(wheel, tmp_path_factory) -> Path:
    """A new virtualenv with the wheel installed (no index, no dependencies pulled)."""
    home = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True).create(home)
    python = home / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "_mcd_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel[0])],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return home


def _run(home: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # No PYTHONPATH and a working directory outside the checkout: the checkout cannot be imported by accident.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_installed_wheel_runs_the_cli(clean_venv, tmp_path):
    proc = _run(clean_venv, [str(clean_venv / "bin" / "mcd"), "eval", "--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "zero-shot" in proc.stdout and "retrieval" in proc.stdout


LOAD_SCRIPT = textwrap.dedent(
    """
    import sys
    import modeling_mcd
    from modeling_mcd.hub.model_card import render_model_card
    from PIL import Image
    from transformers import AutoModel, pipeline

    folder, venv_home = sys.argv[1], sys.argv[2]
    assert modeling_mcd.__file__.startswith(venv_home), modeling_mcd.__file__
    model = AutoModel.from_pretrained(folder)
    assert type(model).__name__ == "MCDModel"
    classifier = pipeline("zero-shot-image-classification", model=folder)
    scores = classifier(Image.new("RGB", (41, 37), (200, 30, 30)), candidate_labels=["a red circle", "a dog"])
    assert abs(sum(s["score"] for s in scores) - 1) < 1e-5
    card = render_model_card(model.config)
    assert "zero-shot-image-classification" in str(card)
    print("loaded", type(model).__name__)
    """
)


def test_installed_wheel_loads_a_saved_model_and_renders_a_card(clean_venv, tiny_model_dir, tmp_path):
    script = tmp_path / "load.py"
    script.write_text(LOAD_SCRIPT)
    python = clean_venv / "bin" / "python"
    proc = _run(clean_venv, [str(python), str(script), tiny_model_dir, str(clean_venv)], tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "loaded MCDModel" in proc.stdout
