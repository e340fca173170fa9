"""Fixtures for multi-process tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Any

import pytest

from .helpers import children_of


@pytest.fixture
def reaper() -> Any:
    """Kills whatever a test registered, even if it failed halfway."""
    procs: list[subprocess.Popen[Any]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            for kid in children_of(p.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(kid, signal.SIGKILL)
            p.kill()
            p.wait()
