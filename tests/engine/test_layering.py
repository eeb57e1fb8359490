"""engine/ sits below the status side: console -> status -> engine, never back (function-level
imports included, which would only hide a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

import hpcgen

ENGINE = Path(hpcgen.__file__).parent / "engine"
ABOVE_ENGINE = ("hpcgen.console", "hpcgen.status", "hpcgen.cli", "hpcgen.report")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "hpcgen":  # from hpcgen import console
                names |= {f"hpcgen.{a.name}" for a in node.names}
    return names


def test_engine_imports_nothing_of_console_status_or_cli():
    upward = {
        f"{path.name} imports {name}"
        for path in sorted(ENGINE.glob("*.py"))
        for name in imported_modules(path)
        if name.startswith(ABOVE_ENGINE)
    }
    assert not upward, sorted(upward)
