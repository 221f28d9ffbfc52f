"""Time predictor: real CatBoost fits on a seeded toy target built from the time features."""

import logging
import random

import numpy as np
import pandas as pd
import pytest

from popnas.predict.features import TIME_FEATURES, time_feature_frame
from popnas.predict.quality import mape, spearman
from popnas.predict.time import TimePredictor
from popnas.space import Cell, SearchSpace

SPACE = SearchSpace.create(
    ["identity", "3x3 conv", "5x5 conv", "3x3 dconv", "2x2 maxpool"], max_blocks=4, lookback=2, dims=2
)
REINDEX = {"identity": 0.0, "3x3 conv": 0.45, "5x5 conv": 1.0, "3x3 dconv": 0.3, "2x2 maxpool": 0.05}


def random_cells(count: int, seed: int) -> list[Cell]:
    generator = random.Random(seed)
    cells = []
    for _ in range(count):
        blocks = generator.randint(1, SPACE.max_blocks)
        cells.append(Cell(tuple(generator.choice(SPACE.blocks_for_position(p)) for p in range(blocks))))
    return cells


def toy_data(count: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Features of random cells and times of 2 + 3 * op_score seconds plus Gaussian noise (sd 0.1 s)."""
    features = time_feature_frame(random_cells(count, seed), reindex=REINDEX, motifs=3, normal_cells_per_motif=2)
    noise = np.random.default_rng(seed).normal(0.0, 0.1, count)
    return features, 2.0 + 3.0 * features["op_score"].to_numpy() + noise


@pytest.fixture(scope="module")
def toy_predictor() -> tuple[TimePredictor, pd.DataFrame, np.ndarray]:
    """A predictor fitted on 240 toy rows, with 60 held-out rows."""
    features, times = toy_data(300, seed=0)
    predictor = TimePredictor(seed=0, search_iterations=10)
    predictor.fit(features.iloc[:240], times[:240])
    return predictor, features.iloc[240:], times[240:]


@pytest.mark.slow
def test_time_predictor_learns_toy_target(toy_predictor):
    predictor, held_out_features, held_out_times = toy_predictor

    predicted = predictor.predict(held_out_features)

    assert predicted.shape == (60,)
    assert predicted.dtype == np.float64
    assert mape(held_out_times, predicted) < 15.0
    assert spearman(held_out_times, predicted) > 0.9


@pytest.mark.slow
def test_time_predictor_best_params_in_ranges(toy_predictor):
    params = toy_predictor[0].best_params

    assert set(params) == {"learning_rate", "depth", "l2_leaf_reg", "random_strength", "bagging_temperature"}
    assert 0.02 <= params["learning_rate"] <= 0.2
    assert params["depth"] in (3, 4, 5, 6)
    assert isinstance(params["depth"], int)
    assert 0.1 <= params["l2_leaf_reg"] <= 5.0
    assert 0.3 <= params["random_strength"] <= 3.0
    assert 0.3 <= params["bagging_temperature"] <= 3.0


@pytest.mark.slow
def test_time_predictor_column_order_irrelevant(toy_predictor):
    predictor, held_out_features, _ = toy_predictor

    reversed_columns = held_out_features[list(reversed(held_out_features.columns))]

    np.testing.assert_array_equal(predictor.predict(reversed_columns), predictor.predict(held_out_features))


def test_time_predictor_deterministic_for_seed():
    features, times = toy_data(60, seed=1)
    first = TimePredictor(seed=3, search_iterations=3, iterations=300)
    second = TimePredictor(seed=3, search_iterations=3, iterations=300)

    first.fit(features, times)
    second.fit(features, times)

    assert first.best_params == second.best_params
    np.testing.assert_array_equal(first.predict(features), second.predict(features))


def test_time_predictor_seed_changes_draws():
    features, times = toy_data(40, seed=1)
    first = TimePredictor(seed=3, search_iterations=2, iterations=100)
    second = TimePredictor(seed=4, search_iterations=2, iterations=100)

    first.fit(features, times)
    second.fit(features, times)

    assert first.best_params != second.best_params


def test_time_predictor_fewer_rows_than_folds(caplog):
    features, times = toy_data(3, seed=2)
    predictor = TimePredictor(seed=0, search_iterations=2, iterations=100)

    with caplog.at_level(logging.WARNING, logger="popnas.predict.time"):
        predictor.fit(features, times)

    assert "cross-validating on 3 folds" in caplog.text
    assert np.all(np.isfinite(predictor.predict(features)))


def test_time_predictor_two_rows_predict_fold_means():
    # Each fold trains on one row, which CatBoost rejects (constant features), so each fold
    # model predicts its training row's time and the ensemble predicts their mean.
    features, _ = toy_data(2, seed=3)
    predictor = TimePredictor(seed=0, search_iterations=2)

    predictor.fit(features, [10.0, 20.0])

    np.testing.assert_allclose(predictor.predict(features), [15.0, 15.0])


def test_time_predictor_equal_times_predict_that_time():
    features, _ = toy_data(12, seed=4)
    predictor = TimePredictor(seed=0, search_iterations=2)

    predictor.fit(features, [7.5] * 12)

    np.testing.assert_allclose(predictor.predict(features), 7.5)


def test_time_predictor_predict_no_rows():
    features, times = toy_data(20, seed=5)
    predictor = TimePredictor(seed=0, search_iterations=1, iterations=50)
    predictor.fit(features, times)

    predicted = predictor.predict(features.iloc[:0])

    assert predicted.shape == (0,)


def test_time_predictor_predict_before_fit_raises():
    features, _ = toy_data(3, seed=6)

    with pytest.raises(RuntimeError, match="not been fitted"):
        TimePredictor().predict(features)


@pytest.mark.parametrize("rows", [0, 1])
def test_time_predictor_too_few_rows_raises(rows: int):
    features, times = toy_data(3, seed=7)

    with pytest.raises(ValueError, match="at least 2 results"):
        TimePredictor().fit(features.iloc[:rows], times[:rows])


def test_time_predictor_length_mismatch_raises():
    features, times = toy_data(5, seed=8)

    with pytest.raises(ValueError, match="same length"):
        TimePredictor().fit(features, times[:4])


@pytest.mark.parametrize("bad", [-1.0, np.nan, np.inf])
def test_time_predictor_invalid_time_raises(bad: float):
    features, times = toy_data(5, seed=9)
    times[2] = bad

    with pytest.raises(ValueError, match="finite, non-negative seconds"):
        TimePredictor().fit(features, times)


def test_time_predictor_non_finite_feature_raises():
    features, times = toy_data(5, seed=10)
    features.loc[1, "op_score"] = np.nan

    with pytest.raises(ValueError, match="NaN or infinite"):
        TimePredictor().fit(features, times)


def test_time_predictor_missing_column_raises():
    features, times = toy_data(20, seed=11)
    predictor = TimePredictor(seed=0, search_iterations=1, iterations=50)
    predictor.fit(features, times)

    with pytest.raises(ValueError, match="'dag_depth'"):
        predictor.predict(features.drop(columns=["dag_depth"]))


def test_time_predictor_failed_fit_keeps_ensemble():
    features, times = toy_data(20, seed=12)
    predictor = TimePredictor(seed=0, search_iterations=1, iterations=50)
    predictor.fit(features, times)
    before = predictor.predict(features)

    with pytest.raises(ValueError):
        predictor.fit(features.iloc[:1], times[:1])

    np.testing.assert_array_equal(predictor.predict(features), before)


def test_time_predictor_invalid_settings_listed():
    with pytest.raises(ValueError) as raised:
        TimePredictor(folds=1, search_iterations=0, iterations=0, early_stopping_rounds=0)

    message = str(raised.value)
    for name in ("folds=1", "search_iterations=0", "iterations=0", "early_stopping_rounds=0"):
        assert name in message


def test_time_features_columns_are_the_contract():
    # The search passes time_feature_frame() output straight to fit and predict.
    features, _ = toy_data(2, seed=13)

    assert tuple(features.columns) == TIME_FEATURES
