"""SparsePlan, the plan on a CSR support, driven by the same SNS and Sinkhorn loops as DensePlan.

Oracles: the dense solver on the same problem (a full support, or forbidden pairs
given a cost so large that their plan entries are exactly 0 in float64), POT's
log-domain Sinkhorn, and marginals re-measured with numpy.
"""

import numpy as np
import ot
import pytest
import scipy.sparse as sp

import snsot
from snsot.problem import OTProblem
from snsot.solvers._sparse_plan import SparsePlan
from snsot.solvers.sinkhorn import solve_sinkhorn
from snsot.solvers.sns import solve_sns
from snsot.support import SupportProblem, from_sparse_cost

from checks import marginal_error


def problem(n, m, seed, reg):
    rng = np.random.default_rng(seed)
    x, y = rng.random((n, 2)), rng.random((m, 2))
    C = ((x[:, None] - y[None]) ** 2).sum(-1)
    a, b = rng.random(n) + 0.1, rng.random(m) + 0.1
    return C, a / a.sum(), b / b.sum()


@pytest.mark.parametrize("reg, loop", [(1e-1, "sns"), (1e-2, "sns"), (1e-3, "sns"), (1e-1, "sinkhorn"), (1e-2, "sinkhorn")])
def test_sparse_plan_on_the_full_support_gives_the_dense_plan(reg, loop):
    C, a, b = problem(90, 70, seed=int(reg * 1e3), reg=reg)
    dense = OTProblem(C, a, b, reg)
    sparse = SupportProblem(from_sparse_cost(sp.csr_matrix(C)), a, b, reg)
    if loop == "sns":
        rd = solve_sns(dense, tol=1e-11, max_iter=10_000)
        rs = solve_sns(sparse, tol=1e-11, max_iter=10_000, _plan=SparsePlan(sparse))
        assert rs.n_newton == rd.n_newton  # the same loop takes the same path
    else:
        rd = solve_sinkhorn(dense, tol=1e-10, max_iter=100_000)
        rs = solve_sinkhorn(sparse, tol=1e-10, max_iter=100_000, _plan=SparsePlan(sparse))
    assert rd.converged and rs.converged
    assert sp.issparse(rs.plan)
    np.testing.assert_allclose(rs.plan.toarray(), rd.plan, rtol=0, atol=1e-10 * rd.plan.max())
    assert marginal_error(rs.plan.toarray(), a, b) < 1e-10
    assert rs.cost == pytest.approx(float((rs.plan.toarray() * C).sum()), rel=1e-12)


@pytest.mark.parametrize("method", ["sns", "sinkhorn"])
def test_sparse_cost_equals_dense_cost_with_forbidden_pairs(method):
    C, a, b = problem(80, 100, seed=3, reg=1e-2)
    allowed = C < 0.25
    reg = 1e-2
    # oracle: forbidden pairs at cost 100, whose entries exp(-1e4) are exactly 0 in float64
    dense = snsot.solve(np.where(allowed, C, 100.0), a, b, reg=reg, method=method, tol=1e-10)
    pot = ot.sinkhorn(a, b, np.where(allowed, C, 100.0), reg, method="sinkhorn_log", stopThr=1e-13, numItermax=100_000)
    Cs = sp.coo_matrix((C[allowed], np.nonzero(allowed)), shape=C.shape)
    res = snsot.solve(Cs, a, b, reg=reg, method=method, tol=1e-10)
    P = res.plan.toarray()
    assert res.converged and res.outside_mass == 0.0 and res.support_size == allowed.sum()
    assert np.all(P[~allowed] == 0.0)
    np.testing.assert_allclose(P, dense.plan, atol=1e-9 * dense.plan.max())
    np.testing.assert_allclose(P, pot, atol=1e-7 * pot.max())
    assert marginal_error(P, a, b) < 1e-10


def test_sparse_cost_with_zero_mass_points_embeds_them_back():
    C, a, b = problem(40, 30, seed=4, reg=1e-2)
    a[[0, 7]] = 0.0
    b[5] = 0.0
    b *= a.sum() / b.sum()
    res = snsot.solve(sp.csr_matrix(C), a, b, reg=1e-2, tol=1e-10)
    P = res.plan.toarray()
    assert res.converged and P.shape == (40, 30)
    assert np.all(P[[0, 7]] == 0) and np.all(P[:, 5] == 0)
    f, g = res.potentials
    assert np.isneginf(f[[0, 7]]).all() and np.isneginf(g[5])
    dense = snsot.solve(C, a, b, reg=1e-2, tol=1e-10)
    np.testing.assert_allclose(P, dense.plan, atol=1e-10 * dense.plan.max())


def test_infeasible_sparse_support_is_refused():
    C = sp.csr_matrix(np.array([[1.0, 0.0], [2.0, 0.0]]))  # column 1 has no allowed pair
    with pytest.raises(ValueError, match=r"C: column 1 has positive mass"):
        snsot.solve(C, reg=0.1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"reg": None}, "reg: the entropic regularisation is required"),
        ({"reg": -1.0}, "reg: must be a positive"),
        ({"reg": 0.1, "method": "nope"}, "method: a sparse cost can be solved with"),
        ({"reg": 0.1, "tol": 0}, "tol: must be a positive"),
        ({"reg": 0.1, "max_iter": 0}, "max_iter: must be a positive integer"),
        ({"reg": 0.1, "bogus": 1}, "bogus: not an option"),
        ({"reg": 0.1, "a": [0.5, 0.6]}, "b: total mass"),
        ({"reg": 0.1, "a": [1.0]}, "a: has 1 weights"),
        ({"reg": 0.1, "init": (np.zeros(3), np.zeros(2))}, r"init: potentials must have shapes \(2,\)"),
    ],
)
def test_bad_arguments_with_a_sparse_cost_raise_value_errors(kwargs, match):
    C = sp.csr_matrix(np.array([[1.0, 2.0], [3.0, 0.5]]))
    with pytest.raises(ValueError, match=match):
        snsot.solve(C, **kwargs)


def _log_domain_step(sparse, f, g, reg):
    """One Sinkhorn iteration from (f, g) by the numpy twins (log-sum-exp on the support): (row error, f_new, g_new)."""
    from snsot import _sparse_reference as R

    sup = sparse.support
    f_new = R.csr_lse_update_reference(sup.indptr, sup.indices, sup.cost, g, np.log(sparse.a), reg)
    _, row = R.csr_plan_reference(sup.indptr, sup.indices, sup.cost, f, g, reg)
    t_indptr, t_rows, t_pos, t_cost = sup.transpose()
    g_new = R.csr_lse_update_reference(t_indptr, t_rows, t_cost, f_new, np.log(sparse.b), reg)
    return float(np.abs(row - sparse.a).sum()), f_new, g_new


@pytest.mark.parametrize("drift", [0.5, 40.0, 300.0])
def test_a_sinkhorn_step_read_from_the_stored_base_equals_the_log_domain_step(drift):
    # drift (units of reg) below BASE_DRIFT reads the base scaled; above it the base moves first
    from snsot.solvers._marginals import BalancedMarginals

    C, a, b = problem(60, 50, seed=11, reg=1e-2)
    reg = 1e-2
    allowed = C < 0.3
    sparse = SupportProblem(from_sparse_cost(sp.coo_matrix((C[allowed], np.nonzero(allowed)), shape=C.shape)),
                            a, b, reg)
    plan = SparsePlan(sparse)
    rng = np.random.default_rng(12)
    f0, g0 = rng.normal(scale=0.01, size=60), rng.normal(scale=0.01, size=50)
    plan.rebase(f0, g0)
    base = plan.B.copy()
    f = f0 + reg * drift * rng.random(60) / 2
    g = g0 - reg * drift * rng.random(50) / 2
    step = plan.sinkhorn_step(f, g, BalancedMarginals(sparse))
    err, f_ref, g_ref = _log_domain_step(sparse, f, g, reg)
    f_new, g_new = step.advance()
    assert step.error == pytest.approx(err, rel=1e-11)
    # compared through the plan: f + g is what matters (a constant may move between them)
    P_new = np.exp((f_new[:, None] + g_new[None, :] - C) / reg)[allowed]
    P_ref = np.exp((f_ref[:, None] + g_ref[None, :] - C) / reg)[allowed]
    np.testing.assert_allclose(P_new, P_ref, rtol=1e-10, atol=1e-14 * P_ref.max())
    assert np.array_equal(plan.B, base) == (drift < 100)  # the base moved only when it had to


def test_a_trial_point_far_from_the_base_is_refused_while_pinned_and_evaluated_otherwise():
    C, a, b = problem(30, 30, seed=13, reg=1e-2)
    sparse = SupportProblem(from_sparse_cost(sp.csr_matrix(C)), a, b, 1e-2)
    plan = SparsePlan(sparse)
    f0, g0 = np.zeros(30), np.zeros(30)
    plan.rebase(f0, g0)
    far = f0 + 2.0  # 200 units of reg: beyond BASE_DRIFT
    assert plan.evaluate(plan.new_point(5), far, g0, 0.0, pinned=True) is None
    point = plan.evaluate(plan.new_point(5), far, g0, 0.0)
    expected = np.exp((far[:, None] + g0[None, :] - C) / 1e-2)
    np.testing.assert_allclose(point.row, expected.sum(1), rtol=1e-12)
    np.testing.assert_allclose(point.col, expected.sum(0), rtol=1e-12)
    assert point.total == pytest.approx(expected.sum(), rel=1e-12)


@pytest.mark.parametrize("mass", [1e-200, 1e-5, 3e150])
@pytest.mark.parametrize("kind", ["sparse-cost", "point-cloud"])
def test_tol_is_relative_to_the_mass_on_the_sparse_path(mass, kind):
    # oracle: the unit-mass solve; entropic OT is exactly homogeneous in the weights (P scales by the mass)
    C, a, b = problem(50, 40, seed=14, reg=1e-2)
    rng = np.random.default_rng(15)
    x, y = rng.random((50, 2)), rng.random((40, 2))
    if kind == "sparse-cost":
        allowed = C < 0.3
        cost = sp.coo_matrix((C[allowed], np.nonzero(allowed)), shape=C.shape)
    else:
        cost = snsot.PointCloud(x, y)
    tol = 1e-9
    unit = snsot.solve(cost, a, b, reg=1e-2, tol=tol)
    res = snsot.solve(cost, a * mass, b * mass, reg=1e-2, tol=tol)
    assert unit.converged and res.converged and res.status == "success"
    assert res.marginal_error < tol * mass
    P = res.plan.toarray()
    assert marginal_error(P, a * mass, b * mass) < tol * mass  # measured afresh on the returned plan
    np.testing.assert_allclose(P / mass, unit.plan.toarray(), rtol=0, atol=1e-8 * unit.plan.max())
    assert res.cost == pytest.approx(mass * unit.cost, rel=1e-7)
    assert np.isfinite(res.history.marginal_error).all() and res.history.marginal_error[-1] > 0


@pytest.mark.parametrize("mass", [1e-250, 1.0, 1e250])
def test_a_tol_below_round_off_stops_at_the_floor_on_a_sparse_cost(mass):
    # no float64 plan meets 1e-19 relative: the stall rule ends the solve, not max_iter
    C, a, b = problem(60, 60, seed=16, reg=1e-2)
    allowed = C < 0.4
    cost = sp.coo_matrix((C[allowed], np.nonzero(allowed)), shape=C.shape)
    with pytest.warns(snsot.ConvergenceWarning):
        res = snsot.solve(cost, a * mass, b * mass, reg=1e-2, tol=1e-19, max_iter=5000, method="sinkhorn")
    assert not res.converged and res.status == "floor"
    assert res.n_iter < 5000
    assert marginal_error(res.plan.toarray(), a * mass, b * mass) < 1e-12 * mass
    off = snsot.solve(cost, a * mass, b * mass, reg=1e-2, tol=1e-19, max_iter=300, method="sinkhorn",
                      stop_at_floor=False, warn=False)
    assert off.n_iter == 300 and off.status == "max_iter"


@pytest.mark.parametrize("mass", [1e-200, 1e200])
def test_a_mostly_forbidden_dense_cost_is_solved_relative_to_its_mass(mass):
    # >= 90% +inf: snsot.solve takes the CSR path; oracle: the same problem at unit mass, times the mass
    rng = np.random.default_rng(17)
    n = 400
    x, y = rng.random((n, 2)), rng.random((n, 2))
    C = ((x[:, None] - y[None]) ** 2).sum(-1)
    C[C > 0.02] = np.inf
    C[np.arange(n), np.argmin(np.where(np.isfinite(C), C, 9.0), axis=1)] = 0.5  # every row keeps a pair
    a = rng.random(n) + 0.5
    a /= a.sum()
    b = np.full(n, 1.0 / n)
    unit = snsot.solve(C, a, b, reg=1e-2, tol=1e-9, warn=False)
    res = snsot.solve(C, a * mass, b * mass, reg=1e-2, tol=1e-9, warn=False)
    assert res.support_size is not None and res.support_size < 0.1 * C.size  # it took the CSR path
    assert unit.converged and res.converged
    assert res.marginal_error < 1e-9 * mass
    np.testing.assert_allclose(res.plan / mass, unit.plan, rtol=0, atol=1e-8 * unit.plan.max())
