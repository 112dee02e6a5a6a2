"""DensePlan: the plan interface over a stored base plan, checked against the plan computed in numpy."""

import numpy as np
import pytest

from snsot._reference import plan as plan_reference
from snsot.problem import OTProblem
from snsot.solvers._dense import DensePlan, DenseOffDiagonal
from snsot.solvers._marginals import BalancedMarginals
from snsot.solvers._plan import WHOLE_PLAN
from snsot.solvers.linalg import CsrOffDiagonal

from strategies import make_problem


def _problem(seed=73, n=30, m=20, reg=1e-2):
    p = make_problem(seed, n, m, reg, cost="sqeuclidean")
    return OTProblem(p.C, p.a, p.b, p.reg)


def _point(n, m, reg, seed=2, scale=0.05):
    rng = np.random.default_rng(seed)
    return rng.normal(scale=scale, size=n), rng.normal(scale=scale, size=m)


def test_stored_plan_serves_points_moved_along_the_invariant_direction():
    # P(f + c, g - c) = P(f, g) for any constant c: the base must represent such a
    # point by scaling (no exponential pass), however large c is, and exactly.
    from snsot import _kernels as K
    from snsot.problem import OTProblem
    from snsot.solvers._dense import DensePlan

    p = make_problem(73, 30, 20, 1e-2, cost="sqeuclidean")
    problem = OTProblem(p.C, p.a, p.b, p.reg)
    rng = np.random.default_rng(2)
    f, g = rng.normal(scale=0.05, size=30), rng.normal(scale=0.05, size=20)
    base = DensePlan(problem)
    base.rebase(f, g)
    df, dg = rng.normal(scale=0.2 * p.reg, size=30), rng.normal(scale=0.2 * p.reg, size=20)
    for c in (0.0, 5.0, -40.0):  # 40 is 4000 reg: far beyond the drift bound without the shift
        f1, g1 = f + df + c, g + dg - c
        u, v = base.scalings(f1, g1)
        expected = np.exp((f1[:, None] + g1[None, :] - p.C) / p.reg)
        np.testing.assert_allclose(u[:, None] * base.B * v[None, :], expected, rtol=1e-12)
        assert abs(base.shift) * p.reg == pytest.approx(abs(c), abs=1e-2)
    assert base.scalings(f + 2 * K.BASE_DRIFT * p.reg * (np.arange(30) > 15), g) is None  # a real move is refused


@pytest.mark.parametrize("quota", [WHOLE_PLAN, 0, 5, 20])
@pytest.mark.parametrize("far", [False, True])
def test_evaluate_gives_the_sums_of_the_plan_and_its_large_entries(quota, far):
    problem = _problem()
    plan = DensePlan(problem)
    f, g = _point(30, 20, problem.reg)
    plan.evaluate(plan.new_point(0), f, g, np.inf)  # stores a base at (f, g)
    if far:  # far from the base: the plan is recomputed from C (and the candidates collected on the way)
        f = f + 200 * problem.reg * (np.arange(30) % 2)
    P = plan_reference(problem.C, f, g, problem.reg)
    tau = np.quantile(P, 0.7)
    pt = plan.evaluate(plan.new_point(quota), f, g, tau)
    np.testing.assert_allclose(pt.row, P.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(pt.col, P.sum(axis=0), rtol=1e-12)
    assert pt.total == pytest.approx(P.sum(), rel=1e-12)
    S = plan.hessian_block(pt, tau)
    if quota == WHOLE_PLAN:
        assert pt.count == (P >= tau).sum()
        assert isinstance(S, DenseOffDiagonal)
        dense = P
    elif quota == 0:
        assert pt.fullest_row == 0 and S.matvec(np.ones(20)).max() == 0
        return
    else:
        assert isinstance(S, CsrOffDiagonal)
        kept = P >= tau
        assert pt.fullest_row <= quota
        # every kept entry is >= tau, and a row keeps all of them unless it hits its quota
        counts = np.diff(S.indptr)
        full_rows = kept.sum(axis=1) <= quota
        np.testing.assert_array_equal(counts[full_rows], kept.sum(axis=1)[full_rows])
        assert (S.data >= tau).all()
        dense = np.zeros_like(P)
        for i in range(30):
            cols = S.indices[S.indptr[i]:S.indptr[i + 1]]
            np.testing.assert_allclose(S.data[S.indptr[i]:S.indptr[i + 1]], P[i, cols], rtol=1e-12)
            dense[i, cols] = P[i, cols]
    y = np.random.default_rng(0).normal(size=20)
    np.testing.assert_allclose(S.matvec(y), dense @ y, rtol=1e-10, atol=1e-14 * np.abs(dense).sum())


def test_a_non_finite_trial_point_gets_infinite_sums():
    problem = _problem()
    plan = DensePlan(problem)
    f, g = _point(30, 20, problem.reg)
    f = f + 800 * problem.reg  # exp(> 709): the plan overflows
    pt = plan.evaluate(plan.new_point(WHOLE_PLAN), f, g, 0.0)
    assert np.isinf(pt.row).all() and np.isinf(pt.col).all()
    assert plan.hessian_block(pt, 0.0) is None


def test_a_pinned_evaluation_leaves_the_stored_plan_where_it_is():
    problem = _problem(3, 40, 30)
    plan = DensePlan(problem)
    f, g = np.zeros(40), np.zeros(30)
    plan.evaluate(plan.new_point(0), f, g, np.inf)
    B, f0 = plan.B.copy(), plan.f0.copy()
    near = plan.evaluate(plan.new_point(WHOLE_PLAN), f + 0.1 * problem.reg, g, 1e-6, pinned=True)
    assert near is not None and 0 < near.count <= 40 * 30
    assert plan.evaluate(plan.new_point(WHOLE_PLAN), f + 500 * problem.reg, g, 1e-6, pinned=True) is None
    np.testing.assert_array_equal(plan.B, B)
    np.testing.assert_array_equal(plan.f0, f0)
    P = np.exp((0.1 * problem.reg - problem.C) / problem.reg)
    np.testing.assert_allclose(near.row, P.sum(axis=1), rtol=1e-12)


@pytest.mark.parametrize("far", [False, True])
def test_a_sinkhorn_step_is_the_log_domain_update(far):
    from scipy.special import logsumexp

    problem = _problem(5, 30, 20)
    marginals = BalancedMarginals(problem)
    plan = DensePlan(problem)
    reg, C = problem.reg, problem.C
    f, _ = _point(30, 20, reg)
    g = plan.sinkhorn_cols(f, marginals)
    np.testing.assert_allclose(g, reg * np.log(problem.b) - reg * logsumexp((f[:, None] - C) / reg, axis=0),
                               rtol=1e-12, atol=1e-13)
    if far:
        plan.evaluate(plan.new_point(0), f + 300 * reg, g, np.inf)  # a base far away: the step reads C instead
    step = plan.sinkhorn_step(f, g, marginals)
    P = plan_reference(C, f, g, reg)
    assert step.error == pytest.approx(np.abs(P.sum(axis=1) - problem.a).sum(), rel=1e-9)
    f1, g1 = step.advance()
    f_ref = reg * np.log(problem.a) - reg * logsumexp((g[None, :] - C) / reg, axis=1)
    g_ref = reg * np.log(problem.b) - reg * logsumexp((f_ref[:, None] - C) / reg, axis=0)
    # the potentials are defined up to (f + c, g - c): compare the plans
    np.testing.assert_allclose(plan_reference(C, f1, g1, reg), plan_reference(C, f_ref, g_ref, reg),
                               rtol=1e-10, atol=1e-300)


def test_final_plan_is_measured_afresh():
    problem = _problem(6, 25, 35)
    plan = DensePlan(problem)
    f, g = _point(25, 35, problem.reg)
    out = plan.final(f, g)
    P = plan_reference(problem.C, f, g, problem.reg)
    np.testing.assert_allclose(out.plan, P, rtol=1e-13)
    np.testing.assert_allclose(out.row_sum, P.sum(axis=1), rtol=1e-12)
    assert out.cost == pytest.approx((problem.C * P).sum(), rel=1e-12)
    assert out.outside_mass == 0.0


class _Damped:
    """Marginals with Sinkhorn exponents below 1, as a relaxed (KL) penalty has."""

    def __init__(self, problem, exponent):
        self.a, self.b, self.reg = problem.a, problem.b, problem.reg
        self.log_a, self.log_b = np.log(problem.a), np.log(problem.b)
        self.row_exponent = self.col_exponent = exponent

    def row_error(self, f, row):
        return float(np.abs(row - self.a).sum())

    def sinkhorn_row_error(self, f, f_full):  # the rows are a exp((f - f_full) / reg)
        return self.row_error(f, self.a * np.exp((f - f_full) / self.reg))


def test_damped_sinkhorn_steps_scale_the_log_domain_update():
    from scipy.special import logsumexp

    problem = _problem(7, 30, 20)
    reg, C, lam = problem.reg, problem.C, 0.7
    marginals = _Damped(problem, lam)
    plan = DensePlan(problem)
    f = _point(30, 20, reg)[0]
    g = plan.sinkhorn_cols(f, marginals)
    g_ref = lam * (reg * np.log(problem.b) - reg * logsumexp((f[:, None] - C) / reg, axis=0))
    np.testing.assert_allclose(g, g_ref, rtol=1e-12, atol=1e-14)
    step = plan.sinkhorn_step(f, g, marginals)
    assert step.error == pytest.approx(np.abs(plan_reference(C, f, g, reg).sum(axis=1) - problem.a).sum(), rel=1e-9)
    f1, g1 = step.advance()
    f_ref = lam * (reg * np.log(problem.a) - reg * logsumexp((g[None, :] - C) / reg, axis=1))
    np.testing.assert_allclose(f1, f_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g1, lam * (reg * np.log(problem.b) - reg * logsumexp((f_ref[:, None] - C) / reg, axis=0)),
                               rtol=1e-12, atol=1e-14)
