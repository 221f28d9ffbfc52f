"""Accuracy predictor: real Keras training on a seeded toy target over a small search space."""

import logging
import random

import numpy as np
import pytest

from popnas.predict.accuracy import PREDICT_BATCH_SIZE, AccuracyPredictor
from popnas.predict.quality import spearman
from popnas.space import Block, Cell, SearchSpace

SPACE = SearchSpace.create(["identity", "3x3 conv", "2x2 maxpool"], max_blocks=3, lookback=2, dims=2)
TARGET_OPERATOR = "3x3 conv"


def random_cells(count: int, seed: int, *, min_blocks: int = 1) -> list[Cell]:
    generator = random.Random(seed)
    cells = []
    for _ in range(count):
        blocks = generator.randint(min_blocks, SPACE.max_blocks)
        cells.append(Cell(tuple(generator.choice(SPACE.blocks_for_position(p)) for p in range(blocks))))
    return cells


def toy_accuracy(cell: Cell) -> float:
    """The fraction of blocks that use TARGET_OPERATOR in either operand; 0 for the empty cell."""
    if cell.is_empty:
        return 0.0
    using = sum(1 for block in cell.blocks if TARGET_OPERATOR in (block.operator_1, block.operator_2))
    return using / len(cell)


@pytest.fixture(scope="module")
def toy_predictor() -> tuple[AccuracyPredictor, list[Cell]]:
    """A predictor fitted on the empty cell and 239 random cells, with 60 held-out cells."""
    cells = [Cell(()), *random_cells(299, seed=0)]
    predictor = AccuracyPredictor(SPACE, seed=0)
    predictor.fit(cells[:240], [toy_accuracy(cell) for cell in cells[:240]])
    return predictor, cells[240:]


@pytest.mark.slow
def test_accuracy_predictor_learns_toy_target(toy_predictor):
    predictor, held_out = toy_predictor

    predicted = predictor.predict(held_out)

    assert spearman([toy_accuracy(cell) for cell in held_out], predicted) > 0.7


@pytest.mark.slow
def test_accuracy_predictor_output_shape_and_range(toy_predictor):
    predictor, held_out = toy_predictor

    predicted = predictor.predict([Cell(()), *held_out])

    assert predicted.shape == (61,)
    assert predicted.dtype == np.float64
    assert np.all(np.isfinite(predicted))
    assert np.all((predicted >= 0.0) & (predicted <= 1.0))


@pytest.mark.slow
def test_accuracy_predictor_isomorphic_cells_equal(toy_predictor):
    predictor = toy_predictor[0]
    a, b, c = SPACE.operators
    pairs = [
        # Operands of a block swapped, including in a block that another block reads.
        (Cell((Block(-1, a, -2, b), Block(0, c, -1, b))), Cell((Block(-2, b, -1, a), Block(-1, b, 0, c)))),
        # Independent blocks in the other order, with the reference renumbered.
        (
            Cell((Block(-1, a, -1, a), Block(-2, b, -2, c), Block(1, a, 0, b))),
            Cell((Block(-2, b, -2, c), Block(-1, a, -1, a), Block(0, a, 1, b))),
        ),
    ]

    predicted = predictor.predict([cell for pair in pairs for cell in pair])

    np.testing.assert_array_equal(predicted[0::2], predicted[1::2])


@pytest.mark.slow
def test_accuracy_predictor_batches_match_alone(toy_predictor):
    predictor = toy_predictor[0]
    cells = random_cells(PREDICT_BATCH_SIZE + 100, seed=1)

    together = predictor.predict(cells)
    last_alone = predictor.predict(cells[-100:])

    assert together.shape == (len(cells),)
    np.testing.assert_allclose(together[-100:], last_alone, rtol=1e-6)


@pytest.mark.slow
def test_accuracy_predictor_deterministic_for_seed():
    cells = random_cells(40, seed=2)
    accuracies = [toy_accuracy(cell) for cell in cells]
    first = AccuracyPredictor(SPACE, seed=7, epochs=4)
    second = AccuracyPredictor(SPACE, seed=7, epochs=4)

    first.fit(cells, accuracies)
    second.fit(cells, accuracies)
    refit_first = first.predict(cells)
    first.fit(cells, accuracies)

    np.testing.assert_array_equal(first.predict(cells), second.predict(cells))
    np.testing.assert_array_equal(first.predict(cells), refit_first)


@pytest.mark.slow
def test_accuracy_predictor_seed_changes_predictions():
    cells = random_cells(20, seed=3)
    accuracies = [toy_accuracy(cell) for cell in cells]
    first = AccuracyPredictor(SPACE, seed=1, folds=2, epochs=2)
    second = AccuracyPredictor(SPACE, seed=2, folds=2, epochs=2)

    first.fit(cells, accuracies)
    second.fit(cells, accuracies)

    assert not np.array_equal(first.predict(cells), second.predict(cells))


@pytest.mark.slow
def test_accuracy_predictor_fewer_results_than_folds(caplog):
    cells = [Cell(()), *random_cells(2, seed=4)]
    predictor = AccuracyPredictor(SPACE, seed=0, epochs=2)

    with caplog.at_level(logging.WARNING, logger="popnas.predict.accuracy"):
        predictor.fit(cells, [0.1, 0.5, 0.9])

    assert "training an ensemble of 3 networks" in caplog.text
    predicted = predictor.predict(cells)
    assert predicted.shape == (3,)
    assert np.all(np.isfinite(predicted))


def test_accuracy_predictor_predict_before_fit_raises():
    with pytest.raises(RuntimeError, match="not been fitted"):
        AccuracyPredictor(SPACE).predict(random_cells(1, seed=5))


@pytest.mark.parametrize("results", [0, 1])
def test_accuracy_predictor_too_few_results_raises(results: int):
    cells = random_cells(results, seed=6)

    with pytest.raises(ValueError, match="at least 2 results"):
        AccuracyPredictor(SPACE).fit(cells, [0.5] * results)


def test_accuracy_predictor_length_mismatch_raises():
    with pytest.raises(ValueError, match="same length"):
        AccuracyPredictor(SPACE).fit(random_cells(3, seed=7), [0.5, 0.5])


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_accuracy_outside_unit_range_raises(bad: float):
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        AccuracyPredictor(SPACE).fit(random_cells(3, seed=8), [0.5, bad, 0.5])


def test_accuracy_predictor_cell_outside_space_raises():
    cells = [Cell((Block(-1, "7x7 conv", -1, "identity"),)), *random_cells(2, seed=9)]

    with pytest.raises(ValueError, match="not in the search space"):
        AccuracyPredictor(SPACE).fit(cells, [0.5, 0.5, 0.5])


def test_accuracy_predictor_invalid_settings_listed():
    with pytest.raises(ValueError) as raised:
        AccuracyPredictor(SPACE, folds=1, epochs=0, batch_size=0, learning_rate=0.0, l2=-1.0, patience=-1)

    message = str(raised.value)
    for name in ("folds=1", "epochs=0", "batch_size=0", "learning_rate=0.0", "l2=-1.0", "patience=-1"):
        assert name in message
