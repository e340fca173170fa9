"""The package's shape: small modules, no import circles, a repository that stands on its own."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "dni_dist"


def _imports() -> dict[str, set[str]]:
    """Every dni_dist module -> the dni_dist modules it imports (tools/draw_architecture.py reads it)."""
    spec = importlib.util.spec_from_file_location("draw_architecture", ROOT / "tools" / "draw_architecture.py")
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool.package_imports(PACKAGE)  # type: ignore[no-any-return]


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + "."):  # a package importing its own submodule is how packages work
                continue
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_is_over_400_lines() -> None:
    big = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not big, f"split these by concern: {big}"


def test_no_import_circle_between_package_modules() -> None:
    graph = _imports()
    assert "dni_dist.cli" in graph["dni_dist.worker.__main__"], "the graph reader lost an import"
    cycle = _cycle({m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()})
    assert cycle is None, " -> ".join(cycle or [])


def test_the_repository_points_at_nothing_outside_itself() -> None:
    outside = re.compile(r"\.\./shared|shared/(DESIGN|STYLE|paper|checks)|DESIGN\.md|STYLE\.md")
    files = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *PACKAGE.rglob("*.py")]
    hits = [f"{f.relative_to(ROOT)}:{i}" for f in files for i, line in enumerate(f.read_text().splitlines(), 1)
            if outside.search(line)]  # fmt: skip
    assert not hits, hits
