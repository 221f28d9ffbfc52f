"""A seeded toy objective for testing the search loop without training networks.

Accuracy and time are fixed functions of the cell, so the loop's own logic (planning, fronts,
resume, determinism) can be checked quickly. The integration tests cover real training.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from popnas.results import CandidateResult, ResultStatus
from popnas.search.executor import Candidate
from popnas.space import Cell
from popnas.spec import NASSearch, parse_manifest

OPERATOR_VALUE = {"identity": 0.02, "3 conv": 0.12, "2 maxpool": 0.05, "gru": 0.09}
OPERATOR_COST = {"identity": 0.1, "3 conv": 1.0, "2 maxpool": 0.3, "gru": 2.5}


def toy_search(**strategy: object) -> NASSearch:
    return parse_manifest(
        {
            "apiVersion": "popnas.io/v1alpha1",
            "kind": "NASSearch",
            "metadata": {"name": "toy"},
            "spec": {
                "task": "TimeSeriesClassification",
                "dataset": {"uri": "builtin:gunpoint"},
                "searchSpace": {"operators": list(OPERATOR_VALUE), "maxBlocks": 3, "lookback": 2},
                "strategy": {
                    "beamSize": 6,
                    "explorationBeamSize": 2,
                    "seed": 3,
                    "predictorFolds": 2,
                    "timePredictorSearchIterations": 2,
                    **strategy,
                },
                "training": {"epochs": 1},
            },
        }
    )


def toy_result(key: str, cell: Cell) -> CandidateResult:
    operators = [operator for block in cell.blocks for _, operator in block.operands]
    accuracy = min(0.99, 0.3 + sum(OPERATOR_VALUE[operator] for operator in operators) - 0.01 * len(cell.lookbacks))
    time = 1.0 + sum(OPERATOR_COST[operator] for operator in operators)
    return CandidateResult(
        key=key,
        cell=str(cell),
        status=ResultStatus.SUCCEEDED,
        accuracy=accuracy,
        training_time=time,
        inference_time=time / 100,
        params=100 * len(operators),
        flops=1000 * len(operators),
        epochs=1,
        device_class="toy",
    )


class ToyExecutor:
    """Returns toy results in submission order; can fail chosen cells or stop after some results."""

    device_class = "toy"

    def __init__(self, *, fail_operator: str | None = None, interrupt_after: int | None = None) -> None:
        self.fail_operator = fail_operator
        self.interrupt_after = interrupt_after
        self.queue: list[Candidate] = []
        self.trained: list[str] = []

    def submit(self, candidates: Sequence[Candidate]) -> None:
        self.queue.extend(candidates)

    def as_completed(self) -> Iterator[CandidateResult]:
        while self.queue:
            if self.interrupt_after is not None and len(self.trained) >= self.interrupt_after:
                raise KeyboardInterrupt
            candidate = self.queue.pop(0)
            self.trained.append(candidate.key)
            if self.fail_operator is not None and self.fail_operator in str(candidate.cell):
                yield CandidateResult.failure(
                    key=candidate.key, cell=str(candidate.cell), reason="RuntimeError: toy failure", device_class="toy"
                )
            else:
                yield toy_result(candidate.key, candidate.cell)

    def close(self) -> None:
        self.queue.clear()
