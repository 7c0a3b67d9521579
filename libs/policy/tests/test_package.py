"""Package hygiene: the policy engine imports only the standard library, cedarpy and bgagent_contracts."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import bgagent_policy

ALLOWED_THIRD_PARTY = {"cedarpy", "bgagent_contracts", "bgagent_policy"}


def test_imports_only_stdlib_cedarpy_and_contracts() -> None:
    root = Path(bgagent_policy.__file__).parent
    roots: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                roots.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots.add(node.module.split(".")[0])
    assert roots - set(sys.stdlib_module_names) - {"__future__"} <= ALLOWED_THIRD_PARTY


def test_starter_files_ship_inside_the_package() -> None:
    policies = Path(bgagent_policy.__file__).parent / "policies"
    assert sorted(p.name for p in policies.glob("*.cedar")) == ["hard_deny.cedar", "hard_gate.cedar"]


def test_all_is_complete() -> None:
    assert sorted(bgagent_policy.__all__) == sorted(set(bgagent_policy.__all__))
    assert all(hasattr(bgagent_policy, name) for name in bgagent_policy.__all__)
