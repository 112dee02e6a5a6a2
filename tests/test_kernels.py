"""Each numba kernel against a plain numpy computation of the same quantity.

The references are numpy/scipy formulas (``logsumexp``, ``np.exp``, dense
linear algebra, ``scipy.sparse``), the readable twins in ``snsot._reference``
and the ``*_reference`` twins shipped in ``snsot._kernels``, which are
themselves checked against direct formulas. No case returns early: a case
outside a claim's range is excluded by name, and covered by a twin.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import logsumexp

from snsot import _kernels as K
from snsot import _reference as ref

# ----------------------------------------------------------------------------- fast_exp


def test_fast_exp_relative_error_below_1e15_on_the_whole_normal_range():
    rng = np.random.default_rng(0)
    x = np.concatenate([
        np.linspace(-708.0, 709.0, 400_001),
        rng.uniform(-708.0, 709.0, 200_000),
        rng.uniform(-1.0, 1.0, 100_000),
        [-708.0, 709.0, 0.0, -0.0, 1e-300, -1e-300, np.log(2.0), -np.log(2.0)],
        np.log(2.0) * np.arange(-1021, 1023) + 0.5 * np.log(2.0),  # reduction boundaries |r| = ln2/2
    ])
    y = K.fast_exp_array(x)
    ref = np.exp(x)
    rel = np.abs(y - ref) / ref
    assert rel.max() < 1e-15, (rel.max(), x[np.argmax(rel)])


def test_fast_exp_is_exact_at_zero_and_exact_powers_of_two():
    k = np.arange(-1000, 1001)
    np.testing.assert_array_equal(K.fast_exp_array(np.array([0.0])), [1.0])
    rel = np.abs(K.fast_exp_array(k * np.log(2.0)) - np.exp(k * np.log(2.0))) / np.exp(k * np.log(2.0))
    assert rel.max() < 1e-15


def test_fast_exp_is_exactly_zero_below_minus_708():
    x = np.array([-708.0000001, -708.39, -708.5, -709.0, -745.0, -746.0, -1e4, -1e300, -np.finfo(float).max])
    np.testing.assert_array_equal(K.fast_exp_array(x), 0.0)
    # and never a subnormal anywhere: the smallest output is exp(-708) itself
    assert K.fast_exp_array(np.array([-708.0]))[0] == pytest.approx(np.exp(-708.0), rel=1e-15)
    assert K.fast_exp_array(np.array([-708.0]))[0] >= np.finfo(float).tiny


def test_fast_exp_is_inf_above_709():
    x = np.array([709.0000001, 709.5, 709.78, 709.8, 710.0, 1e4, 1e300, np.finfo(float).max])
    np.testing.assert_array_equal(K.fast_exp_array(x), np.inf)


def test_fast_exp_array_keeps_shape():
    x = np.linspace(-3, 3, 12).reshape(3, 4)
    y = K.fast_exp_array(x)
    assert y.shape == (3, 4)
    np.testing.assert_allclose(y, np.exp(x), rtol=1e-15)


# ----------------------------------------------------------------------------- inputs

EPS = np.finfo(np.float64).eps


def assert_exp_close(P, X):
    """``P == exp(X)`` up to the conditioning of exp: an exponent known to a few ulps
    of ``|X|`` gives a relative error of about ``|X| eps``; flushed underflow is allowed."""
    ref = np.exp(X)
    tol = ref * (1e-15 + 4 * EPS * np.abs(X)) + 3.4e-308
    bad = ~(np.abs(P - ref) <= tol)
    assert not bad.any(), (P[bad][:5], ref[bad][:5], X[bad][:5])


def _case(seed, n, m, reg, kind="normal", dtype=np.float64):
    """Cost, potentials and log-weights. kind='underflow' makes most exp(.) underflow."""
    rng = np.random.default_rng(seed)
    if kind == "normal":
        C = rng.random((n, m))
        f, g = rng.normal(0, 0.1, n), rng.normal(0, 0.1, m)
    elif kind == "underflow":
        # costs up to 1e3 at reg 1e-3: exponents down to -1e6, far below -708
        C = rng.random((n, m)) * 1e3
        C[rng.random((n, m)) < 0.05] = rng.random() * 1e-3
        f, g = rng.normal(0, 1e-3, n), rng.normal(0, 1e-3, m)
    else:
        raise ValueError(kind)
    a = rng.random(n) + 0.1
    b = rng.random(m) + 0.1
    return C.astype(dtype), f, g, np.log(a / a.sum()), np.log(b / b.sum())


CASES = [
    dict(seed=1, n=37, m=53, reg=0.1),
    dict(seed=2, n=64, m=17, reg=1e-2),
    dict(seed=3, n=1, m=9, reg=1.0),
    dict(seed=4, n=9, m=1, reg=1e-3),
    dict(seed=5, n=120, m=90, reg=1e-3, kind="underflow"),
    dict(seed=6, n=50, m=70, reg=1e-2, dtype=np.float32),
    dict(seed=7, n=40, m=40, reg=1e-3, kind="underflow", dtype=np.float32),
]


def _ids(c):
    return f"{c['n']}x{c['m']}-reg{c['reg']:g}-{c.get('kind', 'normal')}-{np.dtype(c.get('dtype', np.float64)).name}"


# ----------------------------------------------------------------------------- Sinkhorn half-steps


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_row_update_is_the_exact_softmin(case):
    C, f, g, log_a, _ = _case(**case)
    reg = case["reg"]
    out = np.empty(C.shape[0])
    K.row_update(C, g, log_a, reg, out)
    C64 = C.astype(np.float64)
    direct = reg * log_a - reg * logsumexp((g[None, :] - C64) / reg, axis=1)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, direct, rtol=1e-12, atol=1e-12 * np.abs(direct).max())
    np.testing.assert_allclose(K.row_update_reference(C, g, log_a, reg), direct, rtol=1e-14, atol=0)


@pytest.mark.parametrize("n_chunks", [1, 2, 3, 7])
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_col_update_is_the_exact_softmin_for_any_chunking(case, n_chunks):
    C, f, g, _, log_b = _case(**case)
    reg = case["reg"]
    n_chunks = min(n_chunks, C.shape[0])
    out = np.empty(C.shape[1])
    K.col_update(C, f, log_b, reg, out, n_chunks)
    C64 = C.astype(np.float64)
    direct = reg * log_b - reg * logsumexp((f[:, None] - C64) / reg, axis=0)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, direct, rtol=1e-12, atol=1e-12 * np.abs(direct).max())
    np.testing.assert_allclose(K.col_update_reference(C, f, log_b, reg), direct, rtol=1e-14, atol=0)


def test_half_steps_make_their_marginal_exact():
    # After g = col_update(f), the plan's column sums equal b (the defining property).
    C, f, g, log_a, log_b = _case(8, 30, 20, 0.05)
    g_new = np.empty(20)
    K.col_update(C, f, log_b, 0.05, g_new, 2)
    P = np.exp((f[:, None] + g_new[None, :] - C) / 0.05)
    np.testing.assert_allclose(P.sum(axis=0), np.exp(log_b), rtol=1e-13)
    f_new = np.empty(30)
    K.row_update(C, g, log_a, 0.05, f_new)
    P = np.exp((f_new[:, None] + g[None, :] - C) / 0.05)
    np.testing.assert_allclose(P.sum(axis=1), np.exp(log_a), rtol=1e-13)


def test_half_steps_never_overflow_with_huge_potentials():
    # the max-shift keeps exponents <= 0 whatever the scale of the potentials
    C, f, g, log_a, log_b = _case(9, 20, 30, 1e-3)
    g = g + 5.0  # (g - C)/reg up to ~5000: naive exp would overflow
    out = np.empty(20)
    K.row_update(C, g, log_a, 1e-3, out)
    direct = 1e-3 * log_a - 1e-3 * logsumexp((g[None, :] - C) / 1e-3, axis=1)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, direct, rtol=1e-12)


# ----------------------------------------------------------------------------- dense plan


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_dense_plan_is_the_gibbs_kernel(case):
    C, f, g, _, _ = _case(**case)
    reg = case["reg"]
    P = np.empty(C.shape)
    K.dense_plan(C, f, g, reg, P)
    X = (f[:, None] + g[None, :] - C.astype(np.float64)) / reg
    direct = np.exp(X)
    # exponents below -708 are flushed to 0, where np.exp gives at most exp(-708) = 3.3e-308
    assert_exp_close(P, X)
    assert np.all(P[direct < 1e-320] == 0)
    np.testing.assert_allclose(K.plan_reference(C, f, g, reg), direct, rtol=1e-15, atol=0)
    if case.get("kind") == "underflow":
        assert (P == 0).mean() > 0.5  # the case does exercise underflow


def test_dense_plan_near_the_overflow_limit():
    # exponents in [700, 709]: values up to 8e307, still finite and accurate
    reg = 1e-2
    x = np.linspace(700.0, 709.0, 91)
    C = np.zeros((1, x.size))
    P = np.empty_like(C)
    K.dense_plan(C, np.zeros(1), x * reg, reg, P)
    assert np.all(np.isfinite(P))
    assert_exp_close(P[0], x * reg / reg)
    assert P[0, -1] > 8e307
    # above 709 fast_exp saturates to inf by contract, even where np.exp is still finite
    K.dense_plan(C[:, :3], np.zeros(1), np.array([709.5, 710.0, 800.0]) * reg, reg, P[:, :3])
    np.testing.assert_array_equal(P[0, :3], np.inf)


NO_GUESS = np.empty(0)


# ----------------------------------------------------------------------------- plan_pass


def _plan_pass(C, f, g, reg, tau, cap, n_chunks):
    n, m = C.shape
    row = np.empty(n)
    counts = np.zeros(n, dtype=np.int64)
    idx = np.empty((n, cap), dtype=np.int32)
    val = np.empty((n, cap))
    B = np.empty((n, m))
    col = K.plan_pass(C, f, g, reg, tau, cap, n_chunks, row, counts, idx, val, B)
    # the stored base is the plan itself, entries below the floor as exact zeros
    X = (f[:, None] + g[None, :] - np.asarray(C, np.float64)) / reg
    with np.errstate(over="ignore"):
        kept = np.exp(X) >= K.P_FLOOR
    assert np.all(B[~kept & (X < np.log(K.P_FLOOR) - 1e-9)] == 0)
    finite = X < 709.0  # above, exp saturates to inf by contract (see the overflow tests)
    assert_exp_close(np.where(kept, B, np.exp(X))[finite], X[finite])
    return row, col, counts, idx, val


def _check_candidates(P, tau, cap, counts, idx, val):
    """Kept entries are true plan entries >= tau, at most cap per row, all of them
    when at most cap qualify, and otherwise never smaller than a dropped one."""
    n, m = P.shape
    assert np.all(counts >= 0) and np.all(counts <= cap)
    for i in range(n):
        c = counts[i]
        j = idx[i, :c].astype(np.int64)
        assert np.all((0 <= j) & (j < m))
        assert len(np.unique(j)) == c, "a column is kept twice"
        np.testing.assert_allclose(val[i, :c], P[i, j], rtol=1e-13, atol=0)
        assert np.all(val[i, :c] >= tau)
        qualifying = np.flatnonzero(P[i] >= tau * (1 + 1e-12))
        if len(np.flatnonzero(P[i] >= tau * (1 - 1e-12))) <= cap:
            assert set(qualifying.tolist()) <= set(j.tolist())
        elif c > 0:
            dropped = np.setdiff1d(qualifying, j)
            if dropped.size:
                assert P[i, dropped].max() <= val[i, :c].min() * (1 + 1e-12)


@pytest.mark.parametrize("cap", [1, 3, 8, 40])
def test_plan_pass_keeps_exactly_the_entries_of_its_numpy_twin(cap):
    # the twin states the rule in numpy: entries >= tau, the cut raised to a power of
    # two when more than cap qualify (random entries: no ties at a power of two)
    C, f, g, _, _ = _case(11, 30, 40, 0.05)
    P = ref.plan(C, f, g, 0.05)
    tau = np.quantile(P, 0.5)
    _, _, counts, idx, val = _plan_pass(C, f, g, 0.05, tau, cap, 2)
    kept = np.zeros_like(P, dtype=bool)
    for i in range(30):
        kept[i, idx[i, :counts[i]]] = True
    np.testing.assert_array_equal(kept, ref.large_entries(P, tau, cap))


@pytest.mark.parametrize("n_chunks", [1, 2, 5])
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_plan_pass_sums_match_the_dense_plan(case, n_chunks):
    C, f, g, _, _ = _case(**case)
    reg = case["reg"]
    n, m = C.shape
    n_chunks = min(n_chunks, n)
    P = np.exp((f[:, None] + g[None, :] - C.astype(np.float64)) / reg)
    tau = np.quantile(P, 0.8) if P.max() > 0 else 0.0
    row, col, counts, idx, val = _plan_pass(C, f, g, reg, tau, m, n_chunks)
    np.testing.assert_allclose(row, P.sum(axis=1), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(col, P.sum(axis=0), rtol=1e-12, atol=1e-300)
    _check_candidates(P, tau, m, counts, idx, val)


@pytest.mark.parametrize("cap", [1, 2, 5, 16])
def test_plan_pass_caps_each_row_keeping_the_largest(cap):
    C, f, g, _, _ = _case(10, 40, 60, 0.05)
    P = np.exp((f[:, None] + g[None, :] - C) / 0.05)
    tau = 0.0  # everything qualifies: the cap alone decides
    row, col, counts, idx, val = _plan_pass(C, f, g, 0.05, tau, cap, 2)
    np.testing.assert_allclose(row, P.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(col, P.sum(axis=0), rtol=1e-12)
    _check_candidates(P, tau, cap, counts, idx, val)


def test_plan_pass_threshold_without_cap_keeps_exactly_the_entries_above_tau():
    C, f, g, _, _ = _case(11, 30, 30, 0.02)
    P = np.exp((f[:, None] + g[None, :] - C) / 0.02)
    tau = float(np.median(P))
    row, col, counts, idx, val = _plan_pass(C, f, g, 0.02, tau, 30, 1)
    for i in range(30):
        kept = np.sort(idx[i, :counts[i]])
        np.testing.assert_array_equal(kept, np.flatnonzero(P[i] >= tau))


def test_plan_pass_float32_cost_is_read_exactly():
    C, f, g, _, _ = _case(12, 25, 35, 0.01, dtype=np.float32)
    P = np.exp((f[:, None] + g[None, :] - C.astype(np.float64)) / 0.01)
    row, col, counts, idx, val = _plan_pass(C, f, g, 0.01, 0.0, 35, 2)
    np.testing.assert_allclose(row, P.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(col, P.sum(axis=0), rtol=1e-12)


def test_plan_pass_overflow_gives_infinite_sums():
    # documented: exponents above 709 give inf sums (the caller rejects such a trial point)
    C = np.zeros((3, 4))
    f = np.array([0.0, 7.1, 0.0])  # 7.1 / 0.01 = 710 > 709
    row, col, *_ = _plan_pass(C, f, np.zeros(4), 0.01, 0.0, 4, 1)
    assert row[1] == np.inf and np.all(col == np.inf)
    np.testing.assert_allclose(row[[0, 2]], 4.0, rtol=1e-15)


# ----------------------------------------------------------------------------- stored base plan


def _base_and_scalings(case, drift):
    """A base plan stored at (f0, g0) and the scalings that move it to (f, g) = (f0, g0) + drift."""
    C, f, g, _, _ = _case(**case)
    reg = case["reg"]
    n, m = C.shape
    rng = np.random.default_rng(case["seed"] + 100)
    x, y = rng.uniform(-drift, drift, n) / 2, rng.uniform(-drift, drift, m) / 2  # in units of reg
    f0, g0 = f - reg * x, g - reg * y
    B = np.empty((n, m))
    K.plan_pass(C, f0, g0, reg, np.inf, 0, 1, np.empty(n), np.zeros(n, np.int64),
                np.empty((n, 0), np.int32), np.empty((n, 0)), B)
    return C, f0 + reg * x, g0 + reg * y, reg, B, np.exp(x), np.exp(y)


@pytest.mark.parametrize("n_chunks", [1, 3])
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_scaled_pass_matches_plan_pass_at_the_moved_point(case, n_chunks):
    C, f, g, reg, B, u, v = _base_and_scalings(case, drift=K.BASE_DRIFT)
    n, m = C.shape
    n_chunks = min(n_chunks, n)
    P = np.exp((f[:, None] + g[None, :] - C.astype(np.float64)) / reg)
    tau = max(np.quantile(P, 0.8), 1e-190)
    row, counts = np.empty(n), np.zeros(n, np.int64)
    idx, val = np.empty((n, m), np.int32), np.empty((n, m))
    col = K.scaled_pass(B, u, v, tau, m, n_chunks, row, counts, idx, val)
    # entries stored as 0 in the base stand for < 1e-250 * e**100 each: far below these tolerances
    np.testing.assert_allclose(row, P.sum(axis=1), rtol=1e-12, atol=1e-190)
    np.testing.assert_allclose(col, P.sum(axis=0), rtol=1e-12, atol=1e-190)
    _check_candidates(np.where(P >= 1e-190, P, 0.0), tau, m, counts, idx, val)


@pytest.mark.parametrize("n_chunks", [1, 3])
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_scaled_sums_match_the_moved_plan_and_count_the_entries_at_least_tau(case, n_chunks):
    C, f, g, reg, B, u, v = _base_and_scalings(case, drift=K.BASE_DRIFT)
    n, m = C.shape
    P = np.exp((f[:, None] + g[None, :] - C.astype(np.float64)) / reg)
    tau = max(np.quantile(P, 0.7), 1e-190)
    row = np.empty(n)
    col, count = K.scaled_sums(B, u, v, tau, min(n_chunks, n), row)
    np.testing.assert_allclose(row, P.sum(axis=1), rtol=1e-12, atol=1e-190)
    np.testing.assert_allclose(col, P.sum(axis=0), rtol=1e-12, atol=1e-190)
    # entries within round-off of tau may fall either side
    assert (P >= tau * (1 + 1e-12)).sum() <= count <= (P >= tau * (1 - 1e-12)).sum()


def _dense_newton_case(seed, n, m, reg=0.05, delta=1e-3):
    rng = np.random.default_rng(seed)
    B = np.exp((rng.normal(0, reg, (n, 1)) + rng.normal(0, reg, (1, m)) - rng.random((n, m))) / reg)
    u, v = np.exp(rng.normal(0, 3, n)), np.exp(rng.normal(0, 3, m))
    P = u[:, None] * B * v[None, :]
    return B, u, v, P, P.sum(axis=1) * (1 + delta), P.sum(axis=0) * (1 + delta), rng


@pytest.mark.parametrize("shape", [(30, 20), (20, 30), (1, 5), (64, 64)])
def test_dense_schur_kernels_match_their_matrix_formulas(shape):
    B, u, v, P, d_row, d_col, rng = _dense_newton_case(21, *shape)
    w, y = rng.normal(size=shape[0]), rng.normal(size=shape[1])
    for n_chunks in (1, min(3, shape[0])):
        elim, sq = K.dense_schur_setup(B, u, v, d_row, w, n_chunks)
        # sums with cancellation: bounded by the sum of magnitudes
        assert np.all(np.abs(elim - P.T @ w) <= 1e-12 * (np.abs(P.T) @ np.abs(w)))
        np.testing.assert_allclose(sq, (P ** 2 / d_row[:, None]).sum(axis=0), rtol=1e-12)
        Ky = K.dense_schur_matvec(B, u, v, d_row, d_col, y, n_chunks)
        K_dense = np.diag(d_col) - P.T @ np.diag(1.0 / d_row) @ P
        np.testing.assert_allclose(Ky, K_dense @ y, rtol=1e-10, atol=1e-12 * np.abs(d_col * y).max())
    assert np.all(np.abs(K.scaled_matvec(B, u, v, y) - P @ y) <= 1e-12 * (np.abs(P) @ np.abs(y)))


def test_dense_schur_setup_drops_squares_that_would_be_denormal():
    # an entry of 1e-160 squares to 1e-320, a denormal: it counts as 0 (its true
    # contribution is far below the round-off of the diagonal it is subtracted from)
    B = np.array([[1.0, 1e-160], [0.5, 0.25]])
    one = np.ones(2)
    d_row = B.sum(axis=1)
    _, sq = K.dense_schur_setup(B, one, one, d_row, one, 1)
    np.testing.assert_allclose(sq, [1.0 / d_row[0] + 0.25 / d_row[1], 0.0625 / d_row[1]], rtol=1e-15)


# ----------------------------------------------------------------------------- compact_csr


@pytest.mark.parametrize("tau", [0.0, 0.3, 0.5, 0.99, 2.0])
def test_compact_csr_keeps_exactly_the_entries_at_least_tau(tau):
    rng = np.random.default_rng(13)
    n, cap = 20, 8
    counts = rng.integers(0, cap + 1, n).astype(np.int64)
    idx = np.zeros((n, cap), dtype=np.int32)
    val = np.full((n, cap), np.nan)  # garbage beyond counts must be ignored
    for i in range(n):
        idx[i, :counts[i]] = np.sort(rng.choice(50, counts[i], replace=False))
        val[i, :counts[i]] = rng.random(counts[i])
    val[3, :2] = tau  # ties at tau are kept (>=)
    counts[3] = max(counts[3], 2)
    indptr, indices, data = K.compact_csr(counts, idx, val, tau)
    assert indptr[0] == 0 and np.all(np.diff(indptr) >= 0)
    for i in range(n):
        keep = val[i, :counts[i]] >= tau
        np.testing.assert_array_equal(indices[indptr[i]:indptr[i + 1]], idx[i, :counts[i]][keep])
        np.testing.assert_array_equal(data[indptr[i]:indptr[i + 1]], val[i, :counts[i]][keep])
    assert indptr[-1] == len(indices) == len(data)
    assert np.all(data >= tau)


# ----------------------------------------------------------------------------- CG on the Schur complement


def _schur_system(seed, n, m, keep, mu, reg=0.05):
    """A sparsified plan S <= P entrywise with shifted exact sums: the block Hessian
    [[diag(d_row), S], [S^T, diag(d_col)]] is strictly diagonally dominant, hence SPD,
    and so is its Schur complement K."""
    rng = np.random.default_rng(seed)
    P = np.exp((rng.normal(0, reg, (n, 1)) + rng.normal(0, reg, (1, m)) - rng.random((n, m))) / reg)
    S = np.where(rng.random((n, m)) < keep, P, 0.0)
    j = rng.integers(0, m, n)
    S[np.arange(n), j] = P[np.arange(n), j]  # every row keeps at least one entry
    d_row = P.sum(axis=1) + mu
    d_col = P.sum(axis=0) + mu
    csr = sp.csr_matrix(S)
    K_dense = np.diag(d_col) - S.T @ np.diag(1.0 / d_row) @ S
    rhs = rng.normal(size=m)
    return (csr.indptr.astype(np.int64), csr.indices.astype(np.int32), csr.data), S, d_row, d_col, K_dense, rhs


@pytest.mark.parametrize("rtol", [1e-2, 1e-6, 1e-12])
@pytest.mark.parametrize("shape", [(30, 20), (20, 30), (50, 50)])
def test_schur_cg_reaches_the_asked_residual_and_the_dense_solution(shape, rtol):
    (indptr, indices, data), S, d_row, d_col, Kd, rhs = _schur_system(14, *shape, keep=0.3, mu=1e-3)
    assert np.all(np.linalg.eigvalsh(Kd) > 0)  # the system is SPD, as the solver assumes
    y, it, res = K.schur_cg(indptr, indices, data, d_row, d_col, rhs, rtol, 1000, NO_GUESS)
    true_res = np.linalg.norm(Kd @ y - rhs) / np.linalg.norm(rhs)
    assert 0 < it <= 1000
    assert res <= rtol
    assert true_res <= rtol * (1 + 1e-6) + 1e-14
    assert true_res == pytest.approx(res, rel=1e-3, abs=1e-13)
    y_exact = np.linalg.solve(Kd, rhs)
    # error bound for an SPD system: |y - y*| <= cond(K) * rtol * |y*|
    assert np.linalg.norm(y - y_exact) <= np.linalg.cond(Kd) * rtol * np.linalg.norm(y_exact) * 1.01 + 1e-13


def test_schur_cg_warm_start_from_a_near_solution_saves_iterations():
    (indptr, indices, data), S, d_row, d_col, Kd, rhs = _schur_system(17, 40, 30, keep=0.3, mu=1e-3)
    y_exact = np.linalg.solve(Kd, rhs)
    _, it_cold, _ = K.schur_cg(indptr, indices, data, d_row, d_col, rhs, 1e-8, 1000, NO_GUESS)
    rng = np.random.default_rng(0)
    near = y_exact * (1 + 1e-6 * rng.normal(size=y_exact.size))
    y, it_warm, res = K.schur_cg(indptr, indices, data, d_row, d_col, rhs, 1e-8, 1000, near)
    assert it_warm < it_cold
    assert np.linalg.norm(Kd @ y - rhs) <= 1e-8 * np.linalg.norm(rhs) * (1 + 1e-6)


def test_schur_cg_ignores_a_guess_worse_than_zero():
    (indptr, indices, data), S, d_row, d_col, Kd, rhs = _schur_system(18, 30, 20, keep=0.3, mu=1e-3)
    cold = K.schur_cg(indptr, indices, data, d_row, d_col, rhs, 1e-8, 1000, NO_GUESS)
    for bad in (-1e6 * np.linalg.solve(Kd, rhs), np.full(20, np.nan)):
        warm = K.schur_cg(indptr, indices, data, d_row, d_col, rhs, 1e-8, 1000, bad)
        np.testing.assert_array_equal(warm[0], cold[0])
        assert warm[1] == cold[1]


def test_schur_cg_zero_rhs_returns_zero_without_iterating():
    (indptr, indices, data), S, d_row, d_col, Kd, rhs = _schur_system(15, 10, 8, keep=0.5, mu=1e-3)
    y, it, res = K.schur_cg(indptr, indices, data, d_row, d_col, np.zeros(8), 1e-8, 100, NO_GUESS)
    np.testing.assert_array_equal(y, 0.0)
    assert it == 0 and res == 0.0


def test_schur_cg_reports_breakdown_as_nan():
    # an indefinite "Schur complement" (negative d_col) breaks CG: the contract is a NaN residual
    (indptr, indices, data), S, d_row, d_col, Kd, rhs = _schur_system(16, 10, 8, keep=0.5, mu=1e-3)
    y, it, res = K.schur_cg(indptr, indices, data, d_row, -d_col, rhs, 1e-10, 100, NO_GUESS)
    assert np.isnan(res)


def test_schur_cg_reports_a_zero_row_sum_as_nan_instead_of_raising():
    # a row sum that underflowed to 0 divides by zero: the kernel must hand back a
    # non-finite residual (the Newton step then falls back), not raise ZeroDivisionError
    (indptr, indices, data), S, d_row, d_col, Kd, rhs = _schur_system(19, 10, 8, keep=0.5, mu=1e-3)
    d_row = d_row.copy()
    d_row[3] = 0.0
    y, it, res = K.schur_cg(indptr, indices, data, d_row, d_col, rhs, 1e-10, 100, NO_GUESS)
    assert not np.isfinite(res)


def test_schur_cg_respects_max_iter():
    (indptr, indices, data), S, d_row, d_col, Kd, rhs = _schur_system(17, 60, 60, keep=0.9, mu=1e-6, reg=1.0)
    y, it, res = K.schur_cg(indptr, indices, data, d_row, d_col, rhs, 1e-15, 3, NO_GUESS)
    assert it == 3 and res > 1e-15  # stopped by the cap, not by the tolerance
    true_res = np.linalg.norm(Kd @ y - rhs) / np.linalg.norm(rhs)
    assert true_res == pytest.approx(res, rel=1e-6)


def test_csr_matvec_matches_scipy():
    rng = np.random.default_rng(18)
    A = sp.random(40, 25, density=0.2, random_state=np.random.RandomState(18), format="csr")
    y = rng.normal(size=25)
    out = K.csr_matvec(A.indptr.astype(np.int64), A.indices.astype(np.int32), A.data, y)
    np.testing.assert_allclose(out, A @ y, rtol=1e-13, atol=1e-15)


def test_csr_rmatvec_matches_scipy_including_empty_rows_and_columns():
    rng = np.random.default_rng(19)
    A = sp.random(40, 25, density=0.1, random_state=np.random.RandomState(19), format="lil")
    A[3, :] = 0
    A[:, 7] = 0
    A = A.tocsr()
    w = rng.normal(size=40)
    out = K.csr_rmatvec(A.indptr.astype(np.int64), A.indices.astype(np.int32), A.data, w, 25)
    np.testing.assert_allclose(out, A.T @ w, rtol=1e-13, atol=1e-15)
    assert out[7] == 0.0


def test_default_chunks_is_one_per_thread_and_never_below_16_rows():
    import numba

    before = numba.get_num_threads()
    try:
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            assert K.default_chunks(1) == 1
            assert K.default_chunks(15) == 1
            assert K.default_chunks(16 * threads) == threads
            assert K.default_chunks(10_000) == threads
            assert K.default_chunks(16 * 2 - 1) == min(threads, 1)
    finally:
        numba.set_num_threads(before)


# ----------------------------------------------------------------------------- dense_threshold_csr

@pytest.mark.parametrize("tau", [1e-300, 1e-12, 0.5, 2.0])
def test_dense_threshold_csr_keeps_exactly_the_entries_at_least_tau(tau):
    rng = np.random.default_rng(7)
    P = rng.random((23, 31)) * np.exp(-40 * rng.random((23, 31)))  # spans ~1e-18 .. 1
    P[3] = 0.0  # an empty row
    P[5, 7] = tau  # the boundary is kept
    got = K.dense_threshold_csr(P, tau)
    want = K.dense_threshold_csr_reference(P, tau)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    dense = sp.csr_matrix((got[2], got[1], got[0]), shape=P.shape).toarray()
    np.testing.assert_array_equal(dense, np.where(P >= tau, P, 0.0))


# ----------------------------------------------------------------------------- fused per-iteration kernels


def _moved_point(case, drift):
    """(f, g) and a base point (f0, g0) whose difference spans ``drift`` units of reg, with a common offset."""
    C, f, g, _, _ = _case(**case)
    reg = case["reg"]
    rng = np.random.default_rng(case["seed"] + 200)
    x, y = rng.uniform(-drift, drift, len(f)) / 2, rng.uniform(-drift, drift, len(g)) / 2
    offset = 7.5  # moved from x to y: changes no x_i + y_j, which the centring must undo
    return f, g, f - reg * (x + offset), g - reg * (y - offset), reg


@pytest.mark.parametrize("drift", [0.0, 3.0, 60.0])
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_centred_scalings_match_their_numpy_twin_and_give_the_moved_plan(case, drift):
    f, g, f0, g0, reg = _moved_point(case, drift)
    u, v = np.empty(len(f)), np.empty(len(g))
    c = K.centred_scalings(f, g, f0, g0, reg, K.BASE_DRIFT, u, v)
    u_ref, v_ref, c_ref = ref.centred_scalings(f, g, f0, g0, reg, K.BASE_DRIFT)
    assert c == c_ref  # max, min and their mean are exact in any order
    np.testing.assert_allclose(u, u_ref, rtol=1e-15)
    np.testing.assert_allclose(v, v_ref, rtol=1e-15)
    # u_i v_j = exp((f_i + g_j - f0_i - g0_j) / reg): the plan at (f, g) from the base's
    direct = np.exp((f[:, None] - f0[:, None] + g[None, :] - g0[None, :]) / reg)
    np.testing.assert_allclose(u[:, None] * v[None, :], direct, rtol=1e-12)
    # centred: log u spans [-h, h]
    log_u = np.log(u)
    assert abs(log_u.max() + log_u.min()) <= 1e-12 * max(1.0, abs(log_u).max())


def test_centred_scalings_refuse_a_drift_beyond_the_limit_nan_and_empty_sides():
    case = CASES[0]
    f, g, f0, g0, reg = _moved_point(case, 60.0)
    u, v = np.full(len(f), -1.0), np.full(len(g), -1.0)
    x = (f - f0) / reg
    limit = 0.99 * (np.ptp(x) / 2 + np.abs((g - g0) / reg + (x.max() + x.min()) / 2).max())
    assert np.isnan(K.centred_scalings(f, g, f0, g0, reg, limit, u, v))
    assert ref.centred_scalings(f, g, f0, g0, reg, limit) is None
    assert np.all(u == -1.0) and np.all(v == -1.0)  # nothing written
    for bad in (np.nan, np.inf):
        g_bad = g.copy()
        g_bad[3] = bad
        assert np.isnan(K.centred_scalings(f, g_bad, f0, g0, reg, K.BASE_DRIFT, u, v))
        assert ref.centred_scalings(f, g_bad, f0, g0, reg, K.BASE_DRIFT) is None
    empty = np.empty(0)
    assert np.isnan(K.centred_scalings(empty, g, empty, g0, reg, K.BASE_DRIFT, np.empty(0), v))
    assert ref.centred_scalings(empty, g, empty, g0, reg, K.BASE_DRIFT) is None


def _base_step_inputs(case, drift, zero_mass=False):
    C, f, g, reg, B, _, _ = _base_and_scalings(case, drift=drift)
    n, m = C.shape
    rng = np.random.default_rng(case["seed"] + 300)
    a, b = rng.random(n) + 0.1, rng.random(m) + 0.1
    if zero_mass:
        a[n // 2] = 0.0
    with np.errstate(divide="ignore"):
        log_a, log_b = np.log(a), np.log(b)
    # the base point, as _base_and_scalings built it: recover it from B's defining potentials
    rng2 = np.random.default_rng(case["seed"] + 100)
    x, y = rng2.uniform(-drift, drift, n) / 2, rng2.uniform(-drift, drift, m) / 2
    return C, f, g, f - reg * x, g - reg * y, reg, B, a, log_a, log_b, b


@pytest.mark.parametrize("n_chunks", [1, 3])
@pytest.mark.parametrize("kappa", [(1.0, 1.0), (0.7, 0.8)], ids=["exact", "relaxed"])
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_base_sinkhorn_step_matches_its_numpy_twin(case, kappa, n_chunks):
    # every case: those whose rows underflow must come out STEP_UNSAFE, as in the twin
    C, f, g, f0, g0, reg, B, a, log_a, log_b, _ = _base_step_inputs(case, drift=20.0)
    n, m = B.shape
    rows, f_new, g_new = np.full(n, np.nan), np.full(n, np.nan), np.full(m, np.nan)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        status, c, err = K.base_sinkhorn_step(B, f, g, f0, g0, reg, K.BASE_DRIFT, a, log_a, kappa[0], log_b,
                                              kappa[1], 1e-100, min(n_chunks, n), rows, f_new, g_new)
        want = ref.base_sinkhorn_step(B, f, g, f0, g0, reg, K.BASE_DRIFT, a, log_a, kappa[0], log_b, kappa[1],
                                      1e-100)
    assert status == want[0] and status in (K.STEP_TAKEN, K.STEP_UNSAFE)
    assert c == want[1]
    np.testing.assert_allclose(rows, want[3], rtol=1e-12, atol=1e-300)
    assert err == pytest.approx(want[2], rel=1e-12)
    if status == K.STEP_TAKEN:
        scale = max(1.0, np.abs(f).max(), np.abs(g).max())
        np.testing.assert_allclose(f_new, want[4], rtol=0, atol=1e-12 * scale)
        np.testing.assert_allclose(g_new, want[5], rtol=0, atol=1e-12 * scale)
    else:
        assert np.isnan(f_new).all() and np.isnan(g_new).all()  # not written


def test_base_sinkhorn_step_cases_include_refused_steps():
    # the twin comparison above covers both outcomes: underflowing rows the kernel refuses, and taken steps
    seen = set()
    for case in CASES:
        C, f, g, f0, g0, reg, B, a, log_a, log_b, _ = _base_step_inputs(case, drift=20.0)
        n, m = B.shape
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            status, _, _ = K.base_sinkhorn_step(B, f, g, f0, g0, reg, K.BASE_DRIFT, a, log_a, 1.0, log_b, 1.0,
                                                1e-100, 1, np.empty(n), np.empty(n), np.empty(m))
        seen.add(status)
    assert seen == {K.STEP_TAKEN, K.STEP_UNSAFE}


@pytest.mark.parametrize("case", [c for c in CASES if c["seed"] in (1, 2, 3, 6)], ids=_ids)
def test_base_sinkhorn_step_is_one_log_domain_sinkhorn_iteration(case):
    # independent oracle: the logsumexp updates f = reg log a - softmin(C - g), then g likewise
    C, f, g, f0, g0, reg, B, a, log_a, log_b, b = _base_step_inputs(case, drift=20.0)
    n, m = B.shape
    rows, f_new, g_new = np.empty(n), np.empty(n), np.empty(m)
    status, _, err = K.base_sinkhorn_step(B, f, g, f0, g0, reg, K.BASE_DRIFT, a, log_a, 1.0, log_b, 1.0, 1e-100,
                                          1, rows, f_new, g_new)
    assert status == K.STEP_TAKEN
    P = ref.plan(C, f, g, reg)
    np.testing.assert_allclose(rows, P.sum(axis=1), rtol=1e-12)
    assert err == pytest.approx(np.abs(P.sum(axis=1) - a).sum(), rel=1e-11)
    f_want = ref.row_update(C, g, log_a, reg)
    g_want = ref.col_update(C, f_want, log_b, reg)
    scale = max(1.0, np.abs(f_want).max(), np.abs(g_want).max())
    np.testing.assert_allclose(f_new, f_want, rtol=0, atol=1e-11 * scale)
    np.testing.assert_allclose(g_new, g_want, rtol=0, atol=1e-11 * scale)


def test_base_sinkhorn_step_reports_a_far_point_and_a_zero_mass_row():
    case = CASES[0]
    C, f, g, f0, g0, reg, B, a, log_a, log_b, _ = _base_step_inputs(case, drift=20.0)
    n, m = B.shape
    rows, f_new, g_new = np.full(n, -1.0), np.full(n, -1.0), np.full(m, -1.0)
    status, c, err = K.base_sinkhorn_step(B, f, g, f0, g0, reg, 10.0, a, log_a, 1.0, log_b, 1.0, 1e-100, 1,
                                          rows, f_new, g_new)
    assert status == K.STEP_FAR and np.isnan(c) and np.isnan(err)
    assert np.all(rows == -1.0) and np.all(f_new == -1.0) and np.all(g_new == -1.0)
    assert ref.base_sinkhorn_step(B, f, g, f0, g0, reg, 10.0, a, log_a, 1.0, log_b, 1.0, 1e-100)[0] == K.STEP_FAR
    # a zero-mass row gives u_new = 0 and an undefined log: the step must be refused, not taken with -inf
    C, f, g, f0, g0, reg, B, a, log_a, log_b, _ = _base_step_inputs(case, drift=20.0, zero_mass=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        status, _, _ = K.base_sinkhorn_step(B, f, g, f0, g0, reg, K.BASE_DRIFT, a, log_a, 1.0, log_b, 1.0, 1e-100,
                                            1, rows, f_new, g_new)
        want = ref.base_sinkhorn_step(B, f, g, f0, g0, reg, K.BASE_DRIFT, a, log_a, 1.0, log_b, 1.0, 1e-100)
    assert status == want[0] == K.STEP_UNSAFE
    assert np.all(f_new == -1.0)


@pytest.mark.parametrize("n_chunks", [1, 3])
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_dense_plan_sums_match_the_plan_its_sums_and_its_cost(case, n_chunks):
    C, f, g, _, _ = _case(**case)
    reg = case["reg"]
    n, m = C.shape
    P, row = np.empty((n, m)), np.empty(n)
    col, cost = K.dense_plan_sums(C, f, g, reg, min(n_chunks, n), P, row)
    P_ref, row_ref, col_ref, cost_ref = ref.dense_plan_sums(C, f, g, reg)
    # the kernel's exp is exactly 0 below exp(-708) where numpy's is subnormal; exponents of
    # size |x| carry a rounding of ~|x| eps, hence 1e-12 relative on entries near exp(-700)
    np.testing.assert_allclose(P, P_ref, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(row, row_ref, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(col, col_ref, rtol=1e-12, atol=1e-300)
    assert cost == pytest.approx(cost_ref, rel=1e-12, abs=1e-300)
    P_plain = np.empty((n, m))
    K.dense_plan(C, f, g, reg, P_plain)
    # bit for bit what the unfused final step computed: dense_plan, then NumPy's sums
    np.testing.assert_array_equal(P, P_plain)
    np.testing.assert_array_equal(row, P.sum(axis=1))
    if n_chunks == 1:
        np.testing.assert_array_equal(col, P.sum(axis=0))


def test_dense_plan_sums_count_forbidden_pairs_as_zero_cost_and_keep_nan():
    C, f, g, _, _ = _case(seed=8, n=30, m=20, reg=0.1)
    C[np.random.default_rng(8).random(C.shape) < 0.3] = np.inf
    n, m = C.shape
    P, row = np.empty((n, m)), np.empty(n)
    col, cost = K.dense_plan_sums(C, f, g, 0.1, 2, P, row)
    assert np.all(P[np.isinf(C)] == 0)
    finite = np.isfinite(C)
    direct = float((C[finite] * np.exp((f[:, None] + g[None, :] - C)[finite] / 0.1)).sum())
    assert np.isfinite(cost) and cost == pytest.approx(direct, rel=1e-13)
    assert cost == pytest.approx(ref.dense_plan_sums(C, f, g, 0.1)[3], rel=1e-13)
    f_nan = f.copy()
    f_nan[4] = np.nan
    _, cost_nan = K.dense_plan_sums(C, f_nan, g, 0.1, 2, P, row)
    assert np.isnan(cost_nan) and np.isnan(row[4])


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 127, 128, 129, 136, 783, 784, 4097, 100_003])
def test_pairwise_sum_is_numpys_sum_bit_for_bit(n):
    # the fused kernels report errors and sums NumPy used to compute; equal bits keep the solver's decisions
    rng = np.random.default_rng(n)
    x = np.abs(rng.normal(size=n + 5)) * 10.0 ** rng.uniform(-8, 8, n + 5)
    assert 0.0 + K._pairwise_sum(x, 5, n) == x[5:].sum()
