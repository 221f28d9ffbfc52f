"""Predictor quality metrics: MAPE and Spearman correlation, including their undefined cases."""

import math

import pytest

from popnas.predict.quality import mape, spearman


def test_mape_percent():
    assert mape([100.0, 200.0], [110.0, 180.0]) == pytest.approx(10.0)


def test_mape_exact_predictions_zero():
    assert mape([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 0.0


def test_mape_skips_zero_actual_rows():
    assert mape([0.0, 50.0], [7.0, 75.0]) == pytest.approx(50.0)


def test_mape_all_zero_actual_is_none():
    assert mape([0.0, 0.0], [1.0, 2.0]) is None


def test_mape_empty_is_none():
    assert mape([], []) is None


def test_mape_negative_actual_uses_magnitude():
    assert mape([-10.0], [-12.0]) == pytest.approx(20.0)


def test_mape_length_mismatch_raises():
    with pytest.raises(ValueError, match="same length"):
        mape([1.0, 2.0], [1.0])


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_mape_non_finite_raises(bad: float):
    with pytest.raises(ValueError, match="finite"):
        mape([1.0, 2.0], [1.0, bad])


def test_spearman_same_order_is_one():
    assert spearman([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 25.0, 100.0]) == pytest.approx(1.0)


def test_spearman_reversed_order_is_minus_one():
    assert spearman([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)


def test_spearman_with_ties():
    # Ranks: actual (1, 2.5, 2.5, 4), predicted (1, 2, 3, 4); Pearson correlation of the ranks.
    assert spearman([1.0, 2.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]) == pytest.approx(0.9486833, abs=1e-6)


@pytest.mark.parametrize(("actual", "predicted"), [([], []), ([1.0], [2.0])])
def test_spearman_fewer_than_two_points_is_none(actual: list[float], predicted: list[float]):
    assert spearman(actual, predicted) is None


def test_spearman_constant_actual_is_none():
    assert spearman([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]) is None


def test_spearman_constant_predicted_is_none():
    assert spearman([0.1, 0.2, 0.3], [0.7, 0.7, 0.7]) is None


def test_spearman_length_mismatch_raises():
    with pytest.raises(ValueError, match="same length"):
        spearman([1.0, 2.0, 3.0], [1.0, 2.0])


def test_spearman_non_finite_raises():
    with pytest.raises(ValueError, match="finite"):
        spearman([1.0, math.nan, 3.0], [1.0, 2.0, 3.0])
