"""Weights of any total mass: a relative tol, honest flags, and the scaling laws of entropic OT.

For ``a = M a1``, ``b = M b1`` (``a1``, ``b1`` of unit mass) the entropic
problem's solution obeys ``P = M P1``, ``cost = M cost1``,
``D = M D1 + reg M log M``, and potentials with ``f_i + g_j = f1_i + g1_j +
reg log M``. The oracles below are POT's log-domain Sinkhorn and the
solvers called directly, without :func:`snsot.solve`'s rescaling.
"""

import math

import numpy as np
import ot
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import snsot
from snsot.problem import OTProblem
from snsot.solvers.sinkhorn import solve_sinkhorn
from snsot.solvers.sns import solve_sns

REG = 0.05


def _unit_problem(seed=0, n=40, m=30):
    rng = np.random.default_rng(seed)
    C = snsot.costs.pairwise(rng.random((n, 2)), rng.random((m, 2)))
    a, b = rng.random(n) + 0.1, rng.random(m) + 0.1
    return C, a / a.sum(), b / b.sum()


def _relative_marginal_error(plan, a, b):
    """L1 marginal error of ``plan`` relative to the mass, computed here from the plan."""
    return (np.abs(plan.sum(1) - a).sum() + np.abs(plan.sum(0) - b).sum()) / a.sum()


@pytest.fixture(scope="module")
def unit():
    C, a, b = _unit_problem()
    pot_plan = ot.sinkhorn(a, b, C, REG, method="sinkhorn_log", stopThr=1e-14, numItermax=100_000)
    return C, a, b, pot_plan


@pytest.mark.parametrize("mass", [1e-300, 3.7e-150, 1e-10, 1.0, 7.0, 1e10, 2.5e150, 1e300])
@pytest.mark.parametrize("method", ["sns", "sinkhorn"])
def test_the_plan_at_mass_M_is_M_times_the_unit_plan(unit, mass, method):
    C, a, b, pot_plan = unit
    res = snsot.solve(C, mass * a, mass * b, reg=REG, method=method, tol=1e-11)
    assert res.converged
    assert res.tol == 1e-11
    assert _relative_marginal_error(res.plan, mass * a, mass * b) < 1e-11  # tol is relative to the mass
    np.testing.assert_allclose(res.plan / mass, pot_plan, rtol=1e-8, atol=1e-12 * pot_plan.max())
    # the potentials give the plan returned, in the caller's units
    f, g = res.potentials
    log_plan = (f[:, None] + g[None, :] - C) / REG
    normal = res.plan > 1e-290  # log of a denormal has few significant bits
    np.testing.assert_allclose(log_plan[normal], np.log(res.plan[normal]), rtol=0, atol=1e-9)
    np.testing.assert_allclose(res.cost, mass * np.sum(C * pot_plan), rtol=1e-9)


@pytest.mark.parametrize("mass", [0.01, 0.3, 7.0, 1000.0])
@pytest.mark.parametrize("solver", [solve_sinkhorn, solve_sns], ids=["sinkhorn", "sns"])
def test_rescaled_solve_matches_a_direct_solve_where_both_work(mass, solver):
    C, a, b = _unit_problem(seed=1)
    tol = 1e-11
    res = snsot.solve(C, mass * a, mass * b, reg=REG, method=solver.__name__[6:], tol=tol)
    direct = solver(OTProblem(C, mass * a, mass * b, REG), tol=tol * mass, max_iter=100_000)
    assert res.converged and direct.converged
    np.testing.assert_allclose(res.plan, direct.plan, rtol=1e-8, atol=1e-12 * mass)
    np.testing.assert_allclose(res.cost, direct.cost, rtol=1e-10)
    np.testing.assert_allclose(res.objective, direct.objective, rtol=1e-10, atol=1e-12 * mass)
    # the objective law D(M a1, M b1) = M D(a1, b1) + reg M log M, against a direct unit-mass solve
    one = solver(OTProblem(C, a, b, REG), tol=tol, max_iter=100_000)
    np.testing.assert_allclose(res.objective, mass * one.objective + REG * mass * math.log(mass),
                               rtol=1e-9, atol=1e-12 * mass)


def test_a_tiny_mass_is_solved_not_returned_as_the_starting_plan():
    # With an absolute tol, weights of total 1e-10 met tol=1e-9 before any iteration.
    C, a, b = _unit_problem(seed=2)
    res = snsot.solve(C, 1e-10 * a, 1e-10 * b, reg=REG, tol=1e-9)
    assert res.converged and res.n_iter > 0
    assert _relative_marginal_error(res.plan, 1e-10 * a, 1e-10 * b) < 1e-9


@pytest.mark.parametrize("total", [1e-305, 1e-310, 1e-315, 1e-320, 1e-322])
def test_denormal_masses_never_give_a_plan_flagged_converged_that_misses_the_marginals(total):
    n = 30
    rng = np.random.default_rng(3)
    C = rng.random((n, n))
    w = np.full(n, total / n)  # equal entries: the totals agree exactly even when denormal
    assert w.sum() > 0
    res = snsot.solve(C, w, w, reg=0.1, tol=1e-6, warn=False)
    measured = _relative_marginal_error(res.plan, w, w)
    assert np.isfinite(res.marginal_error)
    if res.converged:
        assert measured < 1e-6 and res.plan.any()
    else:
        assert measured >= 1e-6
        assert res.status == "underflow" and "underflow" in res.message


def test_huge_and_tiny_masses_keep_warm_starts_in_the_callers_units():
    C, a, b = _unit_problem(seed=4)
    mass = 1e200
    first = snsot.solve(C, mass * a, mass * b, reg=REG, tol=1e-12)
    again = snsot.solve(C, mass * a, mass * b, reg=REG, tol=1e-12, init=first.potentials)
    assert again.converged and again.n_iter <= 2
    np.testing.assert_allclose(again.plan, first.plan, rtol=1e-9, atol=1e-12 * first.plan.max())


def test_history_and_callback_report_the_callers_units():
    C, a, b = _unit_problem(seed=5)
    mass = 2.0 ** -700 * 3
    seen = []
    res = snsot.solve(C, mass * a, mass * b, reg=REG, tol=1e-10,
                      callback=lambda it, stage, err, obj: seen.append((err, obj)) and False)
    errors = np.array([e for e, _ in seen])
    np.testing.assert_array_equal(errors, res.history.marginal_error)
    np.testing.assert_array_equal(np.array([o for _, o in seen]), res.history.objective)
    assert res.history.marginal_error[0] > 1e-3 * mass  # the start is far off, in units of the mass
    assert res.history.marginal_error[-1] < 1e-10 * mass
    # the last iterate's dual value is the result's (same reg, same units)
    np.testing.assert_allclose(res.history.objective[-1], res.objective, rtol=1e-9)


@settings(max_examples=15, deadline=None)
@given(exponent=st.integers(-900, 900))
def test_scaling_the_weights_by_a_power_of_two_scales_the_plan_exactly(exponent):
    C, a, b = _unit_problem(seed=6, n=12, m=9)
    one = snsot.solve(C, a, b, reg=REG, tol=1e-12)
    scaled = snsot.solve(C, np.ldexp(a, exponent), np.ldexp(b, exponent), reg=REG, tol=1e-12)
    # the solver sees the same unit-mass problem bit for bit, so the iterates are the same
    assert scaled.n_iter == one.n_iter
    np.testing.assert_array_equal(scaled.plan, np.ldexp(one.plan, exponent))
    assert scaled.cost == math.ldexp(one.cost, exponent)
