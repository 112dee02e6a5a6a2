"""The Newton system of SNS: sparse (Schur complement on a CSR plan) and dense (through a stored base)."""

import numpy as np
import pytest
import scipy.sparse as sp

from snsot.solvers.linalg import _pcg, dense_newton_direction, newton_direction


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
    return S.indptr.astype(np.int64), S.indices.astype(np.int32), S.data


@pytest.mark.parametrize("shape", [(40, 25), (25, 40), (50, 50)])
def test_dense_and_full_sparse_directions_both_solve_the_block_system(shape):
    reg, delta = 0.05, 1e-3
    B, u, v, P, a, b, r, c, H, rhs = _system(3, *shape, reg=reg, delta=delta)
    exact = np.linalg.solve(H, rhs)
    args = (r, c, a - r, b - c, reg, delta)
    dense = dense_newton_direction(B, u, v, *args, rtol=1e-12, max_cg=500, n_chunks=2)
    sparse = newton_direction(_csr(P), *args, rtol=1e-12, max_cg=500)
    for d in (dense, sparse):
        assert np.isfinite(d.residual) and d.residual <= 1e-12
        step = np.concatenate([d.x, d.y])
        # the block system's residual, not only CG's (the x-block is eliminated exactly)
        assert np.linalg.norm(H @ step - rhs) <= 1e-9 * np.linalg.norm(rhs)
        np.testing.assert_allclose(step, exact, rtol=1e-6, atol=1e-8 * np.abs(exact).max())


def test_dense_direction_is_an_ascent_direction_at_loose_tolerance():
    reg, delta = 0.05, 1e-3
    B, u, v, P, a, b, r, c, H, rhs = _system(4, 30, 30, reg=reg, delta=delta)
    d = dense_newton_direction(B, u, v, r, c, a - r, b - c, reg, delta, rtol=0.1, max_cg=500, n_chunks=1)
    assert d.residual <= 0.1 and d.cg_iter >= 1
    assert (a - r) @ d.x + (b - c) @ d.y > 0  # the dual's gradient along the step


def _spd(seed, m):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(m, m))
    return A @ A.T + m * np.eye(m), rng.normal(size=m)


def test_pcg_solves_an_spd_system_and_uses_a_good_guess():
    A, rhs = _spd(5, 30)
    inv_diag = 1.0 / np.diag(A)
    y, it, res = _pcg(lambda p: A @ p, rhs, inv_diag, 1e-10, 200, None)
    assert res <= 1e-10 and np.linalg.norm(A @ y - rhs) <= 1e-10 * np.linalg.norm(rhs) * (1 + 1e-6)
    exact = np.linalg.solve(A, rhs)
    _, it_warm, _ = _pcg(lambda p: A @ p, rhs, inv_diag, 1e-10, 200, exact * (1 + 1e-7))
    assert it_warm < it
    # a guess worse than zero is ignored
    y_bad, it_bad, _ = _pcg(lambda p: A @ p, rhs, inv_diag, 1e-10, 200, -1e6 * exact)
    np.testing.assert_array_equal(y_bad, y)
    assert it_bad == it


def test_pcg_edge_cases():
    A, rhs = _spd(6, 10)
    inv_diag = 1.0 / np.diag(A)
    y, it, res = _pcg(lambda p: A @ p, np.zeros(10), inv_diag, 1e-10, 100, None)
    assert it == 0 and res == 0.0 and not y.any()
    _, it, res = _pcg(lambda p: A @ p, rhs, inv_diag, 1e-15, 2, None)
    assert it == 2 and res > 1e-15
    _, _, res = _pcg(lambda p: -A @ p, rhs, inv_diag, 1e-10, 100, None)  # not positive definite
    assert np.isnan(res)
