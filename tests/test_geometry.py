"""PointCloud: validation, and pair costs against scipy's cdist."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from snsot.geometry import PointCloud


@pytest.mark.parametrize("cost, power", [("sqeuclidean", 2.0), ("euclidean", 1.0), (1.5, 1.5), (3, 3.0)])
def test_pair_costs_and_dense_cost_match_cdist(cost, power):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 3)), rng.normal(size=(20, 3))
    cloud = PointCloud(x, y, cost)
    ref = cdist(x, y) ** power
    np.testing.assert_allclose(cloud.dense_cost(), ref, rtol=1e-12, atol=1e-14)
    rows, cols = rng.integers(0, 30, 100), rng.integers(0, 20, 100)
    np.testing.assert_allclose(cloud.pair_costs(rows, cols), ref[rows, cols], rtol=1e-12, atol=1e-14)
    assert cloud.shape == (30, 20) and cloud.dim == 3 and cloud.p == power


def test_duplicated_points_cost_exactly_zero():
    x = np.array([[0.1, 0.2], [0.3, 0.4]])
    cloud = PointCloud(x, x.copy())
    assert cloud.pair_costs([0, 1], [0, 1]).tolist() == [0.0, 0.0]
    assert np.diag(cloud.dense_cost()).tolist() == [0.0, 0.0]


def test_one_dimensional_input_is_points_on_a_line():
    cloud = PointCloud([0.0, 1.0, 3.0], [2.0], "euclidean")
    assert cloud.shape == (3, 1) and cloud.dim == 1
    np.testing.assert_allclose(cloud.dense_cost().ravel(), [2.0, 1.0, 1.0])


@pytest.mark.parametrize(
    "x, y, cost, match",
    [
        ([[0.0, np.nan]], [[0.0, 0.0]], "sqeuclidean", "x: coordinates must be finite"),
        ([[0.0, 0.0]], [[np.inf, 0.0]], "sqeuclidean", "y: coordinates must be finite"),
        (np.zeros((0, 2)), [[0.0, 0.0]], "sqeuclidean", "x: point cloud must be non-empty"),
        ([[0.0, 0.0]], np.zeros((3, 0)), "sqeuclidean", "y: point cloud must be non-empty"),
        ([[0.0, 0.0]], [[0.0, 0.0, 0.0]], "sqeuclidean", "y: points have dimension 3 but x has dimension 2"),
        ([[0.0]], [[0.0]], "cityblock", "cost: unknown cost 'cityblock'"),
        ([[0.0]], [[0.0]], -1.0, "cost: a power p"),
        ([[0.0]], [[0.0]], np.nan, "cost: a power p"),
        ([[0.0]], [[0.0]], True, "cost: expected"),
        (np.zeros((2, 2, 2)), [[0.0]], "sqeuclidean", r"x: points must be an \(n, d\) array"),
        ([["a"]], [[0.0]], "sqeuclidean", "x: points must be a numeric"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(x, y, cost, match):
    with pytest.raises(ValueError, match=match):
        PointCloud(x, y, cost)


def test_dense_cost_refuses_beyond_its_memory_limit():
    cloud = PointCloud(np.zeros((1000, 2)), np.zeros((1000, 2)))
    with pytest.raises(ValueError, match="needs 0.008 GB"):
        cloud.dense_cost(max_bytes=1e6)
