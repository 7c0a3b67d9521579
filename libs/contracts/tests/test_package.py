"""Package hygiene: contracts stay pure (no I/O libraries) and export a sorted, resolvable API."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import bgagent_contracts

FORBIDDEN = {"nats", "asyncpg", "litestar", "httpx", "anthropic", "cedarpy", "opentelemetry", "typer"}


def _modules() -> list[Path]:
    root = Path(bgagent_contracts.__file__).parent
    files = sorted(root.rglob("*.py"))
    assert len(files) >= 10
    return files


def _imported_roots(tree: ast.AST) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(tree):  # walks function bodies and TYPE_CHECKING blocks too
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            roots.add(node.args[0].value.split(".")[0])
    return roots


def test_contracts_never_import_io_libraries() -> None:
    offenders = {
        str(path.name): sorted(_imported_roots(ast.parse(path.read_text(), str(path))) & FORBIDDEN)
        for path in _modules()
    }
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_the_purity_check_would_catch_an_import() -> None:
    tree = ast.parse("import nats\nfrom litestar import get\ndef f():\n    import httpx.client\n")
    assert _imported_roots(tree) & FORBIDDEN == {"nats", "litestar", "httpx"}


def test_every_module_imports_cleanly() -> None:
    names = [info.name for info in pkgutil.walk_packages(bgagent_contracts.__path__, "bgagent_contracts.")]
    modules = [importlib.import_module(name) for name in names]
    assert {m.__name__ for m in modules} >= {"bgagent_contracts.events", "bgagent_contracts.fold"}


def _isort_key(name: str) -> tuple[int, str]:
    """ruff RUF022 order: CONSTANTS, then Classes, then functions, each in plain order."""
    if name.isupper():
        return (0, name)
    if name[0].isupper():
        return (1, name)
    return (2, name)


def test_all_is_sorted_and_every_name_resolves() -> None:
    names = list(bgagent_contracts.__all__)
    assert names == sorted(names, key=_isort_key)
    assert len(names) == len(set(names))
    missing = [n for n in names if not hasattr(bgagent_contracts, n)]
    assert missing == []
