import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from popnas.search.pareto import dominates, non_dominated


def brute_force_front(points: np.ndarray) -> list[int]:
    return [
        i for i in range(len(points)) if not any(dominates(points[j], points[i]) for j in range(len(points)) if j != i)
    ]


# Small integer grids produce many ties and duplicates, the cases where dominance rules matter.
point_sets = st.integers(min_value=1, max_value=4).flatmap(
    lambda objectives: arrays(
        np.float64,
        st.tuples(st.integers(min_value=0, max_value=40), st.just(objectives)),
        elements=st.integers(min_value=0, max_value=5).map(float),
    )
)


@given(point_sets)
@settings(max_examples=300, deadline=None)
def test_front_matches_brute_force(points):
    assert non_dominated(points).tolist() == brute_force_front(points)


@given(arrays(np.float64, (30, 2), elements=st.floats(-1e6, 1e6, allow_nan=False)))
@settings(max_examples=200, deadline=None)
def test_front_two_objectives_floats(points):
    assert non_dominated(points).tolist() == brute_force_front(points)


def test_identical_points_both_kept():
    points = np.array([[1.0, 2.0], [1.0, 2.0], [2.0, 3.0]])
    assert non_dominated(points).tolist() == [0, 1]


def test_dominance_is_strict():
    assert not dominates(np.array([1.0, 1.0]), np.array([1.0, 1.0]))
    assert dominates(np.array([1.0, 1.0]), np.array([1.0, 2.0]))
    assert not dominates(np.array([0.0, 2.0]), np.array([1.0, 1.0]))


def test_front_empty_input():
    assert non_dominated(np.zeros((0, 2))).tolist() == []


def test_front_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        non_dominated(np.array([[np.nan, 1.0]]))


def test_front_rejects_one_dimensional_input():
    with pytest.raises(ValueError, match="shape"):
        non_dominated(np.array([1.0, 2.0]))
