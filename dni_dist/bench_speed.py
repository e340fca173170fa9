"""dni-bench's main comparison: samples/s and time to accuracy, decoupled blocks against their peers.

    dni-bench --rounds 3 --steps 400 --sg-variants r64 --out docs/bench    # the MLP
    dni-bench --model cnn --rounds 3 --steps 300 --out docs/bench/cnn
    dni-bench --sg-variants r64,u4,r64u4 --only dni-sg-2proc-r64,dni-sg-2proc-u4 --out /tmp/b  # cheaper SGs

Contestants (all train the same model from the same weights on the same batches; dni_dist.bench_runs):

- torch-1proc-1thread  plain PyTorch backprop, one process, one thread: every ratio's baseline
- torch-1proc-2thread  the same with 2 intra-op threads: the honest alternative on one 2-core machine
- bp-1proc-1thread     dni_dist's in-process trainer doing backprop
- dni-sg-2proc         dni-launch, 2 processes, free-running cDNI at the cut, CURVE (the default)
- dni-sg-2proc-plain   the same, plaintext (--insecure): what encryption costs
- dni-sg-2proc-<v>     the same with a cheaper SG (--sg-variants): r<k> = synthetic.rank k,
                       u<k> = synthetic.update_every k, e.g. r64u4
- dni-bp-2proc         the same 2 processes with backprop at the cut (update-locked)
- pp-<schedule>-m<M>   torch.distributed.pipelining on 2 gloo processes

Each run keeps its weights every --snapshot-every steps; they are evaluated afterwards on the
held-out test split, giving accuracy against wall time, and the time to the target accuracy
(97 % of the baseline's final accuracy). Rounds are interleaved (round 1 runs every contestant,
then round 2, ...) and the tables report medians. Each round also runs the transport line
(dni_dist.bench_transport): dni_dist's tensor messages against raw pyzmq, as a ratio.
--out gets bench.json (every measurement), bench.md (the tables) and bench.png.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dni_dist import bench_runs
from dni_dist.bench_transport import ENDPOINTS, run_transport
from dni_dist.bench_transport import ratios as transport_ratios
from dni_dist.curves import CurvePoint, learning_curve, time_to

console = Console(stderr=True)
BASELINE = "torch-1proc-1thread"
TARGET_FRACTION = 0.97
Run = dict[str, Any]  # {"sps", "final_accuracy", "curve": [[step, seconds, accuracy], ...]}


@dataclass(frozen=True)
class Options:
    steps: int = 600
    rounds: int = 3
    model: str = "mlp"
    cut: int = bench_runs.CUT
    pipelining: tuple[tuple[str, int], ...] = (("gpipe", 2), ("1f1b", 2), ("1f1b", 4))
    variants: tuple[str, ...] = ()
    only: frozenset[str] | None = None
    snapshot_every: int = 50
    transport_sizes: tuple[int, ...] = ()  # empty: no transport line
    endpoints: tuple[str, ...] = ENDPOINTS

    def __post_init__(self) -> None:
        if self.model not in bench_runs.MODELS:
            raise ValueError(f"--model {self.model!r}: choose one of {', '.join(bench_runs.MODELS)}")
        if self.snapshot_every < 1 or self.steps % self.snapshot_every:
            raise ValueError(f"--steps ({self.steps}) must be a multiple of --snapshot-every ({self.snapshot_every})")
        for v in self.variants:
            variant_sets(v)
        if not set(self.endpoints) <= set(ENDPOINTS):
            raise ValueError(f"--endpoints takes ipc and/or tcp, got {','.join(self.endpoints)}")


def variant_sets(name: str) -> dict[str, int]:
    """'r64u4' -> {"synthetic.rank": 64, "synthetic.update_every": 4}; 'k1' -> {"synthetic.kernel": 1}."""
    m = re.fullmatch(r"(?:r(\d+))?(?:k(\d+))?(?:u(\d+))?", name)
    if not name or m is None:
        raise ValueError(
            f"SG variant {name!r}: write r<rank>, k<conv SG kernel>, u<update_every> or a combination in that "
            "order, e.g. r64, u4, r64u4, k1u4"
        )
    keys = ("synthetic.rank", "synthetic.kernel", "synthetic.update_every")
    return {key: int(v) for key, v in zip(keys, m.groups(), strict=True) if v}


def _curve(out: Path) -> list[list[float]]:
    return [[p.step, p.seconds, p.accuracy] for p in learning_curve(out)]


def contestants(o: Options) -> dict[str, Callable[[Path], Run]]:
    """name -> a function that runs it once under a scratch folder."""
    every, model = o.snapshot_every, o.model

    def torch_loop(threads: int) -> Callable[[Path], Run]:
        def run(w: Path) -> Run:
            sps = bench_runs.run_torch_single(o.steps, threads, w, every, model=model)
            curve = _curve(w)
            return {"sps": sps, "final_accuracy": curve[-1][2], "curve": curve}

        return run

    def bp_single(w: Path) -> Run:
        sps = bench_runs.run_bp_single(o.steps, w, every, model=model)
        curve = _curve(w)
        return {"sps": sps, "final_accuracy": curve[-1][2], "curve": curve}

    def dni(method: str, insecure: bool = False, sets: dict[str, Any] | None = None) -> Callable[[Path], Run]:
        def run(w: Path) -> Run:
            all_sets = {"runtime.snapshot_every": every, **(sets or {})}
            s = bench_runs.run_dni(method, o.steps, w, o.cut, insecure=insecure, sets=all_sets, model=model)
            return {"sps": s["samples_per_second"], "final_accuracy": s["final"]["test_accuracy"], "curve": _curve(w)}

        return run

    def pp(schedule: str, m: int) -> Callable[[Path], Run]:
        def run(w: Path) -> Run:
            sps = bench_runs.run_pipelining(schedule, m, o.steps, w, o.cut, snapshot_every=every, model=model)
            curve = _curve(w)
            return {"sps": sps, "final_accuracy": curve[-1][2], "curve": curve}

        return run

    runs: dict[str, Callable[[Path], Run]] = {
        BASELINE: torch_loop(1),
        "torch-1proc-2thread": torch_loop(2),
        "bp-1proc-1thread": bp_single,
        "dni-sg-2proc": dni("sg"),
        "dni-sg-2proc-plain": dni("sg", insecure=True),
        **{f"dni-sg-2proc-{v}": dni("sg", sets=variant_sets(v)) for v in o.variants},
        "dni-bp-2proc": dni("bp"),
        **{f"pp-{s}-m{m}": pp(s, m) for s, m in o.pipelining},
    }
    if o.only is not None:
        unknown = o.only - set(runs)
        if unknown:
            raise ValueError(f"unknown contestant(s) {', '.join(sorted(unknown))}; have {', '.join(runs)}")
        runs = {k: v for k, v in runs.items() if k in o.only or k == BASELINE}
    return runs


def run_speed(o: Options, out: Path | None) -> dict[str, Any]:
    """Run every contestant once per round, interleaved; summarise; write bench.json/md/png."""
    fns = contestants(o)
    runs: list[dict[str, Any]] = []
    transport: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(o.rounds):
            for name, fn in fns.items():
                t0 = time.monotonic()
                result = fn(Path(tmp) / f"{name}-{r}")
                runs.append({"contestant": name, "round": r, **result})
                console.print(
                    f"round {r + 1}/{o.rounds} {name:24} {result['sps']:8.0f} samples/s  "
                    f"final acc {result['final_accuracy']:.4f}  ({time.monotonic() - t0:.0f}s)"
                )
            if o.transport_sizes:
                t0 = time.monotonic()
                transport.append(run_transport(list(o.transport_sizes), list(o.endpoints)))
                console.print(f"round {r + 1}/{o.rounds} transport line ({time.monotonic() - t0:.0f}s)")
    result = summarize(runs, transport, o)
    print_table(result)
    if out is not None:
        bench_runs.write_results(out, "bench", result, markdown, plot)
    return result


def summarize(runs: list[dict[str, Any]], transport: list[dict[str, Any]], o: Options) -> dict[str, Any]:
    base_acc = statistics.median(r["final_accuracy"] for r in runs if r["contestant"] == BASELINE)
    target = TARGET_FRACTION * base_acc
    for r in runs:
        curve = [CurvePoint(step=int(s), seconds=t, accuracy=a, loss=0.0) for s, t, a in r["curve"]]
        r["time_to_target_s"] = time_to(curve, target)
    table: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r["contestant"] for r in runs):
        rs = [r for r in runs if r["contestant"] == name]
        table[name] = {
            "samples_per_second": statistics.median(r["sps"] for r in rs),
            "samples_per_second_all": [r["sps"] for r in rs],
            "final_accuracy": statistics.median(r["final_accuracy"] for r in rs),
            "time_to_target_s": bench_runs.median_reached([r["time_to_target_s"] for r in rs]),
        }
    base = table[BASELINE]
    for row in table.values():
        row["speed_over_baseline"] = row["samples_per_second"] / base["samples_per_second"]
        tta, base_tta = row["time_to_target_s"], base["time_to_target_s"]
        row["time_to_target_over_baseline"] = tta / base_tta if tta is not None and base_tta else None
    pps = [n for n in table if n.startswith("pp-")]
    best_pp = max(pps, key=lambda n: table[n]["samples_per_second"], default=None)

    def ratio(a: str, b: str | None, key: str = "samples_per_second") -> float | None:
        if b is None or a not in table or b not in table or table[a][key] is None or not table[b][key]:
            return None
        return float(table[a][key] / table[b][key])

    paired = [
        a["sps"] / p["sps"]
        for a in runs
        for p in runs
        if a["contestant"] == "dni-sg-2proc" and p["contestant"] == "dni-sg-2proc-plain" and a["round"] == p["round"]
    ]
    sizes = list(o.transport_sizes)
    return {
        "model": {"name": o.model, **bench_runs.MODELS[o.model], "batch": bench_runs.BATCH, "cut_after_layer": o.cut},
        "steps": o.steps,
        "rounds": o.rounds,
        "snapshot_every": o.snapshot_every,
        "cpu_count": os.cpu_count(),
        "baseline_final_accuracy": base_acc,
        "target_accuracy": target,
        "table": table,
        "samples_per_second": {n: row["samples_per_second_all"] for n, row in table.items()},
        "median": {n: row["samples_per_second"] for n, row in table.items()},
        "ratios": {
            "dni_sg_over_torch_1proc": ratio("dni-sg-2proc", BASELINE),
            "dni_sg_over_torch_1proc_2thread": ratio("dni-sg-2proc", "torch-1proc-2thread"),
            "dni_sg_over_best_pipelining": ratio("dni-sg-2proc", best_pp),
            "best_pipelining": best_pp,
            "curve_over_plain": statistics.median(paired) if paired else None,
            "time_to_target_sg_over_torch_1proc": ratio("dni-sg-2proc", BASELINE, "time_to_target_s"),
            "time_to_target_sg_over_torch_2thread": ratio("dni-sg-2proc", "torch-1proc-2thread", "time_to_target_s"),
        },
        "transport": {
            "sizes": sizes,
            "mb_per_s": [r["mb_per_s"] for r in transport],
            "ratio_to_raw": transport_ratios(transport) if transport else {},
        },
        "runs": runs,
    }


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _rows(result: dict[str, Any]) -> list[list[str]]:
    best = result["ratios"]["best_pipelining"]
    return [
        [name + (" (best pipelining)" if name == best else ""), f"{row['samples_per_second']:.0f}",
         f"{min(row['samples_per_second_all']):.0f}", f"{max(row['samples_per_second_all']):.0f}",
         f"{row['speed_over_baseline']:.2f}", f"{100 * row['final_accuracy']:.2f} %",
         _fmt(row["time_to_target_s"], ".1f"), _fmt(row["time_to_target_over_baseline"], ".2f")]
        for name, row in result["table"].items()
    ]  # fmt: skip


COLUMNS = ("contestant", "median samples/s", "min", "max", "× baseline", "final test acc.", "time to target (s)",
           "time × baseline")  # fmt: skip


def _title(result: dict[str, Any]) -> str:
    m = result["model"]
    return (f"dni-bench: {m['name']} cut after layer {m['cut_after_layer']}, batch {m['batch']}, {result['steps']} "
            f"steps, target {result['target_accuracy']:.4f} (97 % of the baseline's final accuracy)")  # fmt: skip


def print_table(result: dict[str, Any]) -> None:
    t = Table(title=_title(result))
    for col in COLUMNS:
        t.add_column(col, justify="left" if col == "contestant" else "right", no_wrap=col == "contestant")
    for row in _rows(result):
        t.add_row(*row)
    Console(width=160).print(t)
    print(json.dumps(result["ratios"]))
    for key, by_size in result["transport"]["ratio_to_raw"].items():
        print(f"transport {key} / raw pyzmq: " + ", ".join(f"{int(s) >> 10} KiB {r:.2f}" for s, r in by_size.items()))


def markdown(result: dict[str, Any]) -> str:
    """The tables as Markdown (bench.md), for docs/benchmarks.md."""
    lines = [_title(result) + f"; medians of {result['rounds']} interleaved rounds.", "",
             "| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1)]  # fmt: skip
    lines += ["| " + " | ".join(row) + " |" for row in _rows(result)]
    t = result["transport"]
    if t["ratio_to_raw"]:
        sizes = t["sizes"]
        lines += ["", "Transport, dni_dist messages / raw pyzmq PUSH/PULL on the same kind of socket (dni-curve / raw "
                  "pyzmq with CURVE; median over rounds of the burst-paired ratios; raw MB/s below):",
                  "", "| mode / endpoint | " + " | ".join(f"{s >> 10} KiB" for s in sizes) + " |",
                  "|---|" + "---:|" * len(sizes)]  # fmt: skip
        for key, by_size in t["ratio_to_raw"].items():
            lines.append(f"| {key} | " + " | ".join(f"{by_size[str(s)]:.2f}" for s in sizes) + " |")
        for key in sorted(k for k in t["mb_per_s"][0] if k.startswith("raw")):
            raw = [statistics.median(r[key][str(s)] for r in t["mb_per_s"]) for s in sizes]
            lines.append(f"| {key} MB/s | " + " | ".join(f"{v:.0f}" for v in raw) + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["table"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    palette = plt.get_cmap("tab20")  # 10 dark shades first, then their light pairs: 20 distinct colours
    colour = {n: palette((2 * i) % 20 + (2 * i) // 20 % 2) for i, n in enumerate(names)}
    speeds = [result["table"][n]["samples_per_second"] for n in names]
    ax1.barh(names, speeds, color=[colour[n] for n in names])
    for i, n in enumerate(names):
        ax1.text(speeds[i], i, f" {result['table'][n]['speed_over_baseline']:.2f}×", va="center", fontsize=8)
    ax1.invert_yaxis()
    ax1.set_xlabel("samples/s (median of rounds; label: × baseline)")
    ax1.set_title("Throughput")
    ax1.tick_params(axis="y", labelsize=8)
    best = result["ratios"]["best_pipelining"]
    for r in result["runs"]:
        if r["round"] == 0 and (not r["contestant"].startswith("pp-") or r["contestant"] == best):
            ax2.plot([c[1] for c in r["curve"]], [c[2] for c in r["curve"]], marker=".", label=r["contestant"],
                     color=colour[r["contestant"]])  # fmt: skip
    ax2.axhline(result["target_accuracy"], color="black", linestyle=":", label="target")
    ax2.set_xlabel("wall seconds since the first step")
    ax2.set_ylabel("test accuracy")
    lo = min(c[2] for r in result["runs"] for c in r["curve"])
    ax2.set_ylim(max(lo, result["target_accuracy"] - 0.15), None)
    ax2.set_title("Accuracy against wall time (round 1)")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
