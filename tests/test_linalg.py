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
