"""The compiled k-d tree finds exactly the pairs above a log-plan level: compared with the
numpy twin that scans all n m pairs, on random clouds and potentials, every cost power,
dimensions 1 to 4, zero-mass (-inf) points, duplicated points and far-apart clouds."""

import math

import numpy as np
import pytest

from snsot._tree import ColumnTree, pairs_reference


def canonical(indptr, cols, cost, logp):
    """The same CSR with columns sorted within each row (the tree gives them in its own order)."""
    rows = np.repeat(np.arange(indptr.size - 1), np.diff(indptr))
    order = np.lexsort((cols, rows))
    return indptr, cols[order], cost[order], logp[order]


def problem(seed, n, m, dim, kind="uniform"):
    rng = np.random.default_rng(seed)
    x = rng.random((n, dim))
    y = rng.random((m, dim))
    if kind == "dup":
        y = np.repeat(y[: (m + 3) // 4], 4, axis=0)[:m]
    elif kind == "far":
        y = y + 3.0
    f = rng.normal(scale=0.05, size=n)
    g = rng.normal(scale=0.05, size=m)
    return x, y, f, g


@pytest.mark.parametrize("dim", [1, 2, 3, 4])
@pytest.mark.parametrize("p", [2.0, 1.0, 1.5])
@pytest.mark.parametrize("kind", ["uniform", "dup", "far"])
def test_tree_finds_exactly_the_pairs_above_the_level(dim, p, kind):
    x, y, f, g = problem(dim, 200, 170, dim, kind)
    reg = 1e-2
    if kind == "far":  # every cost is about (3 sqrt(dim))^p: raise f so that some pairs qualify
        f = f + (3.0 * np.sqrt(dim)) ** p
    f[[3, 50]] = -np.inf  # zero-mass rows and columns get no pairs
    g[[0, 7]] = -np.inf
    tree = ColumnTree(y, leaf_size=4)
    for t in (0.5, 5.0, 40.0):
        got = canonical(*tree.pairs(x, f, g, reg, t, p))
        want = pairs_reference(x, y, f, g, reg, t, p)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_allclose(got[2], want[2], rtol=1e-14, atol=1e-300)
        np.testing.assert_allclose(got[3], want[3], rtol=1e-12, atol=1e-12)
        assert want[0][-1] > 0 or t < 5.0  # the comparison is not between two empty sets


def test_tree_at_converged_potentials_keeps_a_narrow_band():
    """At potentials where the plan is sharp (the regime the tilted node bound is for), the
    tree still returns exactly the twin's pairs, and far fewer than n m."""
    import snsot
    from snsot.geometry import PointCloud

    rng = np.random.default_rng(3)
    x = rng.random((400, 2))
    y = np.clip(rng.normal(0.5, 0.15, (350, 2)), 0.0, 1.0)
    reg = 1e-3
    f, g = snsot.solve(PointCloud(x, y).dense_cost(), reg=reg, tol=1e-9).potentials
    got = canonical(*ColumnTree(y).pairs(x, f, g, reg, 30.0, 2.0))
    want = pairs_reference(x, y, f, g, reg, 30.0, 2.0)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert 0 < want[0][-1] < 0.2 * 400 * 350


def test_tree_refuses_before_allocating_when_the_pairs_exceed_the_limit():
    x, y, f, g = problem(0, 50, 40, 2)
    with pytest.raises(OverflowError) as info:
        ColumnTree(y).pairs(x, f, g, 1.0, 50.0, 2.0, max_nnz=100)
    assert info.value.args[0] == 50 * 40


def test_single_point_and_no_live_column():
    x, y, f, g = problem(1, 5, 1, 2)
    got = ColumnTree(y).pairs(x, f, g, 1.0, 50.0, 2.0)
    np.testing.assert_array_equal(got[0], np.arange(6))
    got = ColumnTree(y).pairs(x, f, np.full(1, -np.inf), 1.0, 50.0, 2.0)
    assert got[0][-1] == 0 and got[1].size == 0


@pytest.mark.parametrize("n_drop", [0, 1, 300, 2000, 10**6])
def test_dropping_the_light_pairs_matches_the_numpy_twin(n_drop):
    from snsot._tree import drop_light, drop_light_reference, light_histogram

    rng = np.random.default_rng(n_drop)
    n = 300
    counts = rng.integers(0, 40, n)
    counts[:5] = 0  # empty rows
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    nnz = int(indptr[-1])
    t_max, width, log_cap = 50.0, 1.0 / 256.0, -20.0
    logp = rng.uniform(-t_max + 1e-9, 0.0, nnz)
    logp[:50] = -t_max + 1e-12  # at the bottom edge, where exp underflows nothing but is tiny
    cols = rng.integers(0, 1000, nnz)
    cost = rng.random(nnz)
    n_bins = int(np.ceil((log_cap + t_max) / width)) + 1
    got = drop_light(indptr, cols, cost, logp, t_max, width, log_cap, n_drop)
    want = drop_light_reference(indptr, cols, cost, logp, t_max, width, log_cap, n_drop)
    for u, v in zip(got[:3], want[:3]):
        np.testing.assert_array_equal(u, v)
    np.testing.assert_allclose(got[3], want[3], rtol=1e-13, atol=0)
    for u, v in zip(got[4], want[4]):  # the dropped pairs themselves, row by row in the same order
        np.testing.assert_array_equal(u, v)
    d_indptr, d_cols, d_logp = got[4]
    rows = np.repeat(np.arange(n), np.diff(d_indptr))
    np.testing.assert_allclose(np.bincount(rows, weights=np.exp(d_logp), minlength=n), got[3], rtol=1e-12, atol=0)
    light = logp <= log_cap
    bins = np.floor((logp[light] + t_max) / width).astype(np.int64)
    np.testing.assert_allclose(light_histogram(logp, t_max, width, log_cap, n_bins),
                               np.bincount(bins, weights=np.exp(logp[light]), minlength=n_bins),
                               rtol=1e-13, atol=0)
    # what is dropped is light, and everything kept is either heavy or above the cut
    assert got[0][-1] == nnz - int((light & (np.floor((logp + t_max) / width) < n_drop)).sum())


@pytest.mark.parametrize("jitter", [0.0, 1e-13])
def test_degenerate_boxes_and_steep_potentials_lose_no_pair(jitter):
    # Points on a line (a box of zero width across it: no slope there) or a hair off it
    # (a huge fitted slope), with g spanning 100 units and f placing the levels just
    # above 0: the pruning bound's rounding must never skip a pair the exact test keeps.
    rng = np.random.default_rng(9)
    m, n = 120, 90
    y = np.zeros((m, 2))
    y[:, 0] = rng.random(m)
    y[:, 1] = 0.5 + jitter * rng.normal(size=m)
    g = 100.0 * rng.random(m)
    x = rng.random((n, 2))
    f = -g.max() + rng.random(n) * 1e-3
    tree = ColumnTree(y, leaf_size=4)
    for t in (1.0, 30.0):
        got = canonical(*tree.pairs(x, f, g, 1e-3, t, 2.0))
        want = pairs_reference(x, y, f, g, 1e-3, t, 2.0)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_moved_mass_matches_the_numpy_twin_and_scales_exactly():
    from snsot._tree import moved_mass, moved_mass_reference

    rng = np.random.default_rng(3)
    n, m = 200, 150
    counts = rng.integers(0, 20, n)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    cols = rng.integers(0, m, int(indptr[-1])).astype(np.int32)
    logp = rng.uniform(-60.0, -20.0, cols.size)
    df, dg = rng.normal(0, 3, n), rng.normal(0, 3, m)
    got = moved_mass((indptr, cols, logp), df, dg)
    np.testing.assert_allclose(got, moved_mass_reference((indptr, cols, logp), df, dg), rtol=1e-13, atol=0)
    # a uniform shift of every potential by c (in units of reg) multiplies each row by exp(c)
    np.testing.assert_allclose(moved_mass((indptr, cols, logp), df + 2.0, dg), got * math.exp(2.0), rtol=1e-13)
    assert np.all(got[counts == 0] == 0.0)


def test_the_rows_visiting_order_changes_nothing_but_speed():
    from snsot._tree import spatial_order

    rng = np.random.default_rng(11)
    x, y = rng.random((700, 2)), rng.random((500, 2))
    f, g = rng.normal(0, 0.01, 700), rng.normal(0, 0.01, 500)
    order = spatial_order(x)
    np.testing.assert_array_equal(np.sort(order), np.arange(700))  # a permutation
    assert not np.array_equal(order, np.arange(700))
    tree = ColumnTree(y)
    plain = tree.pairs(x, f, g, 1e-2, 20.0, 2.0)
    ordered = tree.pairs(x, f, g, 1e-2, 20.0, 2.0, order=order)
    for u, v in zip(plain, ordered):
        np.testing.assert_array_equal(u, v)
    with pytest.raises(ValueError, match="order"):
        tree.pairs(x, f, g, 1e-2, 20.0, 2.0, order=order[:-1])
