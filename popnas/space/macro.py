"""Macro-architecture: how many cells a network stacks, which are reductions and which are built.

A network has ``motifs`` motifs; each has ``normal_cells_per_motif`` normal cells followed by a
reduction cell, except the last motif, which has no reduction. Cells are numbered 0..total-1 in
the order data flows through them.
"""

from __future__ import annotations

from popnas.space.cell import Cell


def reduction_flags(*, motifs: int, normal_cells_per_motif: int) -> list[bool]:
    """Return, for each stacked cell in order, whether it is a reduction cell (stride 2, filters doubled)."""
    flags = []
    for motif in range(motifs):
        flags.extend([False] * normal_cells_per_motif)
        if motif < motifs - 1:
            flags.append(True)
    return flags


def connected_cells(cell: Cell, *, total: int) -> list[int]:
    """Return the indices of the stacked cells that have a path to the network output, in order.

    The last cell feeds the head; cell ``j`` reads cell ``j + lookback`` for each lookback it uses
    (the model input when that index is negative). A cell that only reads ``-2`` thus builds every
    other cell. The empty cell builds none.
    """
    if cell.is_empty or total <= 0:
        return []
    needed = {total - 1}
    for index in range(total - 1, -1, -1):
        if index in needed:
            needed.update(index + lookback for lookback in cell.lookbacks if index + lookback >= 0)
    return sorted(needed)
