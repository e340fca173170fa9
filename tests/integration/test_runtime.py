"""The ZeroMQ runtime: transparency with the in-process schedule, measured locking (Table 1),
accuracy of free-running SG, failure handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dni_dist import checkpoint, manifest
from dni_dist.locking import TABLE1

from .helpers import run_launch

TINY = ["--width", "64", "--batch-size", "32", "--threads", "1"]


def _assert_same_checkpoints(a: Path, b: Path, blocks: int) -> None:
    ma, mb = manifest.latest(a), manifest.latest(b)
    assert ma is not None and mb is not None and ma.step == mb.step
    for k in range(blocks):
        sa, sb = (checkpoint.load(m.path_of(k))["stages"] for m in (ma, mb))
        for x, y in zip(sa, sb):
            for key in ("module", "sg"):
                if x[key] is None:
                    assert y[key] is None
                    continue
                for name in x[key]:
                    where = f"block {k} {name}"
                    torch.testing.assert_close(x[key][name], y[key][name], msg=lambda m, w=where: f"{w}: {m}")


CHEAP_SG = ["--set", "synthetic.rank=16", "--set", "synthetic.update_every=3"]  # the cheaper SG options


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sg", "bp", "sg-cheap"])
def test_four_process_lockstep_run_equals_in_process_run(method: str, tmp_path: Path) -> None:
    cheap = method == "sg-cheap"
    method = "sg" if cheap else method
    args = ["--blocks", "4", "--method", method, "--steps", "25", "--seed", "3", *TINY, *(CHEAP_SG if cheap else [])]
    zmq = run_launch([*args, "--lockstep"], tmp_path / "zmq")
    inproc = run_launch([*args, "--backend", "inproc"], tmp_path / "inproc")
    assert zmq["backend"] == "zmq" and len(zmq["blocks"]) == 4 and zmq["steps"] == 25
    _assert_same_checkpoints(tmp_path / "zmq", tmp_path / "inproc", 4)
    assert zmq["final"]["test_accuracy"] == pytest.approx(inproc["final"]["test_accuracy"])


@pytest.mark.slow
def test_free_running_locking_is_measured_as_in_table1(tmp_path: Path) -> None:
    """The two update-unlocked kinds, and that their blocks never wait for a gradient; every
    method's dependencies on 4 processes: test_repro_distributed."""
    rows = []
    for method, expected in ((m, TABLE1[m]) for m in ("sg", "dfa")):
        s = run_launch(["--blocks", "3", "--method", method, "--steps", "20", *TINY], tmp_path / method)
        upstream = s["blocks"][:-1]
        for b in upstream:
            assert sum(b["update_waits"].values()) == 20, b
            (interface,) = b["interfaces"]
            stage = interface["stage"]
            assert sum(interface["dependencies"].values()) == 20, interface
            # the newest updates with the ids of the messages they used: kind, step, producing stage
            used = {(kind, producer) for _, deps in interface["recent_updates"] for kind, _, producer in deps}
            below = {("activation", stage - 1)} if stage else set()
            if method == "sg":  # updated at once, on nothing but its own input
                assert used == below
                assert not {"gradient", "output_error"} & set(b["waits"]), b["waits"]
            else:  # dfa: the broadcast output error, never the neighbour's gradient
                assert used == below | {("output_error", 2)}
                assert "gradient" not in b["waits"]
        measured = {(i["update_locked"], i["backward_locked"], i["direct_error"]) for i in s["locking"]}
        assert measured == {expected}, (method, s["locking"])
        rows.append((method, *expected))
    print("\nmeasured Table 1 rows (3 processes, free-running)\nmethod   update-locked backward-locked direct-error")
    for m, u, b, d in rows:
        print(f"{m:8} {'yes' if u else 'no':13} {'yes' if b else 'no':15} {'yes' if d else 'no'}")


@pytest.mark.slow
def test_free_running_cdni_matches_in_process_backprop_on_mnist(tmp_path: Path) -> None:
    model = ["--blocks", "4", "--depth", "6", "--width", "256", "--steps", "600", "--seed", "0"]
    sg = run_launch([*model, "--method", "sg"], tmp_path / "sg")
    bp = run_launch([*model, "--method", "bp", "--backend", "inproc"], tmp_path / "bp")
    assert sg["config"]["synthetic"]["conditioning"] == "activation+label"
    assert max(b["lag_steps"]["max"] for b in sg["blocks"]) >= 1, "free-running run never ran ahead"
    assert bp["final"]["test_accuracy"] > 0.9
    assert sg["final"]["test_accuracy"] >= bp["final"]["test_accuracy"] - 0.02, (
        sg["final"]["test_accuracy"],
        bp["final"]["test_accuracy"],
    )


def test_summary_has_the_documented_keys(tmp_path: Path) -> None:
    s = run_launch(["--blocks", "2", "--method", "sg", "--steps", "10", *TINY], tmp_path)
    assert isinstance(s["wall_seconds"], float) and s["samples_per_second"] > 0
    assert 0 <= s["final"]["test_accuracy"] <= 1
    for b in s["blocks"]:
        assert isinstance(b["steps"], int) and set(b["lag_steps"]) >= {"p50", "p90", "max"}
        assert isinstance(b["waits"], dict)
    assert (tmp_path / "logs" / "block0.log").is_file() and (tmp_path / "logs" / "block1.log").is_file()
    assert json.loads((tmp_path / "config.json").read_text())["run"]["steps"] == 10
