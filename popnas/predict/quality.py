"""Quality metrics of the predictors: how close and how well ranked the predictions of a step were.

The search records both metrics per step by comparing the predictions of the trained candidates
with their measured accuracy and time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import spearmanr


def mape(actual: Sequence[float], predicted: Sequence[float]) -> float | None:
    """Return the mean absolute percentage error of ``predicted`` against ``actual``, in percent.

    Rows whose actual value is 0 have no relative error and are skipped. Returns None when no row
    is left. Raises ValueError when the lengths differ or a value is NaN or infinite.
    """
    actual_values, predicted_values = _paired_values(actual, predicted)
    measurable = actual_values != 0
    if not np.any(measurable):
        return None
    errors = np.abs((predicted_values[measurable] - actual_values[measurable]) / actual_values[measurable])
    return float(100.0 * np.mean(errors))


def spearman(actual: Sequence[float], predicted: Sequence[float]) -> float | None:
    """Return the Spearman rank correlation of ``predicted`` with ``actual``, in [-1, 1].

    Returns None for fewer than 2 points or when either side is constant, because a rank
    correlation is undefined there. Raises ValueError when the lengths differ or a value is NaN
    or infinite.
    """
    actual_values, predicted_values = _paired_values(actual, predicted)
    if len(actual_values) < 2 or np.ptp(actual_values) == 0 or np.ptp(predicted_values) == 0:
        return None
    return float(spearmanr(actual_values, predicted_values).statistic)


def _paired_values(actual: Sequence[float], predicted: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    actual_values = np.asarray(actual, dtype=np.float64).reshape(-1)
    predicted_values = np.asarray(predicted, dtype=np.float64).reshape(-1)
    if len(actual_values) != len(predicted_values):
        raise ValueError(
            f"actual and predicted values must have the same length, received {len(actual_values)} "
            f"and {len(predicted_values)}"
        )
    if not (np.all(np.isfinite(actual_values)) and np.all(np.isfinite(predicted_values))):
        raise ValueError("actual and predicted values must be finite numbers, received NaN or infinite values")
    return actual_values, predicted_values
