"""The ``Executor`` protocol: how the search loop hands candidates to trainers and gets results back."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from popnas.results import CandidateResult
from popnas.space import Cell


@dataclass(frozen=True)
class Candidate:
    """A cell to train, with the key its result is stored under."""

    key: str
    cell: Cell


class Executor(Protocol):
    """Trains candidates somewhere (local processes, Kubernetes Jobs) and returns their results.

    Failures come back as results with a failure status and a reason; no training error escapes
    ``as_completed``. Executors bound their own concurrency and retries.
    """

    device_class: str
    """Device class of the trainers (``"cpu"``, ``"gpu-nvidia-h200"``): part of every candidate key."""

    def submit(self, candidates: Sequence[Candidate]) -> None:
        """Queue candidates for training."""
        ...

    def as_completed(self) -> Iterator[CandidateResult]:
        """Yield one result per submitted candidate, in completion order, until none is pending."""
        ...

    def close(self) -> None:
        """Stop the trainers, abandoning candidates still running."""
        ...
