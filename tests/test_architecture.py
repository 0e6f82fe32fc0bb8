"""The import rules of docs/architecture.md, checked over every module's syntax tree (imports inside
functions and under TYPE_CHECKING included), so a lazy import cannot hide a dependency."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "models")
# What app.inference may import besides itself: it runs on machines with only these.
INFERENCE_DEPENDENCIES = {"numpy", "cv2", "onnxruntime", "app.detections", "app.errors"}
# What models/ (torch) may take from the service.
MODELS_MAY_IMPORT = ("app.inference", "app.detections", "app.errors")
SERVICE_ONLY_LIBRARIES = {"fastapi", "pydantic", "pydantic_settings", "sqlalchemy", "starlette", "torch",
                          "yaml", "prometheus_client", "uvicorn", "httpx"}
CLI_MODULES = ("app.cli", "app.commands")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports_of(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import statement in the file, wherever it sits."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, node.lineno
            for alias in node.names:  # `from app import metrics` imports the module app.metrics
                yield f"{target}.{alias.name}", node.lineno


def within(module: str, prefixes: tuple[str, ...] | set[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


MODULES = project_modules()
EDGES = {name: sorted({(m, line) for m, line in imports_of(name, path)}) for name, path in MODULES.items()}


def violations(rule) -> list[str]:
    return [f"{MODULES[name].relative_to(ROOT)}:{line}: imports {target}"
            for name, edges in EDGES.items() for target, line in edges if rule(name, target)]


def test_only_the_cli_imports_the_cli() -> None:
    assert violations(lambda name, target: within(target, {"app.cli"})
                      and not within(name, CLI_MODULES)) == []


def test_the_service_imports_neither_torch_nor_the_training_package() -> None:
    assert violations(lambda name, target: within(name, {"app"})
                      and within(target, {"torch", "torchvision", "models"})) == []


def test_ultralytics_is_imported_only_by_its_optional_comparison() -> None:
    assert violations(lambda name, target: within(target, {"ultralytics"})
                      and name != "app.bench.ultralytics") == []


def test_the_training_package_takes_only_inference_detections_and_errors_from_the_service() -> None:
    assert violations(lambda name, target: within(name, {"models"}) and within(target, {"app"})
                      and not within(target, MODELS_MAY_IMPORT) and target != "app") == []


def test_inference_needs_only_numpy_opencv_and_onnxruntime() -> None:
    def rule(name: str, target: str) -> bool:
        if not within(name, {"app.inference"}) or within(target, {"app.inference"}):
            return False
        top = target.split(".")[0]
        if top in ("app", "models"):
            return not within(target, INFERENCE_DEPENDENCIES) and target != "app"
        return top in SERVICE_ONLY_LIBRARIES
    assert violations(rule) == []


def test_no_import_cycles_between_project_modules() -> None:
    graph = {name: {t for t, _ in edges if t in MODULES and t != name} for name, edges in EDGES.items()}
    # a package's __init__ importing its own submodules is how packages re-export; not a cycle
    graph = {name: {t for t in targets if not t.startswith(name + ".")} for name, targets in graph.items()}
    cycles = find_cycles(graph)
    assert cycles == [], "\n".join(" -> ".join(c) for c in cycles)


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One representative cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
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
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


@pytest.mark.parametrize(("graph", "expected"), [
    ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
])
def test_the_cycle_finder_finds_cycles(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert find_cycles(graph) == expected


def test_the_import_walker_sees_imports_inside_functions(tmp_path: Path) -> None:
    src = tmp_path / "mod.py"
    src.write_text("def f():\n    from app.cli import main\n    import torch\n")
    found = {m for m, _ in imports_of("app.mod", src)}
    assert {"app.cli", "app.cli.main", "torch"} <= found
