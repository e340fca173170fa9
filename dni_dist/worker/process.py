"""Start one worker as an OS process: threads, signals, the parent's death, logging, run id.

run_worker(cfg, WorkerConfig(block=0, blocks=2, run_id="r", out="runs/x"))   # -> exit code
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import uuid

import torch

from dni_dist.config import TrainConfig
from dni_dist.rendezvous import Rendezvous
from dni_dist.worker.loop import Worker
from dni_dist.worker.options import WorkerConfig


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the launcher dies, so no worker is ever orphaned."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the launcher's stop still works
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def run_worker(cfg: TrainConfig, wcfg: WorkerConfig, rdv: Rendezvous | None = None) -> int:
    _die_with_parent()
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    worker = Worker(cfg, wcfg)
    signal.signal(signal.SIGINT, worker.request_stop)
    signal.signal(signal.SIGTERM, worker.request_stop)
    gen = wcfg.generation  # after a gang restart, keys of earlier generations must not be seen
    secret = None if worker.run_keys is None else worker.run_keys.run_secret
    rdv = rdv or Rendezvous.from_env(run=wcfg.run_id if not gen else f"{wcfg.run_id}/restart{gen}", secret=secret)
    return worker.run(rdv)


def default_run_id() -> str:
    return os.environ.get("DNI_RUN_ID") or os.environ.get("TORCHELASTIC_RUN_ID") or uuid.uuid4().hex[:12]


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
