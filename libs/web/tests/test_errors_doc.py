"""The error-code registry, the code that uses it, and docs/errors.md say the same thing."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import bgagent_web
from bgagent_web import CODES, ERROR_CODES, ApiError, errors

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "errors.md"
USERS = [
    ROOT / "libs/web/src/bgagent_web",
    ROOT / "services/admission/src/bgagent_admission/api.py",
    ROOT / "services/query/src/bgagent_query/api.py",
]
"""Where envelopes are made: the shared HTTP code and the two services' error translations."""


def _subclasses(cls: type[ApiError]) -> list[type[ApiError]]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def _documented() -> dict[str, str]:
    rows = re.findall(r"^\| `([A-Z_]+)` \| ([^|]+?) \|", DOC.read_text(), re.MULTILINE)
    return dict(rows)


def _status_text(status: int | None) -> str:
    return "other 4xx" if status is None else str(status)


def test_docs_list_exactly_the_registered_codes_with_their_statuses() -> None:
    documented = _documented()
    assert sorted(documented) == sorted(CODES), "docs/errors.md and bgagent_web.ERROR_CODES differ"
    assert documented == {c.code: _status_text(c.status) for c in ERROR_CODES}


def test_codes_are_unique_and_shaped() -> None:
    assert len(CODES) == len(ERROR_CODES)
    for code in ERROR_CODES:
        assert re.fullmatch(r"[A-Z][A-Z_]+", code.code)
        assert code.status is None or 400 <= code.status <= 599
        assert code.meaning.endswith(".")
        assert code.action.endswith(".")


def test_every_api_error_class_default_code_is_registered_with_its_status() -> None:
    classes = [ApiError, *_subclasses(ApiError)]
    assert {c.__name__ for c in classes} >= {"RequestHeaderFieldsTooLarge", "PayloadTooLarge"}
    for cls in classes:
        assert CODES[cls.default_code].status == cls.status_code, cls.__name__


def test_the_error_tree_docstring_names_every_class_status_and_default_code() -> None:
    tree = errors.__doc__ or ""
    for cls in _subclasses(ApiError):
        line = next((ln for ln in tree.splitlines() if f" {cls.__name__} " in ln), None)
        assert line is not None, f"{cls.__name__} missing from the error tree"
        assert f"{cls.status_code} {cls.default_code}" in line, line


def test_http_status_mapping_uses_registered_codes() -> None:
    for status, code in errors._HTTP_CODES.items():
        assert CODES[code].status == status


def _code_literals(path: Path) -> list[tuple[str, str, int]]:
    """(callee, code, line) for every ``X(..., code="...")`` and ``envelope(.., "CODE", ..)``."""
    found = []
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        for kw in node.keywords:
            if kw.arg == "code" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str):
                found.append((name, kw.value.value, node.lineno))
        if name == "envelope" and len(node.args) >= 3:
            status, code = node.args[1], node.args[2]
            if isinstance(code, ast.Constant) and isinstance(code.value, str):
                shown = status.value if isinstance(status, ast.Constant) else "?"
                found.append((f"envelope:{shown}", code.value, node.lineno))
    return found


@pytest.mark.parametrize("path", USERS, ids=lambda p: p.name)
def test_codes_passed_by_the_code_are_registered_under_the_status_they_go_out_with(path: Path) -> None:
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    uses = [use for f in files for use in _code_literals(f)]
    assert uses, f"no codes found in {path}: is the scan still looking at the right calls?"
    for name, code, line in uses:
        assert code in CODES, f"{path.name}:{line}: {code} is not in bgagent_web.ERROR_CODES"
        cls = getattr(bgagent_web, name, None)
        if isinstance(cls, type) and issubclass(cls, ApiError):
            assert CODES[code].status == cls.status_code, f"{path.name}:{line}: {name}(code={code!r})"
        if name.startswith("envelope:") and name != "envelope:?":
            assert CODES[code].status == int(name.split(":")[1]), f"{path.name}:{line}"
