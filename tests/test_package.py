"""The package surface: sorted public names, registration with the Auto classes (the version: test_wheel.py), and
the layers: which folder may import which, no import circle, inference without the training dependencies."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoConfig, AutoModel, AutoModelForZeroShotImageClassification

import modeling_mcd


def test_all_is_sorted_and_importable():
    assert modeling_mcd.__all__ == sorted(modeling_mcd.__all__)
    for name in modeling_mcd.__all__:
        assert hasattr(modeling_mcd, name), name


def test_auto_classes_know_mcd():
    config = AutoConfig.for_model("mcd")
    assert type(config) is modeling_mcd.MCDConfig
    assert AutoModel._model_mapping[modeling_mcd.MCDConfig] is modeling_mcd.MCDModel
    assert AutoModelForZeroShotImageClassification._model_mapping[modeling_mcd.MCDConfig] is modeling_mcd.MCDModel
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

    assert PROCESSOR_MAPPING[modeling_mcd.MCDConfig] is modeling_mcd.MCDProcessor


# ------------------------------------------------------------------------------------------- layers
ROOT = Path(modeling_mcd.__file__).parent
REMOTE_CODE = {"configuration_mcd", "modeling_mcd", "processing_mcd"}
#: Each layer (a top-level module or folder of the package) and the layers it may import, besides itself
#: (README "Architecture"). `__init__` is the package's own, for `__version__`.
ALLOWED = {
    "configuration_mcd": set(),
    "modeling_mcd": {"configuration_mcd"},
    "processing_mcd": set(),
    "conversion": REMOTE_CODE,
    "export": REMOTE_CODE | {"conversion"},
    "objective": set(),
    "pretraining": REMOTE_CODE | {"conversion", "objective"},
    "data": {"objective"},
    "synthetic": set(),
    "evaluation": REMOTE_CODE | {"data", "synthetic", "pretraining", "objective", "conversion"},
    "open_clip_compat": REMOTE_CODE | {"data", "evaluation"},
    "trainer": REMOTE_CODE | {"conversion", "objective", "pretraining", "data", "synthetic", "evaluation"},
    "hub": REMOTE_CODE | {"__init__", "export", "conversion", "evaluation", "synthetic"},
    "cli": REMOTE_CODE | {"export", "conversion", "evaluation", "hub"},
}


def _module_name(path: Path) -> str:
    parts = ["modeling_mcd", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Every module of the package -> the package modules it imports, at any depth of its code (a function's import
    counts: it runs too), except under `if TYPE_CHECKING:`."""
    paths = {_module_name(path): path for path in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()

        def visit(node: ast.AST) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    continue
                if isinstance(child, ast.ImportFrom):
                    base = package.split(".")[: len(package.split(".")) - child.level + 1] if child.level else []
                    target = ".".join(base + ([child.module] if child.module else [])) if child.level else child.module
                    found.update(m for m in [target, *(f"{target}.{a.name}" for a in child.names)] if m in paths)
                elif isinstance(child, ast.Import):
                    found.update(alias.name for alias in child.names if alias.name in paths)
                visit(child)

        visit(ast.parse(path.read_text()))
        # A package's own `__init__` re-exports its modules; a module importing its package's `__init__` is not a cycle.
        graph[name] = {m for m in found if m != name and not name.startswith(m + ".")}
    return graph


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_layer_imports_only_the_layers_below_it():
    graph = _import_graph()
    assert {_layer(module) for module in graph} - {"__init__"} == set(ALLOWED)
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if _layer(module) != "__init__" and _layer(target) != _layer(module)
        and _layer(target) not in ALLOWED[_layer(module)]
    )  # fmt: skip
    assert not wrong, wrong


def test_no_module_imports_itself_in_a_circle():
    graph = _import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def cycle_from(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return [*path, module, target]
            if target not in state and (found := cycle_from(target, [*path, module])):
                return found
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            assert cycle_from(module, []) is None


def test_inference_imports_no_training_dependency():
    code = (
        "import sys, modeling_mcd; from modeling_mcd import MCDModel, MCDProcessor, MCDLoss, MCDForPreTraining; "
        "print(sorted(m for m in ('datasets', 'kornia', 'peft', 'modeling_mcd.trainer') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    from modeling_mcd import MCDTrainer, MCDTrainingArguments
    from modeling_mcd.trainer.mcd_trainer import MCDTrainer as direct
    from modeling_mcd.trainer.training_arguments import MCDTrainingArguments as direct_arguments

    assert MCDTrainer is direct and MCDTrainingArguments is direct_arguments
    with pytest.raises(AttributeError, match="no_such_name"):
        modeling_mcd.no_such_name  # noqa: B018
