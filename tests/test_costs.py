"""Cost matrices against scipy's cdist and explicit formulas."""

import warnings

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from snsot import costs


@pytest.fixture
def clouds():
    rng = np.random.default_rng(11)
    return rng.normal(size=(13, 3)), rng.normal(size=(7, 3))


def test_sqeuclidean_is_the_squared_distance(clouds):
    x, y = clouds
    expected = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    C = costs.pairwise(x, y)
    assert C.shape == (13, 7) and C.dtype == np.float64
    np.testing.assert_allclose(C, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(costs.pairwise(x, y, "sqeuclidean"), cdist(x, y, "sqeuclidean"), rtol=1e-14)


@pytest.mark.parametrize("metric", ["euclidean", "cityblock"])
def test_named_metrics_match_cdist(clouds, metric):
    x, y = clouds
    np.testing.assert_allclose(costs.pairwise(x, y, metric), cdist(x, y, metric), rtol=1e-14)


def test_cityblock_is_the_l1_distance(clouds):
    x, y = clouds
    np.testing.assert_allclose(costs.pairwise(x, y, "cityblock"), np.abs(x[:, None] - y[None]).sum(-1), rtol=1e-13)


@pytest.mark.parametrize("p", [0.5, 1, 1.5, 2, 3.0, "2", "1.5"])
def test_metric_power_p_is_distance_to_the_p(clouds, p):
    x, y = clouds
    D = np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))
    np.testing.assert_allclose(costs.pairwise(x, y, p), D ** float(p), rtol=1e-12)


def test_power_two_equals_sqeuclidean(clouds):
    x, y = clouds
    np.testing.assert_allclose(costs.pairwise(x, y, 2), costs.pairwise(x, y, "sqeuclidean"), rtol=1e-12, atol=1e-14)


def test_default_target_is_the_source_and_diagonal_is_zero(clouds):
    x, _ = clouds
    C = costs.pairwise(x)
    assert C.shape == (13, 13)
    np.testing.assert_array_equal(np.diag(C), 0.0)
    np.testing.assert_allclose(C, C.T, rtol=1e-14)
    assert np.all(C >= 0)  # squared distances can round to -0.0 or below; never negative here


def test_sqeuclidean_never_negative_on_near_duplicates():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(50, 4)) * 1e8
    C = costs.pairwise(x, x + 1e-9)
    assert np.all(C >= 0)


def test_one_dimensional_points_are_points_on_a_line():
    x = np.array([0.0, 1.0, 3.0])
    y = np.array([2.0, -1.0])
    np.testing.assert_array_equal(costs.pairwise(x, y), (x[:, None] - y[None, :]) ** 2)
    np.testing.assert_array_equal(costs.pairwise(x, y, "euclidean"), np.abs(x[:, None] - y[None, :]))


@pytest.mark.parametrize("shape", [5, (4,), (3, 4), (2, 3, 2)])
def test_grid_points_are_c_order_bin_centres_in_unit_cube(shape):
    pts = costs.grid_points(shape)
    shp = (shape,) if isinstance(shape, int) else shape
    assert pts.shape == (int(np.prod(shp)), len(shp))
    for axis, s in enumerate(shp):
        vals = np.unique(pts[:, axis])
        np.testing.assert_allclose(vals, np.linspace(0.0, 1.0, s), rtol=0, atol=1e-15)
    # C order: the point of flat index k sits at the multi-index np.unravel_index(k, shape)
    idx = np.array(np.unravel_index(np.arange(pts.shape[0]), shp)).T
    np.testing.assert_allclose(pts, idx / (np.array(shp) - 1.0), rtol=0, atol=1e-15)


def test_grid_axis_of_length_one_sits_at_zero():
    pts = costs.grid_points((1, 3))
    np.testing.assert_array_equal(pts[:, 0], 0.0)
    np.testing.assert_allclose(pts[:, 1], [0.0, 0.5, 1.0])


def test_grid_cost_flattening_matches_image_ravel():
    # An image with one unit of mass at pixel (r, c) has the histogram image.ravel();
    # the cost between two such one-hot images must be the distance between their pixels.
    shape = (4, 6)
    C = costs.grid(shape, "sqeuclidean")
    assert C.shape == (24, 24)
    for (r1, c1), (r2, c2) in [((0, 0), (3, 5)), ((1, 4), (2, 0)), ((3, 1), (3, 1)), ((0, 5), (3, 0))]:
        im1, im2 = np.zeros(shape), np.zeros(shape)
        im1[r1, c1] = im2[r2, c2] = 1.0
        i, j = np.flatnonzero(im1.ravel())[0], np.flatnonzero(im2.ravel())[0]
        expected = ((r1 - r2) / 3.0) ** 2 + ((c1 - c2) / 5.0) ** 2
        assert C[i, j] == pytest.approx(expected, rel=1e-14, abs=1e-16)


def test_grid_cityblock_maximum_is_number_of_axes():
    C = costs.grid((5, 5), "cityblock")
    assert C.max() == pytest.approx(2.0, rel=1e-15)
    assert C[0, 24] == pytest.approx(2.0, rel=1e-15)
    assert C[0, 1] == pytest.approx(0.25, rel=1e-15)


def test_grid_between_different_shapes():
    C = costs.grid((2, 3), "euclidean", shape_b=(3, 2))
    assert C.shape == (6, 6)
    expected = cdist(costs.grid_points((2, 3)), costs.grid_points((3, 2)))
    np.testing.assert_allclose(C, expected, rtol=1e-14)
    # corners coincide: (0, 0) -> (0, 0) and (1, 1) -> (1, 1) in unit coordinates
    assert C[0, 0] == 0.0 and C[5, 5] == 0.0


@pytest.mark.parametrize("metric", ["minkowski", "l2", 0, -1.0, np.nan, np.inf, "nan", "-2", True, None])
def test_bad_metric_raises(metric):
    with pytest.raises(ValueError, match=r"^metric: "):
        costs.pairwise(np.zeros((2, 2)), np.ones((2, 2)), metric)


def test_dimension_mismatch_raises():
    with pytest.raises(ValueError, match=r"^y: points have dimension 3 but x has 2"):
        costs.pairwise(np.zeros((4, 2)), np.zeros((4, 3)))


@pytest.mark.parametrize("x", [np.zeros((0, 2)), np.zeros((3, 0)), np.zeros((2, 2, 2)), np.zeros(0)])
def test_bad_point_arrays_raise(x):
    with pytest.raises(ValueError, match=r"^x: points must be a non-empty \(n, d\) array"):
        costs.pairwise(x, np.zeros((2, 2)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_points_raise(bad):
    y = np.zeros((2, 2))
    y[1, 0] = bad
    with pytest.raises(ValueError, match=r"^y: points must be finite"):
        costs.pairwise(np.zeros((2, 2)), y)


@pytest.mark.parametrize("shape", [0, (3, 0), (-1, 2), ()])
def test_bad_grid_shape_raises(shape):
    with pytest.raises(ValueError, match=r"^shape: grid shape must be positive integers"):
        costs.grid(shape)


def test_grid_axes_mismatch_raises():
    with pytest.raises(ValueError, match=r"^shape_b: grid has 1 axes but shape has 2"):
        costs.grid((2, 2), shape_b=(4,))


@pytest.mark.parametrize("name", ["x", "y"])
@pytest.mark.parametrize("bad", [["a", "b"], [["1.0", "2.0"]], np.array([[1.0, None]], dtype=object)])
def test_non_numeric_points_raise_a_type_error_naming_the_argument(name, bad):
    # issue 11: strings used to fail inside numpy with a message naming neither x nor y
    good = np.zeros((2, np.asarray(bad).reshape(len(bad), -1).shape[1]))
    args = (bad, good) if name == "x" else (good, bad)
    with pytest.raises(TypeError, match=rf"^{name}: points must be numeric; got dtype"):
        costs.pairwise(*args)


def test_complex_points_are_refused_not_truncated():
    with pytest.raises(TypeError, match=r"^x: points must be real; got a complex array$"):
        costs.pairwise(np.ones((3, 2)) + 1j)


@pytest.mark.parametrize("metric, scale", [("sqeuclidean", 1e160), ("euclidean", 1e308), (3.0, 1e110),
                                           ("cityblock", 1e308)])
def test_finite_points_whose_costs_overflow_to_inf_raise_instead_of_returning_inf(metric, scale):
    x = np.array([[0.0, 0.0], [1.0, 1.0]]) * scale
    y = -x
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one clear error, not a RuntimeWarning on the way
        with pytest.raises(ValueError, match=r"^x, y: the costs overflow to inf in float64 \(coordinates up to "):
            costs.pairwise(x, y, metric)


def test_large_but_representable_costs_are_returned():
    x = np.array([[0.0], [1e150]])
    C = costs.pairwise(x, metric="sqeuclidean")
    assert np.isfinite(C).all() and C[0, 1] == pytest.approx(1e300)
