"""Any model on the ZeroMQ runtime: a conv net from a file outside the package, trained as
4 processes, equals the in-process run bit for bit in lockstep; config errors stop the
launcher before any worker starts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from dni_dist import checkpoint, manifest

from .helpers import LAUNCH, SMALL, run_launch

FACTORY = '''
from torch import nn


def build(input_shape, num_classes):
    """Four stages: conv+BN+pool, conv+pool, conv, linear head."""
    c, h, w = input_shape
    return [
        nn.Sequential(nn.Conv2d(c, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.Flatten(), nn.Linear(6 * (h // 4) * (w // 4), num_classes)),
    ]
'''
TINY = ["--batch-size", "16", "--steps", "12", "--seed", "3", "--threads", "1", "--set", "synthetic.channels=4"]


def _assert_same_checkpoints(a: Path, b: Path, blocks: int) -> int:
    compared = 0
    ma, mb = manifest.latest(a), manifest.latest(b)
    assert ma is not None and mb is not None and ma.step == mb.step
    for k in range(blocks):
        sa, sb = (checkpoint.load(m.path_of(k))["stages"] for m in (ma, mb))
        for x, y in zip(sa, sb):
            for key in ("module", "sg"):
                assert (x[key] is None) == (y[key] is None)
                for name, value in (x[key] or {}).items():
                    assert torch.equal(value, y[key][name]), f"block {k} {key} {name}"
                    compared += 1
    return compared


@pytest.mark.parametrize(
    ("model", "method"),
    [("factory", "sg"), ("cnn", "fa")],
)
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_conv_model_lockstep_run_equals_in_process_run(model: str, method: str, tmp_path: Path) -> None:
    if model == "factory":
        path = tmp_path / "my_model.py"  # outside the package: only the config names it
        path.write_text(FACTORY)
        spec = ["--set", f"model.factory={path}:build"]
    else:
        spec = ["--model", "cnn", "--depth", "3", "--set", "model.channels=[4,6,6]", "--set", "model.pool=[1,2]"]
    args = ["--blocks", "4", "--method", method, *spec, *TINY]
    zmq = run_launch([*args, "--lockstep"], tmp_path / "zmq")
    inproc = run_launch([*args, "--backend", "inproc"], tmp_path / "inproc")
    assert zmq["backend"] == "zmq" and len(zmq["blocks"]) == 4 and zmq["steps"] == 12
    assert [b["stages"] for b in zmq["blocks"]] == [[0, 0], [1, 1], [2, 2], [3, 3]]
    sent = zmq["blocks"][0]["messages"]["activation_out"]
    assert sent["messages"] == 12 + 1 and sent["bytes"] > 12 * 16 * 4 * 14 * 14 * 4  # 4-D activations, then `end`
    assert _assert_same_checkpoints(tmp_path / "zmq", tmp_path / "inproc", 4) > 10
    assert zmq["final"]["test_accuracy"] == inproc["final"]["test_accuracy"]
    assert zmq["final"]["test_loss"] == inproc["final"]["test_loss"]


def test_a_method_that_cannot_apply_stops_the_launcher_with_the_field(tmp_path: Path) -> None:
    path = tmp_path / "rnn.py"
    path.write_text(
        "from torch import nn\n"
        "class Rows(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.rnn = nn.RNN(28, 8, batch_first=True)\n"
        "    def forward(self, x):\n"
        "        return self.rnn(x.flatten(1).view(-1, 28, 28))[0][:, -1]\n"
        "def build(num_classes):\n"
        "    return [nn.Identity(), Rows(), nn.Linear(8, num_classes)]\n"
    )
    cmd = [*LAUNCH, *SMALL, "--blocks", "3", "--method", "fa", "--set", f"model.factory={path}:build"]
    proc = subprocess.run([*cmd, "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    said = " ".join((proc.stdout + proc.stderr).split())  # rich wraps long lines
    assert proc.returncode == 2, said
    assert "credit.method: fa at interface 0" in said and "rnn (RNN)" in said, said
    assert not (tmp_path / "out" / "logs").exists()  # no worker was started
