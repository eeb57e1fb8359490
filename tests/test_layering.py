"""The packages import one way: launch -> cli -> benchmarks -> engine, eval, data, networks ->
config -> the maths (diffusion, gan, models) and the choices leaves (docs/architecture.md,
"Layers"). Imports inside functions count: they would only hide a cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import hpcgen

SRC = Path(hpcgen.__file__).parent
MATHS = ("hpcgen.diffusion", "hpcgen.gan", "hpcgen.models")


def _module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = ("hpcgen", *path.relative_to(SRC).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


MODULES = _module_names()


def _resolve(name: str) -> str | None:
    """The hpcgen module an import names (`from hpcgen.config import X` -> hpcgen.config)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name if name and name != "hpcgen" else None


def imports_of(module: str) -> set[str]:
    """Every hpcgen module `module` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        found |= {r for n in names if n.startswith("hpcgen") and (r := _resolve(n))}
    return found - {module}


def layer(module: str) -> str:
    """A module's node in the package graph: its package, or itself for a choices leaf."""
    return module if module.endswith(".choices") else ".".join(module.split(".")[:2])


def package_cycle() -> list[str] | None:
    """One cycle of the package graph (depth-first search), or None."""
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        graph.setdefault(layer(module), set()).update(
            layer(t) for t in imports_of(module) if layer(t) != layer(module)
        )
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_the_packages_import_each_other_one_way_only():
    cycle = package_cycle()
    assert cycle is None, " -> ".join(cycle or [])


def crossings(source: str, forbidden) -> list[str]:
    """'m imports t' for each module m under `source` whose import t is forbidden(t)."""
    return sorted(
        f"{m} imports {t}" for m in MODULES if m.startswith(source) for t in imports_of(m)
        if forbidden(t)
    )  # fmt: skip


def test_benchmarks_never_import_cli():
    assert not crossings("hpcgen.benchmarks", lambda t: t.startswith("hpcgen.cli"))


def test_engine_imports_nothing_of_console_status_cli_or_report():
    above = ("hpcgen.console", "hpcgen.status", "hpcgen.cli", "hpcgen.report")
    assert not crossings("hpcgen.engine", lambda t: t.startswith(above))


def test_config_imports_only_the_maths_and_choices_leaves():
    """config/ is what every layer above receives; it may read names from below, not above."""
    allowed = ("hpcgen.config", *MATHS)
    assert not crossings(
        "hpcgen.config", lambda t: not (t.startswith(allowed) or t.endswith(".choices"))
    )


def test_choices_leaves_and_the_maths_never_import_config():
    leaves = [m for m in MODULES if m.endswith(".choices")]
    assert {"hpcgen.data.choices", "hpcgen.engine.choices", "hpcgen.gan.choices"} <= set(leaves)
    assert not {m: imports_of(m) for m in leaves if imports_of(m)}
    for maths in MATHS:
        assert not crossings(maths, lambda t: t.startswith("hpcgen.config"))


def test_importing_config_does_not_import_torch():
    """launch/ fast paths (--help, stage_weights' checks) and preflight's first lines stay light."""
    code = "import sys, hpcgen.config, hpcgen.config.compose; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
