"""The package layers each `__init__` docstring states, checked on the source: a package imports only
packages below it, so no two packages import each other, and no module imports itself round a circle."""

import ast
import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).parents[1] / "src" / "vaetrain"
LAYERS = {  # a package may import the packages of lower layers only
    "errors": 0,
    "frames": 0,
    "plan": 0,
    "models": 1,
    "losses": 1,
    "data": 1,
    "checkpoints": 2,
    "evaluation": 3,
    "training": 4,
    "export": 5,
    "cli": 6,
}


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """Modules named by `import vaetrain...` / `from vaetrain... import` in the file."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vaetrain"):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.startswith("vaetrain")}
    return names


def _module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "vaetrain"


def test_every_package_imports_only_lower_layers():
    assert {p.name for p in SOURCE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} | {"errors", "frames", "plan"} == set(LAYERS)
    wrong = []
    for path in SOURCE.rglob("*.py"):
        package = _package(_module_name(path))
        for imported in _imports(path, top_level_only=False):
            target = _package(imported)
            if target != package and LAYERS.get(target, 99) >= LAYERS.get(package, -1):
                wrong.append(f"{path.relative_to(SOURCE)} imports {imported}")
    assert not wrong, "\n".join(wrong)


def test_no_module_import_circles():
    graph = {_module_name(p): {m for m in _imports(p, top_level_only=True)} for p in SOURCE.rglob("*.py")}
    state: dict[str, int] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                raise AssertionError("import circle: " + " -> ".join([*trail, module, target]))
            if target in graph and not state.get(target):
                visit(target, [*trail, module])
        state[module] = 2

    for module in sorted(graph):
        if not state.get(module):
            visit(module, [])


def test_every_package_says_what_it_may_import():
    for init in SOURCE.glob("*/__init__.py"):
        docstring = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "May import" in docstring, init


BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def test_benchmarks_import_nothing_from_the_tests():
    """Benchmarks use the package (and their own `harness`), never test helpers."""
    wrong = [f"{path.name} imports {name}" for path in BENCHMARKS.glob("*.py") for name in _imports(path, top_level_only=False) if name.startswith("tests")]
    wrong += [f"{path.name} imports tests" for path in BENCHMARKS.glob("*.py") if "from tests" in path.read_text() or "import tests" in path.read_text()]
    assert not wrong, "\n".join(wrong)


def _importers_of(package: str, *packages: str) -> list[str]:
    """`path imports name` for every import of `vaetrain.<package>` in the given packages' source."""
    return [
        f"{path.relative_to(SOURCE)} imports {name}"
        for low in packages
        for path in (SOURCE / low).rglob("*.py")
        for name in _imports(path, top_level_only=False)
        if name == f"vaetrain.{package}" or name.startswith(f"vaetrain.{package}.")
    ]


def test_checkpoints_are_read_without_the_training_stack():
    """Evaluation, export and the checkpoint schema read checkpoints through `vaetrain.checkpoints`, never
    through `training` (not even the export callback: it reads the LightningModule it is handed)."""
    wrong = _importers_of("training", "checkpoints", "evaluation", "export")
    assert not wrong, "\n".join(wrong)


def test_a_training_import_in_the_schema_or_evaluation_fails_the_layering(tmp_path, monkeypatch):
    """The layer check itself catches such an import: a copy of the source with one added fails it."""
    copy = tmp_path / "vaetrain"
    shutil.copytree(SOURCE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setitem(globals(), "SOURCE", copy)
    for module in ("checkpoints/schema.py", "evaluation/evaluate.py"):
        original = (copy / module).read_text()
        (copy / module).write_text(original + "\nfrom vaetrain.training.networks import frozen_prefixes\n")
        with pytest.raises(AssertionError, match=f"{module} imports vaetrain.training.networks"):
            test_every_package_imports_only_lower_layers()
        (copy / module).write_text(original)
    test_every_package_imports_only_lower_layers()


def test_importing_evaluation_and_the_schema_loads_no_training_module():
    """At run time too: `vaetrain eval`'s modules and the schema bring no `vaetrain.training` module in."""
    code = (
        "import sys, vaetrain.evaluation.evaluate, vaetrain.evaluation.diffusability, vaetrain.checkpoints; "
        "print(sorted(m for m in sys.modules if m.startswith(('vaetrain.training', 'vaetrain.export', 'vaetrain.cli'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_environment())
    assert result.stdout.strip() == "[]"


def _environment() -> dict[str, str]:
    return os.environ | {"PYTHONPATH": os.pathsep.join([str(SOURCE.parent), os.environ.get("PYTHONPATH", "")])}


def test_evaluation_takes_no_model_loader():
    """`evaluate` and the diffusability probe load models themselves (`checkpoints.load_autoencoder`)."""
    from vaetrain.evaluation.diffusability import run_probe
    from vaetrain.evaluation.evaluate import evaluate

    for function in (evaluate, run_probe):
        assert not {"load_model", "load", "loader"} & set(inspect.signature(function).parameters), function.__name__
