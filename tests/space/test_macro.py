"""Macro-architecture: where reduction cells sit and which stacked cells reach the output."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from popnas.space import Cell, connected_cells, reduction_flags

ONLY_NEAREST = Cell.parse("[(-1, 'identity', -1, '3x3 conv')]")
ONLY_SECOND = Cell.parse("[(-2, 'identity', -2, '3x3 conv'), (0, 'identity', -2, '2x2 maxpool')]")
BOTH = Cell.parse("[(-2, 'identity', -1, '3x3 conv')]")


@pytest.mark.parametrize(
    ("motifs", "normal_cells", "expected"),
    [
        (3, 2, [False, False, True, False, False, True, False, False]),
        (2, 1, [False, True, False]),
        (1, 2, [False, False]),
        (2, 0, [True]),
        (3, 0, [True, True]),
        (1, 0, []),
        (4, 1, [False, True, False, True, False, True, False]),
    ],
)
def test_reduction_flags(motifs: int, normal_cells: int, expected: list[bool]) -> None:
    assert reduction_flags(motifs=motifs, normal_cells_per_motif=normal_cells) == expected


@settings(max_examples=100, deadline=None)
@given(motifs=st.integers(1, 6), normal_cells=st.integers(0, 5))
def test_reduction_flags_shape(motifs: int, normal_cells: int) -> None:
    flags = reduction_flags(motifs=motifs, normal_cells_per_motif=normal_cells)
    assert len(flags) == motifs * (normal_cells + 1) - 1
    assert sum(flags) == motifs - 1
    if normal_cells:
        assert not flags[-1]  # the last motif has no reduction cell


def test_connected_nearest_lookback_builds_all() -> None:
    assert connected_cells(ONLY_NEAREST, total=8) == list(range(8))


def test_connected_second_lookback_builds_every_other() -> None:
    assert connected_cells(ONLY_SECOND, total=8) == [1, 3, 5, 7]


def test_connected_second_lookback_odd_total() -> None:
    assert connected_cells(ONLY_SECOND, total=7) == [0, 2, 4, 6]


def test_connected_both_lookbacks_build_all() -> None:
    assert connected_cells(BOTH, total=8) == list(range(8))


def test_connected_empty_cell_builds_none() -> None:
    assert connected_cells(Cell(), total=8) == []


def test_connected_no_cells() -> None:
    assert connected_cells(ONLY_NEAREST, total=0) == []


def test_connected_single_cell() -> None:
    assert connected_cells(ONLY_SECOND, total=1) == [0]


def test_connected_third_lookback() -> None:
    cell = Cell.parse("[(-3, 'identity', -3, '3x3 conv')]")
    assert connected_cells(cell, total=8) == [1, 4, 7]


def test_connected_cells_end_at_output() -> None:
    for cell in (ONLY_NEAREST, ONLY_SECOND, BOTH):
        assert connected_cells(cell, total=5)[-1] == 4
