"""Helpers for multi-process tests: run dni-launch, find child processes, check ports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

LAUNCH = [sys.executable, "-c", "from dni_dist.cli import launch_main; launch_main()"]
SMALL = ["--dataset", "mnist", "--set", "data.subset=true", "--gpus", "cpu", "--no-live"]


def run_launch(args: list[str], out: Path, timeout: float = 240) -> dict[str, Any]:
    proc = subprocess.run([*LAUNCH, *SMALL, *args, "--out", str(out)], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"dni-launch failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return json.loads((out / "summary.json").read_text())  # type: ignore[no-any-return]


def start_launch(args: list[str], out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*LAUNCH, *SMALL, *args, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def children_of(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            kids.append(int(entry))
    return kids


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0
