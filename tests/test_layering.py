"""The package layers each `__init__` docstring states, checked on the source: a package imports only
packages below it, so no two packages import each other, and no module imports itself round a circle."""

import ast
from pathlib import Path

SOURCE = Path(__file__).parents[1] / "src" / "vaetrain"
LAYERS = {  # a package may import the packages of lower layers only
    "errors": 0,
    "frames": 0,
    "plan": 0,
    "models": 1,
    "losses": 1,
    "data": 1,
    "evaluation": 2,
    "training": 3,
    "export": 4,
    "cli": 5,
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


def test_export_reads_training_through_the_checkpoint_schema_only():
    """`export` takes from `training` only what a checkpoint holds (`training.checkpoint`), never the engine."""
    wrong = [
        f"{path.relative_to(SOURCE)} imports {name}"
        for path in (SOURCE / "export").rglob("*.py")
        for name in _imports(path, top_level_only=False)
        if name.startswith("vaetrain.training") and name != "vaetrain.training.checkpoint"
    ]
    assert not wrong, "\n".join(wrong)
