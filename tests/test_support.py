"""Sparse supports: the truncated support holds every pair above -theta, and its certified
outside-mass bound holds against the full plan recomputed densely; user-given sparse costs."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.spatial.distance import cdist

import snsot
from snsot.geometry import PointCloud
from snsot.support import from_sparse_cost, truncate


def clouds(kind, n, m, dim, seed):
    rng = np.random.default_rng(seed)
    x = rng.random((n, dim))
    if kind == "gauss":
        y = np.clip(rng.normal(0.5, 0.15, (m, dim)), 0.0, 1.0)
    elif kind == "far":  # clouds far apart: every cost is large
        y = rng.random((m, dim)) + 5.0
    elif kind == "dup":  # duplicated points on both sides
        x = np.repeat(x[: n // 2], 2, axis=0)[:n]
        y = x[rng.permutation(n)][:m].copy()
    return x, y


def dense_truth(cloud, f, g, reg):
    """Log-plan entries ``e_ij`` and plan, recomputed from the points with scipy's cdist."""
    C = cdist(cloud.x, cloud.y) ** cloud.p
    with np.errstate(invalid="ignore"):
        E = (f[:, None] + g[None, :] - C) / reg
    E[np.isnan(E)] = -np.inf
    return C, E, np.exp(E)


def support_mask(sup):
    n, m = sup.shape
    mask = np.zeros((n, m), dtype=bool)
    mask[np.repeat(np.arange(n), np.diff(sup.indptr)), sup.indices] = True
    return mask


CASES = [
    # kind, dim, cost, reg
    ("gauss", 2, "sqeuclidean", 1e-3),
    ("gauss", 2, "euclidean", 1e-2),
    ("gauss", 3, "sqeuclidean", 3e-3),
    ("gauss", 3, "euclidean", 1e-2),
    ("gauss", 2, 1.5, 3e-3),
    ("far", 2, "sqeuclidean", 1e-2),
    ("dup", 2, "sqeuclidean", 1e-3),
    ("gauss", 1, "sqeuclidean", 1e-4),
    ("gauss", 2, "sqeuclidean", 1.0),  # large reg: the support is the full product
]


@pytest.mark.parametrize("kind, dim, cost, reg", CASES)
@pytest.mark.parametrize("target", [1e-6, 1e-11])
def test_truncated_support_certifies_the_mass_it_leaves_out(kind, dim, cost, reg, target):
    n, m = 300, 250
    x, y = clouds(kind, n, m, dim, seed=dim)
    rng = np.random.default_rng(0)
    a, b = rng.random(n) + 0.1, rng.random(m) + 0.1
    a[:3] = 0.0  # zero-mass points get no pairs and no bound
    a, b = a / a.sum(), b / b.sum()
    cloud = PointCloud(x, y, cost)
    res = snsot.solve(cloud.dense_cost(), a, b, reg=reg, tol=1e-9)
    f, g = res.potentials
    sup = truncate(cloud, f, g, reg, max_outside=target)
    C, E, P = dense_truth(cloud, f, g, reg)
    mask = support_mask(sup)
    # every pair above -theta is in, with its exact cost (the margin: the dropped pair
    # that sets theta has its cost rounded differently by cdist and by the support)
    assert mask[E > -sup.theta + 1e-9].all()
    np.testing.assert_allclose(sup.cost, C[np.repeat(np.arange(n), np.diff(sup.indptr)), sup.indices],
                               rtol=1e-12, atol=1e-15)
    # no pair twice (columns within a row come in the tree's order, not sorted)
    assert mask.sum() == sup.nnz
    # the certified bound holds against the full plan, per row, and meets the target
    outside_rows = np.where(mask, 0.0, P).sum(axis=1)
    assert np.all(outside_rows <= sup.row_bound * (1 + 1e-12) + 1e-300)
    assert outside_rows.sum() <= sup.outside_mass(f, g) <= target
    # every point with mass keeps at least one partner
    assert np.all(mask[a > 0].any(axis=1)) and np.all(mask.any(axis=0))
    assert not mask[a == 0].any()


def support_at_optimum(n, seed, max_outside, reg=1e-3):
    """``(cloud, f, g, support)``: 2-D clouds of ``n`` points each, their potentials solved
    densely to 1e-9, and the support truncated there."""
    x, y = clouds("gauss", n, n, 2, seed=seed)
    cloud = PointCloud(x, y)
    f, g = snsot.solve(cloud.dense_cost(), reg=reg, tol=1e-9).potentials
    return cloud, f, g, truncate(cloud, f, g, reg, max_outside=max_outside)


def test_per_row_bound_is_much_tighter_than_the_count_bound():
    _, _, _, sup = support_at_optimum(400, seed=1, max_outside=1e-9)
    assert sup.row_bound.sum() < 0.1 * 400 * 400 * math.exp(-sup.theta)
    assert sup.nnz < 0.5 * 400 * 400  # and the support is really sparse


def test_outside_mass_bound_follows_the_potentials_when_they_move():
    reg = 1e-3
    cloud, f, g, sup = support_at_optimum(250, seed=2, max_outside=1e-8, reg=reg)
    mask = support_mask(sup)
    rng = np.random.default_rng(3)
    for scale in (0.1, 1.0, 3.0):
        f1 = f + scale * reg * rng.normal(size=f.size)
        g1 = g + scale * reg * rng.normal(size=g.size)
        _, _, P1 = dense_truth(cloud, f1, g1, reg)
        assert np.where(mask, 0.0, P1).sum() <= sup.outside_mass(f1, g1)
    assert sup.outside_mass(f + 10 * reg, g) == pytest.approx(sup.outside_mass(f, g) * math.exp(10), rel=1e-12)


def test_one_column_moving_far_leaves_the_pair_by_pair_bound_tight_and_valid():
    # The dropped pairs are summed again at the new potentials: one column's drift
    # raises the bound by that column's own dropped pairs, not every row's (the
    # coarse bound R_i exp(df_i + max dg) multiplies everything by exp(max dg)).
    reg = 1e-3
    cloud, f, g, sup = support_at_optimum(250, seed=7, max_outside=1e-9, reg=reg)
    mask = support_mask(sup)
    for shift in (3.0, 8.0, 15.0):
        g1 = g.copy()
        g1[17] += shift * reg
        _, _, P1 = dense_truth(cloud, f, g1, reg)
        outside = np.where(mask, 0.0, P1).sum()
        bound = sup.outside_mass(f, g1)
        coarse = float(np.sum(sup.row_bound) * math.exp(shift))
        assert outside <= bound <= coarse
        if shift >= 8.0:
            assert bound < 0.01 * coarse


def test_truncation_at_unconverged_potentials_is_still_certified():
    x, y = clouds("gauss", 200, 300, 2, seed=4)
    cloud = PointCloud(x, y)
    rng = np.random.default_rng(5)
    reg = 1e-2
    f, g = rng.normal(scale=0.05, size=200) - 0.05, rng.normal(scale=0.05, size=300) - 0.05
    sup = truncate(cloud, f, g, reg, max_outside=1e-7)
    _, E, P = dense_truth(cloud, f, g, reg)
    mask = support_mask(sup)
    assert mask[E > -sup.theta + 1e-9].all()
    assert np.where(mask, 0.0, P).sum() <= sup.outside_mass(f, g) <= 1e-7


def test_support_that_would_not_fit_is_refused_early_with_its_size():
    x, y = clouds("gauss", 300, 300, 2, seed=6)
    cloud = PointCloud(x, y)
    with pytest.raises(ValueError, match=r"reg: the truncated support at reg=1 would hold about .* pairs"):
        truncate(cloud, np.zeros(300), np.zeros(300), 1.0, max_outside=1e-9, max_nnz=1000)


# ----------------------------------------------------------------------------- user-given sparse costs


def test_sparse_cost_support_keeps_stored_zeros_and_has_nothing_outside():
    C = sp.csr_matrix((np.array([0.0, 1.0, 2.0]), np.array([1, 0, 2]), np.array([0, 1, 3])), shape=(2, 3))
    sup = from_sparse_cost(C)
    assert sup.nnz == 3 and sup.shape == (2, 3)
    assert sup.indices.tolist() == [1, 0, 2] and sup.cost.tolist() == [0.0, 1.0, 2.0]
    assert sup.outside_mass(np.zeros(2), np.zeros(3)) == 0.0
    sup_coo = from_sparse_cost(sp.coo_matrix(([2.0, 1.0], ([1, 0], [2, 0])), shape=(2, 3)))
    np.testing.assert_array_equal(sup_coo.to_scipy().toarray(), [[1.0, 0, 0], [0, 0, 2.0]])


@pytest.mark.parametrize(
    "C, err, match",
    [
        (np.ones((2, 2)), TypeError, "C: expected a scipy.sparse matrix"),
        (sp.csr_matrix((0, 3)), ValueError, "C: sparse cost must be a non-empty"),
        (sp.csr_matrix(np.array([[1.0, np.inf]])), ValueError, r"found inf at \(0, 1\)"),
        (sp.csr_matrix(np.array([[1.0, 0.0], [0.0, -2.0]])), ValueError, r"found -2.0 at \(1, 1\)"),
        (sp.csr_matrix(np.array([[np.nan]])), ValueError, "finite and non-negative; found nan"),
        (sp.coo_matrix(([1.0, 2.0], ([0, 0], [1, 1])), shape=(1, 2)), ValueError, "1 duplicate entries"),
        (sp.csr_matrix(np.array([[1 + 1j]])), ValueError, "real and numeric"),
    ],
)
def test_bad_sparse_cost_is_refused(C, err, match):
    with pytest.raises(err, match=match):
        from_sparse_cost(C)


def test_feasibility_check_names_a_point_with_mass_and_no_pair():
    C = sp.csr_matrix((np.array([1.0, 1.0]), np.array([0, 0]), np.array([0, 1, 2, 2])), shape=(3, 2))
    sup = from_sparse_cost(C)
    sup.check_feasible(np.array([0.5, 0.5, 0.0]), np.array([1.0, 0.0]))  # fine: row 2 and column 1 are empty but massless
    with pytest.raises(ValueError, match=r"C: row 2 has positive mass a\[2\]"):
        sup.check_feasible(np.array([0.4, 0.4, 0.2]), np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"C: column 1 has positive mass b\[1\]"):
        sup.check_feasible(np.array([0.5, 0.5, 0.0]), np.array([0.5, 0.5]))


def test_guard_pairs_are_appended_to_their_rows_without_disturbing_the_others():
    from snsot.support import _append_pairs

    rng = np.random.default_rng(8)
    n, m = 40, 30
    dense = rng.random((n, m)) < 0.2
    dense[[3, 7]] = False  # empty rows, to be guarded
    dense[:, 5] = False  # an empty column, guarded into some row
    cloud = PointCloud(rng.random((n, 2)), rng.random((m, 2)))
    rows, cols = np.nonzero(dense)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(dense.sum(axis=1), out=indptr[1:])
    cost = cloud.pair_costs(rows, cols)
    new_r = np.array([7, 3, 12, 7], dtype=np.int64)  # the last duplicates the first
    new_c = np.array([1, 2, 5, 1], dtype=np.int64)
    out_ptr, out_cols, out_cost = _append_pairs(indptr, cols, cost, new_r, new_c, cloud)
    want = dense.copy()
    want[new_r, new_c] = True
    got = np.zeros((n, m), dtype=bool)
    out_rows = np.repeat(np.arange(n), np.diff(out_ptr))
    got[out_rows, out_cols] = True
    assert np.array_equal(got, want) and out_ptr[-1] == want.sum()  # every pair once
    np.testing.assert_array_equal(out_cost, cloud.pair_costs(out_rows, out_cols))
    # the old pairs keep their order within each row, the guards come after them
    for i in range(n):
        old = cols[indptr[i]:indptr[i + 1]]
        np.testing.assert_array_equal(out_cols[out_ptr[i]:out_ptr[i] + old.size], old)
