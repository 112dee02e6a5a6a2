"""Log-domain Sinkhorn (method="sinkhorn"): what block coordinate ascent guarantees."""

import warnings

import numpy as np
import pytest

import snsot

from checks import check_entropic_bound, check_result, marginal_error, pot_plan
from strategies import make_problem


def random_assignment(n=500, seed=0):
    """The paper's random assignment problem: uniform [0, 1] costs, uniform weights."""
    C = np.random.default_rng(seed).random((n, n))
    return C, np.full(n, 1.0 / n), np.full(n, 1.0 / n)


@pytest.mark.slow
def test_sinkhorn_reaches_1e10_on_the_random_assignment_problem():
    # ~26k iterations (about two minutes on 2 cores): the one slow test of the suite.
    C, a, b = random_assignment()
    res = snsot.solve(C, a, b, reg=1 / 1200, method="sinkhorn", tol=1e-10)
    check_result(res, C, a, b, 1e-10, method="sinkhorn")
    assert res.converged and res.marginal_error < 1e-10
    assert res.n_newton == 0
    check_entropic_bound(res, C, a, b)


def test_only_sinkhorn_steps_and_the_dual_never_decreases():
    # Each half-step maximises the dual exactly in f (or g): block coordinate ascent.
    p = make_problem(71, 60, 45, 5e-3, cost="sqeuclidean")
    res = snsot.solve(p.C, p.a, p.b, reg=p.reg, method="sinkhorn", tol=1e-10)
    check_result(res, p.C, p.a, p.b, 1e-10, method="sinkhorn")
    assert res.converged
    assert res.n_newton == 0 and res.n_sinkhorn == res.n_iter > 10
    assert np.all(res.history.stage == 0)
    obj = res.history.objective
    scale = np.abs(obj).max() + 1.0
    assert np.all(np.diff(obj) >= -1e-12 * scale), np.diff(obj).min()
    # and the dual ends at the primal entropic optimum: the value of POT's plan
    P = pot_plan(p.C, p.a, p.b, p.reg)
    primal = float((p.C * P).sum() + p.reg * (P[P > 0] * (np.log(P[P > 0]) - 1)).sum())
    assert res.objective == pytest.approx(primal, rel=1e-9, abs=1e-12)


def test_columns_are_exact_after_every_iteration():
    # After the g-update the plan's columns equal b exactly, even when stopped early.
    p = make_problem(72, 50, 40, 1e-3)
    with pytest.warns(snsot.ConvergenceWarning):
        res = snsot.solve(p.C, p.a, p.b, reg=p.reg, method="sinkhorn", max_iter=3)
    assert res.n_iter == 3 and not res.converged
    np.testing.assert_allclose(res.plan.sum(axis=0), p.b, rtol=1e-13)
    assert np.abs(res.plan.sum(axis=1) - p.a).sum() > 1e-6


def test_marginal_error_history_decreases_to_the_final_error():
    p = make_problem(73, 40, 40, 2e-2)
    res = snsot.solve(p.C, p.a, p.b, reg=p.reg, method="sinkhorn", tol=1e-11)
    check_result(res, p.C, p.a, p.b, 1e-11)
    h = res.history.marginal_error
    assert h[-1] < 1e-11 and h[0] > h[-1]
    # the in-loop (row) error at the last iterate agrees with the one measured on the plan
    assert h[-1] == pytest.approx(res.marginal_error, rel=1e-3, abs=1e-15)


def test_warm_start_from_a_nearby_problem_takes_fewer_iterations():
    p = make_problem(74, 80, 70, 1e-2, cost="sqeuclidean")
    first = snsot.solve(p.C, p.a, p.b, reg=p.reg, method="sinkhorn", tol=1e-10)
    C2 = p.C + 1e-3 * np.random.default_rng(75).random(p.C.shape)
    cold = snsot.solve(C2, p.a, p.b, reg=p.reg, method="sinkhorn", tol=1e-10)
    warm = snsot.solve(C2, p.a, p.b, reg=p.reg, method="sinkhorn", tol=1e-10, init=first.potentials)
    check_result(warm, C2, p.a, p.b, 1e-10)
    assert cold.converged and warm.converged
    assert warm.n_iter < cold.n_iter
    np.testing.assert_allclose(warm.plan, cold.plan, rtol=0, atol=1e-9)


def test_init_uses_f_only():
    # documented: g is recomputed from f, so the g of init does not matter
    p = make_problem(76, 20, 30, 0.05)
    f = np.random.default_rng(77).normal(size=20)
    r1 = snsot.solve(p.C, p.a, p.b, reg=p.reg, method="sinkhorn", tol=1e-11, init=(f, np.zeros(30)))
    r2 = snsot.solve(p.C, p.a, p.b, reg=p.reg, method="sinkhorn", tol=1e-11, init=(f, np.full(30, 1e3)))
    np.testing.assert_array_equal(r1.plan, r2.plan)
    assert r1.n_iter == r2.n_iter


def test_already_optimal_start_stops_immediately():
    p = make_problem(78, 25, 25, 0.1)
    first = snsot.solve(p.C, p.a, p.b, reg=p.reg, method="sinkhorn", tol=1e-12)
    again = snsot.solve(p.C, p.a, p.b, reg=p.reg, method="sinkhorn", tol=1e-10, init=first.potentials)
    check_result(again, p.C, p.a, p.b, 1e-10)
    assert again.converged and again.n_iter <= 1


def test_stopping_at_the_margin_of_tol_is_not_a_stall():
    C = np.array([[0.63696169, 0.26978671, 0.04097352, 0.01652764, 0.81327024],
                  [0.91275558, 0.60663578, 0.72949656, 0.54362499, 0.93507242],
                  [0.81585355, 0.0027385, 0.85740428, 0.03358558, 0.72965545],
                  [0.17565562, 0.86317892, 0.54146122, 0.29971189, 0.42268722],
                  [0.02831967, 0.12428328, 0.67062441, 0.64718951, 0.61538511]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", snsot.ConvergenceWarning)
        res = snsot.solve(C, reg=0.01, method="sinkhorn", tol=1e-12)
    # far from max_iter (100000) and still contracting at a steady rate: tol is reachable
    assert res.n_iter < 50_000
    assert res.converged, (res.marginal_error, res.message)
    assert marginal_error(res.plan, np.full(5, 0.2), np.full(5, 0.2)) < 1e-12


@pytest.mark.parametrize("spread", [0.0, 3.0])
def test_stepper_iterates_equal_plain_log_domain_sinkhorn(spread):
    # The stepper scales a stored plan and falls back to the log-domain kernels
    # when a sum leaves the safe range; either way its iterates must be those of
    # textbook log-domain Sinkhorn (f = reg log a - softmin(C - g), then g alike).
    # spread=3 starts with f spread over 3/reg = 600 units, far off the Sinkhorn
    # manifold, so that rows underflow and the fallback and rebasing paths run.
    from scipy.special import logsumexp

    from snsot.problem import OTProblem
    from snsot.solvers._dense import DensePlan
    from snsot.solvers._marginals import BalancedMarginals
    from snsot.solvers.sinkhorn import SinkhornStepper

    p = make_problem(72, 40, 30, 5e-3, cost="sqeuclidean")
    problem = OTProblem(p.C, p.a, p.b, p.reg)
    f0 = np.random.default_rng(1).uniform(-spread, spread, 40)
    st = SinkhornStepper(DensePlan(problem), BalancedMarginals(problem), f0)
    f, reg = f0.copy(), p.reg
    g = reg * np.log(p.b) - reg * logsumexp((f[:, None] - p.C) / reg, axis=0)
    for _ in range(25):
        st.error()
        st.step()
        f = reg * np.log(p.a) - reg * logsumexp((g[None, :] - p.C) / reg, axis=1)
        g = reg * np.log(p.b) - reg * logsumexp((f[:, None] - p.C) / reg, axis=0)
        np.testing.assert_allclose(st.f, f, rtol=0, atol=1e-9 * reg * (1 + np.abs(f).max() / reg * 1e-3))
        np.testing.assert_allclose(st.g, g, rtol=0, atol=1e-9 * reg * (1 + np.abs(g).max() / reg * 1e-3))
