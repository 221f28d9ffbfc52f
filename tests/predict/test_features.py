"""Time features and dynamic reindex: hand-computed cells, degenerate times, and a networkx reference."""

import math

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from popnas.predict.features import (
    EMPTY_CELL_FEATURES,
    TIME_FEATURES,
    dynamic_reindex,
    feature_dag,
    time_feature_frame,
    time_features,
)
from popnas.space import Block, Cell

A, B, C = "a", "b", "c"
"""Placeholder operator names; time features only look operators up in the reindex."""
REINDEX = {A: 1.0, B: 0.5, C: 0.25}
MOTIFS = 3
NORMAL_CELLS = 2
"""Three motifs of two normal cells: 8 stacked cells (two of them reductions)."""

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None)


def cell_of(*blocks: tuple[int, str, int, str]) -> Cell:
    return Cell(tuple(Block(*block) for block in blocks))


def features_of(cell: Cell, *, motifs: int = MOTIFS, normal_cells_per_motif: int = NORMAL_CELLS) -> dict[str, float]:
    values = time_features(cell, reindex=REINDEX, motifs=motifs, normal_cells_per_motif=normal_cells_per_motif)
    return dict(zip(TIME_FEATURES, values.tolist(), strict=True))


# Dynamic reindex --------------------------------------------------------------------------------


def test_reindex_formula():
    scores = dynamic_reindex(empty_time=10.0, operator_times={A: 30.0, B: 20.0, C: 10.0})

    assert scores == {A: 1.0, B: 0.5, C: 0.0}


def test_reindex_faster_than_empty_scores_zero():
    scores = dynamic_reindex(empty_time=10.0, operator_times={A: 30.0, B: 8.0})

    assert scores[A] == 1.0
    assert scores[B] == 0.0


def test_reindex_all_at_or_below_empty_scores_one():
    below = dynamic_reindex(empty_time=10.0, operator_times={A: 9.0, B: 7.5})
    equal = dynamic_reindex(empty_time=10.0, operator_times={A: 10.0, B: 10.0})

    assert below == {A: 1.0, B: 1.0}
    assert equal == {A: 1.0, B: 1.0}


def test_reindex_no_operators_is_empty():
    assert dynamic_reindex(empty_time=10.0, operator_times={}) == {}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0])
def test_reindex_rejects_invalid_operator_time(bad: float):
    with pytest.raises(ValueError, match="operator_times\\['b'\\]"):
        dynamic_reindex(empty_time=10.0, operator_times={A: 12.0, B: bad})


@pytest.mark.parametrize("bad", [math.nan, -math.inf, -0.5])
def test_reindex_rejects_invalid_empty_time(bad: float):
    with pytest.raises(ValueError, match="empty_time"):
        dynamic_reindex(empty_time=bad, operator_times={A: 12.0})


@PROPERTY_SETTINGS
@given(
    empty_time=st.floats(0, 1e4),
    times=st.dictionaries(st.sampled_from([A, B, C, "d", "e"]), st.floats(0, 1e4), min_size=1),
)
def test_reindex_scores_finite_in_unit_range(empty_time: float, times: dict[str, float]):
    scores = dynamic_reindex(empty_time=empty_time, operator_times=times)

    assert scores.keys() == times.keys()
    assert all(math.isfinite(score) and 0.0 <= score <= 1.0 for score in scores.values())
    assert max(scores.values()) == 1.0


# Hand-computed features -------------------------------------------------------------------------


def test_features_one_block():
    features = features_of(cell_of((-1, A, -1, B)))

    assert features == {
        "blocks": 1,
        "cells": 8,
        "op_score": 1.5,
        "multiple_lookbacks": 0,
        "first_dag_level_op_score_fraction": 1.0,
        "block_dependencies": 0,
        "dag_depth": 1,
        "concat_inputs": 0,
        "heaviest_dag_path_op_score_fraction": pytest.approx(1.0 / 1.5),
    }


def test_features_chained_blocks():
    # Block 2 reads block 1 twice and block 1 reads block 0: one chain of three blocks.
    features = features_of(cell_of((-1, A, -2, B), (0, C, -1, A), (1, B, 1, C)))

    assert features["blocks"] == 3
    assert features["cells"] == 8
    assert features["op_score"] == pytest.approx(3.5)
    assert features["multiple_lookbacks"] == 1
    # Operators reading a lookback: a and b of block 0, a of block 1.
    assert features["first_dag_level_op_score_fraction"] == pytest.approx(2.5 / 3.5)
    assert features["block_dependencies"] == 3
    assert features["dag_depth"] == 3
    assert features["concat_inputs"] == 0
    # b of block 2 with its ancestors: 0.5 + (0.25 + 1.0) + (1.0 + 0.5).
    assert features["heaviest_dag_path_op_score_fraction"] == pytest.approx(3.25 / 3.5)


def test_features_unused_blocks_concatenated():
    # Blocks 1 and 2 are read by no block, so the cell output concatenates them.
    features = features_of(cell_of((-1, A, -1, A), (-2, B, -2, B), (0, C, -1, C)))

    assert features["blocks"] == 3
    assert features["op_score"] == pytest.approx(3.5)
    assert features["multiple_lookbacks"] == 1
    assert features["first_dag_level_op_score_fraction"] == pytest.approx(3.25 / 3.5)
    assert features["block_dependencies"] == 1
    assert features["dag_depth"] == 2
    assert features["concat_inputs"] == 2
    # c of block 2 reading block 0: 0.25 + (1.0 + 1.0).
    assert features["heaviest_dag_path_op_score_fraction"] == pytest.approx(2.25 / 3.5)


def test_features_single_lookback_is_not_multiple():
    features = features_of(cell_of((-1, A, -1, B), (0, C, -1, C)))

    assert features["multiple_lookbacks"] == 0


def test_features_multiple_lookbacks():
    features = features_of(cell_of((-1, A, -1, B), (0, C, -2, C)))

    assert features["multiple_lookbacks"] == 1


def test_features_only_second_lookback_skips_cells():
    cell = cell_of((-2, A, -2, B))

    # Of 8 cells, the last one and every second one before it reach the output: 7, 5, 3, 1.
    assert features_of(cell)["cells"] == 4
    # Two motifs of one normal cell stack 3 cells; cells 2 and 0 reach the output.
    assert features_of(cell, motifs=2, normal_cells_per_motif=1)["cells"] == 2


def test_features_depth_counts_longest_chain():
    # Block 4 ends the chain 0 -> 1 -> 2 -> 3 -> 4. Block 3 also reads block 0 directly, and that
    # shortcut shortens the shortest paths, so POPNASv3's igraph diameter (the longest shortest
    # path) gives a depth of 4 here, while the longest path gives 5.
    cell = cell_of(
        (-1, A, -1, A),
        (0, B, 0, B),
        (-1, A, 1, A),
        (0, B, 2, A),
        (-2, A, 3, B),
        (-2, A, 3, B),
    )

    assert features_of(cell)["dag_depth"] == 5


def test_features_empty_cell_row():
    features = time_features(Cell(()), reindex=REINDEX, motifs=MOTIFS, normal_cells_per_motif=NORMAL_CELLS)

    assert features.tolist() == list(EMPTY_CELL_FEATURES)
    assert features.dtype == np.float64
    assert dict(zip(TIME_FEATURES, EMPTY_CELL_FEATURES, strict=True)) == {
        "blocks": 0,
        "cells": 0,
        "op_score": 0,
        "multiple_lookbacks": 0,
        "first_dag_level_op_score_fraction": 1,
        "block_dependencies": 0,
        "dag_depth": 0,
        "concat_inputs": 0,
        "heaviest_dag_path_op_score_fraction": 1,
    }


def test_features_zero_op_score_fractions_are_one():
    features = time_features(
        cell_of((-1, A, -2, B), (0, A, -1, B)),
        reindex={A: 0.0, B: 0.0},
        motifs=MOTIFS,
        normal_cells_per_motif=NORMAL_CELLS,
    )
    named = dict(zip(TIME_FEATURES, features.tolist(), strict=True))

    assert named["op_score"] == 0.0
    assert named["first_dag_level_op_score_fraction"] == 1.0
    assert named["heaviest_dag_path_op_score_fraction"] == 1.0


def test_features_missing_operator_score_raises():
    with pytest.raises(ValueError, match=r"operator 'z' .* has no reindex score"):
        time_features(cell_of((-1, A, -1, "z")), reindex=REINDEX, motifs=MOTIFS, normal_cells_per_motif=NORMAL_CELLS)


@pytest.mark.parametrize(("motifs", "normal_cells_per_motif"), [(0, 2), (3, -1)])
def test_feature_frame_invalid_macro_raises(motifs: int, normal_cells_per_motif: int):
    with pytest.raises(ValueError, match="motifs >= 1"):
        time_feature_frame(
            [cell_of((-1, A, -1, B))], reindex=REINDEX, motifs=motifs, normal_cells_per_motif=normal_cells_per_motif
        )


def test_feature_frame_matches_single_rows():
    cells = [Cell(()), cell_of((-1, A, -1, B)), cell_of((-1, A, -2, B), (0, C, -1, A), (1, B, 1, C))]

    frame = time_feature_frame(cells, reindex=REINDEX, motifs=MOTIFS, normal_cells_per_motif=NORMAL_CELLS)

    assert list(frame.columns) == list(TIME_FEATURES)
    assert all(dtype == np.float64 for dtype in frame.dtypes)
    assert len(frame) == 3
    for row, cell in enumerate(cells):
        expected = time_features(cell, reindex=REINDEX, motifs=MOTIFS, normal_cells_per_motif=NORMAL_CELLS)
        np.testing.assert_array_equal(frame.iloc[row].to_numpy(), expected)


def test_feature_frame_of_no_cells():
    frame = time_feature_frame([], reindex=REINDEX, motifs=MOTIFS, normal_cells_per_motif=NORMAL_CELLS)

    assert list(frame.columns) == list(TIME_FEATURES)
    assert len(frame) == 0


def test_feature_dag_vertices_and_scores():
    graph = feature_dag(cell_of((-1, A, -2, B), (0, C, -1, A)), reindex=REINDEX)

    assert set(graph.nodes) == {
        ("lookback", -1),
        ("lookback", -2),
        ("operator", 0, 0),
        ("operator", 0, 1),
        ("join", 0),
        ("operator", 1, 0),
        ("operator", 1, 1),
        ("join", 1),
    }
    assert graph.has_edge(("join", 0), ("operator", 1, 0))
    assert graph.has_edge(("lookback", -1), ("operator", 1, 1))
    assert graph.nodes[("operator", 1, 0)]["score"] == 0.25
    assert graph.nodes[("join", 1)]["score"] == 0.0


# Reference: the features read off the networkx DAG ----------------------------------------------


@st.composite
def cells(draw: st.DrawFn) -> Cell:
    """A valid cell of 1 to 6 blocks over lookbacks -1, -2 and the operators of REINDEX."""
    count = draw(st.integers(1, 6))
    operators = st.sampled_from(sorted(REINDEX))
    blocks = []
    for position in range(count):
        inputs = st.integers(-2, position - 1)
        blocks.append(Block(draw(inputs), draw(operators), draw(inputs), draw(operators)))
    return Cell(tuple(blocks))


def reference_features(cell: Cell) -> dict[str, float]:
    """The DAG features computed with networkx graph algorithms on ``feature_dag``."""
    graph = feature_dag(cell, reindex=REINDEX)
    score = nx.get_node_attributes(graph, "score")
    operators = [vertex for vertex in graph if vertex[0] == "operator"]
    op_score = sum(score[vertex] for vertex in operators)
    first_level = sum(
        score[vertex] for vertex in operators if any(source[0] == "lookback" for source in graph.predecessors(vertex))
    )
    outputs = [vertex for vertex in graph if vertex[0] == "join" and graph.out_degree(vertex) == 0]
    heaviest = max(
        sum(score[member] for member in nx.ancestors(graph, operator) | {operator})
        for join in outputs
        for operator in graph.predecessors(join)
    )
    block_graph = graph.subgraph([vertex for vertex in graph if vertex[0] != "lookback"])
    return {
        "first_dag_level_op_score_fraction": first_level / op_score,
        "block_dependencies": sum(1 for source, _ in graph.edges if source[0] == "join"),
        "dag_depth": 1 + nx.dag_longest_path_length(block_graph) // 2,
        "concat_inputs": len(outputs) if len(outputs) > 1 else 0,
        "heaviest_dag_path_op_score_fraction": heaviest / op_score,
    }


@PROPERTY_SETTINGS
@given(cell=cells())
def test_features_match_networkx_reference(cell: Cell):
    features = features_of(cell)
    expected = reference_features(cell)

    for name, value in expected.items():
        assert features[name] == pytest.approx(value), name


@PROPERTY_SETTINGS
@given(cell=cells())
def test_features_equal_for_isomorphic_cells(cell: Cell):
    # Swapping the operands of every block keeps the cell isomorphic.
    swapped = Cell(tuple(Block(b.input_2, b.operator_2, b.input_1, b.operator_1) for b in cell.blocks))

    np.testing.assert_allclose(
        time_features(swapped, reindex=REINDEX, motifs=MOTIFS, normal_cells_per_motif=NORMAL_CELLS),
        time_features(cell, reindex=REINDEX, motifs=MOTIFS, normal_cells_per_motif=NORMAL_CELLS),
    )
    np.testing.assert_allclose(
        time_features(cell.canonical(), reindex=REINDEX, motifs=MOTIFS, normal_cells_per_motif=NORMAL_CELLS),
        time_features(cell, reindex=REINDEX, motifs=MOTIFS, normal_cells_per_motif=NORMAL_CELLS),
    )
