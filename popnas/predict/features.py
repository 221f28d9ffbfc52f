"""Time features of a cell and the dynamic reindex that weighs its operators.

The time predictor takes nine numbers per cell in place of the cell encoding. They describe the
cell's DAG and how costly its operators were measured to be on the training device. This module
computes them, and ``popnas.predict.time`` fits and predicts.

The feature DAG has one vertex per lookback input the cell reads and, for every block, one vertex
per operator and one for the join (the addition). Edges run from an input (a lookback, or the
join of an earlier block) to the operator that reads it, and from both operators to their join.
An operator vertex weighs its reindex score; lookback and join vertices weigh 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import networkx as nx
import numpy as np
import pandas as pd

from popnas.space import Cell, connected_cells, reduction_flags

TIME_FEATURES: tuple[str, ...] = (
    "blocks",
    "cells",
    "op_score",
    "multiple_lookbacks",
    "first_dag_level_op_score_fraction",
    "block_dependencies",
    "dag_depth",
    "concat_inputs",
    "heaviest_dag_path_op_score_fraction",
)
"""Column names of the time features, in column order."""

EMPTY_CELL_FEATURES: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
"""The row of the empty cell: no blocks, no cells stacked, and both fractions 1 (as in POPNASv3).

A fraction of a zero op score is 0/0, so it is defined as 1: the whole (empty) score is on the
first level and on the heaviest path. Non-empty cells whose op score is 0 use the same rule.
"""


def dynamic_reindex(*, empty_time: float, operator_times: Mapping[str, float]) -> dict[str, float]:
    """Map each operator to its time cost relative to the costliest operator, in [0, 1].

    ``operator_times[o]`` is the training time (seconds) of the one-block cell ``(-1, o, -1, o)``
    and ``empty_time`` that of the empty cell, which measures what every network shares (input
    pipeline, head). The score is ``(t_o - empty_time) / (max_o' t_o' - empty_time)``.

    Degenerate cases, where timing noise beats the operator's cost:

    - an operator measured faster than the empty cell (a negative difference) scores 0, where
      POPNASv3 took the absolute difference and so scored such an operator as costly;
    - when no operator is measured slower than the empty cell, no operator is known to cost more
      than another, so every operator scores 1 and the op score counts operators.

    Raises ValueError when a time is negative, NaN or infinite. Returns an empty map for no operators.
    """
    _check_time("empty_time", empty_time)
    for operator, seconds in operator_times.items():
        _check_time(f"operator_times[{operator!r}]", seconds)

    costs = {operator: max(float(seconds) - float(empty_time), 0.0) for operator, seconds in operator_times.items()}
    if not costs:
        return {}
    max_cost = max(costs.values())
    if max_cost <= 0.0:
        return dict.fromkeys(costs, 1.0)
    return {operator: cost / max_cost for operator, cost in costs.items()}


def _check_time(name: str, seconds: float) -> None:
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{name} must be a finite, non-negative training time in seconds, received {seconds!r}")


def time_features(cell: Cell, *, reindex: Mapping[str, float], motifs: int, normal_cells_per_motif: int) -> np.ndarray:
    """Compute the nine time features of ``cell`` as a float64 array in the order of TIME_FEATURES.

    ``reindex`` maps every operator of the cell to its score from ``dynamic_reindex``. ``motifs``
    and ``normal_cells_per_motif`` give the macro-architecture, from which ``cells`` counts the
    cells that have a path to the network output. The empty cell gets EMPTY_CELL_FEATURES.

    - blocks: number of blocks.
    - cells: number of cells actually stacked (a cell that never reads lookback -1 skips cells).
    - op_score: sum of the reindex scores of the cell's 2·blocks operators.
    - multiple_lookbacks: 1 when the cell reads more than one distinct lookback, else 0.
    - first_dag_level_op_score_fraction: share of op_score from operators that read a lookback.
    - block_dependencies: number of block inputs that are earlier blocks (a block reading the
      same earlier block twice counts 2).
    - dag_depth: number of blocks on the longest chain of blocks, ``1 + diameter // 2``, where the
      diameter is the longest path, in edges, of the DAG without its lookback vertices. A chain of
      k blocks has a diameter of 2k - 1 (operator, join, operator, ..., join), so its depth is k.
      POPNASv3 took igraph's diameter, the longest shortest path, which is smaller when a later
      block also reads an early block directly (2.9% of 20,000 uniformly random cells of 1 to 6
      blocks).
    - concat_inputs: number of blocks no other block reads (concatenated into the cell output)
      when there are at least 2 of them, else 0, because a single output needs no concatenation.
    - heaviest_dag_path_op_score_fraction: over the operators of the output blocks, the largest
      score sum of an operator and all its ancestors, as a share of op_score. With depth 1 every
      operator has no ancestors, so this is the largest single score.

    Raises ValueError when an operator of the cell has no reindex score.
    """
    return time_feature_frame(
        [cell], reindex=reindex, motifs=motifs, normal_cells_per_motif=normal_cells_per_motif
    ).to_numpy()[0]


def time_feature_frame(
    cells: Sequence[Cell], *, reindex: Mapping[str, float], motifs: int, normal_cells_per_motif: int
) -> pd.DataFrame:
    """Compute the time features of ``cells``: one row per cell, columns TIME_FEATURES, float64.

    See ``time_features`` for the definition of each column and the empty cell's row. Raises
    ValueError when an operator has no reindex score, ``motifs`` is below 1 or
    ``normal_cells_per_motif`` is negative.
    """
    if motifs < 1 or normal_cells_per_motif < 0:
        raise ValueError(
            f"expected motifs >= 1 and normal_cells_per_motif >= 0, received motifs={motifs}, "
            f"normal_cells_per_motif={normal_cells_per_motif}"
        )
    total_cells = len(reduction_flags(motifs=motifs, normal_cells_per_motif=normal_cells_per_motif))
    # The stacked cells depend only on the set of lookbacks read, and there are few such sets.
    stacked_by_lookbacks: dict[frozenset[int], int] = {}
    rows = []
    for cell in cells:
        if cell.is_empty:
            rows.append(EMPTY_CELL_FEATURES)
            continue
        stacked = stacked_by_lookbacks.get(cell.lookbacks)
        if stacked is None:
            stacked = len(connected_cells(cell, total=total_cells))
            stacked_by_lookbacks[cell.lookbacks] = stacked
        rows.append(_features(cell, reindex=reindex, stacked_cells=stacked))
    values = np.array(rows, dtype=np.float64).reshape(len(rows), len(TIME_FEATURES))
    return pd.DataFrame(values, columns=list(TIME_FEATURES))


def _features(cell: Cell, *, reindex: Mapping[str, float], stacked_cells: int) -> tuple[float, ...]:
    operands = [operand for block in cell.blocks for operand in block.operands]
    scores = [_score(reindex, operator, cell) for _, operator in operands]
    op_score = sum(scores)
    lookback_score = sum(score for (input_index, _), score in zip(operands, scores, strict=True) if input_index < 0)
    block_dependencies = sum(1 for input_index, _ in operands if input_index >= 0)
    output_blocks = cell.unused_blocks

    # Blocks only read earlier blocks, so one pass in block order is a topological traversal of the
    # feature DAG. It replaces graph algorithms on feature_dag(), which took about 0.8 ms a cell
    # (20 times longer) on the 2-core development machine.
    chain_lengths: list[int] = []  # blocks on the longest chain of blocks ending at each block
    join_ancestors: list[int] = []  # bit 2*block+side set for each operator that reaches each join
    operator_ancestors: list[int] = []  # the same for each operator, the operator itself included
    for block_index, block in enumerate(cell.blocks):
        chain_length = 1
        reaching = 0
        for side, (input_index, _) in enumerate(block.operands):
            ancestors = 1 << (2 * block_index + side)
            if input_index >= 0:
                ancestors |= join_ancestors[input_index]
                chain_length = max(chain_length, chain_lengths[input_index] + 1)
            operator_ancestors.append(ancestors)
            reaching |= ancestors
        chain_lengths.append(chain_length)
        join_ancestors.append(reaching)

    heaviest_score = max(
        _masked_sum(scores, operator_ancestors[2 * block + side]) for block in output_blocks for side in (0, 1)
    )

    return (
        len(cell),
        stacked_cells,
        op_score,
        1 if len(cell.lookbacks) > 1 else 0,
        _fraction(lookback_score, op_score),
        block_dependencies,
        max(chain_lengths),
        len(output_blocks) if len(output_blocks) > 1 else 0,
        _fraction(heaviest_score, op_score),
    )


def _score(reindex: Mapping[str, float], operator: str, cell: Cell) -> float:
    try:
        return float(reindex[operator])
    except KeyError:
        raise ValueError(
            f"operator {operator!r} of cell {cell} has no reindex score. The reindex covers {sorted(reindex)}"
        ) from None


def _masked_sum(scores: Sequence[float], mask: int) -> float:
    total = 0.0
    while mask:
        lowest = mask & -mask
        total += scores[lowest.bit_length() - 1]
        mask ^= lowest
    return total


def _fraction(part: float, whole: float) -> float:
    # The op score is 0 for the empty cell and for cells of zero-score operators (see EMPTY_CELL_FEATURES).
    return part / whole if whole > 0 else 1.0


def feature_dag(cell: Cell, *, reindex: Mapping[str, float]) -> nx.DiGraph:
    """Build the feature DAG of ``cell``, the definition that the time features summarise.

    Vertices are ``("lookback", input)``, ``("operator", block, side)`` with side 0 or 1, and
    ``("join", block)``. Each has a ``"score"`` attribute: the reindex score for operators, else 0.
    ``dag_depth`` is ``1 + diameter // 2`` with the diameter taken as the longest path, in edges,
    of this graph without its lookback vertices. The heaviest path fraction sums the scores of
    ``networkx.ancestors`` of an output block's operator, plus the operator itself. The features
    are computed by an equivalent pass over the blocks, which the tests check against this graph.

    Raises ValueError when an operator of the cell has no reindex score.
    """
    graph = nx.DiGraph()
    for block_index, block in enumerate(cell.blocks):
        join = ("join", block_index)
        graph.add_node(join, score=0.0)
        for side, (input_index, operator) in enumerate(block.operands):
            vertex = ("operator", block_index, side)
            if input_index < 0:
                source: tuple[str, int] = ("lookback", input_index)
                graph.add_node(source, score=0.0)
            else:
                source = ("join", input_index)
            graph.add_node(vertex, score=_score(reindex, operator, cell))
            graph.add_edge(source, vertex)
            graph.add_edge(vertex, join)
    return graph
