"""The search: SMBO loop, Pareto and exploration fronts, state, executors, and the Python entry point.

``run_search`` and the loop import TensorFlow through the predictors, so they load on first use;
``popnas.search.pareto`` and ``popnas.search.exploration`` stay importable without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from popnas.search.api import SearchOutcome, run_search
    from popnas.search.executor import Candidate, Executor
    from popnas.search.local import LocalExecutor
    from popnas.search.loop import SearchLoop

_EXPORTS = {
    "Candidate": "popnas.search.executor",
    "Executor": "popnas.search.executor",
    "LocalExecutor": "popnas.search.local",
    "SearchLoop": "popnas.search.loop",
    "SearchOutcome": "popnas.search.api",
    "run_search": "popnas.search.api",
}

__all__ = ["Candidate", "Executor", "LocalExecutor", "SearchLoop", "SearchOutcome", "run_search"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'popnas.search' has no attribute {name!r}")
