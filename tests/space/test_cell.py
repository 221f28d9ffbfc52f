"""Cells: text form, structure queries, and the canonical form checked against graph isomorphism."""

import hashlib
import time

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from popnas.space import Block, Cell, CellFormatError

LOOKBACK = 2
OPERATORS = ("identity", "3x3 conv", "2x2 maxpool")
A, B, C, D, E, F = "a", "b", "c", "d", "e", "f"
"""Placeholder operator names for hand-written cases; the cell layer does not parse operators."""

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)


def cell_of(*blocks: tuple[int, str, int, str]) -> Cell:
    return Cell(tuple(Block(*block) for block in blocks))


# Strategies -------------------------------------------------------------------------------------


@st.composite
def cells(draw: st.DrawFn, min_blocks: int = 1, max_blocks: int = 4) -> Cell:
    """A valid cell over lookbacks -1, -2 and two or three operators.

    A new block copies an earlier one about a third of the time, so identical blocks (the hard
    case for canonical forms) are common.
    """
    count = draw(st.integers(min_blocks, max_blocks))
    operators = st.sampled_from(OPERATORS[: draw(st.integers(2, 3))])
    blocks: list[Block] = []
    for position in range(count):
        if blocks and draw(st.integers(0, 2)) == 0:
            blocks.append(draw(st.sampled_from(blocks)))
            continue
        inputs = st.integers(-LOOKBACK, position - 1)
        blocks.append(Block(draw(inputs), draw(operators), draw(inputs), draw(operators)))
    return Cell(tuple(blocks))


@st.composite
def relabeled(draw: st.DrawFn, cell: Cell) -> Cell:
    """An isomorphic copy of ``cell``: blocks renumbered in a random topological order, operands randomly swapped."""
    order: list[int] = []
    remaining = set(range(len(cell)))
    while remaining:
        ready = sorted(
            index
            for index in remaining
            if all(source < 0 or source in order for source in (cell.blocks[index].input_1, cell.blocks[index].input_2))
        )
        chosen = draw(st.sampled_from(ready))
        order.append(chosen)
        remaining.remove(chosen)
    renumber = {old: new for new, old in enumerate(order)}

    blocks = []
    for old in order:
        operands = [
            (source if source < 0 else renumber[source], operator) for source, operator in cell.blocks[old].operands
        ]
        if draw(st.booleans()):
            operands.reverse()
        blocks.append(Block(operands[0][0], operands[0][1], operands[1][0], operands[1][1]))
    return Cell(tuple(blocks))


@st.composite
def mutated(draw: st.DrawFn, cell: Cell) -> Cell:
    """``cell`` with one operator or one input replaced (possibly by an equivalent one)."""
    blocks = list(cell.blocks)
    position = draw(st.integers(0, len(blocks) - 1))
    block = blocks[position]
    operator = st.sampled_from(OPERATORS)
    source = st.integers(-LOOKBACK, position - 1)
    field = draw(st.sampled_from(Block._fields))
    if field == "operator_1":
        blocks[position] = block._replace(operator_1=draw(operator))
    elif field == "operator_2":
        blocks[position] = block._replace(operator_2=draw(operator))
    elif field == "input_1":
        blocks[position] = block._replace(input_1=draw(source))
    else:
        blocks[position] = block._replace(input_2=draw(source))
    return Cell(tuple(blocks))


def rewired(cell: Cell) -> Cell | None:
    """Move one input of a block from a block to its identical twin, or None when no twin has a consumer.

    The blocks then compute the same multiset of expressions, but the graph changes whenever the
    two twins had different consumers.
    """
    blocks = list(cell.blocks)
    for later, block in enumerate(blocks):
        for earlier in range(later):
            if sorted(blocks[earlier].operands) != sorted(block.operands):
                continue
            swap = {earlier: later, later: earlier}
            for consumer in range(later + 1, len(blocks)):
                reader = blocks[consumer]
                if reader.input_1 in swap:
                    blocks[consumer] = reader._replace(input_1=swap[reader.input_1])
                    return Cell(tuple(blocks))
                if reader.input_2 in swap:
                    blocks[consumer] = reader._replace(input_2=swap[reader.input_2])
                    return Cell(tuple(blocks))
    return None


@st.composite
def cell_pairs(draw: st.DrawFn) -> tuple[Cell, Cell]:
    """Two cells, isomorphic about a third of the time and differing in one detail otherwise."""
    first = draw(cells())
    mode = draw(st.sampled_from(["relabel", "mutate", "rewire", "independent"]))
    if mode == "independent":
        return first, draw(cells())
    second = first
    if mode == "mutate":
        second = draw(mutated(first))
    elif mode == "rewire":
        second = rewired(first) or draw(mutated(first))
    return first, draw(relabeled(second))


@st.composite
def twin_pairs(draw: st.DrawFn) -> tuple[Cell, Cell]:
    """A cell with two identical blocks that feed other blocks, and the cell with one consumer rewired.

    Both cells compute the same multiset of block expressions, so only the wiring distinguishes them.
    """
    prefix = draw(cells(min_blocks=1, max_blocks=2))
    twin = draw(st.sampled_from(prefix.blocks))
    blocks = [*prefix.blocks, twin]
    original = prefix.blocks.index(twin)
    copy = len(blocks) - 1
    operators = st.sampled_from(OPERATORS)
    for _ in range(draw(st.integers(1, 2))):
        first = draw(st.sampled_from([original, copy]))
        second = draw(st.integers(-LOOKBACK, len(blocks) - 1))
        blocks.append(Block(first, draw(operators), second, draw(operators)))
    cell = Cell(tuple(blocks))
    changed = rewired(cell)
    assert changed is not None  # the copy or the original has a consumer by construction
    return cell, draw(relabeled(changed))


# Reference: labeled graphs compared by networkx ---------------------------------------------------


def cell_graph(cell: Cell) -> nx.DiGraph:
    """The cell as a labeled DAG: lookback nodes, one node per operand labeled by its operator, join nodes."""
    graph = nx.DiGraph()
    for lookback in range(1, LOOKBACK + 1):
        graph.add_node(("lookback", lookback), label=f"L{lookback}")
    for position, block in enumerate(cell.blocks):
        graph.add_node(("block", position), label="join")
        for side, (source, operator) in enumerate(block.operands):
            operand = ("operand", position, side)
            graph.add_node(operand, label=operator)
            graph.add_edge(("lookback", -source) if source < 0 else ("block", source), operand)
            graph.add_edge(operand, ("block", position))
    return graph


def graphs_isomorphic(first: Cell, second: Cell) -> bool:
    return nx.is_isomorphic(
        cell_graph(first), cell_graph(second), node_match=lambda one, other: one["label"] == other["label"]
    )


# Text form ------------------------------------------------------------------------------------------


def test_parse_reads_blocks() -> None:
    cell = Cell.parse("[(-2, '7 conv', -1, 'gru'), (0, 'identity', -1, '2 maxpool')]")
    assert cell.blocks == (Block(-2, "7 conv", -1, "gru"), Block(0, "identity", -1, "2 maxpool"))


def test_str_round_trips() -> None:
    text = "[(-2, '7 conv', -1, 'gru'), (0, 'identity', -1, '2 maxpool')]"
    assert str(Cell.parse(text)) == text


@PROPERTY_SETTINGS
@given(cells(min_blocks=0))
def test_parse_inverts_str(cell: Cell) -> None:
    assert Cell.parse(str(cell)) == cell


def test_empty_cell_parses() -> None:
    cell = Cell.parse("[]")
    assert cell == Cell()
    assert cell.is_empty
    assert len(cell) == 0
    assert str(cell) == "[]"


def test_single_tuple_parses() -> None:
    cell = Cell.parse("(-1, 'identity', -2, '3x3 conv')")
    assert cell.blocks == (Block(-1, "identity", -2, "3x3 conv"),)


def test_semicolon_separator_parses() -> None:
    cell = Cell.parse("[(-1, 'a', -2, 'b');(0, 'c', -1, 'd') ; (1, 'e', 0, 'f')]")
    assert cell == Cell.parse("[(-1, 'a', -2, 'b'), (0, 'c', -1, 'd'), (1, 'e', 0, 'f')]")


def test_list_blocks_parse() -> None:
    assert Cell.parse("[[-1, 'a', -1, 'b']]") == cell_of((-1, "a", -1, "b"))


def test_tuple_of_four_blocks_parses() -> None:
    text = "([-1, 'a', -1, 'a'], [-1, 'b', -1, 'b'], [-2, 'a', -2, 'a'], [-2, 'b', -2, 'b'])"
    cell = Cell.parse(text)
    assert len(cell) == 4
    assert cell.blocks[3] == Block(-2, "b", -2, "b")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[",
        "not a cell",
        "[(-1, 'a', -1)]",
        "[(-1, 'a', -1, 'b', 3)]",
        "[('x', 'a', -1, 'b')]",
        "[(-1, 3, -1, 'b')]",
        "[(-1.0, 'a', -1, 'b')]",
        "[(True, 'a', -1, 'b')]",
        "[-1, 'a', -1, 'b']",
        "{'blocks': []}",
        "'[]'",
        "42",
        "{[]: 1}",
        "[(-1, 'a', -1, 'b')] + []",
        "__import__('os')",
    ],
)
def test_malformed_text_rejected(text: str) -> None:
    with pytest.raises(CellFormatError) as caught:
        Cell.parse(text)
    assert repr(text) in str(caught.value)


def test_malformed_text_shows_example() -> None:
    with pytest.raises(CellFormatError, match=r"list of blocks such as"):
        Cell.parse("[(-1 'a')]")


def test_forward_reference_rejected() -> None:
    with pytest.raises(CellFormatError, match=r"block 1 .* uses input 1"):
        Cell.parse("[(-1, 'a', -1, 'b'), (1, 'a', -1, 'b')]")


def test_later_block_reference_rejected() -> None:
    with pytest.raises(CellFormatError, match=r"earlier blocks 0\.\.0"):
        cell_of((-1, "a", -1, "b"), (-1, "a", 2, "b"), (0, "a", 1, "b"))


def test_first_block_needs_lookbacks() -> None:
    with pytest.raises(CellFormatError, match="block 0"):
        cell_of((0, "a", -1, "b"))


def test_block_arity_checked() -> None:
    with pytest.raises(CellFormatError, match="must be"):
        Cell(((-1, "a", -1),))  # type: ignore[arg-type]


def test_format_error_is_value_error() -> None:
    assert issubclass(CellFormatError, ValueError)


# Structure ---------------------------------------------------------------------------------------------


def test_constructor_converts_tuples_to_blocks() -> None:
    cell = Cell(((-1, "a", -2, "b"),))  # type: ignore[arg-type]
    assert isinstance(cell.blocks[0], Block)
    assert cell.blocks[0].operands == ((-1, "a"), (-2, "b"))


def test_cells_are_hashable_values() -> None:
    first = Cell.parse("[(-1, 'a', -2, 'b')]")
    second = Cell(((-1, "a", -2, "b"),))  # type: ignore[arg-type]
    assert first == second
    assert len({first, second}) == 1


def test_unused_blocks_of_chain() -> None:
    cell = Cell.parse("[(-1, 'a', -1, 'b'), (0, 'a', -2, 'b'), (1, 'a', 0, 'b')]")
    assert cell.unused_blocks == (2,)


def test_unused_blocks_of_independent_blocks() -> None:
    cell = Cell.parse("[(-1, 'a', -1, 'b'), (-2, 'a', -2, 'b'), (0, 'a', -2, 'b')]")
    assert cell.unused_blocks == (1, 2)


def test_unused_blocks_of_empty_cell() -> None:
    assert Cell().unused_blocks == ()


def test_lookbacks_collects_negative_inputs() -> None:
    assert Cell.parse("[(-1, 'a', -1, 'b')]").lookbacks == frozenset({-1})
    assert Cell.parse("[(-2, 'a', -2, 'b'), (0, 'a', -2, 'b')]").lookbacks == frozenset({-2})
    assert Cell.parse("[(-2, 'a', -1, 'b')]").lookbacks == frozenset({-1, -2})
    assert Cell().lookbacks == frozenset()


def test_extended_appends_block() -> None:
    cell = Cell.parse("[(-1, 'a', -1, 'b')]")
    child = cell.extended(Block(0, "c", -2, "d"))
    assert child.blocks == (*cell.blocks, Block(0, "c", -2, "d"))
    assert len(cell) == 1


def test_iteration_yields_blocks() -> None:
    cell = Cell.parse("[(-1, 'a', -1, 'b'), (0, 'c', -2, 'd')]")
    assert list(cell) == list(cell.blocks)
    assert len(cell) == 2
    assert not cell.is_empty


# Canonical form: hand-written cases ---------------------------------------------------------------


def test_canonical_orders_operands() -> None:
    canonical = Cell.parse("[(-1, 'b', -2, 'a'), (0, 'c', -1, 'd')]").canonical()
    assert str(canonical) == "[(-2, 'a', -1, 'b'), (-1, 'd', 0, 'c')]"


def test_key_pinned() -> None:
    # Keys name stored results, so a change to the canonical form must be deliberate.
    cell = Cell.parse("[(-1, 'b', -2, 'a'), (0, 'c', -1, 'd')]")
    expected = hashlib.sha256(b"[(-2, 'a', -1, 'b'), (-1, 'd', 0, 'c')]").hexdigest()[:16]
    assert cell.key == expected


def test_nested_operand_order_equal() -> None:
    # The original implementation reported these two as different.
    first = cell_of((-1, A, -2, B), (0, C, -1, D))
    second = cell_of((-2, B, -1, A), (0, C, -1, D))
    assert first.canonical() == second.canonical()
    assert first.key == second.key
    assert first.is_isomorphic(second)


def test_independent_block_order_equal() -> None:
    first = cell_of((-1, A, -1, B), (-2, C, -2, D), (0, E, 1, F))
    second = cell_of((-2, D, -2, C), (-1, B, -1, A), (0, F, 1, E))
    assert first.canonical() == second.canonical()
    assert first.key == second.key


def test_duplicate_blocks_consumed_apart_differ() -> None:
    # Both cells compute the expressions {X, X, C(X)+D, E(X)+F} with X = A(L1)+B(L2). In the first
    # cell the two copies of X feed different blocks. In the second one copy feeds both consumers and
    # the other copy is unused, so the graphs are not isomorphic.
    first = cell_of((-1, A, -2, B), (-1, A, -2, B), (0, C, -1, D), (1, E, -1, F))
    second = cell_of((-1, A, -2, B), (-1, A, -2, B), (0, C, -1, D), (0, E, -1, F))
    assert not graphs_isomorphic(first, second)
    assert first.canonical() != second.canonical()
    assert first.key != second.key
    assert not first.is_isomorphic(second)


def test_duplicate_blocks_read_together_differ() -> None:
    # One block reads both copies of X, against one block reading the same copy twice.
    first = cell_of((-1, A, -1, A), (-1, A, -1, A), (0, B, 1, B))
    second = cell_of((-1, A, -1, A), (-1, A, -1, A), (0, B, 0, B))
    assert not graphs_isomorphic(first, second)
    assert first.canonical() != second.canonical()


def test_duplicate_blocks_swapped_consumers_equal() -> None:
    first = cell_of((-1, A, -1, A), (-1, A, -1, A), (0, B, -1, C), (1, D, -2, E))
    second = cell_of((-1, A, -1, A), (-1, A, -1, A), (1, B, -1, C), (0, D, -2, E))
    assert graphs_isomorphic(first, second)
    assert first.canonical() == second.canonical()


def test_lookbacks_not_interchangeable() -> None:
    first = cell_of((-1, A, -1, A))
    second = cell_of((-2, A, -2, A))
    assert first.canonical() != second.canonical()


def test_operator_side_matters() -> None:
    first = cell_of((-1, A, -2, B))
    second = cell_of((-1, B, -2, A))
    assert first.canonical() != second.canonical()


def test_empty_cell_canonical() -> None:
    assert Cell().canonical() == Cell()
    assert Cell().key == hashlib.sha256(b"[]").hexdigest()[:16]


def test_key_is_short_hex() -> None:
    key = Cell.parse("[(-1, 'a', -2, 'b')]").key
    assert len(key) == 16
    assert int(key, 16) >= 0


def test_many_identical_blocks_fast() -> None:
    # Ten copies of one block admit 10! block orders; the canonical form must not try them all.
    started = time.perf_counter()
    unused = Cell(tuple(Block(-1, A, -2, B) for _ in range(10)))
    consumed = Cell((*(Block(-1, A, -1, A) for _ in range(5)), *(Block(index, B, -2, C) for index in range(5))))
    assert unused.canonical() == Cell(tuple(Block(-2, B, -1, A) for _ in range(10)))
    assert consumed.canonical().canonical() == consumed.canonical()
    assert time.perf_counter() - started < 2.0


# Canonical form: properties against networkx ------------------------------------------------------


@PROPERTY_SETTINGS
@given(st.data())
def test_relabeled_cells_share_canonical(data: st.DataObject) -> None:
    cell = data.draw(cells())
    twin = data.draw(relabeled(cell))
    assert graphs_isomorphic(cell, twin)
    assert cell.canonical() == twin.canonical()
    assert cell.key == twin.key


def test_canonical_equal_iff_isomorphic() -> None:
    outcomes = {True: 0, False: 0}

    @PROPERTY_SETTINGS
    @given(cell_pairs())
    def check(pair: tuple[Cell, Cell]) -> None:
        first, second = pair
        isomorphic = graphs_isomorphic(first, second)
        outcomes[isomorphic] += 1
        assert (first.canonical() == second.canonical()) == isomorphic
        assert (first.key == second.key) == isomorphic

    check()
    # Both directions of the equivalence must have been exercised.
    assert outcomes[True] >= 20
    assert outcomes[False] >= 20


def test_twin_wiring_equal_iff_isomorphic() -> None:
    outcomes = {True: 0, False: 0}

    @PROPERTY_SETTINGS
    @given(twin_pairs())
    def check(pair: tuple[Cell, Cell]) -> None:
        first, second = pair
        isomorphic = graphs_isomorphic(first, second)
        outcomes[isomorphic] += 1
        assert (first.canonical() == second.canonical()) == isomorphic

    check()
    assert outcomes[False] >= 20


@PROPERTY_SETTINGS
@given(cells(min_blocks=0))
def test_canonical_idempotent(cell: Cell) -> None:
    canonical = cell.canonical()
    assert canonical.canonical() == canonical
    assert canonical.key == cell.key


@PROPERTY_SETTINGS
@given(cells())
def test_canonical_isomorphic_to_cell(cell: Cell) -> None:
    canonical = cell.canonical()
    assert len(canonical) == len(cell)
    assert graphs_isomorphic(cell, canonical)


@PROPERTY_SETTINGS
@given(cells())
def test_canonical_operands_sorted(cell: Cell) -> None:
    for block in cell.canonical().blocks:
        assert (block.input_1, block.operator_1) <= (block.input_2, block.operator_2)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_larger_relabeled_cells_share_canonical(data: st.DataObject) -> None:
    cell = data.draw(cells(min_blocks=5, max_blocks=8))
    twin = data.draw(relabeled(cell))
    assert cell.canonical() == twin.canonical()
