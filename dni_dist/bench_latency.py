"""dni-bench --link-delay-ms: training over slow links, decoupled against locked, side by side.

    dni-bench --link-delay-ms 0,2,10,50 --rounds 3 --out docs/bench/latency   # about 25 minutes on 2 cores
    dni-bench --link-delay-ms 0,10,50 --blocks 4 --rounds 3 --out docs/bench/latency4

Every link between two processes of a contestant goes through dni_dist's fault proxy holding
each chunk the given one-way delay (also at 0 ms, so the proxy's own cost is in every number).
For B blocks (--blocks; each gets 8/B of the hidden layers):

- sg-Bproc        dni-launch, B blocks, free-running cDNI, the auto credit window
- sg-Bproc-w8     the same with the window fixed at 8 steps (`runtime.window = "fixed"`): what
                  the auto window buys on a slow link
- bp-Bproc        the same processes with backprop at the cuts (update-locked)
- pp-<s>-m<M>-Bproc  torch.distributed.pipelining, one gloo process per stage, gloo's links relayed
- torch-1proc     the reference: plain PyTorch backprop in one process, no link at all

Contestants run interleaved (every delay and contestant once per round). Each run keeps its
weights every `--snapshot-every` steps, so besides samples/s the result has its test accuracy
against wall time, the time to reach the target accuracy (97 % of the reference's final
accuracy) and, for the dni contestants, block 0's target lag (p50/p90/max, seconds and steps).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dni_dist import bench_runs
from dni_dist.bench_runs import Cut
from dni_dist.curves import CurvePoint, learning_curve, time_to

console = Console(stderr=True)
REFERENCE = "torch-1proc"
TARGET_FRACTION = 0.97


def _dni(method: str, window: str, steps: int, cut: Cut, delay: float, every: int, out: Path) -> dict[str, Any]:
    sets = {"runtime.link_delay_ms": delay, "runtime.relay_links": True, "runtime.window": window,
            "runtime.snapshot_every": every}  # fmt: skip
    summary = bench_runs.run_dni(method, steps, out, cut, sets=sets)
    block0 = summary["blocks"][0]
    lag = {"seconds": block0["lag_seconds"], "steps": block0["lag_steps"]} if method == "sg" else None
    curve = learning_curve(out)
    return {"sps": summary["samples_per_second"], "final_accuracy": summary["final"]["test_accuracy"],
            "curve": curve, "lag": lag}  # fmt: skip


def _pp(schedule: str, m: int, steps: int, cut: Cut, delay: float, every: int, out: Path) -> dict[str, Any]:
    sps = bench_runs.run_pipelining(schedule, m, steps, out, cut, delay_ms=delay, snapshot_every=every)
    curve = learning_curve(out)
    return {"sps": sps, "final_accuracy": curve[-1].accuracy, "curve": curve, "lag": None}


def _reference(steps: int, every: int, out: Path) -> dict[str, Any]:
    sps = bench_runs.run_torch_single(steps, threads=1, out=out, snapshot_every=every)
    curve = learning_curve(out)
    return {"sps": sps, "final_accuracy": curve[-1].accuracy, "curve": curve, "lag": None}


def run_latency(
    *,
    delays: list[float],
    rounds: int,
    steps: int,
    blocks: list[int],
    cut: int,
    pipelining: list[tuple[str, int]],
    snapshot_every: int,
    out: Path | None,
) -> dict[str, Any]:
    if steps % snapshot_every:
        raise ValueError(f"--steps ({steps}) must be a multiple of --snapshot-every ({snapshot_every})")
    contestants: dict[str, Any] = {}
    for b in blocks:
        cuts: Cut = cut if b == 2 else bench_runs.even_cuts(b)
        contestants[f"sg-{b}proc"] = lambda d, o, c=cuts: _dni("sg", "auto", steps, c, d, snapshot_every, o)
        contestants[f"sg-{b}proc-w8"] = lambda d, o, c=cuts: _dni("sg", "fixed", steps, c, d, snapshot_every, o)
        contestants[f"bp-{b}proc"] = lambda d, o, c=cuts: _dni("bp", "fixed", steps, c, d, snapshot_every, o)
        for s, m in pipelining:
            contestants[f"pp-{s}-m{m}-{b}proc"] = lambda d, o, s=s, m=m, c=cuts: _pp(
                s, m, steps, c, d, snapshot_every, o
            )
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            plan = [(REFERENCE, None)] + [(name, d) for d in delays for name in contestants]
            for i, (name, delay) in enumerate(plan):
                t0 = time.monotonic()
                where = Path(tmp) / f"r{r}-{i}"
                result = _reference(steps, snapshot_every, where) if delay is None else contestants[name](delay, where)
                curve = result.pop("curve")
                runs.append({"contestant": name, "delay_ms": delay, "round": r, **result,
                             "curve": [[p.step, p.seconds, p.accuracy] for p in curve]})  # fmt: skip
                at = "no link" if delay is None else f"{delay:g} ms"
                console.print(f"round {r + 1}/{rounds} {name:14} {at:>7}: {result['sps']:7.0f} samples/s, "
                              f"accuracy {result['final_accuracy']:.4f} ({time.monotonic() - t0:.0f}s)")  # fmt: skip
    result = summarize(runs, delays=delays, steps=steps, cut=cut, rounds=rounds, blocks=blocks)
    print_table(result)
    if out is not None:
        bench_runs.write_results(out, "latency", result, markdown, plot)
    return result


def summarize(
    runs: list[dict[str, Any]], *, delays: list[float], steps: int, cut: int, rounds: int, blocks: list[int]
) -> dict[str, Any]:
    ref = [r for r in runs if r["contestant"] == REFERENCE]
    ref_accuracy = statistics.median(r["final_accuracy"] for r in ref)
    target = TARGET_FRACTION * ref_accuracy
    for r in runs:
        curve = [CurvePoint(step=s, seconds=t, accuracy=a, loss=0.0) for s, t, a in r["curve"]]
        r["time_to_target_s"] = time_to(curve, target)
    table: dict[str, dict[str, Any]] = {}
    for r in runs:
        key = f"{r['contestant']}@{'none' if r['delay_ms'] is None else format(r['delay_ms'], 'g')}"
        table.setdefault(key, {"contestant": r["contestant"], "delay_ms": r["delay_ms"], "runs": []})["runs"].append(r)
    for row in table.values():
        rs = row.pop("runs")
        row["samples_per_second"] = statistics.median(r["sps"] for r in rs)
        row["samples_per_second_all"] = [r["sps"] for r in rs]
        row["final_accuracy"] = statistics.median(r["final_accuracy"] for r in rs)
        row["time_to_target_s"] = bench_runs.median_reached([r["time_to_target_s"] for r in rs])
        if rs[0]["lag"] is not None:
            row["lag_seconds_p50"] = statistics.median(r["lag"]["seconds"]["p50"] for r in rs)
            row["lag_seconds_p90"] = statistics.median(r["lag"]["seconds"]["p90"] for r in rs)
            row["lag_steps_p50"] = statistics.median(r["lag"]["steps"]["p50"] for r in rs)
            row["lag_steps_max"] = max(r["lag"]["steps"]["max"] for r in rs)
    return {
        "model": {
            "depth": bench_runs.DEPTH,
            "width": bench_runs.WIDTH,
            "batch": bench_runs.BATCH,
            "cut_after_layer": cut,
        },
        "steps": steps,
        "rounds": rounds,
        "delays_ms": delays,
        "reference_final_accuracy": ref_accuracy,
        "target_accuracy": target,
        "table": table,
        "blocks": blocks,
        "ratios": ratios(table, delays, blocks),
        "runs": runs,
    }


def ratios(table: dict[str, dict[str, Any]], delays: list[float], blocks: list[int]) -> dict[str, dict[str, Any]]:
    """Per block count and delay ("2proc@10"): sg over its own zero-delay speed, over bp on the
    same links, over the best pipelining schedule at that delay."""

    def sps(name: str, d: float) -> float | None:
        row = table.get(f"{name}@{d:g}")
        return None if row is None else float(row["samples_per_second"])

    out: dict[str, dict[str, Any]] = {}
    for b, d in ((b, d) for b in blocks for d in delays):
        base = sps(f"sg-{b}proc", 0) if 0 in delays else None
        sg, bp = sps(f"sg-{b}proc", d), sps(f"bp-{b}proc", d)
        pps = [(row["samples_per_second"], row["contestant"]) for row in table.values()
               if row["contestant"].startswith("pp-") and row["contestant"].endswith(f"-{b}proc")
               and row["delay_ms"] == d]  # fmt: skip
        best = max(pps) if pps else None
        out[f"{b}proc@{d:g}"] = {
            "sg_over_own_zero_delay": sg / base if sg and base else None,
            "sg_over_bp": sg / bp if sg and bp else None,
            "sg_over_best_pipelining": sg / best[0] if sg and best else None,
            "best_pipelining": best[1] if best else None,
        }
    return out


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(result: dict[str, Any]) -> None:
    t = Table(title=f"dni-bench latency: target accuracy {result['target_accuracy']:.4f} "
                    f"(97 % of one-process backprop's {result['reference_final_accuracy']:.4f})")  # fmt: skip
    for col in ("contestant", "one-way delay", "samples/s", "final acc.", "time to target (s)", "lag p50 (s / steps)"):
        t.add_column(col, justify="left" if col == "contestant" else "right", no_wrap=col == "contestant")
    for row in result["table"].values():
        lag = f"{row['lag_seconds_p50']:.3f} / {row['lag_steps_p50']:.0f}" if "lag_seconds_p50" in row else "-"
        t.add_row(row["contestant"], "no link" if row["delay_ms"] is None else f"{row['delay_ms']:g} ms",
                  f"{row['samples_per_second']:.0f}", f"{row['final_accuracy']:.4f}",
                  _fmt(row["time_to_target_s"], ".2f"), lag)  # fmt: skip
    Console().print(t)
    print(json.dumps(result["ratios"]))


def markdown(result: dict[str, Any]) -> str:
    """The table and the ratios as Markdown (latency.md), for docs/benchmarks.md."""
    lines = [
        f"Target accuracy {result['target_accuracy']:.4f} (97 % of one-process backprop's final "
        f"{result['reference_final_accuracy']:.4f}); {result['steps']} steps of batch {result['model']['batch']}, "
        f"medians of {result['rounds']} interleaved rounds.",
        "",
        "| contestant | one-way delay | samples/s | final test accuracy | time to target (s) | "
        "lag p50 (s) | lag p90 (s) | lag p50 / max (steps) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["table"].values():
        lag = [
            _fmt(row.get("lag_seconds_p50"), ".3f"),
            _fmt(row.get("lag_seconds_p90"), ".3f"),
            f"{row['lag_steps_p50']:.0f} / {row['lag_steps_max']:.0f}" if "lag_steps_p50" in row else "-",
        ]
        delay = "no link" if row["delay_ms"] is None else f"{row['delay_ms']:g} ms"
        lines.append(f"| {row['contestant']} | {delay} | {row['samples_per_second']:.0f} | "
                     f"{100 * row['final_accuracy']:.2f} % | {_fmt(row['time_to_target_s'], '.2f')} | "
                     + " | ".join(lag) + " |")  # fmt: skip
    lines += ["", "| blocks @ delay | sg / own 0 ms | sg / bp | sg / best pipelining | best pipelining |",
              "|---|---:|---:|---:|---|"]  # fmt: skip
    for key, r in result["ratios"].items():
        lines.append(f"| {key} ms | {_fmt(r['sg_over_own_zero_delay'], '.2f')} | {_fmt(r['sg_over_bp'], '.2f')} | "
                     f"{_fmt(r['sg_over_best_pipelining'], '.2f')} | {r['best_pipelining'] or '-'} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    delays = result["delays_ms"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = sorted({row["contestant"] for row in result["table"].values() if row["delay_ms"] is not None})
    xs = list(range(len(delays)))
    colour = {name: f"C{i}" for i, name in enumerate(names)} | {REFERENCE: "grey"}
    for name in names:
        ys = [result["table"].get(f"{name}@{d:g}", {}).get("samples_per_second") for d in delays]
        ax1.plot(xs, ys, marker="o", label=name, color=colour[name])
    ref = result["table"][f"{REFERENCE}@none"]["samples_per_second"]
    ax1.axhline(ref, color="grey", linestyle="--", label=f"{REFERENCE} (no link)")
    ax1.set_xticks(xs, [f"{d:g}" for d in delays])
    ax1.set_xlabel("one-way link delay (ms)")
    ax1.set_ylabel("samples/s (median of rounds)")
    ax1.set_title("Throughput against link latency")
    ax1.legend(fontsize=8)
    worst = max(delays)
    for r in result["runs"]:
        if r["round"] == 0 and (r["delay_ms"] == worst or r["delay_ms"] is None):
            label = r["contestant"] + (f" @ {worst:g} ms" if r["delay_ms"] is not None else " (no link)")
            ax2.plot([c[1] for c in r["curve"]], [c[2] for c in r["curve"]], marker=".", label=label,
                     color=colour[r["contestant"]])  # fmt: skip
    ax2.axhline(result["target_accuracy"], color="black", linestyle=":", label="target")
    ax2.set_xlabel("wall seconds since the first step")
    ax2.set_ylabel("test accuracy")
    ax2.set_title(f"Accuracy against wall time at {worst:g} ms (round 1)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
