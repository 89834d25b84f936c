"""Import layering: the planner and the core data modules load no client library.

``plan(desired, observed)`` is a pure function over the model, and the model,
status vocabulary, conventions and errors are plain data. None of them may
import the Docker SDK, a Kubernetes client, kopf or watchfiles, nor a runtime
implementation: a runtime is handed to the executor, never imported by the
planner. Only the runtime interface (``runtimes.base``) and the pure
placement rule (``runtimes.select``) are allowed.

Read from the source with ``ast``, nothing is imported, so the test needs
none of those libraries. In a checked file every import counts, a deferred
one inside a function too. From there the imports that run when a module
loads are followed through mcp_fleet's own modules (and the packages holding
them), so a forbidden import two modules away is caught as well, and the
failure names the chain that reaches it. A function-level import in a module
the planner merely uses (``runtimes.select`` builds runtimes on request) is
not loaded by the planner and is not followed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE_ROOT = Path(__file__).resolve().parents[2] / "controller"
PACKAGE_DIR = SOURCE_ROOT / "mcp_fleet"

FORBIDDEN = (
    "docker",
    "kubernetes",
    "kubernetes_asyncio",
    "kopf",
    "watchfiles",
    "mcp_fleet.runtimes",
)
ALLOWED = frozenset({"mcp_fleet.runtimes", "mcp_fleet.runtimes.base", "mcp_fleet.runtimes.select"})

CHECKED_FILES = sorted(
    [
        *PACKAGE_DIR.glob("reconcile/plan*.py"),
        *(
            PACKAGE_DIR / name
            for name in ("model.py", "status.py", "conventions.py", "errors.py")
            if (PACKAGE_DIR / name).exists()
        ),
    ]
)


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_file(name: str) -> Path | None:
    """The source file of an mcp_fleet module, or None (not ours, or not a module)."""
    base = SOURCE_ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if name.split(".")[0] == "mcp_fleet" and candidate.is_file():
            return candidate
    return None


def import_nodes(tree: ast.AST, *, deferred: bool) -> list[ast.Import | ast.ImportFrom]:
    """The import statements of a module; with deferred=False only those that run
    when the module loads (not those inside function bodies)."""
    found: list[ast.Import | ast.ImportFrom] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif deferred or not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            todo.extend(ast.iter_child_nodes(node))
    return sorted(found, key=lambda node: node.lineno)


def imports_of(path: Path, *, deferred: bool) -> list[tuple[str, int]]:
    """(module, line) for the imports in the file, relative ones made absolute."""
    package = ".".join(path.parent.relative_to(SOURCE_ROOT).parts)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in import_nodes(tree, deferred=deferred):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                parts = package.split(".")
                source = ".".join([*parts[: len(parts) - node.level + 1], *filter(None, [source])])
            found.append((source, node.lineno))
            # `from mcp_fleet.runtimes import docker` imports a module by its alias.
            found += [
                (f"{source}.{alias.name}", node.lineno)
                for alias in node.names
                if module_file(f"{source}.{alias.name}")
            ]
    return found


def is_forbidden(name: str) -> bool:
    hit = any(name == prefix or name.startswith(prefix + ".") for prefix in FORBIDDEN)
    return hit and name not in ALLOWED


def with_parent_packages(name: str) -> list[str]:
    """Importing a.b.c runs a/__init__.py and a/b/__init__.py first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def forbidden_imports(start: Path) -> list[str]:
    """Every forbidden import reachable from START, each with the chain that reaches it."""
    problems = []
    chains = {module_name(start): [start.relative_to(SOURCE_ROOT).as_posix()]}
    todo = [module_name(start)]
    while todo:
        current = todo.pop()
        path = module_file(current)
        if path is None:
            continue
        for name, line in imports_of(path, deferred=current == module_name(start)):
            step = [*chains[current][:-1], f"{chains[current][-1]}:{line}"]
            if is_forbidden(name):
                problems.append(" -> ".join([*step, name]))
                continue
            for module in with_parent_packages(name):
                if module_file(module) and module not in chains:
                    chains[module] = [*step, module]
                    todo.append(module)
    return sorted(problems)


def test_the_core_modules_are_checked() -> None:
    assert PACKAGE_DIR / "model.py" in CHECKED_FILES


@pytest.mark.parametrize("path", CHECKED_FILES, ids=lambda p: p.relative_to(PACKAGE_DIR).as_posix())
def test_module_imports_no_client_library_or_runtime(path: Path) -> None:
    assert forbidden_imports(path) == []


def test_the_check_sees_direct_relative_and_indirect_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checker itself catches what it is for (on a throwaway copy of the layout)."""
    package = tmp_path / "mcp_fleet"
    (package / "runtimes").mkdir(parents=True)
    for init in (package / "__init__.py", package / "runtimes" / "__init__.py"):
        init.write_text("")
    (package / "runtimes" / "base.py").write_text("import dataclasses\n")
    (package / "runtimes" / "docker.py").write_text("import docker.errors\n")
    (package / "helper.py").write_text("import kopf\n\ndef f():\n    import kubernetes\n")
    (package / "plan.py").write_text(
        "from .runtimes import base, docker\nfrom mcp_fleet import helper\n"
        "def f():\n    import watchfiles\n"
    )
    monkeypatch.setitem(globals(), "SOURCE_ROOT", tmp_path)

    problems = forbidden_imports(package / "plan.py")

    assert problems == [
        "mcp_fleet/plan.py:1 -> mcp_fleet.runtimes.docker",
        "mcp_fleet/plan.py:2 -> mcp_fleet.helper:1 -> kopf",
        "mcp_fleet/plan.py:4 -> watchfiles",
    ]
