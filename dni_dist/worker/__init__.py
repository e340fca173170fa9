"""The worker: one OS process hosting one block (consecutive stages) of the network.

    dni-worker --block 1 --blocks 4 --config-json runs/x/config.json --out runs/x   # as dni-launch runs it
    torchrun --nproc-per-node 2 -m dni_dist.worker --recipe launch/demo.toml --out runs/t  # block = RANK

Modules: `options` (process and placement facts), `edges` (sockets, control channel,
rendezvous), `admission` (credit window, overflow, target timeout, lockstep gate: no sockets),
`telemetry` (metrics and progress reports), `loop` (the Worker), `process` (starting one).
"""

from dni_dist.worker.loop import Worker
from dni_dist.worker.options import WorkerConfig, torchrun_restarts
from dni_dist.worker.process import default_run_id, run_worker, setup_logging

__all__ = ["Worker", "WorkerConfig", "default_run_id", "run_worker", "setup_logging", "torchrun_restarts"]
