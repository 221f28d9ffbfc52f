"""Pareto fronts over objectives that are all minimized.

Objectives are normalized once at the boundary (accuracy becomes ``-accuracy``), so this module
deals with a single direction. Dominance is strict: ``a`` dominates ``b`` when ``a`` is no worse
in every objective and better in at least one, so two candidates with identical objectives are
both kept (the original implementation let them eliminate each other).
"""

from __future__ import annotations

import numpy as np


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """Return whether point ``a`` strictly dominates point ``b`` (all objectives minimized)."""
    return bool(np.all(a <= b) and np.any(a < b))


def non_dominated(points: np.ndarray) -> np.ndarray:
    """Return the sorted indices of the rows of ``points`` (shape (n, objectives)) that no other row dominates.

    Rows are visited in lexicographic order, so a row can only be dominated by rows visited
    before it, and by transitivity by one already on the front: each row is compared with the
    front only. That costs O(n log n + n·f) for a front of size f, instead of O(n²).
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2:
        raise ValueError(f"points must have shape (n, objectives), received shape {points.shape}")
    if len(points) == 0:
        return np.zeros(0, dtype=np.int64)
    if np.isnan(points).any():
        raise ValueError("points contain NaN; drop or replace those rows before computing a front")
    order = np.lexsort(points.T[::-1])
    front: list[int] = []
    front_points = np.empty((0, points.shape[1]))
    for index in order:
        point = points[index]
        if len(front) and np.any(np.all(front_points <= point, axis=1) & np.any(front_points < point, axis=1)):
            continue
        front.append(int(index))
        front_points = np.vstack([front_points, point])
    return np.sort(np.asarray(front, dtype=np.int64))
