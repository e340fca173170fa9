"""Draw docs/architecture.png: the package's modules in layers, each above what it imports,
read from the code's own import statements (so the picture cannot drift from the code).

    python tools/draw_architecture.py            # writes docs/architecture.png

A module's layer is one more than the highest layer it imports; layer 0 imports nothing of the
package. The experiments/ and data/ packages are drawn as one box each. An arrow that would run
upwards (an import of a higher layer) is drawn red; there should be none but the entry points'.
"""

from __future__ import annotations

import ast
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dni_dist"
COLLAPSE = ("dni_dist.experiments", "dni_dist.data")
SKIP = ("dni_dist", "dni_dist.version", "dni_dist.__main__")  # the re-exporting face and the tiny leaves


def node_of(module: str) -> str:
    for c in COLLAPSE:
        if module == c or module.startswith(c + "."):
            return c
    return module


def package_imports(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Every module of `package` -> the modules of the package it imports, at any depth of the file
    (function-level imports included). tests/unit/test_structure.py checks this graph for circles."""
    root = package.parent
    names = {}
    for p in package.rglob("*.py"):
        parts = p.relative_to(root).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph: dict[str, set[str]] = {m: set() for m in names}
    for name, path in names.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            graph[name].update(t for t in targets if t in names and t != name)
    return graph


def read_imports() -> dict[str, set[str]]:
    """The graph as drawn: experiments/ and data/ as one node each, a package's own submodules
    and the SKIP modules left out."""
    graph: dict[str, set[str]] = {}
    for name, deps in package_imports().items():
        src = node_of(name)
        if src in SKIP:
            continue
        graph.setdefault(src, set()).update(
            node_of(t) for t in deps if node_of(t) not in SKIP and node_of(t) != src and not src.startswith(t + ".")
        )
    return graph


def layers(graph: dict[str, set[str]]) -> dict[str, int]:
    level: dict[str, int] = {}

    def depth(n: str, seen: tuple[str, ...] = ()) -> int:
        if n in level:
            return level[n]
        deps = [d for d in graph.get(n, ()) if d not in seen]
        level[n] = 1 + max((depth(d, (*seen, n)) for d in deps), default=-1)
        return level[n]

    for n in graph:
        depth(n)
    return level


GROUPS = {  # colour: what part of the system a module belongs to
    "command line": ("#d5f0d5", ("dni_dist.cli", "dni_dist.bench", "dni_dist.experiments", "dni_dist.worker.__main__")),
    "worker process": ("#f6e3c6", ("dni_dist.worker",)),
    "launch and results": ("#dbe7f3", ("dni_dist.launcher", "dni_dist.supervisor", "dni_dist.placement",
                                       "dni_dist.inproc", "dni_dist.summary", "dni_dist.stats", "dni_dist.checkpoint",
                                       "dni_dist.manifest", "dni_dist.records")),
    "wire and telemetry": ("#f3dbe7", ("dni_dist.messages", "dni_dist.transport", "dni_dist.rendezvous",
                                       "dni_dist.metrics", "dni_dist.faults", "dni_dist.proxy")),
}  # fmt: skip
MATH = "#e8e8e8"  # the rest: the method maths, models, data, config


def colour(n: str) -> str:
    for fill, prefixes in GROUPS.values():
        if any(n == p or n.startswith(p + ".") for p in prefixes):
            return fill
    return MATH


def reduce(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Drop A -> C when A reaches C through another import: the picture keeps the backbone."""

    def reach(n: str, seen: set[str]) -> set[str]:
        for d in graph.get(n, ()):
            if d not in seen:
                seen.add(d)
                reach(d, seen)
        return seen

    return {a: {c for c in deps if not any(c in reach(b, {b}) for b in deps if b != c)} for a, deps in graph.items()}


def main() -> None:
    full = read_imports()
    level = layers(full)
    graph = reduce(full)
    rows: dict[int, list[str]] = {}
    for n in sorted(level, key=lambda m: (level[m], m)):
        rows.setdefault(level[n], []).append(n)
    width = max(len(r) for r in rows.values())
    fig, ax = plt.subplots(figsize=(2.3 * width, 1.25 * len(rows) + 1))
    pos: dict[str, tuple[float, float]] = {}
    for lv, names in rows.items():
        for i, n in enumerate(names):
            pos[n] = ((i + 0.5) * width / len(names), lv)
    for src, deps in graph.items():
        for d in deps:
            (x0, y0), (x1, y1) = pos[src], pos[d]
            up = y1 >= y0
            ax.annotate("", xy=(x1, y1 + 0.18), xytext=(x0, y0 - 0.18),
                        arrowprops={"arrowstyle": "->", "color": "#c0392b" if up else "#9aa5b1", "lw": 0.7,
                                    "alpha": 0.9 if up else 0.55, "connectionstyle": "arc3,rad=0.05"})  # fmt: skip
    for n, (x, y) in pos.items():
        label = n.removeprefix("dni_dist.").replace(".", "/") + ("/" if n in COLLAPSE else "")
        half = min(0.95, 0.42 * width / len(rows[level[n]]))
        ax.add_patch(FancyBboxPatch((x - half, y - 0.18), 2 * half, 0.36, boxstyle="round,pad=0.02",
                                    fc=colour(n), ec="#34495e", lw=0.8))  # fmt: skip
        ax.text(x, y, label, ha="center", va="center", fontsize=8.5)
    handles = [FancyBboxPatch((0, 0), 1, 1, fc=fill, ec="#34495e") for fill, _ in GROUPS.values()]
    handles.append(FancyBboxPatch((0, 0), 1, 1, fc=MATH, ec="#34495e"))
    ax.legend(handles, [*GROUPS, "methods, models, data, config"], loc="upper left", fontsize=8, frameon=False)
    ax.set_xlim(-0.2, width + 0.2)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.axis("off")
    ax.set_title("dni_dist modules, each above what it imports (arrows implied by a longer path omitted; "
                 "red: an arrow running upward)", fontsize=10)  # fmt: skip
    out = ROOT / "docs" / "architecture.png"
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out} ({len(pos)} modules, {sum(len(d) for d in full.values())} imports, {len(rows)} layers)")


if __name__ == "__main__":
    main()
