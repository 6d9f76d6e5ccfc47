"""The package's shape: no import cycles between its modules (lazy imports inside functions
count too), and the registry, config and pipeline modules each keep to their own job."""

from __future__ import annotations

import ast
from pathlib import Path

import sparsepipe
from sparsepipe import Pipeline, registry
from sparsepipe.pipeline import Batch, EngineInputs, plan_batches, split_processed

SOURCE = Path(__file__).resolve().parent.parent / "python" / "sparsepipe"


def _modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file; extension modules (a ``.pyi`` stub without a ``.py``) map to
    their stub."""
    mods: dict[str, Path] = {}
    for path in root.rglob("*.py*"):
        if path.suffix not in (".py", ".pyi"):
            continue
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        if path.suffix == ".py" or name not in mods:
            mods[name] = path
    return mods


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports anywhere in its body (not under TYPE_CHECKING)."""
    package = name if path.stem == "__init__" else name.rsplit(".", 1)[0]

    def resolve(dotted: str) -> str | None:
        while dotted and dotted not in mods:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("sparsepipe"):
                    found.add(resolve(alias.name) or "")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.startswith("sparsepipe"):
                for alias in node.names:
                    full = f"{module}.{alias.name}"
                    found.add(full if full in mods else (resolve(module) or ""))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    found.discard("")
    found.discard(name)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def test_no_import_cycle_in_the_package():
    mods = _modules(SOURCE)
    assert "sparsepipe.pipeline" in mods and "sparsepipe._engine" in mods
    graph = {name: _imports(name, path, mods) for name, path in mods.items()}
    assert "sparsepipe.registry" in graph["sparsepipe.pipeline"]
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_lazy_import_cycle(tmp_path):
    pkg = tmp_path / "sparsepipe"
    (pkg / "tasks").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "pipeline.py").write_text("def f():\n    from . import tasks\n")
    (pkg / "tasks" / "__init__.py").write_text("from ..pipeline import f\n")
    mods = _modules(pkg)
    graph = {name: _imports(name, path, mods) for name, path in mods.items()}
    assert _cycles(graph) == [["sparsepipe.pipeline", "sparsepipe.tasks"]]


def test_pipeline_and_registry_import_no_task():
    mods = _modules(SOURCE)
    for name in ("sparsepipe.pipeline", "sparsepipe.registry", "sparsepipe.config"):
        imported = _imports(name, mods[name], mods)
        assert not any(m.startswith("sparsepipe.tasks") for m in imported), (name, imported)


def test_importing_the_package_registers_the_built_in_tasks():
    tasks = registry.registered_tasks()
    assert {"text-classification", "question-answering", "object-detection"} <= set(tasks)
    assert registry.lookup("qa").cls.task == "question-answering"
    assert sparsepipe.PipelineConfig is sparsepipe.config.PipelineConfig


def test_registry_lookup_of_an_unregistered_class_is_not_a_registration():
    class Unregistered(Pipeline):
        input_schema = None  # type: ignore[assignment]
        output_schema = None  # type: ignore[assignment]

        def process_inputs(self, inputs):
            return inputs

        def process_engine_outputs(self, engine_outputs, **kwargs):
            return engine_outputs

    assert not registry.registered_as(Unregistered, "question-answering")
    assert registry.registration("no such task") is None


def test_plan_batches_splits_orders_and_pads():
    assert plan_batches(5, 2, pad=False) == [Batch([0, 1], 2), Batch([2, 3], 2), Batch([4], 1)]
    padded = plan_batches(5, 2, pad=True)
    assert padded[-1] == Batch([4, 4], 1) and padded[-1].padding == 1
    assert plan_batches(3, 4, pad=True) == [Batch([0, 1, 2, 2], 3)]
    assert plan_batches(3, 4, pad=False) == [Batch([0, 1, 2], 3)]
    assert plan_batches(3, None, pad=False) == [Batch([0, 1, 2], 3)]
    assert plan_batches(4, 2, pad=False, order=[3, 1, 0, 2]) == [Batch([3, 1], 2), Batch([0, 2], 2)]
    assert plan_batches(0, 2, pad=True) == []


def test_split_processed_reads_every_documented_return():
    arrays = [1, 2]
    assert split_processed(EngineInputs(arrays, {"n": 1})) == (arrays, {"n": 1})
    assert split_processed((arrays, {"n": 1})) == (arrays, {"n": 1})
    assert split_processed(arrays) == (arrays, {})
    pair_of_arrays = ([1], [2])
    assert split_processed(pair_of_arrays) == (pair_of_arrays, {})


def test_the_package_parses_as_the_oldest_python_it_declares():
    import re

    pyproject = (SOURCE.parent.parent / "pyproject.toml").read_text(encoding="utf-8")
    floor = re.search(r'requires-python = ">=3\.(\d+)"', pyproject)
    assert floor, "pyproject.toml declares requires-python as >=3.N"
    minor = int(floor.group(1))
    assert f'target-version = "py3{minor}"' in pyproject, "ruff checks the same floor"
    for path in sorted(SOURCE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path), feature_version=(3, minor))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "zip":
                strict = any(k.arg == "strict" for k in node.keywords)
                assert minor >= 10 or not strict, f"{path}:{node.lineno}: zip(strict=) is 3.10+"
