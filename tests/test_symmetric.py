"""Self-transport by Newton on the symmetric dual, against the general solver."""

import numpy as np
import pytest

import snsot
from snsot.problem import OTProblem
from snsot.solvers.symmetric import solve_symmetric


def _cloud(n, seed, d=2):
    rng = np.random.default_rng(seed)
    x = rng.random((n, d))
    a = rng.random(n) + 0.05
    return snsot.costs.pairwise(x), a / a.sum()


@pytest.mark.parametrize("reg", [1.0, 1e-1, 1e-2, 1e-3])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_the_general_solver(reg, seed):
    C, a = _cloud(60, seed)
    ours = solve_symmetric(OTProblem(C, a, a, reg), tol=1e-11)
    ref = snsot.solve(C, a, a, reg=reg, tol=1e-11, max_iter=100_000)
    assert ours.converged and ref.converged
    assert ours.objective == pytest.approx(ref.objective, abs=1e-12 * max(1.0, abs(ref.objective)))
    np.testing.assert_allclose(ours.plan, ref.plan, atol=1e-10)
    f, g = ours.potentials
    np.testing.assert_array_equal(f, g)
    # The plan is exp((f_i + f_j - C_ij) / reg), measured by the shared finaliser.
    np.testing.assert_allclose(ours.plan, np.exp((f[:, None] + f[None, :] - C) / reg), rtol=1e-12, atol=1e-300)
    assert np.abs(ours.plan.sum(1) - a).sum() * 2 == pytest.approx(ours.marginal_error, abs=1e-15)


def test_small_reg_takes_few_newton_steps():
    # The reason for the solver: at reg 1e-4 the general Hessian is nearly singular here.
    C, a = _cloud(300, 2)
    res = solve_symmetric(OTProblem(C, a, a, 1e-4), tol=1e-9)
    assert res.converged and res.n_newton <= 20
    assert np.abs(res.plan.sum(0) - a).sum() < 1e-9


def test_reports_an_unmet_tolerance():
    C, a = _cloud(40, 3)
    res = solve_symmetric(OTProblem(C, a, a, 1e-2), tol=1e-12, max_iter=1)
    assert not res.converged and res.marginal_error >= 1e-12 and "maximum" in res.message
