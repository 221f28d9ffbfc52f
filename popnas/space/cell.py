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
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

_BLOCK_SEPARATOR = re.compile(r"\)\s*;\s*\(")
"""The ``;`` between two blocks in the original string form ``[(...);(...)]``. Operator strings never contain ``;``."""


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
        for position, block in enumerate(self.blocks):
            if len(block) != 4:
                raise CellFormatError(
                    f"block {position} {tuple(block)!r} must be (input, 'operator', input, 'operator')"
                )
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
        """Parse the text form, for example ``"[(-2, '7 conv', -1, 'gru'), (0, 'identity', -1, '2 maxpool')]"``.

        Blocks may also be separated by ``;`` as the POPNASv3 paper and its original code write them,
        and a single block may be given without the brackets.
        """
        try:
            value = ast.literal_eval(_BLOCK_SEPARATOR.sub("),(", text.strip()))
        # literal_eval raises TypeError for unhashable set members or dict keys, and MemoryError or
        # RecursionError for very long or deeply nested input. All of them mean malformed text.
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as error:
            raise CellFormatError(
                f"cell {text!r} is not a list of blocks such as \"[(-2, '7 conv', -1, 'gru')]\""
            ) from error
        if isinstance(value, tuple) and len(value) == 4 and isinstance(value[0], int):
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
                raise CellFormatError(f"cell {text!r}: block {item!r} must be (input, 'operator', input, 'operator')")
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

        Blocks are ranked by depth and by the expression they compute (operands in sorted order,
        earlier blocks expanded recursively), both of which isomorphisms preserve. Within each run of
        equal rank the blocks are ordered by their encoding, and the smallest whole encoding over
        the remaining choices wins. Only identical blocks (same inputs and operators) leave a choice,
        and pairs of them that an automorphism swaps are tried once.
        """
        return self._canonical_form

    @cached_property
    def _canonical_form(self) -> Cell:
        return Cell(_canonical_blocks(self))

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


def _renumbered(block: Block, renumber: Mapping[int, int]) -> Block:
    """Return ``block`` with its block inputs renumbered and its operands in sorted order."""
    operands = sorted((renumber[index] if index >= 0 else index, operator) for index, operator in block.operands)
    return Block(operands[0][0], operands[0][1], operands[1][0], operands[1][1])


def _encode(cell: Cell, order: Sequence[int]) -> tuple[Block, ...]:
    renumber = {old: new for new, old in enumerate(order)}
    return tuple(_renumbered(cell.blocks[old], renumber) for old in order)


def _swap_is_automorphism(cell: Cell, first: int, second: int) -> bool:
    """Check whether exchanging two identical blocks maps the cell onto itself.

    ``first`` and ``second`` must have the same inputs and operators, so only their consumers
    can distinguish them. The swap is an automorphism when every block reads them symmetrically.
    """
    swap = {first: second, second: first}
    for block in cell.blocks:
        swapped = sorted((swap.get(index, index), operator) for index, operator in block.operands)
        if swapped != sorted(block.operands):
            return False
    return True


def _distinct_permutations(labels: Sequence[int]) -> Iterator[tuple[int, ...]]:
    """Yield each distinct ordering of ``labels`` once, even when labels repeat."""
    if not labels:
        yield ()
        return
    for position, label in enumerate(labels):
        if label in labels[:position]:
            continue
        rest = [*labels[:position], *labels[position + 1 :]]
        for tail in _distinct_permutations(rest):
            yield (label, *tail)


def _arrangements(cell: Cell, members: Sequence[int], encoded: Mapping[int, Block]) -> Iterator[tuple[int, ...]]:
    """Yield the orderings of ``members`` (sorted by encoding) that can lead to the smallest encoding.

    Members with equal encodings are identical blocks, and their order matters only through their
    consumers. Members that an automorphism swaps give the same result in either order, so each
    class of them is arranged once.
    """
    per_run: list[list[tuple[int, ...]]] = []
    for _, run in itertools.groupby(members, key=encoded.__getitem__):
        classes: list[list[int]] = []
        for member in run:
            for swappable in classes:
                if _swap_is_automorphism(cell, swappable[0], member):
                    swappable.append(member)
                    break
            else:
                classes.append([member])
        labels = [label for label, swappable in enumerate(classes) for _ in swappable]
        orderings = []
        for permutation in _distinct_permutations(labels):
            unplaced = [iter(swappable) for swappable in classes]
            orderings.append(tuple(next(unplaced[label]) for label in permutation))
        per_run.append(orderings)
    for choice in itertools.product(*per_run):
        yield tuple(member for run in choice for member in run)


def _canonical_blocks(cell: Cell) -> tuple[Block, ...]:
    """Return the blocks of the canonical form: the smallest encoding over the admissible orders.

    Blocks are placed one rank (depth and expression) at a time. Every input of a block has a
    smaller depth, so it is numbered before the block's rank is placed, and each block's encoding
    is known at that point. The smallest encoding therefore lists each rank's blocks in sorted
    order, and only the partial orders that reach the smallest prefix are kept.
    """
    if cell.is_empty:
        return ()
    depths, expressions = _expressions(cell)

    def rank(index: int) -> tuple[int, str]:
        return depths[index], expressions[index]

    ranked = sorted(range(len(cell.blocks)), key=rank)
    orders: list[tuple[int, ...]] = [()]
    for _, group in itertools.groupby(ranked, key=rank):
        members = list(group)
        best: tuple[Block, ...] | None = None
        candidates: list[tuple[tuple[int, ...], list[int], dict[int, Block]]] = []
        for order in orders:
            renumber = {old: new for new, old in enumerate(order)}
            encoded = {member: _renumbered(cell.blocks[member], renumber) for member in members}
            by_encoding = sorted(members, key=encoded.__getitem__)
            segment = tuple(encoded[member] for member in by_encoding)
            if best is None or segment < best:
                best = segment
                candidates = []
            if segment == best:
                candidates.append((order, by_encoding, encoded))
        orders = [
            order + arrangement
            for order, by_encoding, encoded in candidates
            for arrangement in _arrangements(cell, by_encoding, encoded)
        ]
    return _encode(cell, orders[0])
