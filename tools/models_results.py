"""Run the Fashion-MNIST table of docs/models.md and draw its learning curves.

    python tools/models_results.py --out runs/models            # 12 runs, one at a time
    python tools/models_results.py --out runs/models --report   # only rebuild docs/models/ from runs/models
    python tools/models_results.py --out runs/models --only cnn-sg   # rerun those runs, rebuild from all

For each recipe (launch/fashion-cnn.toml, launch/fashion-mlp.toml) and method (bp, sg, dfa) it
runs the recipe in one process (`python -m dni_dist train`, test accuracy every
`run.eval_every` steps for the curves) and as 4 ZeroMQ processes (`dni-launch --blocks 4`),
exactly the commands it prints, then writes docs/models/results.json, docs/models/results.md
(the table) and docs/models/learning_curves.png.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"cnn": "launch/fashion-cnn.toml", "mlp": "launch/fashion-mlp.toml"}
METHODS = {"bp": "bp", "sg": "sg (cDNI)", "dfa": "dfa"}
EVAL_EVERY = {"cnn": 188, "mlp": 94}  # about 20 points per curve


def commands(out: Path) -> list[tuple[str, str, str, list[str]]]:
    """(model, method, backend, argv) of every run, in the order they run."""
    runs = []
    for model, recipe in RECIPES.items():
        for method in METHODS:
            one = out / f"{model}-{method}-1p"
            runs.append((model, method, "1 process", [
                "python", "-m", "dni_dist", "train", "--recipe", recipe, "--method", method,
                "--set", f"run.eval_every={EVAL_EVERY[model]}", "--out", str(one), "--quiet",
            ]))  # fmt: skip
            four = out / f"{model}-{method}-4p"
            runs.append((model, method, "4 ZeroMQ processes", [
                "dni-launch", "--recipe", recipe, "--blocks", "4", "--gpus", "cpu", "--method", method,
                "--out", str(four), "--no-live",
            ]))  # fmt: skip
    return runs


def _argv(cmd: list[str]) -> list[str]:
    """The printed command, run with this interpreter (dni-launch is its console script)."""
    if cmd[0] == "python":
        return [sys.executable, *cmd[1:]]
    return [sys.executable, "-c", "from dni_dist.cli import launch_main; launch_main()", *cmd[1:]]


def _out(cmd: list[str]) -> Path:
    path = Path(cmd[cmd.index("--out") + 1])
    return path if path.is_absolute() else ROOT / path


def collect(out: Path) -> list[dict[str, Any]]:
    rows = []
    for model, method, backend, cmd in commands(out):
        summary = json.loads((_out(cmd) / "summary.json").read_text())
        wall = summary["wall_seconds"] - summary.get("eval_seconds", 0.0)  # training only, as for dni-launch
        rows.append({
            "model": model, "method": method, "backend": backend, "command": shlex.join(cmd),
            "test_accuracy": summary["final"]["test_accuracy"], "wall_seconds": wall,
            "steps": summary["steps"], "dataset": summary["dataset"],
            "evals": summary.get("evals", []),
        })  # fmt: skip
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | method | backend | test accuracy | training wall time |",
        "|---|---|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {METHODS[r['method']]} | {r['backend']} | {100 * r['test_accuracy']:.2f} % "
            f"| {r['wall_seconds']:.0f} s |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, model in zip(axes, RECIPES):
        for r in rows:
            if r["model"] != model or r["backend"] != "1 process":
                continue
            steps = [e["step"] for e in r["evals"]]
            acc = [100 * e["test_accuracy"] for e in r["evals"]]
            ax.plot(steps, acc, marker="o", markersize=3, label=f"{METHODS[r['method']]} ({acc[-1]:.2f} %)")
        four = [r for r in rows if r["model"] == model and r["backend"] != "1 process"]
        for r in four:
            ax.scatter([r["steps"]], [100 * r["test_accuracy"]], marker="x", color="black")
        ax.set_title(f"{RECIPES[model]} (x: 4 ZeroMQ processes, final)")
        ax.set_xlabel("step (batch 128)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    axes[0].set_ylabel("Fashion-MNIST test accuracy (%)")
    axes[0].set_ylim(80, 94)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/models"))
    parser.add_argument("--report", action="store_true", help="only rebuild docs/models/ from --out")
    parser.add_argument("--only", default="", help="run only these, e.g. cnn-sg (model-method), then rebuild all")
    args = parser.parse_args()
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    if not args.report:
        for model, method, _, cmd in commands(args.out):
            if wanted and f"{model}-{method}" not in wanted:
                continue
            print("$", shlex.join(cmd), flush=True)
            subprocess.run(_argv(cmd), cwd=ROOT, check=True)
    rows = collect(args.out)
    docs = ROOT / "docs" / "models"
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "results.json").write_text(json.dumps(rows, indent=2))
    (docs / "results.md").write_text(table(rows))
    plot(rows, docs / "learning_curves.png")
    print(table(rows))


if __name__ == "__main__":
    main()
