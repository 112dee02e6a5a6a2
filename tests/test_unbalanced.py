"""Unbalanced (KL-relaxed) entropic OT: the dual's derivation, the reference, and the solvers.

Oracles: POT's ``ot.unbalanced.sinkhorn_unbalanced(reg_type="entropy")`` run
to ``stopThr=1e-15``, the primal objective recomputed in numpy from a plan,
central finite differences of the dual, and balanced ``snsot.solve``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import snsot
from snsot.problem import parse_reg_m
from snsot.solvers._kl_marginals import (
    KLMarginals,
    sinkhorn_unbalanced_reference,
    unbalanced_primal,
)

ot = pytest.importorskip("ot")


def _problem(seed, n=30, m=40, scale_b=2.0):
    rng = np.random.default_rng(seed)
    C = rng.random((n, m))
    a = rng.random(n) + 0.05
    b = (rng.random(m) + 0.05) * scale_b  # masses differ
    return C, a, b


def _marginals(C, a, b, reg, rho):
    return KLMarginals(snsot.OTProblem(C, a, b, reg, rho))


def _pot_plan(C, a, b, reg, rho):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # POT warns that reg_type="entropy" overrides c
        P, log = ot.unbalanced.sinkhorn_unbalanced(
            a, b, C, reg, rho, reg_type="entropy", stopThr=1e-15, numItermax=200_000, log=True)
    return P, log


def _plan(C, f, g, reg):
    return np.exp((f[:, None] + g[None, :] - C) / reg)


def _dual(C, a, b, f, g, reg, rho):
    """The unbalanced dual written out independently of KLMarginals."""
    value = -reg * _plan(C, f, g, reg).sum()
    for w, h, r in ((a, f, rho[0]), (b, g, rho[1])):
        value += w @ h if math.isinf(r) else r * w @ (1.0 - np.exp(-h / r))
    return value


# ---------------------------------------------------------------------------
# The derivation (module docstring of snsot.solvers._kl_marginals)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("rho", [(0.7, 0.7), (0.1, 3.0), (math.inf, 0.5)])
def test_pot_optimum_satisfies_our_optimality_conditions(rho):
    """At POT's solution, P 1 = a exp(-f/rho_1) and P^T 1 = b exp(-g/rho_2), with f = reg log u."""
    C, a, b = _problem(0)
    reg = 0.05
    P, log = _pot_plan(C, a, b, reg, rho)
    f, g = reg * log["logu"], reg * log["logv"]
    ta, tb = _marginals(C, a, b, reg, rho).targets(f, g)
    np.testing.assert_allclose(P.sum(axis=1), ta, rtol=1e-10)
    np.testing.assert_allclose(P.sum(axis=0), tb, rtol=1e-10)


@pytest.mark.parametrize("rho", [(0.7, 0.7), (0.2, 5.0)])
def test_strong_duality_primal_of_pot_plan_equals_dual(rho):
    C, a, b = _problem(1)
    reg = 0.05
    P, log = _pot_plan(C, a, b, reg, rho)
    f, g = reg * log["logu"], reg * log["logv"]
    marg = _marginals(C, a, b, reg, rho)
    primal = unbalanced_primal(C, P, a, b, reg, rho)
    dual = marg.dual(f, g, _plan(C, f, g, reg).sum())
    assert dual == pytest.approx(primal, rel=1e-10, abs=1e-12)
    assert dual == pytest.approx(_dual(C, a, b, f, g, reg, rho), rel=1e-13)


def test_gradient_and_hessian_diagonal_match_finite_differences():
    C, a, b = _problem(2, n=6, m=5)
    reg, rho = 0.3, (0.4, 2.0)
    rng = np.random.default_rng(3)
    f, g = rng.normal(size=6) * 0.1, rng.normal(size=5) * 0.1
    marg = _marginals(C, a, b, reg, rho)
    P = _plan(C, f, g, reg)
    grad = np.concatenate(marg.gradient(f, g, P.sum(1), P.sum(0)))
    x = np.concatenate([f, g])

    def D(z):
        return _dual(C, a, b, z[:6], z[6:], reg, rho)

    h = 1e-5
    fd = np.array([(D(x + h * e) - D(x - h * e)) / (2 * h) for e in np.eye(11)])
    np.testing.assert_allclose(grad, fd, rtol=1e-7, atol=1e-9)
    # -reg * Hessian's diagonal = plan sums + the penalty's term
    want = np.concatenate(marg.hessian_diagonal(f, g, P.sum(1), P.sum(0), 0.0))
    fd2 = np.array([-(D(x + h * e) - 2 * D(x) + D(x - h * e)) / h**2 * reg for e in np.eye(11)])
    np.testing.assert_allclose(want, fd2, rtol=1e-4)


def test_infinite_rho_gives_the_balanced_dual():
    C, a, b = _problem(3, scale_b=1.0)
    b = b * a.sum() / b.sum()
    f, g = np.linspace(-0.2, 0.3, 30), np.linspace(0.1, -0.1, 40)
    reg = 0.1
    total = _plan(C, f, g, reg).sum()
    balanced = a @ f + b @ g - reg * total
    assert _marginals(C, a, b, reg, (math.inf, math.inf)).dual(f, g, total) == balanced
    # and a huge finite rho approaches it continuously
    assert _marginals(C, a, b, reg, (1e12, 1e12)).dual(f, g, total) == pytest.approx(balanced, rel=1e-10)


# ---------------------------------------------------------------------------
# The numpy reference
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("rho", [0.5, (0.05, 2.0), (math.inf, 0.3), (1.0, math.inf)])
def test_reference_matches_pot(rho):
    C, a, b = _problem(4, n=12, m=15)
    reg = 0.1
    pair = parse_reg_m(rho)
    P_pot, _ = _pot_plan(C, a, b, reg, rho)
    f, g, _ = sinkhorn_unbalanced_reference(C, a, b, reg, pair, tol=1e-12)
    np.testing.assert_allclose(_plan(C, f, g, reg), P_pot, rtol=1e-8, atol=1e-14)


def test_reference_with_infinite_rho_is_balanced_sinkhorn():
    C, a, b = _problem(5, scale_b=1.0)
    b = b * a.sum() / b.sum()
    reg = 0.1
    f, g, _ = sinkhorn_unbalanced_reference(C, a, b, reg, (math.inf, math.inf), tol=1e-12)
    P_pot = ot.sinkhorn(a, b, C, reg, method="sinkhorn_log", stopThr=1e-14, numItermax=100_000)
    np.testing.assert_allclose(_plan(C, f, g, reg), P_pot, rtol=1e-7, atol=1e-14)


# ---------------------------------------------------------------------------
# reg_m validation
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("value, want", [(2, (2.0, 2.0)), ((1, 3), (1.0, 3.0)), ([0.5], (0.5, 0.5)),
                                          (math.inf, (math.inf, math.inf)), ((math.inf, 1e-3), (math.inf, 1e-3))])
def test_parse_reg_m_accepts_numbers_and_pairs(value, want):
    assert parse_reg_m(value) == want


@pytest.mark.parametrize("value", [0, -1.0, math.nan, (1, 2, 3), (), "1", None, (1, -2), True, [[1, 2]]])
def test_parse_reg_m_rejects_with_a_message_naming_it(value):
    with pytest.raises(ValueError, match="reg_m"):
        parse_reg_m(value)


# ---------------------------------------------------------------------------
# snsot.solve(..., reg_m=rho)
# ---------------------------------------------------------------------------

METHODS = ["sinkhorn", "sns"]


def _check_optimality(res, C, a, b, reg, rho, tol):
    """The returned plan is the plan of the returned potentials and meets the dual's optimality conditions."""
    f, g = res.potentials
    rho = parse_reg_m(rho)
    P = _plan(C, f, g, reg)
    np.testing.assert_allclose(res.plan, P, rtol=1e-12, atol=1e-300)
    ta = a if math.isinf(rho[0]) else a * np.exp(-f / rho[0])
    tb = b if math.isinf(rho[1]) else b * np.exp(-g / rho[1])
    gradient_norm = np.abs(P.sum(1) - ta).sum() + np.abs(P.sum(0) - tb).sum()
    # tol is relative to the mass (OTProblem.mass: the geometric mean of the totals when unbalanced)
    mass = a.sum() if math.isinf(rho[0]) and math.isinf(rho[1]) else math.sqrt(a.sum() * b.sum())
    assert gradient_norm < tol * mass
    # the same measure, up to the round-off of summing the plan (kernels use their own exp)
    assert res.marginal_error == pytest.approx(gradient_norm, rel=1e-6, abs=1e-14 * (a.sum() + b.sum()))
    assert res.cost == pytest.approx(float(np.sum(C * P)), rel=1e-12)
    assert res.objective == pytest.approx(unbalanced_primal(C, P, a, b, reg, rho), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("reg, rho", [(0.05, 0.5), (0.05, (0.1, 2.0)), (0.02, (math.inf, 0.3)),
                                      (0.02, (1.0, math.inf)), (0.01, 5.0)])
def test_solve_matches_pot_sinkhorn_unbalanced(method, reg, rho):
    C, a, b = _problem(10, n=40, m=50)
    P_pot, _ = _pot_plan(C, a, b, reg, rho)
    res = snsot.solve(C, a, b, reg=reg, reg_m=rho, method=method, tol=1e-11)
    assert res.converged
    np.testing.assert_allclose(res.plan, P_pot, rtol=1e-8, atol=1e-13)
    assert res.objective == pytest.approx(unbalanced_primal(C, P_pot, a, b, reg, parse_reg_m(rho)), rel=1e-9)
    _check_optimality(res, C, a, b, reg, rho, 1e-11)


@pytest.mark.parametrize("hessian", ["sparse", "dense"])
@pytest.mark.parametrize("rho", [0.5, (0.05, math.inf)])
def test_sns_at_small_reg_takes_newton_steps_and_meets_the_optimality_conditions(hessian, rho):
    """reg 1e-3 on unit costs: epsilon-scaling, the switch and Newton steps all run on the unbalanced dual."""
    rng = np.random.default_rng(11)
    x, y = rng.random((120, 2)), rng.random((100, 2))
    C = snsot.costs.pairwise(x, y, "sqeuclidean")
    a, b = rng.random(120) + 0.1, 3.0 * (rng.random(100) + 0.1)
    res = snsot.solve(C, a, b, reg=1e-3, reg_m=rho, method="sns", hessian=hessian, tol=1e-9)
    assert res.converged and res.n_newton > 0
    _check_optimality(res, C, a, b, 1e-3, rho, 1e-9)
    ref = snsot.solve(C, a, b, reg=1e-3, reg_m=rho, method="sinkhorn", tol=1e-10)
    np.testing.assert_allclose(res.plan, ref.plan, atol=1e-9 * max(a.sum(), b.sum()))


@pytest.mark.parametrize("method", METHODS)
def test_infinite_rho_is_the_balanced_solve(method):
    C, a, b = _problem(12, scale_b=1.0)
    b = b * a.sum() / b.sum()
    plain = snsot.solve(C, a, b, reg=0.02, method=method, tol=1e-11)
    inf = snsot.solve(C, a, b, reg=0.02, reg_m=math.inf, method=method, tol=1e-11)
    np.testing.assert_array_equal(inf.plan, plain.plan)
    assert inf.objective == plain.objective and inf.n_iter == plain.n_iter


@pytest.mark.parametrize("method, reg, rhos", [("sinkhorn", 0.2, (10.0, 100.0)), ("sns", 0.2, (10.0, 100.0)),
                                               ("sns", 0.05, (1e2, 1e4))])
def test_large_rho_approaches_the_balanced_solution(method, reg, rhos):
    """The relaxation's effect on the plan shrinks like 1/rho (Sinkhorn's damping 1 - reg/rho makes it
    crawl at large rho, hence its smaller rhos; SNS does not care)."""
    C, a, b = _problem(13, scale_b=1.0)
    b = b * a.sum() / b.sum()
    balanced = snsot.solve(C, a, b, reg=reg, tol=1e-12)
    gaps = []
    for rho in rhos:
        res = snsot.solve(C, a, b, reg=reg, reg_m=rho, method=method, tol=1e-11)
        assert res.converged
        gaps.append(np.abs(res.plan - balanced.plan).sum())
    ratio = rhos[0] / rhos[1]
    assert 0.5 * ratio < gaps[1] / gaps[0] < 2 * ratio
    assert gaps[1] < 20 / rhos[1] * a.sum()


@pytest.mark.parametrize("method", METHODS)
def test_hard_side_of_a_semi_relaxed_problem_is_met(method):
    C, a, b = _problem(14)  # totals differ; the rows are kept, the columns give way
    res = snsot.solve(C, a, b, reg=0.05, reg_m=(math.inf, 0.5), method=method, tol=1e-11)
    np.testing.assert_allclose(res.plan.sum(axis=1), a, rtol=1e-9)
    assert res.plan.sum() == pytest.approx(a.sum(), rel=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_zero_mass_bins_get_zero_rows_and_match_pot(method):
    C, a, b = _problem(15, n=20, m=25)
    a[[0, 7]] = 0.0
    b[3] = 0.0
    P_pot, _ = _pot_plan(C, a, b, 0.05, 0.4)
    res = snsot.solve(C, a, b, reg=0.05, reg_m=0.4, method=method, tol=1e-11)
    assert res.converged
    assert not res.plan[[0, 7]].any() and not res.plan[:, 3].any()
    np.testing.assert_allclose(res.plan, P_pot, rtol=1e-8, atol=1e-13)


@pytest.mark.parametrize("method", METHODS)
def test_float32_cost_is_solved(method):
    C, a, b = _problem(16)
    res = snsot.solve(C.astype(np.float32), a, b, reg=0.05, reg_m=0.5, method=method, tol=1e-10)
    P_pot, _ = _pot_plan(C.astype(np.float32).astype(np.float64), a, b, 0.05, 0.5)
    np.testing.assert_allclose(res.plan, P_pot, rtol=1e-7, atol=1e-13)


@pytest.mark.parametrize("method", METHODS)
def test_converged_is_false_when_tol_is_not_met(method):
    C, a, b = _problem(17)
    with pytest.warns(snsot.ConvergenceWarning):
        res = snsot.solve(C, a, b, reg=0.01, reg_m=0.5, method=method, tol=1e-12, max_iter=5)
    assert not res.converged and res.marginal_error >= 1e-12


def test_warm_start_from_a_previous_unbalanced_solution_finishes_at_once():
    C, a, b = _problem(18)
    first = snsot.solve(C, a, b, reg=0.02, reg_m=0.3, tol=1e-11)
    again = snsot.solve(C, a, b, reg=0.02, reg_m=0.3, tol=1e-10, init=first.potentials)
    assert again.converged and again.n_iter <= 1


def test_envelope_gradients_match_finite_differences_of_the_value():
    """dV/da = rho (1 - exp(-f/rho)), dV/db likewise, dV/dC = P: what snsot.torch differentiates with."""
    C, a, b = _problem(19, n=8, m=6)
    reg, rho = 0.1, (0.3, 2.0)

    def value(C, a, b):
        return snsot.solve(C, a, b, reg=reg, reg_m=rho, tol=1e-13, method="sns").objective

    res = snsot.solve(C, a, b, reg=reg, reg_m=rho, tol=1e-13)
    da, db = _marginals(C, a, b, reg, rho).weight_gradients(*res.potentials)
    h = 1e-6
    for i in (0, 5):
        e = np.zeros_like(a); e[i] = h
        assert (value(C, a + e, b) - value(C, a - e, b)) / (2 * h) == pytest.approx(da[i], rel=1e-6, abs=1e-8)
    for j in (1, 4):
        e = np.zeros_like(b); e[j] = h
        assert (value(C, a, b + e) - value(C, a, b - e)) / (2 * h) == pytest.approx(db[j], rel=1e-6, abs=1e-8)
    E = np.zeros_like(C); E[2, 3] = h
    assert (value(C + E, a, b) - value(C - E, a, b)) / (2 * h) == pytest.approx(res.plan[2, 3], rel=1e-6)


@pytest.mark.parametrize("value", [0, -1.0, math.nan, (1, 2, 3), "x", (0.5, 0)])
def test_solve_rejects_bad_reg_m_naming_it(value):
    C, a, b = _problem(20, n=4, m=5)
    with pytest.raises(ValueError, match="reg_m"):
        snsot.solve(C, a, b, reg=0.1, reg_m=value)


def test_different_masses_need_reg_m():
    C, a, b = _problem(21, n=4, m=5)
    with pytest.raises(ValueError, match="reg_m"):
        snsot.solve(C, a, b, reg=0.1)
    # and with it they are kept as given (not rescaled)
    p = snsot.OTProblem(C, a, b, reg=0.1, reg_m=1.0)
    np.testing.assert_array_equal(p.b, b)


def test_reg_m_beside_an_otproblem_is_refused():
    C, a, b = _problem(22, n=4, m=5)
    with pytest.raises(ValueError, match="reg_m"):
        snsot.solve(snsot.OTProblem(C, a, b, reg=0.1, reg_m=1.0), reg_m=2.0)


def test_large_rho_and_very_different_masses_sns_converges_or_says_stalled():
    """rho = 1e3, totals 21 and 75: the optimal potentials are about +-630, which puts a floor of
    ~1e-10 under the measurable error. SNS (diagonal shift capped at reg / rho on the KL dual) gets there in a few
    Newton steps, where a shifted system crawled along (1, -1); below the floor it reports 'floor'
    after a few steps instead of trading round-off until max_iter."""
    rng = np.random.default_rng(0)
    C = rng.random((40, 50))
    a, b = rng.random(40) + 0.05, 3 * (rng.random(50) + 0.05)
    res = snsot.solve(C, a, b, reg=0.05, reg_m=1e3, tol=1e-9)
    assert res.converged and res.n_newton < 40
    _check_optimality(res, C, a, b, 0.05, 1e3, 1e-9)
    assert np.abs(res.potentials[0]).max() > 500
    with pytest.warns(snsot.ConvergenceWarning):
        tight = snsot.solve(C, a, b, reg=0.05, reg_m=1e3, tol=1e-13)
    assert tight.status == "floor" and tight.n_iter < 300
    np.testing.assert_allclose(tight.plan, res.plan, rtol=1e-8)


@pytest.mark.parametrize("method", ["sns", "sinkhorn"])
@pytest.mark.parametrize("rho", [0.7, (0.5, 2.0), (math.inf, 0.7), (0.7, math.inf)])
def test_negative_costs_are_solved_exactly_and_match_pot(method, rho):
    """Adding a constant to C changes the unbalanced problem; solve() maps it to a reweighting instead."""
    C, a, b = _problem(23, n=6, m=5)
    C = C - 0.6  # most entries negative
    pair = parse_reg_m(rho)
    res = snsot.solve(C, a, b, reg=0.1, reg_m=rho, method=method, tol=1e-12)
    assert res.converged
    P_pot, _ = _pot_plan(C, a, b, 0.1, list(pair) if np.isfinite(pair).all() else pair)
    np.testing.assert_allclose(res.plan, P_pot, rtol=1e-9, atol=1e-13)
    assert res.objective == pytest.approx(unbalanced_primal(C, res.plan, a, b, 0.1, pair), rel=1e-10, abs=1e-12)
    # the potentials are the original problem's: P = exp((f + g - C) / reg), P 1 = a exp(-f / rho_1)
    f, g = res.potentials
    np.testing.assert_allclose(res.plan, _plan(C, f, g, 0.1), rtol=1e-10)
    target = a if math.isinf(pair[0]) else a * np.exp(-f / pair[0])
    np.testing.assert_allclose(res.plan.sum(1), target, rtol=1e-9)
    again = snsot.solve(C, a, b, reg=0.1, reg_m=rho, method=method, tol=1e-11, init=res.potentials)
    assert again.n_iter <= 2


def test_negative_costs_whose_plan_would_overflow_are_refused_naming_c():
    C, a, b = _problem(24, n=4, m=5)
    C[0, 0] = -1e4  # the plan's mass grows like exp(1e4 / rho)
    with pytest.raises(ValueError, match="C: negative costs.*overflow"):
        snsot.solve(C, a, b, reg=0.1, reg_m=1.0)


def _forbidden_problem(seed=25, n=8, m=6):
    C, a, b = _problem(seed, n=n, m=m)
    rng = np.random.default_rng(seed)
    C[rng.random(C.shape) < 0.3] = np.inf
    return C, a, b


@pytest.mark.parametrize("method", ["sns", "sinkhorn"])
@pytest.mark.parametrize("rho", [0.7, (0.5, 2.0)])
def test_forbidden_pairs_match_pot_where_every_bin_can_move_mass(method, rho):
    C, a, b = _forbidden_problem()
    assert np.isfinite(C).any(1).all() and np.isfinite(C).any(0).all()
    res = snsot.solve(C, a, b, reg=0.1, reg_m=rho, method=method, tol=1e-12)
    pair = parse_reg_m(rho)
    P_pot, _ = _pot_plan(C, a, b, 0.1, list(pair))
    assert res.converged
    np.testing.assert_allclose(res.plan, P_pot, rtol=1e-9, atol=1e-13)
    assert (res.plan[np.isinf(C)] == 0).all()
    assert res.objective == pytest.approx(unbalanced_primal(np.where(np.isinf(C), 0.0, C), res.plan, a, b, 0.1, pair),
                                          rel=1e-10)


@pytest.mark.parametrize("method", ["sns", "sinkhorn"])
@pytest.mark.parametrize("rho", [0.7, (0.5, 2.0), (math.inf, 0.7)])
def test_forbidden_pairs_are_the_limit_of_huge_costs_even_for_bins_that_cannot_move(method, rho):
    """A row whose every cost is +inf sends nothing and pays rho * a_i; a huge finite cost says the same."""
    C, a, b = _forbidden_problem()
    C[5, 1] = -0.3  # and a negative cost
    C[:, 4] = np.inf  # a column that can receive nothing
    if math.isinf(parse_reg_m(rho)[0]):
        C[2, 0] = 0.5
    else:
        C[2, :] = np.inf  # a row that can send nothing
    res = snsot.solve(C, a, b, reg=0.1, reg_m=rho, method=method, tol=1e-12)
    huge = snsot.solve(np.where(np.isinf(C), 200.0, C), a, b, reg=0.1, reg_m=rho, method=method, tol=1e-12)
    assert res.converged
    np.testing.assert_allclose(res.plan, huge.plan, rtol=1e-9, atol=1e-13)
    assert res.objective == pytest.approx(huge.objective, rel=1e-11)
    assert res.cost == pytest.approx(huge.cost, rel=1e-10)
    assert res.potentials[1][4] == np.inf
    if not math.isinf(parse_reg_m(rho)[0]):
        assert res.potentials[0][2] == np.inf and (res.plan[2] == 0).all()
        more = a.copy()
        more[2] += 0.25  # the dead row's weight only adds its penalty, rho * KL(0 | a_2) = rho * a_2
        moved = snsot.solve(C, more, b, reg=0.1, reg_m=rho, method=method, tol=1e-12)
        assert moved.objective - res.objective == pytest.approx(0.25 * parse_reg_m(rho)[0], rel=1e-9)


def test_an_otproblem_with_bins_that_cannot_move_solves_as_the_arrays_do():
    C, a, b = _forbidden_problem()
    C[2, :] = np.inf
    problem = snsot.OTProblem(C, a, b, reg=0.1, reg_m=0.7)
    assert list(problem.dead_bins[0]) == [2]
    direct = snsot.solve(C, a, b, reg=0.1, reg_m=0.7, tol=1e-12)
    for res in (snsot.solve(problem, tol=1e-12), snsot.solve(problem, reg=0.1, tol=1e-12)):  # with_reg keeps them
        assert res.converged and res.potentials[0][2] == np.inf
        assert res.objective == pytest.approx(direct.objective, rel=1e-13)


def test_forbidden_row_of_a_hard_side_is_refused_naming_c_and_the_row():
    C, a, b = _problem(23, n=4, m=5)
    C[1, :] = np.inf
    with pytest.raises(ValueError, match="C: row 1 .*hard side"):
        snsot.solve(C, a, b, reg=0.1, reg_m=(math.inf, 1.0))
    with pytest.raises(ValueError, match="C: column 3 .*hard side"):
        C[1, :] = 0.5
        C[:, 3] = np.inf
        snsot.solve(C, a, b, reg=0.1, reg_m=(1.0, math.inf))
    assert snsot.solve(C, a, b, reg=0.1, reg_m=(math.inf, 1.0)).converged  # rows can still send
