"""Blocks and cells: the encoding of a candidate architecture and its canonical form.

A block is ``(input_1, operator_1, input_2, operator_2)``: it applies each operator to its input
and adds the two results. Inputs ``-1, -2, ...`` are the outputs of the previous cells (lookbacks)
and ``0, 1, ...`` are earlier blocks of the same cell. A cell is an ordered list of blocks; its
output is the concatenation of the blocks that no other block uses.

Two cells are isomorphic when one becomes the other by renumbering blocks (keeping references to
earlier blocks only) and swapping the operands of blocks. ``Cell.canonical()`` returns the same
cell for every member of such a class, and ``Cell.key`` hashes it, so isomorphic cells share
storage keys, caches and Job names.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple


class CellFormatError(ValueError):
    """A cell string that does not parse as a list of blocks."""


class Block(NamedTuple):
    """Two operands joined by addition: ``operator_1(input_1) + operator_2(input_2)``."""

    input_1: int
    operator_1: str
    input_2: int
    operator_2: str

    @property
    def operands(self) -> tuple[tuple[int, str], tuple[int, str]]:
        return (self.input_1, self.operator_1), (self.input_2, self.operator_2)


@dataclass(frozen=True)
class Cell:
    """An ordered list of blocks; ``Cell(())`` is the empty cell (the input goes straight to the head)."""

    blocks: tuple[Block, ...] = ()

    def __post_init__(self) -> None:
        blocks = tuple(Block(*block) for block in self.blocks)
        for position, block in enumerate(blocks):
            for input_index in (block.input_1, block.input_2):
                if input_index >= position:
                    raise CellFormatError(
                        f"block {position} {tuple(block)} uses input {input_index}, but a block may only use "
                        f"lookbacks (negative inputs) and earlier blocks 0..{position - 1}"
                    )
        object.__setattr__(self, "blocks", blocks)

    @classmethod
    def parse(cls, text: str) -> Cell:
        """Parse the text form, for example ``"[(-2, '7 conv', -1, 'gru'), (0, 'identity', -1, '2 maxpool')]"``."""
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError) as error:
            raise CellFormatError(
                f"cell {text!r} is not a list of blocks such as \"[(-2, '7 conv', -1, 'gru')]\""
            ) from error
        if isinstance(value, tuple) and len(value) == 4 and not isinstance(value[0], tuple):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise CellFormatError(f"cell {text!r} must be a list of blocks, received {type(value).__name__}")
        blocks = []
        for item in value:
            if (
                not isinstance(item, (list, tuple))
                or len(item) != 4
                or not all(isinstance(item[i], int) and not isinstance(item[i], bool) for i in (0, 2))
                or not all(isinstance(item[i], str) for i in (1, 3))
            ):
                raise CellFormatError(
                    f"cell {text!r}: block {item!r} must be (input, 'operator', input, 'operator')"
                )
            blocks.append(Block(*item))
        return cls(tuple(blocks))

    def __str__(self) -> str:
        return "[" + ", ".join(repr(tuple(block)) for block in self.blocks) + "]"

    def __len__(self) -> int:
        return len(self.blocks)

    def __iter__(self) -> Iterator[Block]:
        return iter(self.blocks)

    @property
    def is_empty(self) -> bool:
        return not self.blocks

    @cached_property
    def unused_blocks(self) -> tuple[int, ...]:
        """Indices of the blocks that no other block uses: the ones concatenated into the cell output."""
        used = {index for block in self.blocks for index in (block.input_1, block.input_2) if index >= 0}
        return tuple(index for index in range(len(self.blocks)) if index not in used)

    @cached_property
    def lookbacks(self) -> frozenset[int]:
        """The lookback inputs the cell reads, as negative numbers."""
        return frozenset(index for block in self.blocks for index in (block.input_1, block.input_2) if index < 0)

    def extended(self, block: Block) -> Cell:
        """Return this cell with ``block`` appended."""
        return Cell((*self.blocks, block))

    def canonical(self) -> Cell:
        """Return the canonical member of this cell's isomorphism class.

        Blocks are sorted by depth and by the expression they compute (operands in sorted order,
        earlier blocks expanded recursively). Blocks computing the same expression are
        interchangeable only as a group, so the orderings within such groups are tried and the
        smallest encoding wins; groups are rare and small, so this stays cheap.
        """
        return _canonical_cells(self)

    @cached_property
    def key(self) -> str:
        """A short stable hash of the canonical form: the cell's identity in storage and names."""
        return hashlib.sha256(str(self.canonical()).encode()).hexdigest()[:16]

    def is_isomorphic(self, other: Cell) -> bool:
        return self.canonical() == other.canonical()


def _expressions(cell: Cell) -> tuple[list[int], list[str]]:
    """Return each block's depth and its expression string, with earlier blocks expanded."""
    depths: list[int] = []
    expressions: list[str] = []
    for block in cell.blocks:
        operands = []
        depth = 1
        for input_index, operator in block.operands:
            if input_index < 0:
                source = f"L{-input_index}"
            else:
                source = f"[{expressions[input_index]}]"
                depth = max(depth, depths[input_index] + 1)
            operands.append(f"{operator}@{source}")
        depths.append(depth)
        expressions.append(",".join(sorted(operands)))
    return depths, expressions


def _encode(cell: Cell, order: Sequence[int]) -> tuple[Block, ...]:
    renumber = {old: new for new, old in enumerate(order)}
    blocks = []
    for old in order:
        operands = sorted(
            (renumber[index] if index >= 0 else index, operator) for index, operator in cell.blocks[old].operands
        )
        blocks.append(Block(operands[0][0], operands[0][1], operands[1][0], operands[1][1]))
    return tuple(blocks)


def _orderings(groups: Sequence[Sequence[int]]) -> Iterable[tuple[int, ...]]:
    for permuted in itertools.product(*(itertools.permutations(group) for group in groups)):
        yield tuple(index for group in permuted for index in group)


def _canonical_cells(cell: Cell) -> Cell:
    if cell.is_empty:
        return cell
    depths, expressions = _expressions(cell)
    ranked = sorted(range(len(cell.blocks)), key=lambda index: (depths[index], expressions[index]))
    groups = [
        list(group) for _, group in itertools.groupby(ranked, key=lambda index: (depths[index], expressions[index]))
    ]
    best = min(_encode(cell, order) for order in _orderings(groups))
    return Cell(best)
