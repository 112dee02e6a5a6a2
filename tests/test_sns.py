"""Sinkhorn-Newton-Sparse (method="sns"): Newton really runs, is robust, and stays honest."""

import warnings

import numpy as np
import pytest

import snsot
from snsot import costs
from snsot.solvers.linalg import newton_direction

from checks import DUAL_RTOL, check_entropic_bound, check_result, dual_scale, pot_plan
from strategies import make_problem


def random_assignment(n, seed=0):
    """The paper's random assignment problem: uniform [0, 1] costs, uniform weights."""
    C = np.random.default_rng(seed).random((n, n))
    return C, np.full(n, 1.0 / n), np.full(n, 1.0 / n)


def assert_dual_ascends(res, a, b):
    """Every recorded iterate (Sinkhorn half-steps are exact block maximisations, Newton
    steps pass an Armijo test) increases the dual of its own reg, up to round-off."""
    f, g = res.potentials
    scale = dual_scale(np.asarray(a), np.asarray(b), f, g, res.reg, res.plan.sum())
    h = res.history
    regs = getattr(h, "reg", None)
    same = np.ones(len(h) - 1, dtype=bool) if regs is None or len(regs) != len(h) else regs[1:] == regs[:-1]
    drops = np.diff(h.objective)[same]
    assert np.all(drops >= -DUAL_RTOL * scale), drops.min()


# --------------------------------------------------------------------------- Newton does the work


def test_newton_reaches_1e10_on_the_random_assignment_problem():
    C, a, b = random_assignment(500)
    res = snsot.solve(C, a, b, reg=1 / 1200, method="sns", tol=1e-10)
    check_result(res, C, a, b, 1e-10, method="sns")
    assert res.converged and res.marginal_error < 1e-10
    assert res.n_newton > 0
    assert res.n_iter < 200  # the paper: tens of iterations, where Sinkhorn needs ~26000
    check_entropic_bound(res, C, a, b)
    assert_dual_ascends(res, a, b)


def test_newton_needs_far_fewer_iterations_than_sinkhorn():
    C, a, b = random_assignment(200, seed=1)
    sns = snsot.solve(C, a, b, reg=1 / 1200, method="sns", tol=1e-9)
    check_result(sns, C, a, b, 1e-9)
    assert sns.converged and sns.n_newton > 0
    budget = 20 * sns.n_iter
    with pytest.warns(snsot.ConvergenceWarning):
        sk = snsot.solve(C, a, b, reg=1 / 1200, method="sinkhorn", tol=1e-9, max_iter=budget)
    assert not sk.converged and sk.n_iter == budget
    assert sk.marginal_error > 1e3 * sns.marginal_error


def test_rows_get_more_hessian_entries_when_a_wide_plan_needs_them():
    """1-D W2 at reg 1e-2: the plan is wide (a third of each row matters), more than the
    initial per-row quota of m // 4. Full Newton steps that gain little make the quota
    grow, which restores fast local convergence; a quota held fixed gives linear steps."""
    from snsot import datasets

    C, a, b = datasets.gaussian_mixture_1d(400, seed=0)
    C = C / C.max()
    opts = dict(reg=1e-2, tol=1e-10, n_warmup=40, switch_horizon=0, hessian="sparse")  # "auto" would go dense
    grown = snsot.solve(C, a, b, **opts)
    fixed = snsot.solve(C, a, b, max_row_entries=100, **opts)
    check_result(grown, C, a, b, 1e-10, method="sns")
    assert grown.converged and fixed.converged
    assert grown.n_newton <= 15 and fixed.n_newton >= grown.n_newton + 5
    assert_dual_ascends(grown, a, b)


def _counting_direction():
    """A ``direction`` plug-in that solves as the default does and records which block each step used."""
    from snsot.solvers._dense import DenseOffDiagonal
    from snsot.solvers.linalg import newton_direction

    kinds = []

    def counted(S, *args, **kwargs):
        kinds.append("dense" if isinstance(S, DenseOffDiagonal) else "sparse")
        return newton_direction(S, *args, **kwargs)

    return counted, kinds


def test_wide_plans_take_exact_newton_steps_through_the_stored_plan():
    """1-D W2 at reg 1e-2 keeps a third of the plan: "auto" uses the whole plan as the
    Hessian, and the steps are exact Newton steps (quadratic convergence: few of them)."""
    from snsot import datasets

    C, a, b = datasets.gaussian_mixture_1d(400, seed=0)
    C = C / C.max()
    counted, kinds = _counting_direction()
    res = snsot.solve(C, a, b, reg=1e-2, tol=1e-10, direction=counted)
    check_result(res, C, a, b, 1e-10, method="sns")
    assert res.converged and res.n_newton > 0
    assert kinds == ["dense"] * res.n_newton  # every step was dense
    assert res.n_newton <= 8
    assert_dual_ascends(res, a, b)
    kinds.clear()
    forced = snsot.solve(C, a, b, reg=1e-2, tol=1e-10, hessian="sparse", direction=counted)
    assert forced.converged and kinds and set(kinds) == {"sparse"}
    np.testing.assert_allclose(forced.plan, res.plan, atol=1e-10)


def test_narrow_plans_keep_the_sparse_hessian():
    C, a, b = random_assignment(200, seed=3)
    counted, kinds = _counting_direction()
    res = snsot.solve(C, a, b, reg=1 / 1200, tol=1e-10, direction=counted)
    assert res.converged and res.n_newton > 0 and set(kinds) == {"sparse"}


@pytest.mark.parametrize("shape", [(80, 60), (30, 90)])
@pytest.mark.parametrize("hessian", ["dense", "sparse"])
def test_forced_hessian_converges_to_pots_plan(hessian, shape):
    p = make_problem(41, *shape, 2e-3)
    res = snsot.solve(p.C, p.a, p.b, reg=p.reg, tol=1e-10, hessian=hessian)
    check_result(res, p.C, p.a, p.b, 1e-10, method="sns")
    assert res.converged and res.n_newton > 0
    P_pot = pot_plan(p.C, p.a, p.b, p.reg)
    assert np.abs(res.plan - P_pot).max() < 1e-8
    assert_dual_ascends(res, p.a, p.b)


@pytest.mark.parametrize("hessian", ["dense", "sparse"])
def test_extrapolating_line_search_converges_and_ascends(hessian):
    # Longer steps only where the dual rises further: the same optimum, every
    # iterate still an ascent, and on a problem whose steps are long (small reg,
    # far start) some step is taken beyond the Newton step.
    from snsot.solvers import sns as S

    rng = np.random.default_rng(1)  # measured to take long steps with either Hessian
    x, y = rng.random((200, 2)), np.clip(rng.normal(0.5, 0.15, (200, 2)), 0, 1)  # clipped: edges far off
    C, a = costs.pairwise(x, y), np.full(200, 1 / 200)
    taken = []
    inner = S._Stage.extrapolate

    def spy(self, cur, trial, d):
        t = inner(self, cur, trial, d)
        taken.append(t)
        return t

    S._Stage.extrapolate = spy
    try:
        res = snsot.solve(C, a, a, reg=1e-3, tol=1e-10, hessian=hessian, extrapolate=8, eps_scaling=False)
    finally:
        S._Stage.extrapolate = inner
    # Gibbs form of the potentials and marginals re-measured within 1e-10 (check_result) certify
    # the entropic optimum (POT's log Sinkhorn needs minutes on these clipped clouds at reg 1e-3).
    check_result(res, C, a, a, 1e-10, method="sns")
    assert res.converged and res.n_newton > 0
    assert_dual_ascends(res, a, a)
    assert taken and max(taken) > 1.0 and all(t in (1.0, 2.0, 4.0, 8.0) for t in taken)


@pytest.mark.parametrize("clip", [True, False])
def test_a_direction_past_the_trust_region_is_clipped_first_and_still_converges(monkeypatch, clip):
    # A warm start with a few rows hundreds of reg off: the first Newton direction asks for far more
    # than the trust region. Clipping those unknowns (or, switched off, shrinking the whole step)
    # must reach the same optimum, every step still an ascent; with clipping on, some step is taken
    # along the clipped direction.
    from snsot.solvers import sns as S

    monkeypatch.setattr(S, "_CLIP_OUTLIERS", clip)
    rng = np.random.default_rng(3)
    x, y = rng.random((150, 2)), rng.random((150, 2))
    C, a = costs.pairwise(x, y), np.full(150, 1 / 150)
    reg = 2e-3
    cold = snsot.solve(C, a, a, reg=reg, tol=1e-11)
    f0, g0 = cold.potentials
    f0 = f0.copy()
    f0[:3] += 400 * reg  # three rows far above their optimum
    seen = []
    inner = S._Stage.line_search

    def spy(self, cur, trial, d, slope, t, **kw):
        seen.append(("clipped" if kw.get("t_min", 0.0) > 0 else "plain", S._log_change(d, self.reg)))
        return inner(self, cur, trial, d, slope, t, **kw)

    monkeypatch.setattr(S._Stage, "line_search", spy)
    res = snsot.solve(C, a, a, reg=reg, tol=1e-11, init=(f0, g0), n_warmup=1, eps_scaling=False)
    check_result(res, C, a, a, 1e-11, method="sns")
    assert res.converged and res.n_newton > 0
    assert_dual_ascends(res, a, a)
    np.testing.assert_allclose(res.plan, cold.plan, rtol=0, atol=1e-10)
    clipped = [change for kind, change in seen if kind == "clipped"]
    if clip:
        assert clipped and max(clipped) <= S._MAX_LOG_CHANGE * (1 + 1e-12)
    else:
        assert not clipped


def test_plan_points_swap_only_with_their_own_kind():
    from snsot.solvers._plan import PlanPoint

    class Other(PlanPoint):
        pass

    a, b = PlanPoint(3, 2, 0), PlanPoint(3, 2, 0)
    a.total, b.total = 1.0, 2.0
    a.swap(b)
    assert (a.total, b.total) == (2.0, 1.0)
    with pytest.raises(TypeError, match="other"):
        a.swap(Other(3, 2, 0))


def _switch(horizons=(30, 100), wide=True):
    from snsot.solvers.sns import _AdaptiveSwitch

    asked = []
    switch = _AdaptiveSwitch(1e-10, horizons, 3, lambda: asked.append(1) or wide)
    return switch, asked


def _errors(rate, k=10, start=1e-2):
    """Sinkhorn errors falling at ``rate`` per step: the switch predicts log(1e-10 / e_k) / log(rate) more steps."""
    return [start * rate ** i for i in range(k + 1)]


@pytest.mark.parametrize("wide", [True, False])
def test_switch_horizon_depends_on_the_newton_steps_cost_and_probes_once(wide):
    # rate 0.7 from 1e-2 * 0.7**10: log(1e-10 / 2.8e-4) / log(0.7) = 41.5 more steps, between the horizons
    switch, asked = _switch(wide=wide)
    assert switch(_errors(0.7)) is wide
    assert switch(_errors(0.7, k=11)) is wide and len(asked) == 1  # asked once, then remembered
    # beyond the long horizon: switch without asking; within the short one: stay, without asking
    for rate, expected in ((0.9, True), (0.3, False)):
        switch, asked = _switch(wide=wide)
        assert switch(_errors(rate)) is expected and not asked
    # too few steps yet: no decision (and no IndexError below the rate's span of 3)
    switch, asked = _switch()
    assert [switch(_errors(0.9, k=k)) for k in range(3)] == [False] * 3 and not asked


def test_adaptive_variant_accepts_a_warmup_shorter_than_the_rate_span():
    C, a, b = random_assignment(60, seed=4)
    res = snsot.solve(C, a, b, reg=1e-3, tol=1e-10, n_warmup=0)
    check_result(res, C, a, b, 1e-10, method="sns")
    assert res.converged


def test_paper_variant_converges():
    C, a, b = random_assignment(200, seed=2)
    res = snsot.solve(C, a, b, reg=1 / 1200, method="sns", variant="paper", tol=1e-9)
    check_result(res, C, a, b, 1e-9)
    assert res.converged, res
    assert res.n_newton > 0
    assert res.n_sinkhorn >= 20  # N1 = 20 warm-up steps
    assert np.all(res.history.stage[:20] == 0)
    check_entropic_bound(res, C, a, b)
    assert_dual_ascends(res, a, b)


@pytest.mark.parametrize("sparsity", [0.01, 0.1, 1.0])
def test_paper_variant_with_explicit_sparsity(sparsity):
    p = make_problem(81, 80, 60, 2e-3)
    res = snsot.solve(p.C, p.a, p.b, reg=p.reg, method="sns", variant="paper", sparsity=sparsity,
                      n_warmup=5, tol=1e-10)
    check_result(res, p.C, p.a, p.b, 1e-10)
    assert res.converged, res
    check_entropic_bound(res, p.C, p.a, p.b)


def test_epsilon_scaling_converges_and_records_decreasing_regs():
    p = make_problem(82, 90, 70, 1e-4, cost="sqeuclidean")
    res = snsot.solve(p.C, p.a, p.b, reg=p.reg, method="sns", eps_scaling=True, tol=1e-9)
    check_result(res, p.C, p.a, p.b, 1e-9)
    assert res.converged, res
    regs = res.history.reg
    assert len(regs) == res.n_iter
    assert np.all(np.diff(regs) <= 0) and regs[0] > p.reg and regs[-1] == p.reg
    check_entropic_bound(res, p.C, p.a, p.b)
    assert_dual_ascends(res, p.a, p.b)
    plain = snsot.solve(p.C, p.a, p.b, reg=p.reg, method="sns", eps_scaling=False, tol=1e-9)
    assert plain.converged
    np.testing.assert_allclose(res.plan, plain.plan, rtol=0, atol=1e-8)


def test_warm_start_from_a_nearby_problem_takes_fewer_iterations():
    C, a, b = random_assignment(150, seed=3)
    first = snsot.solve(C, a, b, reg=2e-3, method="sns", tol=1e-10)
    C2 = C + 1e-4 * np.random.default_rng(4).random(C.shape)
    cold = snsot.solve(C2, a, b, reg=2e-3, method="sns", tol=1e-10)
    warm = snsot.solve(C2, a, b, reg=2e-3, method="sns", tol=1e-10, init=first.potentials)
    check_result(warm, C2, a, b, 1e-10)
    assert cold.converged and warm.converged
    assert warm.n_iter < cold.n_iter
    np.testing.assert_allclose(warm.plan, cold.plan, rtol=0, atol=1e-9)


# --------------------------------------------------------------------------- degenerate inputs


def _check_sns(C, a, b, reg, tol=1e-10):
    res = snsot.solve(C, a, b, reg=reg, method="sns", tol=tol)
    check_result(res, C, a, b, tol, method="sns")
    assert res.converged, res
    check_entropic_bound(res, C, a, b)
    assert_dual_ascends(res, a, b)
    return res


@pytest.mark.parametrize("reg", [1e-2, 1e-3])
def test_l1_cost_on_a_grid(reg):
    rng = np.random.default_rng(91)
    shape = (8, 8)
    a = rng.random(shape) ** 3
    a[rng.random(shape) < 0.2] = 0.0  # image-like: some empty pixels
    b = rng.random(shape)
    C = costs.grid(shape, "cityblock")
    _check_sns(C, a.ravel() / a.sum(), b.ravel() / b.sum(), reg)


def test_constant_cost():
    rng = np.random.default_rng(92)
    a, b = rng.random(30), rng.random(20)
    a, b = a / a.sum(), b / b.sum()
    res = _check_sns(np.full((30, 20), 2.5), a, b, 1e-3)
    np.testing.assert_allclose(res.plan, np.outer(a, b), rtol=1e-9, atol=1e-15)


def test_duplicated_points_give_tied_costs():
    rng = np.random.default_rng(93)
    x = rng.random((10, 2))
    x = np.repeat(x, 4, axis=0)  # every source point four times
    y = np.concatenate([x[::4], x[::8] + 1e-12])  # targets on top of sources, some doubled
    C = costs.pairwise(x, y)
    a = np.full(len(x), 1.0 / len(x))
    b = np.full(len(y), 1.0 / len(y))
    _check_sns(C, a, b, 1e-3)


@pytest.mark.parametrize("shape", [(150, 40), (40, 150), (1, 60), (60, 1)])
def test_rectangular(shape):
    p = make_problem(94, *shape, 2e-3, cost="sqeuclidean")
    _check_sns(p.C, p.a, p.b, p.reg)


def test_very_non_uniform_weights():
    rng = np.random.default_rng(95)
    a = np.logspace(-12, 0, 80)
    b = rng.permutation(np.logspace(-12, 0, 70))
    a, b = a / a.sum(), b / b.sum()
    assert a.min() < 1e-12 and b.min() < 1e-12
    C = rng.random((80, 70))
    _check_sns(C, a, b, 3e-3)


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e3])
def test_scaled_costs_with_scaled_reg_give_the_same_plan(scale):
    # exp((f + g - sC)/(s reg)) is the plan of (C, reg) with potentials f/s, g/s
    p = make_problem(96, 60, 50, 1e-2, cost="sqeuclidean")
    P_pot = pot_plan(p.C, p.a, p.b, p.reg)
    res = _check_sns(p.C * scale, p.a, p.b, p.reg * scale)
    assert np.abs(res.plan - P_pot).max() < 1e-8


def test_float32_costs():
    p = make_problem(97, 70, 60, 1e-3, cost="sqeuclidean")
    C32 = p.C.astype(np.float32)
    res = snsot.solve(C32, p.a, p.b, reg=p.reg, method="sns", tol=1e-5)
    check_result(res, C32, p.a, p.b, 1e-5, method="sns")
    assert res.converged
    check_entropic_bound(res, C32, p.a, p.b)
    assert res.plan.dtype == np.float64


def test_float32_costs_can_reach_double_precision_tolerance():
    # kernels compute in float64, so float32 input limits only the cost's accuracy
    p = make_problem(98, 40, 40, 1e-2)
    C32 = p.C.astype(np.float32)
    res = snsot.solve(C32, p.a, p.b, reg=p.reg, method="sns", tol=1e-10)
    check_result(res, C32, p.a, p.b, 1e-10)
    assert res.converged
    P_pot = pot_plan(C32.astype(np.float64), p.a, p.b, p.reg)
    assert np.abs(res.plan - P_pot).max() < 1e-8


# --------------------------------------------------------------------------- failures handled


@pytest.mark.parametrize("hessian", ["sparse", "dense"])
def test_failed_newton_steps_fall_back_to_sinkhorn_and_still_converge(hessian):
    C, a, b = random_assignment(120, seed=5)
    calls = []

    def hook(*args, **kwargs):
        d = newton_direction(*args, **kwargs)
        calls.append(d.cg_iter)
        assert d.x.shape == (120,) and d.y.shape == (120,)
        assert isinstance(d.cg_iter, int) and isinstance(d.residual, float)
        if len(calls) <= 3:
            d.x = np.full_like(d.x, np.nan)
        return d

    res = snsot.solve(C, a, b, reg=1e-3, method="sns", tol=1e-10, hessian=hessian, direction=hook)
    check_result(res, C, a, b, 1e-10)
    assert res.converged, res
    assert len(calls) > 3, "the hook was not consulted after the failures"
    assert res.n_newton > 0
    assert np.all(np.isfinite(res.plan)) and np.all(np.isfinite(res.potentials[0]))
    assert np.all(np.isfinite(res.history.objective)) and np.all(np.isfinite(res.history.marginal_error))
    # each failure runs Sinkhorn steps: some Sinkhorn iterates follow the first Newton attempt
    baseline = snsot.solve(C, a, b, reg=1e-3, method="sns", tol=1e-10, hessian=hessian)
    assert res.n_sinkhorn > baseline.n_sinkhorn
    check_entropic_bound(res, C, a, b)
    assert_dual_ascends(res, a, b)


class _Indefinite:
    """An off-diagonal block whose Schur complement is negated: CG on it breaks down."""

    def __init__(self, S):
        self.S = S

    def solve_on_rows(self):
        return self.S.solve_on_rows()

    def matvec(self, y):
        return self.S.matvec(y)

    def schur(self, d_row, d_col, w):
        from snsot.solvers.linalg import SchurComplement

        inner, elim = self.S.schur(d_row, d_col, w)
        negated = SchurComplement()
        negated.matvec = lambda y: -inner.matvec(y)
        negated.inv_diag = inner.inv_diag
        return negated, elim


def test_dense_cg_breakdown_falls_back_and_still_converges():
    # an operator that is not positive definite makes CG break down inside the dense solve
    broken = []

    def indefinite(S, *args, **kwargs):
        broken.append(1)
        return newton_direction(_Indefinite(S) if len(broken) <= 2 else S, *args, **kwargs)

    p = make_problem(42, 50, 40, 1e-2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback is silent: no RuntimeWarning, no ConvergenceWarning
        res = snsot.solve(p.C, p.a, p.b, reg=p.reg, tol=1e-10, hessian="dense", switch_horizon=0,
                          direction=indefinite)
    check_result(res, p.C, p.a, p.b, 1e-10, method="sns")
    assert res.converged and len(broken) > 2
    baseline = snsot.solve(p.C, p.a, p.b, reg=p.reg, tol=1e-10, hessian="dense", switch_horizon=0)
    assert res.n_sinkhorn > baseline.n_sinkhorn  # the breakdowns ran Sinkhorn steps


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # from the injected NaNs
def test_newton_always_failing_still_converges_by_sinkhorn():
    p = make_problem(99, 30, 30, 1e-2)

    def hook(*args, **kwargs):
        d = newton_direction(*args, **kwargs)
        d.y = -d.y * np.inf
        return d

    res = snsot.solve(p.C, p.a, p.b, reg=p.reg, method="sns", tol=1e-10, direction=hook)
    check_result(res, p.C, p.a, p.b, 1e-10)
    assert res.converged and res.n_newton == 0


def test_an_ascent_direction_reversed_is_rejected():
    # a descent direction must never be taken: the line search would only lower the dual
    p = make_problem(100, 60, 60, 2e-3)

    def hook(*args, **kwargs):
        d = newton_direction(*args, **kwargs)
        d.x, d.y = -d.x, -d.y
        return d

    res = snsot.solve(p.C, p.a, p.b, reg=p.reg, method="sns", tol=1e-9, direction=hook)
    check_result(res, p.C, p.a, p.b, 1e-9)
    assert res.converged and res.n_newton == 0
    assert_dual_ascends(res, p.a, p.b)


def test_max_iter_gives_a_warning_and_an_honest_result():
    C, a, b = random_assignment(100, seed=6)
    with pytest.warns(snsot.ConvergenceWarning, match=r"^sns: stopped after \d+ iterations with marginal error"):
        res = snsot.solve(C, a, b, reg=1 / 1200, method="sns", tol=1e-12, max_iter=8)
    assert res.converged is False
    assert res.n_iter <= 8
    assert res.status == "max_iter"
    err = check_result(res, C, a, b, 1e-12)
    assert err >= 1e-12


def test_callback_can_stop_inside_the_newton_stage():
    C, a, b = random_assignment(100, seed=7)
    full = snsot.solve(C, a, b, reg=1 / 1200, method="sns", tol=1e-10)
    assert full.n_newton >= 3
    stop_at = full.n_sinkhorn + 2

    with pytest.warns(snsot.ConvergenceWarning, match="stopped by the callback"):
        res = snsot.solve(C, a, b, reg=1 / 1200, method="sns", tol=1e-10, callback=lambda k, *_: k >= stop_at)
    assert res.n_iter == stop_at and res.n_newton >= 1
    check_result(res, C, a, b, 1e-10)


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(variant="newton"), r"^variant: must be 'adaptive' or 'paper'"),
        (dict(variant="paper", sparsity=0.0), r"^sparsity: must be in \(0, 1\]"),
        (dict(variant="paper", sparsity=1.5), r"^sparsity: must be in \(0, 1\]"),
        (dict(eps_scaling="yes"), r"^eps_scaling: must be 'auto', True or False"),
        (dict(eps_factor=1.0), r"^eps_factor: must be a number > 1"),
        (dict(eps_factor=np.nan), r"^eps_factor: must be a number > 1"),
        (dict(hessian="exact"), r"^hessian: must be 'auto', 'sparse' or 'dense'"),
        (dict(variant="paper", hessian="dense"), r"^hessian: the paper variant sparsifies the Hessian"),
        (dict(hessian="dense", max_row_entries=10), r"^max_row_entries: caps the sparse Hessian's rows"),
        (dict(max_row_entries=0), r"^max_row_entries: must be an integer >= 1"),
        (dict(max_row_entries=2.5), r"^max_row_entries: must be an integer >= 1"),
        (dict(kappa=0.0), r"^kappa: must be a number > 0"),
        (dict(kappa=np.inf), r"^kappa: must be a number > 0"),
        (dict(max_cg=0), r"^max_cg: must be an integer >= 1"),
        (dict(max_cg=True), r"^max_cg: must be an integer >= 1"),
        (dict(n_warmup=-1), r"^n_warmup: must be an integer >= 0"),
        (dict(switch_horizon="long"), r"^switch_horizon: must be an integer >= 0"),
        (dict(sparsity=0.1), r"^sparsity: sets the paper variant's fixed sparsity"),
        (dict(direction="newton"), r"^direction: must be a callable"),
        (dict(eps_scaling=1), r"^eps_scaling: must be 'auto', True or False"),
        (dict(extrapolate=0), r"^extrapolate: must be an integer >= 1"),
        (dict(extrapolate=2.5), r"^extrapolate: must be an integer >= 1"),
    ],
)
def test_bad_sns_options_raise(options, match):
    with pytest.raises(ValueError, match=match):
        snsot.solve(np.ones((3, 3)), reg=0.1, method="sns", **options)


def test_options_are_frozen_once_validated():
    import dataclasses

    from snsot.solvers._options import SNSOptions

    opts = SNSOptions.from_user(100, variant="paper")
    assert (opts.n_warmup, opts.sparsity, opts.hessian, opts.eps_scaling) == (20, 0.02, "sparse", False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.kappa = 2.0
    assert SNSOptions.from_user(10, max_row_entries=5).hessian == "sparse"  # a row cap asks for the sparse Hessian


def test_no_warning_when_converged():
    C, a, b = random_assignment(60, seed=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = snsot.solve(C, a, b, reg=1e-3, method="sns")
    assert res.converged
