"""Faults under dni-launch: a block killed (block 0, the hardest to rejoin) or exiting restarts
alone and the run finishes; a stopped block is declared hung and restarted; a partitioned edge
heals; --resume refuses a missing block file and a changed model, naming them."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from dni_dist import checkpoint, manifest

from .helpers import LAUNCH, SMALL, children_of, start_launch

TINY = ["--method", "sg", "--width", "32", "--batch-size", "32", "--threads", "1", "--checkpoint-every", "50"]


def run_with_pids(args: list[str], out: Path, reaper: list) -> tuple[dict, dict[int, int], str]:  # type: ignore[type-arg]
    """Run dni-launch; the workers' pids at the start (from /proc), the summary and the output."""
    proc = start_launch(args, out)
    reaper.append(proc)
    pids: dict[int, int] = {}
    deadline = time.monotonic() + 60
    while len(pids) < int(args[args.index("--blocks") + 1]) and time.monotonic() < deadline:
        for pid in children_of(proc.pid):
            argv = Path(f"/proc/{pid}/cmdline").read_text().split("\x00")
            if "--block" in argv:
                pids.setdefault(int(argv[argv.index("--block") + 1]), pid)
        time.sleep(0.1)
    try:
        output, _ = proc.communicate(timeout=200)  # under pytest's 300 s: what went wrong gets printed
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        logs = "\n".join(f"--- {p.name}:\n{p.read_text()[-3000:]}" for p in sorted((out / "logs").glob("*.log")))
        pytest.fail(f"dni-launch still running after 200 s:\n{output[-4000:]}\n{logs}")
    assert proc.returncode == 0, output[-4000:]
    return json.loads((out / "summary.json").read_text()), pids, output


@pytest.mark.slow
@pytest.mark.parametrize(("block", "kind", "cause"), [(0, "kill", "killed"), (2, "exit", "exited")])
def test_a_dead_block_restarts_alone_and_the_run_finishes(
    block: int,
    kind: str,
    cause: str,
    tmp_path: Path,
    reaper: list,  # type: ignore[type-arg]
) -> None:
    args = ["--blocks", "3", *TINY, "--steps", "300", "--inject-fault", f"block={block},step=120,kind={kind}"]
    summary, pids, _ = run_with_pids(args, tmp_path, reaper)
    assert summary["status"] == "finished"
    (restart,) = summary["restarts"]
    assert restart["block"] == block and restart["cause"] == cause and restart["old_pid"] == pids[block]
    ends = {b["block"]: b["pid"] for b in summary["blocks"]}
    assert ends[block] == restart["new_pid"] != pids[block]
    assert all(ends[b] == pids[b] for b in range(3) if b != block), "only the dead block got a new process"
    assert summary["blocks"][block]["attempt"] == 1 and summary["final"]["checkpoint_step"] == 299
    man = manifest.latest(tmp_path)
    assert man is not None and man.step == 299 and all(man.path_of(k).is_file() for k in range(3))
    assert summary["final"]["test_accuracy"] > 0.5  # chance is 0.1


@pytest.mark.slow
def test_a_stopped_block_is_declared_hung_within_the_peer_timeout_and_restarted(
    tmp_path: Path,
    reaper: list,  # type: ignore[type-arg]
) -> None:
    args = ["--blocks", "3", *TINY, "--steps", "300", "--peer-timeout", "5",
            "--inject-fault", "block=1,step=5,kind=hang"]  # before its second heartbeat  # fmt: skip
    summary, _, output = run_with_pids(args, tmp_path, reaper)
    assert summary["status"] == "finished"
    assert [(r["block"], r["cause"]) for r in summary["restarts"]] == [(1, "hung")]
    silent = float(re.search(r"block 1 is hung: no heartbeat for ([\d.]+)s", output).group(1))  # type: ignore[union-attr]
    assert 5 <= silent < 6.5


@pytest.mark.slow
def test_a_partitioned_edge_heals_and_the_lag_shows_it(tmp_path: Path, reaper: list) -> None:  # type: ignore[type-arg]
    args = ["--blocks", "3", *TINY, "--steps", "300", "--inject-fault", "block=1,step=100,kind=partition,seconds=4"]
    summary, _, _ = run_with_pids(args, tmp_path, reaper)
    assert summary["status"] == "finished" and summary["restarts"] == []
    assert summary["blocks"][0]["lag_seconds"]["max"] >= 3.5  # block 0's targets waited out the partition
    assert summary["blocks"][2]["lag_seconds"]["max"] == 0  # the last block has no interface


def test_resume_refuses_a_missing_block_file_and_a_changed_width(tmp_path: Path) -> None:
    base = ["--blocks", "2", *TINY, "--steps", "100", "--out", str(tmp_path)]
    first = subprocess.run([*LAUNCH, *SMALL, *base], capture_output=True, text=True, timeout=240)
    assert first.returncode == 0, first.stderr[-3000:]
    man = manifest.latest(tmp_path)
    assert man is not None and man.step == 99 and [s for s, _ in checkpoint.generations(tmp_path)] == [49, 99]
    wider = subprocess.run([*LAUNCH, *SMALL, *base, "--resume", "--steps", "200", "--width", "64"],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert wider.returncode == 2 and "model.width: checkpoint 32, now 64" in wider.stdout + wider.stderr
    gone = man.path_of(1)
    gone.unlink()
    log_before = (tmp_path / "logs" / "block0.log").read_text()
    missing = subprocess.run([*LAUNCH, *SMALL, *base, "--resume", "--steps", "200"], capture_output=True, text=True,
                             timeout=120)  # fmt: skip
    squeezed = "".join((missing.stdout + missing.stderr).split())  # rich wraps long lines anywhere
    assert missing.returncode == 2 and "".join(f"{gone} is missing".split()) in squeezed, missing.stdout
    assert (tmp_path / "logs" / "block0.log").read_text() == log_before, "a worker started"
