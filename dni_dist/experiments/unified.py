"""Section 6 / Table 1: BP, FA, DFA, Kickback, SG and conspiring SG through the same interfaces,
with the locking columns *measured* from what every update waited for.

    dni-repro unified --out runs/repro                  # in one process
    dni-repro unified --out runs/repro --distributed    # 4 worker processes over ZeroMQ, free-running

A ReLU+BN MLP on the bundled MNIST subset, an interface after every hidden layer, one method at
a time. Writes unified.csv (method,update_locked,backward_locked,direct_error,test_accuracy),
unified.json, a Markdown table beside the paper's, and unified_updates.csv: the newest updates
of every interface with the messages each depended on (message kind and step, and the stage and
block that produced it), the record the locking columns are derived from.
"""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path
from typing import Any

from dni_dist.config import TrainConfig
from dni_dist.experiments.base import ExperimentOptions, ExperimentResult
from dni_dist.locking import COLUMNS, TABLE1
from dni_dist.recipes import config_from_dict

METHODS = ("bp", "fa", "dfa", "kb", "sg", "sg_beta")
NAMES = {"bp": "Backprop", "fa": "FA", "dfa": "DFA", "kb": "Kickback", "sg": "SG", "sg_beta": "SG + β (conspiring)"}
UPDATE_COLUMNS = (
    "method", "stage", "block", "update_step", "message", "message_step", "producer_stage", "producer_block",
)  # fmt: skip
"""unified_updates.csv: one row per (update, message it used); message 'none' for an update that used none."""
PAPER = {m: tuple("yes" if v else "no" for v in row) for m, row in TABLE1.items()}
"""Table 1 as published (dni_dist.locking.TABLE1), in the yes/no words of the CSV."""


def config(method: str, opts: ExperimentOptions) -> TrainConfig:
    return config_from_dict(
        {
            "model": {"kind": "mlp", "depth": 3, "width": 64 if opts.quick else 256, "batch_norm": True},
            "split": {"placement": "every"},
            "credit": {"method": method, "beta": 1.0},
            "data": {"name": "mnist", "subset": True, "batch_size": 128},
            "run": {"steps": 150 if opts.quick else 1500, "seed": opts.seed},
        }
    )


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def measure(method: str, opts: ExperimentOptions) -> dict[str, Any]:
    cfg = config(method, opts)
    if opts.distributed:
        from dni_dist.launcher import LaunchOptions, launch

        with tempfile.TemporaryDirectory() as tmp:
            s = launch(cfg, LaunchOptions(blocks=4, out=Path(tmp), live=False))
        interfaces = s["locking"]
        accuracy = s["final"]["test_accuracy"]
        block_of = {st: b["block"] for b in s["blocks"] for st in range(b["stages"][0], b["stages"][1] + 1)}
        records = [(i["stage"], r) for b in s["blocks"] for i in b["interfaces"] for r in i["recent_updates"]]
    else:
        from dni_dist.trainer import train

        result = train(cfg)
        interfaces = result.locking()
        accuracy = result.test_accuracy
        block_of = {}  # one process: every stage in block 0
        records = [(st.spec.index, r.to_list()) for st in result.stages[:-1] for r in st.stats.updates_log]
    cols = {c: {i[c] for i in interfaces} for c in COLUMNS}
    if any(len(v) != 1 for v in cols.values()):
        raise RuntimeError(f"{method}: interfaces disagree on locking: {interfaces}")
    updates = [
        dict(zip(UPDATE_COLUMNS, (method, st, block_of.get(st, 0), step, kind, mstep, src, block_of.get(src, 0))))
        for st, (step, deps) in records
        for kind, mstep, src in deps or [["none", -1, -1]]
    ]
    row = {"method": method, **{c: _yes(next(iter(v))) for c, v in cols.items()}, "test_accuracy": accuracy}
    return {**row, "updates": updates}


def run(opts: ExperimentOptions) -> ExperimentResult:
    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    measured = [measure(m, opts) for m in METHODS]
    rows = [{k: v for k, v in r.items() if k != "updates"} for r in measured]
    with open(out / "unified_updates.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(UPDATE_COLUMNS))
        writer.writeheader()
        for r in measured:
            writer.writerows(r["updates"])
    with open(out / "unified.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["method", *COLUMNS, "test_accuracy"])
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "test_accuracy": f"{r['test_accuracy']:.4f}"})
    agree = all(tuple(r[c] for c in COLUMNS) == PAPER[r["method"]] for r in rows)
    key = {"rows": rows, "matches_paper_table1": agree, "distributed": opts.distributed}
    (out / "unified.json").write_text(json.dumps(key, indent=2))
    cfg = config("sg", opts)
    where = "4 worker processes over ZeroMQ, free-running" if opts.distributed else "one process"
    lines = [
        "## Unified view: BP, FA, DFA, Kickback, SG, conspiring SG (Section 6, Table 1)",
        "",
        f"`dni-repro unified{' --quick' if opts.quick else ''}{' --distributed' if opts.distributed else ''}`: "
        f"ReLU+BN MLP with {cfg.model.depth} hidden layers of {cfg.model.width}, an interface after every hidden "
        f"layer, {cfg.run.steps} steps of batch {cfg.data.batch_size} on the bundled MNIST subset, {where}. "
        "Locking is derived from the dependency record: every update records the received messages it "
        "used (`unified_updates.csv`: message kind and step, producing stage and block); an update is "
        "*update-locked* if it used a message produced by a later stage, *backward-locked* if it used "
        "the next stage's gradient, *direct error* if it used the output error broadcast by the last stage.",
        "",
        "| method | update locked | backward locked | direct error | paper (u/b/d) | test accuracy |",
        "|---|---|---|---|---|---:|",
    ]
    for r in rows:
        paper = "/".join(PAPER[r["method"]])
        lines.append(
            f"| {NAMES[r['method']]} | {r['update_locked']} | {r['backward_locked']} | {r['direct_error']} | "
            f"{paper} | {r['test_accuracy']:.4f} |"
        )
    lines += [
        "",
        "The measured columns " + ("equal" if agree else "**differ from**") + " the paper's Table 1 "
        "(the paper marks conspiring SG's locking with an asterisk: it is locked because the SG-loss "
        "gradient needs the target). Only SG updates every block without waiting on anything below it.",
        "",
    ]
    files = ["unified.csv", "unified.json", "unified_updates.csv"]
    return ExperimentResult("unified", "\n".join(lines), files, key)
