"""The architecture, checked: the pure packages import no I/O library, and
no two of the project's modules import each other, directly or round a
loop (docs/design.md, *How it fits together*)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("stream", "agents", "state", "engine", "store", "api", "cli")
IO = ("faust", "aiokafka", "redis", "prometheus_client", "aiohttp", "mode")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = f
    return out


def imports(path: Path) -> set[str]:
    """Every module named in an import, at any level (a function-level import counts)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def closure(module: str, mods: dict[str, Path]) -> set[str]:
    """The project modules `module` reaches, and everything they import."""
    seen, todo, named = set(), [module], set()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        for name in imports(mods[m]):
            named.add(name)
            if name in mods:
                todo.append(name)
    return named


def test_the_pure_core_and_the_engine_reach_no_io_library():
    mods = modules()
    for m in mods:
        if m.split(".")[0] in ("state", "engine"):
            io = sorted(n for n in closure(m, mods) if n.split(".")[0] in IO)
            assert io == [], f"{m} reaches {io}"


def test_no_import_cycles():
    mods = modules()
    graph = {m: {n for n in imports(f) if n in mods and n != m} for m, f in mods.items()}
    cycles = []
    for start in graph:
        # a path from one of start's imports back to start is a cycle through it
        stack, seen = list(graph[start]), set()
        while stack:
            m = stack.pop()
            if m == start:
                cycles.append(start)
                break
            if m not in seen:
                seen.add(m)
                stack.extend(graph[m])
    assert cycles == []
