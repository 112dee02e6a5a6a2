"""The Newton system of SNS: one direction solver over a sparse (CSR) or a dense (stored base) block, one CG."""

import numpy as np
import pytest
import scipy.sparse as sp

from snsot.solvers._dense import DenseOffDiagonal
from snsot.solvers.linalg import CsrOffDiagonal, newton_direction, pcg


def _system(seed, n, m, reg=0.05, delta=1e-3):
    """A plan P = diag(u) B diag(v), marginals a, b and the shifted block Newton matrix."""
    rng = np.random.default_rng(seed)
    B = np.exp((rng.normal(0, reg, (n, 1)) + rng.normal(0, reg, (1, m)) - rng.random((n, m))) / reg)
    u, v = np.exp(rng.normal(0, 2, n)), np.exp(rng.normal(0, 2, m))
    P = u[:, None] * B * v[None, :]
    P_mass = P.sum()
    a, b = rng.random(n) + 0.5, rng.random(m) + 0.5
    a, b = a / a.sum() * P_mass, b / b.sum() * P_mass
    r, c = P.sum(axis=1), P.sum(axis=0)
    H = np.block([[np.diag(r * (1 + delta)), P], [P.T, np.diag(c * (1 + delta))]])
    rhs = reg * np.concatenate([a - r, b - c])
    return B, u, v, P, a, b, r, c, H, rhs


def _csr(S):
    S = sp.csr_matrix(S)
    return CsrOffDiagonal(S.indptr.astype(np.int64), S.indices.astype(np.int32), S.data, S.shape)


@pytest.mark.parametrize("shape", [(40, 25), (25, 40), (50, 50)])
def test_dense_and_full_sparse_blocks_both_solve_the_block_system(shape):
    reg, delta = 0.05, 1e-3
    B, u, v, P, a, b, r, c, H, rhs = _system(3, *shape, reg=reg, delta=delta)
    exact = np.linalg.solve(H, rhs)
    args = (r * (1 + delta), c * (1 + delta), a - r, b - c, reg)
    dense = newton_direction(DenseOffDiagonal(B, u, v, 2), *args, rtol=1e-12, max_cg=500)
    sparse = newton_direction(_csr(P), *args, rtol=1e-12, max_cg=500)
    for d in (dense, sparse):
        assert np.isfinite(d.residual) and d.residual <= 1e-12
        step = np.concatenate([d.x, d.y])
        # the block system's residual, not only CG's (the x-block is eliminated exactly)
        assert np.linalg.norm(H @ step - rhs) <= 1e-9 * np.linalg.norm(rhs)
        np.testing.assert_allclose(step, exact, rtol=1e-6, atol=1e-8 * np.abs(exact).max())


def test_a_csr_block_wider_than_tall_runs_cg_on_its_rows():
    B, u, v, P, *_ = _system(7, 20, 45)
    S = _csr(P)
    assert S.solve_on_rows() and not _csr(P.T).solve_on_rows()
    np.testing.assert_allclose(S.T.matvec(np.arange(20.0)), P.T @ np.arange(20.0), rtol=1e-12)
    assert not DenseOffDiagonal(B, u, v, 1).solve_on_rows()  # one fused read needs the column unknowns


def test_a_sparsified_block_still_gives_an_ascent_direction():
    # dropping small entries changes the matrix, not the sign of the step along the gradient
    reg, delta = 0.05, 1e-3
    B, u, v, P, a, b, r, c, H, rhs = _system(8, 40, 30, reg=reg, delta=delta)
    kept = np.where(P >= np.quantile(P, 0.9), P, 0.0)
    d = newton_direction(_csr(kept), r * (1 + delta), c * (1 + delta), a - r, b - c, reg, rtol=1e-10, max_cg=500)
    assert (a - r) @ d.x + (b - c) @ d.y > 0


def test_dense_direction_is_an_ascent_direction_at_loose_tolerance():
    reg, delta = 0.05, 1e-3
    B, u, v, P, a, b, r, c, H, rhs = _system(4, 30, 30, reg=reg, delta=delta)
    d = newton_direction(DenseOffDiagonal(B, u, v, 1), r * (1 + delta), c * (1 + delta), a - r, b - c, reg,
                         rtol=0.1, max_cg=500)
    assert d.residual <= 0.1 and d.cg_iter >= 1
    assert (a - r) @ d.x + (b - c) @ d.y > 0  # the dual's gradient along the step


@pytest.mark.parametrize("kind", ["dense", "csr"])
def test_a_previous_direction_warm_starts_cg(kind):
    reg, delta = 0.05, 1e-3
    B, u, v, P, a, b, r, c, H, rhs = _system(9, 30, 30, reg=reg, delta=delta)
    S = DenseOffDiagonal(B, u, v, 1) if kind == "dense" else _csr(P)
    args = (S, r * (1 + delta), c * (1 + delta), a - r, b - c, reg)
    cold = newton_direction(*args, rtol=1e-10, max_cg=500)
    warm = newton_direction(*args, rtol=1e-10, max_cg=500, guess=cold)
    assert warm.cg_iter < cold.cg_iter


def _spd(seed, m):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(m, m))
    return A @ A.T + m * np.eye(m), rng.normal(size=m)


def test_pcg_solves_an_spd_system_and_uses_a_good_guess():
    A, rhs = _spd(5, 30)
    inv_diag = 1.0 / np.diag(A)
    y, it, res = pcg(lambda p: A @ p, rhs, inv_diag, 1e-10, 200)
    assert res <= 1e-10 and np.linalg.norm(A @ y - rhs) <= 1e-10 * np.linalg.norm(rhs) * (1 + 1e-6)
    exact = np.linalg.solve(A, rhs)
    _, it_warm, _ = pcg(lambda p: A @ p, rhs, inv_diag, 1e-10, 200, exact * (1 + 1e-7))
    assert it_warm < it
    # a guess worse than zero is ignored
    y_bad, it_bad, _ = pcg(lambda p: A @ p, rhs, inv_diag, 1e-10, 200, -1e6 * exact)
    np.testing.assert_array_equal(y_bad, y)
    assert it_bad == it


def test_pcg_edge_cases():
    A, rhs = _spd(6, 10)
    inv_diag = 1.0 / np.diag(A)
    y, it, res = pcg(lambda p: A @ p, np.zeros(10), inv_diag, 1e-10, 100)
    assert it == 0 and res == 0.0 and not y.any()
    _, it, res = pcg(lambda p: A @ p, rhs, inv_diag, 1e-15, 2)
    assert it == 2 and res > 1e-15
    _, _, res = pcg(lambda p: -A @ p, rhs, inv_diag, 1e-10, 100)  # not positive definite
    assert np.isnan(res)


@pytest.mark.parametrize("shape", [(40, 25), (60, 60)])
@pytest.mark.parametrize("warm", [False, True])
def test_the_compiled_csr_cg_is_the_generic_pcg(shape, warm):
    """One CG: the CSR block's compiled solver takes the same iterates as pcg over its matvec."""
    from snsot.solvers.linalg import SchurComplement

    reg, delta = 0.05, 1e-3
    B, u, v, P, a, b, r, c, H, rhs = _system(10, *shape, reg=reg, delta=delta)
    kept = np.where(P >= np.quantile(P, 0.7), P, 0.0)
    d_row, d_col = r * (1 + delta), c * (1 + delta)
    schur, elim = _csr(kept).schur(d_row, d_col, rng_vector(shape[0]))
    np.testing.assert_allclose(schur.matvec(np.ones(shape[1])), d_col - kept.T @ (kept @ np.ones(shape[1]) / d_row),
                               rtol=1e-12)
    rhs_c = rng_vector(shape[1], seed=1)
    y0 = rng_vector(shape[1], seed=2) * 1e-3 if warm else None
    for rtol in (1e-2, 1e-10):
        fast = schur.solve(rhs_c, rtol, 500, y0)
        generic = SchurComplement.solve(schur, rhs_c, rtol, 500, y0)
        assert fast[1] == generic[1] > 0
        np.testing.assert_allclose(fast[0], generic[0], rtol=1e-8, atol=1e-12 * np.abs(generic[0]).max())
        assert fast[2] == pytest.approx(generic[2], rel=1e-6)


def rng_vector(n, seed=0):
    return np.random.default_rng(seed).normal(size=n)


# -- the two-level aggregation preconditioner ------------------------------------------------------

from snsot import _kernels as K  # noqa: E402
from snsot import _reference as reference  # noqa: E402
from snsot.solvers import linalg  # noqa: E402


def _transport_graph(n, reg, seed=0, delta=1e-4, cut=1e-8):
    """A 2-D transport graph: the entropic plan between two uniform clouds in [0,1]^2, truncated.

    The Gibbs kernel cut at ``cut`` (a fixed radius), balanced by 200 Sinkhorn
    steps towards uniform marginals. Returns the CSR block ``S``, its shifted
    row and column sums, and ``K`` formed explicitly with scipy.
    """
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    x, y = rng.random((n, 2)), rng.random((n, 2))
    radius = np.sqrt(-np.log(cut) * reg)
    S = cKDTree(x).sparse_distance_matrix(cKDTree(y), radius, output_type="coo_matrix").tocsr()
    S.sort_indices()
    S.data = np.exp(-S.data ** 2 / reg)
    a, v = np.full(n, 1.0 / n), np.ones(n)
    for _ in range(200):
        u = a / (S @ v)
        v = a / (S.T @ u)
    S = (sp.diags(u) @ S @ sp.diags(v)).tocsr()
    d_row = np.asarray(S.sum(axis=1)).ravel() * (1 + delta)
    d_col = np.asarray(S.sum(axis=0)).ravel() * (1 + delta)
    Kx = (sp.diags(d_col) - S.T @ sp.diags(1 / d_row) @ S).tocsr()
    return S, d_row, d_col, Kx


def _block(S, preconditioner="auto"):
    return CsrOffDiagonal(S.indptr.astype(np.int64), S.indices.astype(np.int32), S.data, S.shape, preconditioner)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aggregation_kernel_agrees_with_its_reference_and_labels_every_column(seed):
    rng = np.random.default_rng(seed)
    n, m = 60, 80
    S = sp.random(n, m, density=0.08, random_state=seed, format="csr")
    S.data = np.exp(rng.normal(0, 3, S.nnz))  # wide range of magnitudes
    S.data[:5] = 0.0  # zero-mass entries
    S = sp.csr_matrix(S)
    S.data[S.indptr[3]:S.indptr[4]] = 0.0  # a row with no mass
    assert S.indptr[4] > S.indptr[3]
    args = (S.indptr.astype(np.int64), S.indices.astype(np.int32), S.data, m, 0.1)
    labels, n_agg = K.aggregate_columns(*args)
    ref, ref_n = reference.aggregate_columns(*args)
    np.testing.assert_array_equal(labels, ref)
    assert n_agg == ref_n
    assert labels.min() == 0 and set(np.unique(labels)) == set(range(n_agg))  # contiguous, every column labelled
    assert n_agg < m  # it does aggregate


def test_merged_columns_are_the_product_with_the_aggregation_matrix():
    rng = np.random.default_rng(4)
    S = sp.random(50, 70, density=0.1, random_state=4, format="csr")
    labels = rng.integers(0, 9, 70)
    ptr, idx, val = K.merge_columns(S.indptr.astype(np.int64), S.indices.astype(np.int32), S.data, labels, 9)
    R = sp.csr_matrix((np.ones(70), (labels, np.arange(70))), shape=(9, 70))
    got = sp.csr_matrix((val, idx, ptr), shape=(50, 9))
    np.testing.assert_allclose(got.toarray(), (S @ R.T).toarray(), rtol=1e-14, atol=0)
    assert np.all(np.diff(ptr) <= 9)  # one entry per aggregate per row


@pytest.mark.parametrize("cycle", ["additive", "symmetric"])
def test_two_level_preconditioner_is_symmetric_positive_definite(cycle):
    S, d_row, d_col, Kx = _transport_graph(300, 2e-3, seed=5)
    M = linalg.TwoLevelPreconditioner(_block(S), d_row, d_col, cycle=cycle)
    assert 1 < M.n_coarse < S.shape[1]
    Minv = np.column_stack([M(e) for e in np.eye(S.shape[1])])
    np.testing.assert_allclose(Minv, Minv.T, rtol=1e-8, atol=1e-10 * np.abs(Minv).max())
    assert np.linalg.eigvalsh((Minv + Minv.T) / 2).min() > 0


def test_two_level_cg_solves_to_the_asked_residual_in_far_fewer_iterations_than_jacobi():
    """On a 2-D transport graph (a shifted weighted Laplacian), Jacobi-CG needs many times the two-level iterations."""
    S, d_row, d_col, Kx = _transport_graph(2500, 2e-4, seed=6)
    rhs = np.random.default_rng(7).normal(size=S.shape[1])
    rhs -= rhs.mean()  # the Newton right-hand side is orthogonal to the near-null constant as well
    counts = {}
    for kind in ("jacobi", "aggregation"):
        schur, _ = _block(S, kind).schur(d_row, d_col, np.zeros(S.shape[0]))
        y, it, res = schur.solve(rhs, 1e-8, 5000)
        # the residual recomputed independently, with K formed by scipy
        assert np.linalg.norm(Kx @ y - rhs) <= 1.01e-8 * np.linalg.norm(rhs)
        assert res <= 1e-8
        counts[kind] = it
    assert counts["aggregation"] * 4 < counts["jacobi"], counts


def test_a_newton_direction_reuses_the_previous_preconditioner_and_still_meets_rtol():
    S, d_row, d_col, Kx = _transport_graph(2500, 4e-4, seed=8)
    rng = np.random.default_rng(9)
    g_rows, g_cols = rng.normal(size=S.shape[0]) * 1e-3, rng.normal(size=S.shape[1]) * 1e-3
    g_cols -= g_cols.mean()
    block = _block(S, "aggregation")
    first = newton_direction(block, d_row, d_col, g_rows, g_cols, 1.0, rtol=1e-6, max_cg=2000)
    assert isinstance(first.preconditioner, linalg.TwoLevelPreconditioner)
    # the next step: a plan 20% different in every entry, the same support
    S2 = S.copy()
    S2.data = S.data * np.exp(0.2 * rng.normal(size=S.nnz))
    d_row2 = np.asarray(S2.sum(axis=1)).ravel() * (1 + 1e-4)
    d_col2 = np.asarray(S2.sum(axis=0)).ravel() * (1 + 1e-4)
    second = newton_direction(_block(S2, "aggregation"), d_row2, d_col2, g_rows, g_cols, 1.0, rtol=1e-6,
                              max_cg=2000, guess=first)
    H = sp.bmat([[sp.diags(d_row2), S2], [S2.T, sp.diags(d_col2)]]).tocsr()
    rhs = np.concatenate([g_rows, g_cols])
    from scipy.sparse.linalg import spsolve

    exact = spsolve(H.tocsc(), rhs)
    assert second.residual <= 1e-6
    assert second.preconditioner is first.preconditioner  # reused: not worn out by a 20% change
    # y solves the Schur system to 1e-6: its error in the K-norm is small; compare loosely in the 2-norm
    err = np.linalg.norm(np.concatenate([second.x, second.y]) - exact) / np.linalg.norm(exact)
    assert err < 1e-3


def test_an_unknown_preconditioner_name_is_refused():
    with pytest.raises(ValueError, match="preconditioner"):
        CsrOffDiagonal(np.zeros(2, np.int64), np.zeros(0, np.int32), np.zeros(0), (1, 1), "multigrid")
    S, d_row, d_col, _ = _transport_graph(200, 2e-3)
    with pytest.raises(ValueError, match="cycle"):
        linalg.TwoLevelPreconditioner(_block(S), d_row, d_col, cycle="W")


def test_auto_uses_jacobi_below_the_size_threshold_and_aggregation_above():
    small, d_row, d_col, _ = _transport_graph(300, 2e-3)
    schur, _ = _block(small).schur(d_row, d_col, np.zeros(300))
    assert not schur.uses_aggregation()
    big, d_row, d_col, _ = _transport_graph(linalg.AGGREGATION_MIN_SIZE, 2e-3)
    schur, _ = _block(big).schur(d_row, d_col, np.zeros(big.shape[0]))
    assert schur.uses_aggregation()


@pytest.mark.parametrize("reg, dup", [(1e-4, False), (1e-3, True), (3e-3, False)])
def test_truncated_sns_with_the_two_level_cg_everywhere_gives_the_dense_sns_plan(monkeypatch, reg, dup):
    """Forcing the aggregation preconditioner on every CSR Newton solve leaves the plan that of dense SNS."""
    import snsot
    from scipy.spatial.distance import cdist

    monkeypatch.setattr(linalg, "AGGREGATION_MIN_SIZE", 0)
    used = []
    orig = linalg._CsrSchur._solve_two_level_serial

    def spy(self, *args):
        out = orig(self, *args)
        used.append(out is not None)
        return out

    monkeypatch.setattr(linalg._CsrSchur, "_solve_two_level_serial", spy)
    rng = np.random.default_rng(11)
    n = 200
    x, y = rng.random((n, 2)) * 2.0, np.clip(rng.normal(1.0, 0.3, (n, 2)), 0.0, 2.0)
    if dup:
        x[n // 2:] = x[: n - n // 2]
        y[: n // 3] = x[: n // 3]
    a, b = rng.random(n) + 0.05, rng.random(n) + 0.05
    a, b = a / a.sum(), b / b.sum()
    res = snsot.solve(snsot.PointCloud(x, y), a, b, reg=reg, tol=1e-9)
    monkeypatch.setattr(linalg, "AGGREGATION_MIN_SIZE", 1 << 62)
    dense = snsot.solve(cdist(x, y, "sqeuclidean"), a, b, reg=reg, tol=1e-9)
    assert res.converged and dense.converged
    assert used and all(used)  # the two-level CG ran, and never fell back to Jacobi
    np.testing.assert_allclose(res.plan.toarray(), dense.plan, rtol=0, atol=1e-9)


@pytest.mark.parametrize("max_iter", [3, 2000])
def test_a_stale_preconditioner_from_a_very_different_plan_still_gives_the_asked_residual(max_iter):
    """A reused preconditioner is only a (worse) SPD operator: CG stays exact, and a miss rebuilds it."""
    S, d_row, d_col, Kx = _transport_graph(2500, 2e-4, seed=12)
    rng = np.random.default_rng(13)
    other = S.copy()
    other.data = S.data * np.exp(3.0 * rng.normal(size=S.nnz))  # plan values off by factors of ~20
    stale = linalg.TwoLevelPreconditioner(_block(other), np.asarray(other.sum(axis=1)).ravel(),
                                          np.asarray(other.sum(axis=0)).ravel())
    schur, _ = _block(S, "aggregation").schur(d_row, d_col, np.zeros(S.shape[0]))
    schur.previous = stale
    rhs = rng.normal(size=S.shape[1])
    y, it, res = schur.solve(rhs, 1e-6, max_iter)
    true = np.linalg.norm(Kx @ y - rhs) / np.linalg.norm(rhs)
    if max_iter == 3:  # the stale one misses in 3 iterations: a fresh one takes over (and may miss too)
        assert schur.used is not stale
        assert true == pytest.approx(res, rel=1e-6)
    else:
        assert res <= 1e-6 and true <= 1.01e-6


@pytest.mark.parametrize("n_chunks", [1, 2, 5])
def test_chunked_schur_matvec_agrees_with_its_reference(n_chunks):
    """The parallel CSR Schur product (row blocks scattering into private buffers) is the reference's
    ``diag(d_col) y - S^T diag(1/d_row) S y``, empty rows and empty columns included."""
    rng = np.random.default_rng(n_chunks)
    S = sp.random(120, 90, density=0.05, random_state=n_chunks, format="csr")
    keep = (np.arange(120)[:, None] % 7 != 0) & (np.arange(90)[None, :] % 11 != 3)  # empty rows and columns
    S = sp.csr_matrix(S.multiply(sp.csr_matrix(keep)))
    assert (np.diff(S.indptr) == 0).any() and (np.bincount(S.indices, minlength=90) == 0).any()
    d_row = np.asarray(S.sum(axis=1)).ravel() * 1.01 + 1e-3
    d_col = np.asarray(S.sum(axis=0)).ravel() * 1.01 + 1e-3
    y = rng.normal(size=90)
    out = np.empty(90)
    K.schur_matvec_chunked(S.indptr.astype(np.int64), S.indices.astype(np.int32), S.data, d_row, d_col, y,
                           n_chunks, out)
    np.testing.assert_allclose(out, reference.schur_matvec(S, d_row, d_col, y), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("cycle", ["additive", "symmetric"])
def test_a_deeper_hierarchy_is_still_symmetric_positive_definite(cycle):
    """With a small ``coarsest`` the coarse solve is a V-cycle over further aggregation levels (l1-Jacobi
    smoothing, exact at the last): the preconditioner must stay SPD for CG to stay valid."""
    S, d_row, d_col, Kx = _transport_graph(300, 2e-3, seed=5)
    M = linalg.TwoLevelPreconditioner(_block(S), d_row, d_col, cycle=cycle, coarsest=8)
    assert len(M.hierarchy) >= 1 and M.coarse.shape[0] <= 8 < M.n_coarse
    Minv = np.column_stack([M(e) for e in np.eye(S.shape[1])])
    np.testing.assert_allclose(Minv, Minv.T, rtol=1e-8, atol=1e-10 * np.abs(Minv).max())
    assert np.linalg.eigvalsh((Minv + Minv.T) / 2).min() > 0


def test_the_multilevel_coarse_solve_reaches_the_residual_in_a_few_more_iterations():
    """On a 2-D transport graph: CG with the V-cycle coarse solve meets the residual (recomputed with
    scipy's K), in at most twice the iterations of the exact coarse solve and far fewer than Jacobi."""
    S, d_row, d_col, Kx = _transport_graph(2500, 2e-4, seed=6)
    rhs = np.random.default_rng(7).normal(size=S.shape[1])
    rhs -= rhs.mean()
    schur, _ = _block(S, "jacobi").schur(d_row, d_col, np.zeros(S.shape[0]))
    _, jacobi, _ = schur.solve(rhs, 1e-8, 5000)
    counts = {}
    for coarsest in (np.inf, 30):
        M = linalg.TwoLevelPreconditioner(_block(S), d_row, d_col, coarsest=coarsest)
        assert (len(M.hierarchy) > 0) == (coarsest == 30)
        y, it, res = linalg.pcg(schur.matvec, rhs, None, 1e-8, 5000, precond=M)
        assert res <= 1e-8 and np.linalg.norm(Kx @ y - rhs) <= 1.01e-8 * np.linalg.norm(rhs)
        counts[coarsest] = it
    assert counts[30] <= 2 * counts[np.inf] and counts[30] * 3 < jacobi, (counts, jacobi)


def test_matrix_aggregation_groups_neighbours_and_labels_every_unknown():
    """Aggregates of an explicit coarse operator: every unknown labelled, contiguous labels, fewer
    aggregates than unknowns, and each aggregate connected in the operator's graph."""
    S, d_row, d_col, Kx = _transport_graph(600, 2e-3, seed=3)
    labels, n_agg = linalg._aggregate_matrix(abs(Kx).tocsr(), linalg.STRONG_FRACTION)
    assert set(np.unique(labels)) == set(range(n_agg)) and 1 < n_agg < Kx.shape[0] / 3
    from scipy.sparse.csgraph import connected_components

    G = (abs(Kx) > 0).astype(float)
    for agg in range(0, n_agg, 7):
        members = np.flatnonzero(labels == agg)
        if members.size > 1:
            assert connected_components(G[members][:, members], directed=False)[0] == 1
