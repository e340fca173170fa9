"""`python -m dni_dist.worker ...` (and `torchrun -m dni_dist.worker ...`) run `dni-worker`."""

from dni_dist.cli import worker_main

worker_main()
