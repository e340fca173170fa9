"""`python -m dni_dist ...` runs the command line (dni_dist/cli.py)."""

from dni_dist.cli import app

app()
