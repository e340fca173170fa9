"""Figure 4: deep BatchNorm MLPs (ReLU and tanh), backprop vs one SG in the middle of the stack vs
an SG between every pair of layers, over several seeds, on full-size data.

    dni-repro mnist-depth --out runs/repro                  # depths 6, 20, 50; 3 seeds (about an hour on 2 cores)
    dni-repro mnist-depth --out runs/repro --quick          # depths 3 and 6, 64 units, 2 seeds
    dni-repro mnist-depth --out runs/repro --distributed    # plus seed 0's ReLU SG nets on 4 ZeroMQ processes

Trains on Fashion-MNIST (60k/10k, always) and on full MNIST when its IDX files are present in
~/.cache/dni_dist/mnist (the bundled subset is not used here). Two trainings run at a time, one
thread each; every run is seeded from its own seed, so the order does not matter. Writes
- mnist_depth_final.csv: dataset,depth,activation,regime,seed,test_accuracy (one row per net);
- mnist_depth.csv: the training loss of every net, averaged over each CURVE_EVERY steps;
- mnist_depth_sg.csv: per SG interface, its loss and its cosine to the true (received) gradient,
  averaged over each tenth of training: why a chain of SGs does or does not train;
- mnist_depth.json (mean and spread per cell), mnist_depth.png (curves), mnist_depth_sg.png.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import multiprocessing
import os
import statistics
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from dni_dist.config import TrainConfig
from dni_dist.data import Dataset, load_dataset, one_hot
from dni_dist.data.mnist import DEFAULT_DIR, FILES, find_idx
from dni_dist.experiments.base import ExperimentOptions, ExperimentResult
from dni_dist.experiments.mnist_depth_report import figures, markdown
from dni_dist.experiments.true_gradient import TrueGradientProbe
from dni_dist.recipes import config_from_dict

REGIMES = {"backprop": ("none", "bp"), "sg_middle": ("middle", "sg"), "sg_every": ("every", "sg")}
"""Regime (the `regime` column) -> (split.placement, credit.method)."""
ACTIVATIONS = ("relu", "tanh")
CURVE_EVERY = 10  # steps per point of mnist_depth.csv
SG_WINDOWS = 10  # mnist_depth_sg.csv: windows over training
PROBE_BATCH = 512  # training examples the true gradient is measured on


@dataclass(frozen=True)
class Budget:
    """How one depth is trained (every regime, activation and seed alike). The network's Adam
    learning rate, decayed to 0 with a cosine schedule over `steps`, is chosen per depth and
    regime from `lrs` on a validation split (choose_lrs)."""

    steps: int
    lrs: tuple[float, ...]
    sg_lr: float  # Adam for the SG modules, constant
    width: int


LRS = (1e-3, 3e-4, 1e-4)
BUDGETS = {6: Budget(1000, LRS, 1e-3, 256), 20: Budget(1000, LRS, 1e-3, 256), 50: Budget(1000, LRS, 1e-3, 256)}
QUICK_BUDGETS = {3: Budget(150, (1e-3, 1e-4), 1e-3, 64), 6: Budget(150, (1e-3, 1e-4), 1e-3, 64)}
BATCH = 128
VALIDATION = 10_000  # the last training images: the learning rates are chosen on them, never on the test set


@dataclass(frozen=True)
class Net:
    """One trained network: a row of mnist_depth_final.csv."""

    dataset: str
    depth: int
    activation: str
    regime: str
    seed: int


@dataclass(frozen=True)
class Job:
    """A network to train, at a learning rate; `validation`: train on all but the last VALIDATION
    training images and report accuracy on those (the learning-rate sweep)."""

    net: Net
    lr: float
    validation: bool = False


def budgets(quick: bool) -> dict[int, Budget]:
    return QUICK_BUDGETS if quick else BUDGETS


def full_mnist_present() -> bool:
    return all(find_idx(Path(DEFAULT_DIR).expanduser(), stem) is not None for stem in FILES.values())


def datasets(quick: bool) -> list[str]:
    return ["fashion-mnist"] + (["mnist"] if full_mnist_present() and not quick else [])


def nets(opts: ExperimentOptions) -> list[Net]:
    seeds = range(opts.seed, opts.seed + (2 if opts.quick else 3))
    return [
        Net(d, depth, act, regime, seed)
        for d in datasets(opts.quick)
        for depth in budgets(opts.quick)
        for act in ACTIVATIONS
        for regime in REGIMES
        for seed in seeds
    ]


def config(net: Net, lr: float, quick: bool) -> TrainConfig:
    b = budgets(quick)[net.depth]
    placement, method = REGIMES[net.regime]
    return config_from_dict(
        {
            "model": {
                "kind": "mlp",
                "depth": net.depth,
                "width": b.width,
                "batch_norm": True,
                "activation": net.activation,
            },
            "split": {"placement": placement},
            "credit": {"method": method},
            "synthetic": {"lr": b.sg_lr},
            "optim": {"name": "adam", "lr": lr, "schedule": "cosine"},
            "data": {"name": net.dataset, "batch_size": BATCH, "download": False},
            "run": {"steps": b.steps, "seed": net.seed, "threads": 1},
        }
    )


@cache
def _dataset(name: str, validation: bool) -> Dataset:
    ds = load_dataset(name, download=False)
    if not validation:
        return ds
    n = ds.x_train.shape[0] - VALIDATION
    x, labels = ds.x_train, ds.labels_train
    return dataclasses.replace(ds, x_train=x[:n], labels_train=labels[:n], x_test=x[n:], labels_test=labels[n:])


def _windows(values: list[tuple[int, float, float]], steps: int) -> Iterator[tuple[int, int, float, float]]:
    size = max(1, steps // SG_WINDOWS)
    for lo in range(0, steps, size):
        chunk = [(loss, cos) for step, loss, cos in values if lo <= step < lo + size]
        if chunk:
            yield lo, lo + size, statistics.fmean(c[0] for c in chunk), statistics.fmean(c[1] for c in chunk)


def train_net(job: Job, quick: bool) -> dict[str, Any]:
    """Train one network in this process (one thread); its accuracy, curve and SG record: per SG
    interface and tenth of training, its loss and cosine to its (bootstrapped) target, and its
    cosine to the true gradient at the end of that tenth (dni_dist.experiments.true_gradient)."""
    from dni_dist.trainer import train

    net = job.net
    cfg = config(net, job.lr, quick)
    ds = _dataset(net.dataset, job.validation)
    pick = torch.randperm(ds.x_train.shape[0], generator=torch.Generator().manual_seed(net.seed))[:PROBE_BATCH]
    size = max(1, cfg.run.steps // SG_WINDOWS)
    probe = TrueGradientProbe(ds.x_train[pick], one_hot(ds.labels_train[pick], ds.num_classes), every=size)
    r = train(cfg, dataset=ds, monitor=probe)
    loss = r.train_loss
    curve = [statistics.fmean(loss[i : i + CURVE_EVERY]) for i in range(0, len(loss), CURVE_EVERY)]
    true = {(step // size) * size: cos for step, cos in probe.cosines.items()}
    sg = []
    for i, (stage, cut) in enumerate(zip([s for s in r.stages if s.sg is not None], r.topology.cuts)):
        records = [(x.step, x.loss, x.cosine) for x in stage.stats.sg]
        if stage.stats.sg.total > len(records):
            raise RuntimeError(f"{net}: the SG record kept {len(records)} of {stage.stats.sg.total} steps")
        sg += [[cut, lo, hi, sl, sc, true[lo][i]] for lo, hi, sl, sc in _windows(records, cfg.run.steps)]
    return {
        "test_accuracy": r.test_accuracy,
        "train_loss": statistics.fmean(loss[-CURVE_EVERY:]),
        "curve": curve,
        "sg": sg,
        "seconds": r.wall_seconds,
    }


def train_distributed(job: Job, quick: bool) -> float:
    """The same network on 4 free-running ZeroMQ worker processes: its test accuracy."""
    from dni_dist.launcher import LaunchOptions, launch

    cfg = config(job.net, job.lr, quick)
    stages = len(cfg.split.resolve(cfg.model.num_layers)) + 1
    with tempfile.TemporaryDirectory() as tmp:
        s = launch(cfg, LaunchOptions(blocks=min(4, stages), out=Path(tmp), live=False))
    return float(s["final"]["test_accuracy"])


def _train_all(todo: list[Job], quick: bool, what: str) -> list[dict[str, Any]]:
    console = Console(stderr=True)
    workers = max(1, min(2, os.cpu_count() or 1))
    results: list[dict[str, Any]] = []
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for i, res in enumerate(pool.map(train_net, todo, [quick] * len(todo))):
            job = todo[i]
            net = job.net
            results.append({**asdict(net), "lr": job.lr, **res})
            console.print(
                f"  {what} [{i + 1}/{len(todo)}] {net.dataset} depth {net.depth} {net.activation} {net.regime} "
                f"lr {job.lr:g} seed {net.seed}: accuracy {res['test_accuracy']:.4f} ({res['seconds']:.0f}s)"
            )
    return results


LrKey = tuple[str, int, str, str]  # dataset, depth, activation, regime


def choose_lrs(opts: ExperimentOptions) -> tuple[dict[LrKey, float], list[dict[str, Any]]]:
    """Per (dataset, depth, activation, regime): the learning rate of the budget's `lrs` with the
    best accuracy on the validation split (seed opts.seed); and every sweep run."""
    todo = [
        Job(Net(d, depth, act, regime, opts.seed), lr, validation=True)
        for d in datasets(opts.quick)
        for depth, b in budgets(opts.quick).items()
        for act in ACTIVATIONS
        for regime in REGIMES
        for lr in b.lrs
    ]
    sweep = _train_all(todo, opts.quick, "learning-rate sweep")
    best: dict[LrKey, dict[str, Any]] = {}
    for e in sweep:
        k = (e["dataset"], e["depth"], e["activation"], e["regime"])
        if k not in best or e["test_accuracy"] > best[k]["test_accuracy"]:
            best[k] = e
    for e in sweep:
        e["chosen"] = best[(e["dataset"], e["depth"], e["activation"], e["regime"])] is e
    return {k: float(e["lr"]) for k, e in best.items()}, sweep


def run(opts: ExperimentOptions) -> ExperimentResult:
    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    lrs, sweep = choose_lrs(opts)
    jobs = [Job(net, lrs[(net.dataset, net.depth, net.activation, net.regime)]) for net in nets(opts)]
    results = _train_all(jobs, opts.quick, "train")
    if opts.distributed:  # seed opts.seed's ReLU SG nets again, as 4 processes
        for job, e in zip(jobs, results):
            if e["regime"] != "backprop" and e["activation"] == "relu" and e["seed"] == opts.seed:
                e["distributed_test_accuracy"] = train_distributed(job, opts.quick)
    write_files(out, results, sweep)
    key = summarize(results, sweep, opts)
    (out / "mnist_depth.json").write_text(json.dumps(key, indent=2))
    figures(out, results, key)
    files = [
        "mnist_depth_final.csv",
        "mnist_depth.csv",
        "mnist_depth_sg.csv",
        "mnist_depth_lr.csv",
        "mnist_depth.json",
        "mnist_depth.png",
        "mnist_depth_sg.png",
    ]
    return ExperimentResult("mnist-depth", markdown(key), files, key)


def write_files(out: Path, results: list[dict[str, Any]], sweep: list[dict[str, Any]]) -> None:
    cols = list(Net.__annotations__)
    with open(out / "mnist_depth_lr.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "depth", "activation", "regime", "seed", "lr", "validation_accuracy", "chosen"])
        w.writerows([*(e[c] for c in cols), e["lr"], f"{e['test_accuracy']:.4f}", int(e["chosen"])] for e in sweep)
    with open(out / "mnist_depth_final.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*cols, "test_accuracy"])
        w.writerows([*(e[c] for c in cols), f"{e['test_accuracy']:.4f}"] for e in results)
    with open(out / "mnist_depth.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*cols, "step", "train_loss"])
        w.writerows(
            [*(e[c] for c in cols), i * CURVE_EVERY, f"{v:.5f}"] for e in results for i, v in enumerate(e["curve"])
        )
    with open(out / "mnist_depth_sg.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*cols, "layer", "step_from", "step_to", "sg_loss", "sg_cosine", "true_cosine"])
        w.writerows(
            [*(e[c] for c in cols), cut, lo, hi, f"{sl:.6g}", f"{sc:.4f}", f"{tc:.4f}"]
            for e in results
            for cut, lo, hi, sl, sc, tc in e["sg"]
        )


def summarize(results: list[dict[str, Any]], sweep: list[dict[str, Any]], opts: ExperimentOptions) -> dict[str, Any]:
    """mnist_depth.json: per dataset/depth/activation/regime, the accuracies of every seed, their
    mean and spread (sample standard deviation, and min-max), plus the recipe of each depth."""
    cells: dict[str, Any] = {}
    for e in results:
        k = f"{e['dataset']}/{e['depth']}/{e['activation']}/{e['regime']}"
        c = cells.setdefault(
            k,
            {
                "dataset": e["dataset"],
                "depth": e["depth"],
                "activation": e["activation"],
                "regime": e["regime"],
                "seeds": [],
                "test_accuracy": [],
                "train_loss": [],
            },
        )
        c["seeds"].append(e["seed"])
        c["test_accuracy"].append(e["test_accuracy"])
        c["train_loss"].append(e["train_loss"])
        if "distributed_test_accuracy" in e:
            c["distributed_test_accuracy"] = e["distributed_test_accuracy"]
    for c in cells.values():
        acc = c["test_accuracy"]
        c["mean"], c["min"], c["max"] = statistics.fmean(acc), min(acc), max(acc)
        c["std"] = statistics.stdev(acc) if len(acc) > 1 else 0.0
    sg: dict[str, list[list[list[float]]]] = {}
    for e in results:
        if e["regime"] == "sg_every":
            k = f"{e['dataset']}/{e['depth']}/{e['activation']}"
            sg.setdefault(k, []).append(e["sg"])
    return {
        "quick": opts.quick,
        "budgets": {str(d): asdict(b) for d, b in budgets(opts.quick).items()},
        "validation_images": VALIDATION,
        "lr_chosen": {
            f"{e['dataset']}/{e['depth']}/{e['activation']}/{e['regime']}": {
                "lr": e["lr"],
                "validation_accuracy": e["test_accuracy"],
            }
            for e in sweep
            if e["chosen"]
        },
        "batch_size": BATCH,
        "cells": cells,
        "sg_every": {k: sg_profile(v) for k, v in sg.items()},
    }


def sg_profile(runs: list[list[list[float]]]) -> dict[str, Any]:
    """SG everywhere, over seeds: per layer, the mean cosine to the (bootstrapped) target and to the
    true gradient in the first and the last tenth of training, and the mean SG loss in the last."""
    by_layer: dict[int, dict[str, list[float]]] = {}
    for rows in runs:
        first, last = min(r[1] for r in rows), max(r[1] for r in rows)
        for cut, lo, _hi, loss, cos, true in rows:
            d = by_layer.setdefault(int(cut), {k: [] for k in ("first", "last", "true_first", "true_last", "loss")})
            if lo == first:
                d["first"].append(cos)
                d["true_first"].append(true)
            if lo == last:
                d["last"].append(cos)
                d["true_last"].append(true)
                d["loss"].append(loss)
    return {
        str(layer): {
            "cosine_first": statistics.fmean(d["first"]),
            "cosine_last": statistics.fmean(d["last"]),
            "true_cosine_first": statistics.fmean(d["true_first"]),
            "true_cosine_last": statistics.fmean(d["true_last"]),
            "sg_loss_last": statistics.fmean(d["loss"]),
        }
        for layer, d in sorted(by_layer.items())
    }
