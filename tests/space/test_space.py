"""SearchSpace: operator normalisation, allowed inputs, block generation, expansion and encodings."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from popnas.space import Block, Cell, OperatorError, SearchSpace

IMAGE_POOL = ("identity", "3x3 conv", "5x5 dconv", "2x2 maxpool", "1x7-7x1 conv")
PAPER_IMAGE_OPERATORS = (
    "identity",
    "3x3 dconv",
    "5x5 dconv",
    "7x7 dconv",
    "1x3-3x1 conv",
    "1x5-5x1 conv",
    "1x7-7x1 conv",
    "1x1 conv",
    "3x3 conv",
    "5x5 conv",
    "2x2 maxpool",
    "2x2 avgpool",
)

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)


def block_count(inputs: int, operators: int) -> int:
    """(I²O² + IO) / 2: the blocks over I inputs and O operators, counting a block and its mirror once."""
    return (inputs**2 * operators**2 + inputs * operators) // 2


def make_space(operator_count: int = 3, *, max_blocks: int = 5, lookback: int = 2) -> SearchSpace:
    return SearchSpace.create(IMAGE_POOL[:operator_count], max_blocks=max_blocks, lookback=lookback, dims=2)


def unordered(block: Block) -> tuple[tuple[int, str], ...]:
    return tuple(sorted(block.operands))


@st.composite
def space_cells(draw: st.DrawFn, space: SearchSpace, max_length: int | None = None) -> Cell:
    """A valid cell of ``space`` with up to ``max_length`` blocks (default: max_blocks)."""
    length = draw(st.integers(0, space.max_blocks if max_length is None else max_length))
    operators = st.sampled_from(space.operators)
    blocks = []
    for position in range(length):
        inputs = st.sampled_from(space.inputs_for_position(position))
        blocks.append(Block(draw(inputs), draw(operators), draw(inputs), draw(operators)))
    return Cell(tuple(blocks))


# Construction ------------------------------------------------------------------------------------


def test_operators_stored_canonical() -> None:
    space = SearchSpace.create(["3X3  Conv", "IDENTITY"], max_blocks=2, lookback=2, dims=2)
    assert space.operators == ("3x3 conv", "identity")
    assert [operator.text for operator in space.parsed] == ["3x3 conv", "identity"]


def test_create_matches_constructor() -> None:
    created = SearchSpace.create(["identity"], max_blocks=3, lookback=1, dims=1)
    assert created == SearchSpace(("identity",), max_blocks=3, lookback=1, dims=1)


def test_duplicates_after_normalization_rejected() -> None:
    with pytest.raises(ValueError, match="duplicates after normalization"):
        SearchSpace.create(["3x3 conv", "3X3 CONV"], max_blocks=2, lookback=2, dims=2)


def test_dilation_one_duplicate_rejected() -> None:
    with pytest.raises(ValueError, match="duplicates"):
        SearchSpace.create(["7 conv", "7:1dr conv"], max_blocks=2, lookback=2, dims=1)


def test_invalid_operator_rejected() -> None:
    with pytest.raises(OperatorError, match="not recognized"):
        SearchSpace.create(["identity", "bogus"], max_blocks=2, lookback=2, dims=2)


def test_recurrent_operator_rejected_on_images() -> None:
    with pytest.raises(OperatorError, match="recurrent"):
        SearchSpace.create(["gru"], max_blocks=2, lookback=2, dims=2)


def test_empty_operators_rejected() -> None:
    with pytest.raises(ValueError, match="at least one operator"):
        SearchSpace.create([], max_blocks=2, lookback=2, dims=2)


@pytest.mark.parametrize(("max_blocks", "lookback"), [(0, 2), (2, 0), (-1, 1)])
def test_sizes_below_one_rejected(max_blocks: int, lookback: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SearchSpace.create(["identity"], max_blocks=max_blocks, lookback=lookback, dims=2)


@pytest.mark.parametrize("dims", [0, 3])
def test_invalid_dims_rejected(dims: int) -> None:
    with pytest.raises(ValueError, match="dims must be"):
        SearchSpace.create(["identity"], max_blocks=2, lookback=2, dims=dims)


def test_operator_index_follows_order() -> None:
    space = make_space(3)
    assert space.operator_index("identity") == 0
    assert space.operator_index("5x5 dconv") == 2


# Inputs and blocks -------------------------------------------------------------------------------------


def test_inputs_for_first_position() -> None:
    assert make_space(lookback=2).inputs_for_position(0) == (-2, -1)


def test_inputs_for_later_position() -> None:
    assert make_space(lookback=2).inputs_for_position(3) == (-2, -1, 0, 1, 2)


def test_inputs_for_deeper_lookback() -> None:
    assert make_space(lookback=3).inputs_for_position(1) == (-3, -2, -1, 0)


@PROPERTY_SETTINGS
@given(operator_count=st.integers(1, 5), lookback=st.integers(1, 3), position=st.integers(0, 3))
def test_blocks_for_position_count(operator_count: int, lookback: int, position: int) -> None:
    space = make_space(operator_count, lookback=lookback)
    blocks = space.blocks_for_position(position)
    assert len(blocks) == block_count(lookback + position, operator_count)


@PROPERTY_SETTINGS
@given(operator_count=st.integers(1, 5), lookback=st.integers(1, 3), position=st.integers(0, 3))
def test_blocks_for_position_unique(operator_count: int, lookback: int, position: int) -> None:
    blocks = make_space(operator_count, lookback=lookback).blocks_for_position(position)
    assert len(set(blocks)) == len(blocks)
    assert len({unordered(block) for block in blocks}) == len(blocks)


@PROPERTY_SETTINGS
@given(operator_count=st.integers(1, 5), lookback=st.integers(1, 3), position=st.integers(0, 3))
def test_blocks_for_position_cover_pairs(operator_count: int, lookback: int, position: int) -> None:
    space = make_space(operator_count, lookback=lookback)
    inputs = space.inputs_for_position(position)
    operands = list(itertools.product(inputs, space.operators))
    expected = {tuple(sorted(pair)) for pair in itertools.product(operands, repeat=2)}
    generated = {unordered(block) for block in space.blocks_for_position(position)}
    assert generated == expected


@PROPERTY_SETTINGS
@given(operator_count=st.integers(1, 5), lookback=st.integers(1, 3), position=st.integers(0, 3))
def test_blocks_for_position_one_orientation(operator_count: int, lookback: int, position: int) -> None:
    space = make_space(operator_count, lookback=lookback)
    for block in space.blocks_for_position(position):
        assert block.input_1 <= block.input_2
        if block.input_1 == block.input_2:
            assert space.operator_index(block.operator_1) <= space.operator_index(block.operator_2)


def test_one_block_cells_paper_count() -> None:
    # 12 operators and lookback 2 give 300 one-block cells, as in the original implementation.
    space = SearchSpace.create(PAPER_IMAGE_OPERATORS, max_blocks=5, lookback=2, dims=2)
    cells = space.one_block_cells()
    assert len(cells) == 300
    assert all(len(cell) == 1 for cell in cells)
    assert len(set(cells)) == 300


def test_one_block_cells_match_first_position() -> None:
    space = make_space(3)
    assert [cell.blocks[0] for cell in space.one_block_cells()] == space.blocks_for_position(0)


def test_one_block_cells_read_lookbacks_only() -> None:
    for cell in make_space(2, lookback=3).one_block_cells():
        assert cell.lookbacks <= {-1, -2, -3}


# Expansion ------------------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(st.data())
def test_expand_count(data: st.DataObject) -> None:
    space = make_space(data.draw(st.integers(1, 4)), max_blocks=4, lookback=data.draw(st.integers(1, 3)))
    cell = data.draw(space_cells(space, max_length=3))
    children = space.expand(cell)
    assert len(children) == block_count(space.lookback + len(cell), len(space.operators))


@PROPERTY_SETTINGS
@given(st.data())
def test_expand_children_extend_parent(data: st.DataObject) -> None:
    space = make_space(data.draw(st.integers(1, 4)), max_blocks=4, lookback=data.draw(st.integers(1, 3)))
    cell = data.draw(space_cells(space, max_length=3))
    children = space.expand(cell)
    assert len(set(children)) == len(children)
    for child in children:
        assert len(child) == len(cell) + 1
        assert child.blocks[:-1] == cell.blocks
        space.check_cell(child)


def test_expand_at_max_blocks_empty() -> None:
    space = make_space(2, max_blocks=2)
    full = Cell.parse("[(-1, 'identity', -2, 'identity'), (0, 'identity', -1, '3x3 conv')]")
    assert space.expand(full) == []


def test_expand_empty_cell_gives_one_block_cells() -> None:
    space = make_space(3)
    assert space.expand(Cell()) == space.one_block_cells()


# Checking cells --------------------------------------------------------------------------------------------


def test_check_cell_accepts_valid() -> None:
    space = make_space(3, max_blocks=2)
    space.check_cell(Cell.parse("[(-2, 'identity', -1, '3x3 conv'), (0, '5x5 dconv', -2, 'identity')]"))
    space.check_cell(Cell())


def test_check_cell_rejects_too_many_blocks() -> None:
    space = make_space(1, max_blocks=1)
    with pytest.raises(ValueError, match="more than max_blocks=1"):
        space.check_cell(Cell.parse("[(-1, 'identity', -1, 'identity'), (0, 'identity', -1, 'identity')]"))


def test_check_cell_rejects_deep_lookback() -> None:
    space = make_space(1, lookback=1)
    with pytest.raises(ValueError, match="input -2 of block 0"):
        space.check_cell(Cell.parse("[(-2, 'identity', -1, 'identity')]"))


def test_check_cell_rejects_unknown_operator() -> None:
    space = make_space(1)
    with pytest.raises(ValueError, match="'7x7 conv' is not in the search space"):
        space.check_cell(Cell.parse("[(-1, 'identity', -1, '7x7 conv')]"))


def test_check_cell_rejects_unnormalized_operator() -> None:
    space = make_space(2)
    with pytest.raises(ValueError, match="'3X3 conv' is not in the search space"):
        space.check_cell(Cell.parse("[(-1, 'identity', -1, '3X3 conv')]"))


# Encoding ----------------------------------------------------------------------------------------------------


def test_encode_shapes() -> None:
    space = make_space(3, max_blocks=4)
    cells = [Cell(), Cell.parse("[(-1, 'identity', -2, '3x3 conv')]")]
    inputs, operators = space.encode(cells)
    assert inputs.shape == (2, 4, 2)
    assert operators.shape == (2, 4, 2)
    assert inputs.dtype == np.int32
    assert operators.dtype == np.int32


def test_encode_values_and_padding() -> None:
    space = make_space(3, max_blocks=3, lookback=2)
    cell = Cell.parse("[(-2, 'identity', -1, '5x5 dconv'), (0, '3x3 conv', -2, 'identity')]")
    inputs, operators = space.encode([cell])
    assert inputs[0].tolist() == [[1, 2], [3, 1], [0, 0]]
    assert operators[0].tolist() == [[1, 3], [2, 1], [0, 0]]


def test_encode_empty_cell_all_padding() -> None:
    inputs, operators = make_space(2).encode([Cell()])
    assert not inputs.any()
    assert not operators.any()


def test_encode_no_cells() -> None:
    inputs, operators = make_space(2, max_blocks=3).encode([])
    assert inputs.shape == (0, 3, 2)
    assert operators.shape == (0, 3, 2)


def test_vocabularies() -> None:
    space = make_space(4, max_blocks=5, lookback=2)
    assert space.input_vocabulary == 7
    assert space.operator_vocabulary == 5


@PROPERTY_SETTINGS
@given(st.data())
def test_encode_codes_within_vocabulary(data: st.DataObject) -> None:
    operator_count = data.draw(st.integers(1, 5))
    max_blocks = data.draw(st.integers(1, 5))
    space = make_space(operator_count, max_blocks=max_blocks, lookback=data.draw(st.integers(1, 3)))
    cells = data.draw(st.lists(space_cells(space), max_size=4))
    inputs, operators = space.encode(cells)
    for row, cell in enumerate(cells):
        assert (inputs[row, : len(cell)] >= 1).all()
        assert (operators[row, : len(cell)] >= 1).all()
        assert not inputs[row, len(cell) :].any()
        assert not operators[row, len(cell) :].any()
    assert (inputs < space.input_vocabulary).all()
    assert (operators < space.operator_vocabulary).all()


def test_encode_highest_input_code_fits() -> None:
    space = make_space(1, max_blocks=3, lookback=2)
    cell = Cell.parse(
        "[(-1, 'identity', -1, 'identity'), (0, 'identity', 0, 'identity'), (1, 'identity', 1, 'identity')]"
    )
    inputs, _ = space.encode([cell])
    assert inputs.max() == space.input_vocabulary - 1


def test_encode_rejects_deep_lookback() -> None:
    # Without the check, input -3 would encode as 0 and read as padding.
    space = make_space(1, lookback=2)
    with pytest.raises(ValueError, match="input -3"):
        space.encode([Cell.parse("[(-3, 'identity', -1, 'identity')]")])


def test_encode_rejects_unknown_operator() -> None:
    with pytest.raises(ValueError, match="not in the search space"):
        make_space(1).encode([Cell.parse("[(-1, 'identity', -1, 'gru')]")])


def test_encode_rejects_long_cell() -> None:
    space = make_space(1, max_blocks=1)
    with pytest.raises(ValueError, match="more than max_blocks"):
        space.encode([Cell.parse("[(-1, 'identity', -1, 'identity'), (0, 'identity', 0, 'identity')]")])
