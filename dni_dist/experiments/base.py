"""What every experiment takes and returns.

    result = table2.run(ExperimentOptions(out=Path("runs/repro"), quick=True))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, kw_only=True)
class ExperimentOptions:
    out: Path
    quick: bool = False  # the reduced version the tests run (well under a minute on 2 cores)
    seed: int = 0
    distributed: bool = False  # also train on the real ZeroMQ runtime, where the experiment supports it


@dataclass
class ExperimentResult:
    name: str
    markdown: str  # a section of REPORT.md
    files: list[str] = field(default_factory=list)  # written, relative to the output directory
    key: dict[str, Any] = field(default_factory=dict)  # the headline numbers, also in <name>.json


Experiment = Callable[[ExperimentOptions], ExperimentResult]
