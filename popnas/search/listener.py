"""Callbacks through which the search loop reports progress (the CLI prints them; tests record them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from popnas.results import CandidateResult
from popnas.search.state import StepRecord


class SearchListener(Protocol):
    def phase(self, step: int, text: str) -> None:
        """Report that a long phase of a step starts, such as fitting the predictors."""
        ...

    def step_started(self, step: int, *, max_step: int, planned: int, reused: int, to_train: int) -> None:
        """Report that training of a step starts: ``planned`` candidates, ``reused`` of them taken from the store."""
        ...

    def candidate_finished(self, step: int, result: CandidateResult) -> None:
        """Report that a candidate of ``step`` finished training, successfully or not."""
        ...

    def step_finished(self, step: int, record: StepRecord, results: Sequence[CandidateResult]) -> None:
        """Report that every candidate of ``step`` has a result."""
        ...
