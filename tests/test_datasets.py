"""Benchmark problems: deterministic, well-formed, and faithful to their sources."""

import numpy as np
import pytest

from snsot import datasets


def _check_problem(C, a, b):
    """Every builder returns a valid problem with strictly positive unit-mass weights."""
    assert C.ndim == 2 and C.dtype == np.float64
    assert C.shape == (a.size, b.size)
    assert np.isfinite(C).all() and C.min() >= 0
    for w in (a, b):
        assert w.ndim == 1
        assert w.min() > 0
        assert w.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("name", sorted(datasets.PROBLEMS))
def test_every_registered_problem_is_valid_and_deterministic(name):
    if name in ("random2000", "random4000"):
        pytest.skip("large; random_assignment is covered at smaller n")
    first = datasets.PROBLEMS[name](seed=0)
    again = datasets.PROBLEMS[name](seed=0)
    _check_problem(*first)
    for x, y in zip(first, again):
        np.testing.assert_array_equal(x, y)


def test_random_assignment_matches_its_definition():
    C, a, b = datasets.random_assignment(50, seed=3)
    np.testing.assert_array_equal(C, np.random.default_rng(3).random((50, 50)))
    np.testing.assert_array_equal(a, np.full(50, 1 / 50))
    np.testing.assert_array_equal(b, a)
    assert 0 <= C.min() and C.max() < 1


def test_random_assignment_seeds_differ():
    C0, _, _ = datasets.random_assignment(20, seed=0)
    C1, _, _ = datasets.random_assignment(20, seed=1)
    assert not np.array_equal(C0, C1)


def test_mnist_images_shape_and_labels():
    images, labels = datasets.mnist_images()
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,)
    assert set(np.unique(labels)) == set(range(10))
    assert np.all(np.diff(labels.astype(int)) >= 0)  # class-sorted, as documented


@pytest.mark.parametrize("floor", [0.0, 1e-6, 1e-3])
def test_mnist_pair_weights_are_normalised_intensities_plus_floor(floor):
    images, _ = datasets.mnist_images()
    i, j = 5, 4000
    C, a, b = datasets.mnist_pair(i, j, floor=floor)
    for w, img in ((a, images[i]), (b, images[j])):
        x = img.ravel().astype(float)
        expected = (x / x.sum() + floor) / (1 + x.size * floor)
        np.testing.assert_allclose(w, expected, rtol=1e-12, atol=0)
        # the floor only perturbs the raw intensities by at most size*floor in L1
        assert np.abs(w - x / x.sum()).sum() <= 2 * x.size * floor + 1e-12
    if floor > 0:
        assert a.min() > 0 and b.min() > 0


@pytest.mark.parametrize("metric", ["sqeuclidean", "cityblock"])
def test_mnist_cost_spans_zero_to_two(metric):
    C, a, b = datasets.mnist_pair(0, 1, metric=metric)
    _check_problem(C, a, b)
    assert C.shape == (784, 784)
    np.testing.assert_allclose(np.diag(C), 0)
    # opposite corners are (1, 1) apart: L1 = 2 and squared L2 = 2
    assert C.max() == pytest.approx(2.0)
    assert C[0, 783] == pytest.approx(2.0)


def test_mnist_rejects_unknown_metric_and_index():
    with pytest.raises(ValueError, match="metric"):
        datasets.mnist_pair(0, 1, metric="euclidean")
    with pytest.raises(ValueError, match="index"):
        datasets.mnist_pair(0, 10_000)


def test_mnist_pairs_are_deterministic_and_of_different_digits():
    _, labels = datasets.mnist_images()
    pairs = datasets.mnist_pairs(20, seed=7)
    assert pairs == datasets.mnist_pairs(20, seed=7)
    assert pairs != datasets.mnist_pairs(20, seed=8)
    assert len(pairs) == 20
    assert all(labels[i] != labels[j] for i, j in pairs)
    # a shorter request is a prefix, so benchmark pair k does not depend on how many are asked for
    assert datasets.mnist_pairs(5, seed=7) == pairs[:5]


@pytest.mark.parametrize("metric, max_cost", [("sqeuclidean", 1.0), ("euclidean", 1.0)])
def test_gaussian_mixture_1d(metric, max_cost):
    C, a, b = datasets.gaussian_mixture_1d(300, metric=metric, seed=2)
    _check_problem(C, a, b)
    assert C.shape == (300, 300)
    assert C.max() == pytest.approx(max_cost)
    assert not np.allclose(a, b)
    # mass sits near the component means, not on the floor
    assert a.max() > 100 * a.min()


@pytest.mark.parametrize("metric, max_cost", [("sqeuclidean", 2.0), ("euclidean", np.sqrt(2))])
def test_gaussian_mixture_2d(metric, max_cost):
    C, a, b = datasets.gaussian_mixture_2d((12, 15), metric=metric, seed=1)
    _check_problem(C, a, b)
    assert C.shape == (180, 180)
    assert C.max() == pytest.approx(max_cost)
    assert not np.allclose(a, b)


def test_gaussian_mixtures_depend_on_seed_only():
    one = datasets.gaussian_mixture_2d((10, 10), seed=0)
    two = datasets.gaussian_mixture_2d((10, 10), seed=1)
    assert not np.allclose(one[1], two[1])
    np.testing.assert_array_equal(one[0], two[0])


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="n:"):
        datasets.random_assignment(0)
    with pytest.raises(ValueError, match="metric"):
        datasets.gaussian_mixture_1d(10, metric="cityblock")
    with pytest.raises(ValueError, match="shape"):
        datasets.gaussian_mixture_2d((10,))
