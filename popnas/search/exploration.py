"""The exploration step: extra candidates that use operators and inputs the Pareto front neglects.

Predictors trained on few results can wrongly discourage an operator or input; the exploration
front keeps some evidence flowing about them. The rules follow POPNASv3, with one fix: both
operators and both inputs of a block are scored (the original code scored the first operator
twice and never the second).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from popnas.search.pareto import dominates
from popnas.space import Block, Cell

UNDER_USE_FACTOR = 5
"""A value is under-used when the front uses it less than total / (UNDER_USE_FACTOR · set size) times."""
FULL_THRESHOLD = 8
"""Score a cell's new block needs when both the operator and the input exploration sets are non-empty."""
PARTIAL_THRESHOLD = 4
"""Score needed when only one of the two exploration sets is non-empty."""

T = TypeVar("T")


@dataclass(frozen=True)
class ExplorationSets:
    """Operators and inputs used too little in the front, with the usage counts they came from."""

    operators: frozenset[str]
    inputs: frozenset[int]
    operator_counts: Counter[str]
    input_counts: Counter[int]

    @property
    def empty(self) -> bool:
        return not self.operators and not self.inputs


def exploration_sets(front: Sequence[Cell], *, operators: Sequence[str], inputs: Sequence[int]) -> ExplorationSets:
    """Count operator and input usage over every block of the front cells and keep the rare values."""
    operator_counts: Counter[str] = Counter({operator: 0 for operator in operators})
    input_counts: Counter[int] = Counter({input_index: 0 for input_index in inputs})
    for cell in front:
        _count(cell, operator_counts, input_counts)
    rare_operators = _rare(operator_counts)
    rare_inputs = _rare(input_counts)
    return ExplorationSets(frozenset(rare_operators), frozenset(rare_inputs), operator_counts, input_counts)


def _rare(counts: Counter[T]) -> set[T]:
    total = sum(counts.values())
    if total == 0:
        return set()
    limit = total / (UNDER_USE_FACTOR * len(counts))
    return {value for value, count in counts.items() if count < limit}


def _count(cell: Cell, operator_counts: Counter[str], input_counts: Counter[int]) -> None:
    for block in cell.blocks:
        for input_index, operator in block.operands:
            if operator in operator_counts:
                operator_counts[operator] += 1
            if input_index in input_counts:
                input_counts[input_index] += 1


def block_score(block: Block, sets: ExplorationSets, operator_counts: Counter[str], input_counts: Counter[int]) -> int:
    """Score how much a block explores: per element, +1 when rare, +2 when used at most as often as the mean.

    A further +1 goes to a block with a rare value of the kind (operators or inputs) that the
    exploration front has covered less so far, as measured by ``operator_counts`` and ``input_counts``.
    """
    operator_mean = np.mean(list(operator_counts.values())) if operator_counts else 0.0
    input_mean = np.mean(list(input_counts.values())) if input_counts else 0.0
    score = 0
    rare_operator = rare_input = False
    for input_index, operator in block.operands:
        if operator in sets.operators:
            score += 1
            rare_operator = True
        if operator_counts.get(operator, 0) <= operator_mean:
            score += 2
        if input_index in sets.inputs:
            score += 1
            rare_input = True
        if input_counts.get(input_index, 0) <= input_mean:
            score += 2
    explored_operators = sum(operator_counts[value] - sets.operator_counts[value] for value in sets.operators)
    explored_inputs = sum(input_counts[value] - sets.input_counts[value] for value in sets.inputs)
    if sets.operators and sets.inputs:
        prefer_operators = explored_operators <= explored_inputs
        if (rare_operator and prefer_operators) or (rare_input and not prefer_operators):
            score += 1
    return score


def exploration_front(
    cells: Sequence[Cell],
    objectives: np.ndarray,
    *,
    sets: ExplorationSets,
    excluded: set[str],
    limit: int,
) -> list[int]:
    """Pick up to ``limit`` exploration candidates; return their indices into ``cells``.

    ``cells`` must be sorted by predicted accuracy, best first, with ``objectives`` the matching
    rows of minimized objectives. ``excluded`` contains the canonical keys already chosen (the Pareto
    front). A candidate qualifies when its last block scores at least the threshold; after the
    first, a candidate must also not be dominated by any chosen exploration candidate, and usage
    counts are updated with each choice so that later picks explore what is still rare.
    """
    if limit <= 0 or sets.empty:
        return []
    threshold = FULL_THRESHOLD if sets.operators and sets.inputs else PARTIAL_THRESHOLD
    operator_counts = Counter(sets.operator_counts)
    input_counts = Counter(sets.input_counts)
    chosen: list[int] = []
    chosen_keys = set(excluded)
    for index, cell in enumerate(cells):
        if len(chosen) >= limit:
            break
        if cell.is_empty or cell.key in chosen_keys:
            continue
        if block_score(cell.blocks[-1], sets, operator_counts, input_counts) < threshold:
            continue
        if any(dominates(objectives[member], objectives[index]) for member in chosen):
            continue
        chosen.append(index)
        chosen_keys.add(cell.key)
        _count(cell, operator_counts, input_counts)
    return chosen
