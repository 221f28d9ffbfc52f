"""The search space: operators, allowed inputs, block generation and cell expansion."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from popnas.space.cell import Block, Cell
from popnas.space.operators import Operator, parse_operator


@dataclass(frozen=True)
class SearchSpace:
    """Operators, the maximum number of blocks per cell and the lookback depth.

    ``operators`` are operator strings, parsed for ``dims`` (2 for images, 1 for series). They are
    stored in canonical text, so ``"3X3 conv"`` and ``"3x3 conv"`` are the same operator.
    """

    operators: tuple[str, ...]
    max_blocks: int
    lookback: int
    dims: int
    parsed: tuple[Operator, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.dims not in (1, 2):
            raise ValueError(f"dims must be 1 (series) or 2 (images), received dims={self.dims}")
        if not self.operators:
            raise ValueError("operators must contain at least one operator, received an empty list")
        parsed = tuple(parse_operator(text, dims=self.dims) for text in self.operators)
        texts = tuple(operator.text for operator in parsed)
        if len(set(texts)) != len(texts):
            raise ValueError(f"operators contain duplicates after normalization: {list(texts)}")
        if self.max_blocks < 1 or self.lookback < 1:
            raise ValueError(
                f"max_blocks and lookback must be at least 1, received max_blocks={self.max_blocks}, "
                f"lookback={self.lookback}"
            )
        object.__setattr__(self, "operators", texts)
        object.__setattr__(self, "parsed", parsed)

    @classmethod
    def create(cls, operators: Sequence[str], *, max_blocks: int, lookback: int, dims: int) -> SearchSpace:
        return cls(tuple(operators), max_blocks=max_blocks, lookback=lookback, dims=dims)

    def operator_index(self, operator: str) -> int:
        return self.operators.index(operator)

    def inputs_for_position(self, position: int) -> tuple[int, ...]:
        """Inputs a block at ``position`` (0-based) may use: every lookback, then every earlier block."""
        return (*range(-self.lookback, 0), *range(position))

    def blocks_for_position(self, position: int) -> list[Block]:
        """Return every block allowed at ``position``, without the mirrored twins of symmetric blocks.

        A block and the same block with its operands swapped compute the same sum, so only
        ``input_1 <= input_2`` is generated, and for equal inputs only ``operator_1 <= operator_2``
        in the order of ``operators``. With I inputs and O operators that gives (I²O² + IO) / 2 blocks.
        """
        inputs = self.inputs_for_position(position)
        count = len(self.operators)
        blocks = []
        for first, input_1 in enumerate(inputs):
            for input_2 in inputs[first:]:
                for op_1 in range(count):
                    for op_2 in range(op_1 if input_1 == input_2 else 0, count):
                        blocks.append(Block(input_1, self.operators[op_1], input_2, self.operators[op_2]))
        return blocks

    def one_block_cells(self) -> list[Cell]:
        """Return every cell of one block: the bootstrap of the search."""
        return [Cell((block,)) for block in self.blocks_for_position(0)]

    def expand(self, cell: Cell) -> list[Cell]:
        """Return every cell obtained by appending one allowed block to ``cell`` (isomorphic twins included)."""
        if len(cell) >= self.max_blocks:
            return []
        return [cell.extended(block) for block in self.blocks_for_position(len(cell))]

    def check_cell(self, cell: Cell) -> None:
        """Raise ValueError when ``cell`` uses an operator, input or size outside this space."""
        if len(cell) > self.max_blocks:
            raise ValueError(f"cell {cell} has {len(cell)} blocks, more than max_blocks={self.max_blocks}")
        for position, block in enumerate(cell.blocks):
            allowed = self.inputs_for_position(position)
            for input_index, operator in block.operands:
                if input_index not in allowed:
                    raise ValueError(f"cell {cell}: input {input_index} of block {position} is not in {list(allowed)}")
                if operator not in self.operators:
                    raise ValueError(
                        f"cell {cell}: operator {operator!r} is not in the search space {list(self.operators)}"
                    )

    def encode(self, cells: Sequence[Cell]) -> tuple[np.ndarray, np.ndarray]:
        """Encode cells as integer arrays of shape (cells, max_blocks, 2): inputs and operators.

        Value 0 is padding for missing blocks. Input ``i`` becomes ``i + lookback + 1`` (so lookback
        ``-lookback`` is 1) and operator ``k`` of ``operators`` becomes ``k + 1``. Raises ValueError,
        as ``check_cell`` does, for a cell outside this space, whose codes would collide with padding
        or overflow the arrays.
        """
        for cell in cells:
            self.check_cell(cell)
        inputs = np.zeros((len(cells), self.max_blocks, 2), dtype=np.int32)
        operators = np.zeros((len(cells), self.max_blocks, 2), dtype=np.int32)
        index = {operator: k + 1 for k, operator in enumerate(self.operators)}
        for row, cell in enumerate(cells):
            for position, block in enumerate(cell.blocks):
                inputs[row, position] = (block.input_1 + self.lookback + 1, block.input_2 + self.lookback + 1)
                operators[row, position] = (index[block.operator_1], index[block.operator_2])
        return inputs, operators

    @property
    def input_vocabulary(self) -> int:
        """Number of distinct input codes of ``encode`` including padding."""
        return self.lookback + self.max_blocks

    @property
    def operator_vocabulary(self) -> int:
        """Number of distinct operator codes of ``encode`` including padding."""
        return len(self.operators) + 1
