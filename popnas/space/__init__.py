"""Search space: operators, blocks, cells, expansion and canonical cell forms. Pure data, no TensorFlow."""

from popnas.space.cell import Block, Cell, CellFormatError
from popnas.space.macro import connected_cells, reduction_flags
from popnas.space.operators import Operator, OperatorError, OperatorKind, parse_operator
from popnas.space.space import SearchSpace

__all__ = [
    "Block",
    "Cell",
    "CellFormatError",
    "Operator",
    "OperatorError",
    "OperatorKind",
    "SearchSpace",
    "connected_cells",
    "parse_operator",
    "reduction_flags",
]
