"""Each CSR kernel against its numpy twin (snsot._sparse_reference) and direct dense formulas,
including empty rows, zero-mass points and entries that underflow."""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import logsumexp

from snsot import _sparse_kernels as SK
from snsot import _sparse_reference as R


def random_support(n, m, density, seed, empty_rows=(), empty_cols=()):
    rng = np.random.default_rng(seed)
    mask = rng.random((n, m)) < density
    mask[list(empty_rows), :] = False
    mask[:, list(empty_cols)] = False
    C = rng.uniform(0.0, 2.0, (n, m))
    csr = sp.csr_matrix(np.where(mask, C, 0.0))
    csr = sp.csr_matrix((C[mask], np.nonzero(mask)[1], np.r_[0, np.cumsum(mask.sum(1))]), shape=(n, m))
    return csr.indptr.astype(np.int64), csr.indices.astype(np.int32), csr.data.copy(), C, mask


@pytest.mark.parametrize("reg", [1.0, 1e-2, 1e-4])
def test_lse_update_matches_reference_and_dense_formula(reg):
    indptr, indices, cost, C, mask = random_support(40, 30, 0.3, 0, empty_rows=[3, 7])
    rng = np.random.default_rng(1)
    g = rng.normal(scale=0.5, size=30)
    a = rng.random(40)
    a[5] = 0.0
    log_a = np.log(a, where=a > 0, out=np.full(40, -np.inf))
    out = np.empty(40)
    SK.csr_lse_update(indptr, indices, cost, g, log_a, reg, out)
    ref = R.csr_lse_update_reference(indptr, indices, cost, g, log_a, reg)
    dense = reg * log_a - reg * logsumexp(np.where(mask, (g[None, :] - C) / reg, -np.inf), axis=1)
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(np.isfinite(out), finite)
    np.testing.assert_allclose(out[finite], ref[finite], rtol=1e-13, atol=1e-13 * reg)
    np.testing.assert_allclose(out[finite], dense[finite], rtol=1e-13, atol=1e-13 * reg)
    # empty rows and zero-mass rows receive nothing: -inf, never NaN or +inf
    assert out[3] == -np.inf and out[7] == -np.inf and out[5] == -np.inf


def test_lse_update_on_the_transpose_is_the_column_update():
    indptr, indices, cost, C, mask = random_support(25, 35, 0.4, 2, empty_cols=[4])
    f = np.random.default_rng(3).normal(size=25)
    log_b = np.log(np.full(35, 1 / 35))
    t_indptr, t_rows, t_pos = SK.csr_transpose(indptr, indices, 35)
    out = np.empty(35)
    SK.csr_lse_update(t_indptr, t_rows, cost[t_pos], f, log_b, 1e-2, out)
    dense = 1e-2 * log_b - 1e-2 * logsumexp(np.where(mask, (f[:, None] - C) / 1e-2, -np.inf), axis=0)
    assert out[4] == -np.inf
    keep = np.arange(35) != 4
    np.testing.assert_allclose(out[keep], dense[keep], rtol=1e-13, atol=1e-15)


def test_lse_update_survives_exponents_that_would_underflow_without_the_shift():
    # every g_j - C_ij is about -1000 * reg: naive exp underflows to 0, the shifted sum does not
    indptr = np.array([0, 3], dtype=np.int64)
    indices = np.array([0, 1, 2], dtype=np.int32)
    cost = np.array([10.0, 10.0 + 1e-3, 10.0 + 2e-3])
    reg = 1e-2
    out = np.empty(1)
    SK.csr_lse_update(indptr, indices, cost, np.zeros(3), np.zeros(1), reg, out)
    expected = -reg * logsumexp(-cost / reg)
    assert out[0] == pytest.approx(expected, rel=1e-14)


def test_plan_values_row_and_column_sums_match_dense_plan():
    indptr, indices, cost, C, mask = random_support(50, 40, 0.25, 4, empty_rows=[0], empty_cols=[1])
    rng = np.random.default_rng(5)
    reg = 1e-2
    f, g = rng.normal(scale=0.02, size=50), rng.normal(scale=0.02, size=40)
    f[9] = -20.0  # this row's entries are far below exp(-708): stored as exact zeros
    P = np.empty(indices.size)
    row = np.empty(50)
    SK.csr_plan(indptr, indices, cost, f, g, reg, P, row)
    P_ref, row_ref = R.csr_plan_reference(indptr, indices, cost, f, g, reg)
    # exponents reach -200: an ulp of the argument (x inv_reg vs / reg) is 200 eps relative in P
    np.testing.assert_allclose(P, P_ref, rtol=1e-12)
    np.testing.assert_allclose(row, row_ref, rtol=1e-13)
    dense = np.where(mask, np.exp((f[:, None] + g[None, :] - C) / reg), 0.0)
    np.testing.assert_allclose(row, dense.sum(1), rtol=1e-13)
    col = SK.csr_col_sums(indices, P, 40)
    np.testing.assert_allclose(col, dense.sum(0), rtol=1e-13)
    np.testing.assert_allclose(col, R.csr_col_sums_reference(indptr, indices, P, 40), rtol=1e-13)
    assert row[0] == 0.0 and col[1] == 0.0 and row[9] == 0.0
    assert np.all(P[indptr[9]:indptr[10]] == 0.0)
    assert np.dot(P, cost) == pytest.approx((dense * C).sum(), rel=1e-13)


@pytest.mark.parametrize("tau", [0.0, 0.3, 0.9, 2.0])
def test_threshold_keeps_exactly_the_entries_at_or_above_tau(tau):
    indptr, indices, cost, C, mask = random_support(30, 30, 0.5, 6, empty_rows=[2])
    values = np.random.default_rng(7).random(indices.size)
    ptr, idx, val = SK.csr_threshold(indptr, indices, values, tau)
    got = sp.csr_matrix((val, idx, ptr), shape=(30, 30))
    ref = R.csr_threshold_reference(indptr, indices, values, tau, 30)
    assert got.nnz == int((values >= tau).sum())
    np.testing.assert_array_equal(got.toarray(), ref.toarray())


def test_transpose_lists_every_entry_once_column_by_column():
    indptr, indices, cost, C, mask = random_support(20, 15, 0.3, 8, empty_cols=[0, 14])
    t_indptr, t_rows, t_pos = SK.csr_transpose(indptr, indices, 15)
    csc = sp.csr_matrix((cost, indices, indptr), shape=(20, 15)).tocsc()
    csc.sort_indices()
    np.testing.assert_array_equal(t_indptr, csc.indptr)
    np.testing.assert_array_equal(t_rows, csc.indices)
    np.testing.assert_array_equal(cost[t_pos], csc.data)
    assert sorted(t_pos.tolist()) == list(range(indices.size))


def test_kernels_accept_an_empty_support():
    indptr = np.zeros(4, dtype=np.int64)
    indices = np.zeros(0, dtype=np.int32)
    cost = np.zeros(0)
    out = np.empty(3)
    SK.csr_lse_update(indptr, indices, cost, np.zeros(2), np.zeros(3), 1.0, out)
    assert np.all(out == -np.inf)
    t_indptr, t_rows, t_pos = SK.csr_transpose(indptr, indices, 2)
    assert t_indptr.tolist() == [0, 0, 0] and t_rows.size == 0
    assert SK.csr_col_sums(indices, cost, 2).tolist() == [0.0, 0.0]


def test_scaled_rows_gather_and_plan_match_references_and_the_dense_product():
    indptr, indices, cost, C, mask = random_support(45, 35, 0.3, 9, empty_rows=[4], empty_cols=[6])
    rng = np.random.default_rng(10)
    B = rng.random(indices.size)
    B[::7] = 0.0  # base entries stored as zeros (below P_FLOOR)
    u, v = np.exp(rng.normal(scale=3.0, size=45)), np.exp(rng.normal(scale=3.0, size=35))
    dense_B = np.zeros((45, 35))
    dense_B[mask] = B  # the support lists entries row by row, columns increasing: the mask's order
    s = np.empty(45)
    SK.csr_scaled_rows(indptr, indices, B, v, s)
    np.testing.assert_allclose(s, R.csr_scaled_rows_reference(indptr, indices, B, v), rtol=1e-13)
    np.testing.assert_allclose(s, dense_B @ v, rtol=1e-13)
    t_indptr, t_rows, t_pos = SK.csr_transpose(indptr, indices, 35)
    col = np.empty(35)
    SK.csr_gather(t_indptr, t_rows, B[t_pos], u, col)
    np.testing.assert_allclose(col, R.csr_gather_reference(indptr, indices, B, u, 35), rtol=1e-13)
    np.testing.assert_allclose(col, dense_B.T @ u, rtol=1e-13)
    assert s[4] == 0.0 and col[6] == 0.0
    dense_P = u[:, None] * dense_B * v[None, :]
    for tau in (0.0, float(np.median(dense_P[mask])), np.inf):
        P, row, above = np.empty(indices.size), np.empty(45), np.empty(45, dtype=np.int64)
        SK.csr_scaled_plan(indptr, indices, B, u, v, tau, P, row, above)
        P_ref, row_ref, above_ref = R.csr_scaled_plan_reference(indptr, indices, B, u, v, tau)
        np.testing.assert_allclose(P, P_ref, rtol=1e-14)
        np.testing.assert_allclose(P, dense_P[mask], rtol=1e-14)
        np.testing.assert_allclose(row, dense_P.sum(1), rtol=1e-13)
        np.testing.assert_array_equal(above, (np.where(mask, dense_P, -1.0) >= tau).sum(1))
        np.testing.assert_array_equal(above, above_ref)


def test_scaled_kernels_keep_float32_scalings_and_tiny_values_exact():
    # scalings near the drift limit (e**+-50) times base entries near P_FLOOR: products stay normal
    indptr = np.array([0, 2, 3], dtype=np.int64)
    indices = np.array([0, 1, 1], dtype=np.int32)
    B = np.array([1e-250, 1.0, 1e-200])
    u = np.array([np.exp(50.0), np.exp(-50.0)])
    v = np.array([np.exp(50.0), np.exp(-50.0)])
    P, row, above = np.empty(3), np.empty(2), np.empty(2, dtype=np.int64)
    SK.csr_scaled_plan(indptr, indices, B, u, v, 0.0, P, row, above)
    expected = np.array([1e-250 * np.exp(100.0), 1.0, 1e-200 * np.exp(-100.0)])
    np.testing.assert_allclose(P, expected, rtol=1e-14)
    assert np.all(P > np.finfo(np.float64).tiny)  # no denormals
    s = np.empty(2)
    SK.csr_scaled_rows(indptr, indices, B, v.astype(np.float32).astype(np.float64), s)
    assert np.isfinite(s).all() and s[1] > 0.0
