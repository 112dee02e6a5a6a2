"""Sinkhorn-Newton-Sparse (Tang et al., ICLR 2024, Algorithm 1), with adaptive defaults.

Stage 1 runs log-domain Sinkhorn. Stage 2 takes Newton steps on the concave
dual ``D(f, g)`` with a sparsified Hessian: the diagonal blocks (row and
column sums of the plan) are exact, the off-diagonal block keeps only the
plan entries ``P_ij >= tau``; the direction comes from
:func:`~snsot.solvers.linalg.newton_direction` (with the kept entries, or
the whole plan, as the off-diagonal block) and an Armijo backtracking line search on ``D`` picks the step. The pass
that evaluates a trial point also produces the sums (and, for the sparse
Hessian, the candidate entries) the next iteration needs, so an accepted
point is never recomputed.

Adaptive defaults (``variant="adaptive"``), instead of the paper's hand-set
``N1`` and sparsity ``lambda``:

* **switch**: after at least 20 Sinkhorn steps, Sinkhorn hands over to
  Newton once its measured convergence rate predicts more than a horizon of
  further iterations to ``tol``: 100 when the Newton steps will be sparse
  (one costs 10 to 30 Sinkhorn steps), 30 when they will be dense (a few
  passes over the plan), so easy problems finish in Sinkhorn and never pay
  for Newton.
* **dense or sparse Hessian**: where the plan is wide (at the switch, at
  least 5% of its entries are above the sparsity threshold below; 1-D
  densities, moderate ``reg``) the Newton matrix is the whole plan, applied
  through the stored base plan: an exact Newton step whose CG iterations
  each cost one parallel read of the plan, with no candidates to select or
  index. Elsewhere the Hessian is sparsified as the paper does.
* **sparsity by error control** (sparse Hessian): ``tau = kappa * err /
  (n m)``, so the mass dropped from the Hessian is at most ``kappa`` times
  the current marginal error ``err``; the Hessian gets denser exactly as the iterate approaches
  the optimum, which keeps local convergence fast. Each row keeps at most
  a quota of entries (the largest), initially ``max(64, m // 4)``; the quota
  doubles when a full step gains little while rows fill it (a wide plan),
  up to a memory budget of about one ``n x m`` array for the candidates.
* **trust region**: a step changes no entry of the plan by more than a
  factor ``e**30``. A direction that would is first tried with each unknown
  clipped to half of that (a few unknowns nearly cut off from the rest of
  the plan can ask for hundreds of reg while the rest asks for a few), and
  only if that fails shortened as a whole before the line search.
* **shift**: the Hessian's diagonal is scaled by ``1 + delta``, ``delta =
  min(1e-3, err / mass)``, which keeps the system positive definite (a
  Levenberg-Marquardt term relative to each row's and column's mass, so that
  bins with tiny mass still get full Newton steps; it vanishes at the optimum).
* **inexact solves**: CG stops at relative residual ``min(0.1, sqrt(err /
  mass))`` (a forcing term that still gives superlinear local convergence),
  loosened to ``0.3 tol / err`` when that suffices to reach ``tol`` (the last
  step need not be solved more accurately than the answer asks), and starts
  from the previous direction, which successive steps resemble.
* **fallback**: a failed Newton step (no ascent, CG breakdown, non-finite
  values, line search exhausted) runs Sinkhorn steps, doubles their number
  on each failure, makes the Hessian ten times denser (and doubles the row
  quota), and retries.

``variant="paper"`` reproduces Algorithm 1: ``n_warmup`` (N1 = 20) Sinkhorn
steps, then Newton with about ``lambda * m`` entries per row (the paper keeps
``lambda n m`` entries in all, ``lambda = 2/n`` by default).
"""

from __future__ import annotations

import math

import numpy as np

from ..problem import OTProblem
from ..result import STAGE_NEWTON
from ._common import _MARGIN_RETRIES, Recorder, finalize, retry_can_help
from ._dense import DensePlan
from ._marginals import marginals_for
from ._options import SNSOptions
from ._plan import WHOLE_PLAN, Plan
from .linalg import Direction
from .sinkhorn import SinkhornStepper, run_sinkhorn

_ARMIJO = 1e-4
#: epsilon-scaling "auto" turns on above this (max C - min C) / reg
_EPS_AUTO_RATIO = 500.0
_MAX_BACKTRACK = 40
#: Largest change of any log plan entry, in units of reg, one Newton step may make.
_MAX_LOG_CHANGE = 30.0
#: The extrapolating line search (option ``extrapolate``) tries longer steps only after a step
#: that changed some log plan entry by at least this much (in units of reg).
_EXTRAPOLATE_MIN_CHANGE = 2.0
#: Where the trust region binds, first try the direction with each unknown clipped to half of it
#: (see :meth:`_Stage.newton_step`).
_CLIP_OUTLIERS = True
#: Adaptive variant: Sinkhorn steps before the switch rule may fire (the
#: first iterations' rate says little about the rest).
_MIN_WARMUP = 20
#: Adaptive variant: the initial per-row quota of Hessian candidates is m // _QUOTA_DIV (at least 64).
_QUOTA_DIV = 4
#: A full Newton step that leaves more than this fraction of the error is slow.
_SLOW = 0.25
#: Adaptive variant: the exact (dense) Hessian is used when at least this
#: fraction of the plan's entries is above the sparsity threshold at the
#: switch to Newton (measured: 2 to 5x faster on wide plans, 1-D densities
#: and MNIST at reg 1e-2, and 1.2 to 5x slower on plans holding 0.3 to 2%
#: of their entries there, 2-D densities and MNIST at small reg).
_DENSE_FRACTION = 0.05
#: Adaptive switch horizons (wide plan, narrow plan): see ``switch_horizon``.
_HORIZONS = (30, 100)


class _AdaptiveSwitch:
    """Hand over to Newton when Sinkhorn's own rate predicts a long road to ``tol``.

    "Long" depends on what a Newton step will cost: ``horizons = (wide,
    narrow)`` more Sinkhorn iterations for a wide plan (exact Hessian, a
    step costs a few passes over the plan) and for a narrow one (sparse
    Hessian: candidate selection and CG on indexed entries cost more).
    ``is_wide()`` is asked, once, only when the prediction falls between
    the two.
    """

    def __init__(self, tol, horizons, min_steps, is_wide):
        self.tol, self.min_steps, self.is_wide = tol, min_steps, is_wide
        self.short, self.long = min(horizons), max(horizons)
        self.wide = None

    def __call__(self, errors) -> bool:
        k = len(errors) - 1
        span = 3
        if k < max(self.min_steps, span):
            return False
        e_now, e_then = errors[-1], errors[-1 - span]
        if not (e_now > 0 and e_then > 0):
            return False
        rate = (e_now / e_then) ** (1.0 / span)
        if rate >= 1.0:
            return True
        remaining = math.log(self.tol / e_now) / math.log(rate)
        if remaining > self.long:
            return True
        if remaining > self.short:
            if self.wide is None:
                self.wide = bool(self.is_wide())
            return self.wide
        return False


#: Statuses after which a stage stops at once.
_FINAL = ("success", "callback", "nonfinite", "support")
#: Steps in a row (Newton steps or fallbacks) that reach no new lowest error,
#: taken within ten times the round-off floor of the error (:func:`_error_floor`),
#: before the stage reports "floor": at that floor (e.g. unbalanced
#: potentials of size 600 at reg 0.05 cannot give errors below ~5e-11 on a
#: mass of 40) the steps otherwise trade round-off back and forth, with
#: fallbacks of doubling length, until max_iter. Above the floor nothing
#: counts, so a slow but steady solve is never cut short.
_STALL_STEPS = 3


def solve_sns(
    problem: OTProblem,
    *,
    tol: float,
    max_iter: int,
    init=None,
    callback=None,
    variant: str = "adaptive",
    eps_scaling="auto",
    eps_factor: float = 10.0,
    n_warmup: int | None = None,
    sparsity: float | None = None,
    kappa: float = 1.0,
    switch_horizon: int | None = None,
    max_row_entries: int | None = None,
    max_cg: int = 500,
    hessian: str = "auto",
    direction=None,
    extrapolate: int = 1,
    _plan: Plan | None = None,
    _monitor=None,
):
    """Sinkhorn-Newton-Sparse; see the module docstring for the algorithm.

    Options
    -------
    variant : {"adaptive", "paper"}
        ``"adaptive"`` (default): measured stage switch and error-controlled
        sparsity. ``"paper"``: the paper's fixed ``n_warmup`` and ``sparsity``
        (and no epsilon-scaling unless asked for).
    eps_scaling : {"auto", True, False}
        Continuation in the regularisation: solve at ``reg * eps_factor**k``,
        ..., ``reg * eps_factor`` to a loose tolerance (``1e-3`` times the
        mass), each warm-starting the next, then at ``reg``. Stages start
        where ``(max C - min C) / reg_k <= 100``, a regime where Sinkhorn
        alone is fast. ``"auto"`` turns it on when ``(max C - min C) / reg >
        500``, where it was measured to pay (3 to 10x fewer seconds at
        ``reg = 1e-3`` on unit costs for MNIST L1 and Gaussian mixtures);
        below that there is no intermediate stage to run.
    eps_factor : float
        Ratio between successive regularisations (> 1).
    n_warmup : int, optional
        Sinkhorn steps before Newton. Paper variant: default 20. Adaptive:
        a minimum (default 20) before the switch rule may fire.
    sparsity : float, optional
        Paper variant only: the fraction ``lambda`` of plan entries kept
        (default ``2 / n``).
    kappa : float
        Adaptive sparsity: dropped Hessian mass at most ``kappa`` times the
        marginal error (> 0).
    switch_horizon : int, optional
        Adaptive switch: stay in Sinkhorn while it predicts at most this
        many more iterations. Default: 30 when the Newton steps will use the
        whole plan (``hessian="dense"``, or ``"auto"`` on a wide plan), 100
        when they will be sparse (a sparse Newton step costs more).
    hessian : {"auto", "sparse", "dense"}
        Newton matrix of the adaptive variant. ``"sparse"``: the plan's
        entries above the error-controlled threshold (SNS proper).
        ``"dense"``: the whole plan, through the stored base (an exact
        Newton step; each CG iteration is one parallel read of the plan).
        ``"auto"`` (default) takes ``"dense"`` when at least 5% of the plan's
        entries are above the threshold at the switch (wide plans: 1-D
        densities, moderate ``reg``), where it was measured 2 to 5x faster.
    max_row_entries : int, optional
        Fixed cap on kept entries per row (default: an adaptive quota,
        initially ``min(m, max(64, m // 4))``, see the module docstring).
        Giving it selects the sparse Hessian.
    max_cg : int
        CG iteration cap per Newton step.
    extrapolate : int
        Longest step, in multiples of the Newton step, a line search may take
        (1, the default: none). Above 1, a full step that the line search
        accepts is tried at twice its length, then four times..., while the
        dual keeps rising (within the trust region); each try costs one pass
        over the plan. Where a Newton step is dear and the iterate far (the
        point-cloud solver's last scale, where Newton moves parts of the
        potentials by 2 to 4 ``reg`` per step towards offsets of 10 to 20
        ``reg`` left by the coarser scale) this saves steps: 28 -> 20 Newton
        steps at n = 10^5 points, reg 1e-5.
    direction : callable, optional
        How a Newton direction is computed, with the signature and result of
        :func:`snsot.solvers.linalg.newton_direction` (the default). A
        plug-in may wrap it, e.g. to record or perturb directions; whatever
        it returns still has to pass the ascent test and the line search.
    init : tuple (f, g), optional
        Warm-start potentials (``f`` is used; ``g`` is recomputed exactly).
    callback : callable, optional
        ``callback(iteration, stage, marginal_error, objective)``; True stops.
    _plan : Plan, optional
        Private: the plan implementation to drive (default
        :class:`~snsot.solvers._dense.DensePlan`), for tests of the interface.
    _monitor : callable, optional
        Private: ``_monitor(f, g, marginal_error)`` after each Newton step at
        the target ``reg``; True ends the solve with status ``"support"`` (the
        point-cloud driver refreshes a truncated support the potentials have
        outgrown, instead of iterating on towards another problem's optimum).
    """
    opts = SNSOptions.from_user(
        problem.shape[0], variant=variant, eps_scaling=eps_scaling, eps_factor=eps_factor, n_warmup=n_warmup,
        sparsity=sparsity, kappa=kappa, switch_horizon=switch_horizon, max_row_entries=max_row_entries,
        max_cg=max_cg, hessian=hessian, direction=direction, extrapolate=extrapolate)
    rec = Recorder(callback)
    f = None if init is None else init[0]
    plan = DensePlan(problem) if _plan is None else _plan
    n_sinkhorn = n_newton = 0

    def stage(p: OTProblem, stage_tol: float):
        nonlocal n_sinkhorn, n_newton
        monitor = _monitor if p.reg == problem.reg else None
        f_new, g, status, ns, nn = _Stage(plan, p, opts, rec, stage_tol, max_iter - n_sinkhorn - n_newton,
                                          monitor).run(f)
        n_sinkhorn, n_newton = n_sinkhorn + ns, n_newton + nn
        return f_new, g, status

    def result(f, g, status):
        return finalize(plan, marginals_for(problem), f, g, method="sns", tol=tol, status=status,
                        recorder=rec, n_sinkhorn=n_sinkhorn, n_newton=n_newton)

    for reg in _continuation(problem, opts.eps_scaling, opts.eps_factor):
        rec.reg = reg
        f, g, status = stage(problem.with_reg(reg), max(tol, 1e-3 * problem.mass))
        if status in ("callback", "nonfinite") or n_sinkhorn + n_newton >= max_iter:
            # stopped inside continuation: bring the columns to the target reg
            plan.attach(problem)
            st = SinkhornStepper(plan, marginals_for(problem), f)
            return result(st.f, st.g, status)
    rec.reg = problem.reg
    inner_tol = tol
    for _ in range(_MARGIN_RETRIES + 1):
        f, g, status = stage(problem, inner_tol)
        res = result(f, g, status)
        if status != "success" or res.converged or n_sinkhorn + n_newton >= max_iter or not retry_can_help(res, tol):
            return res
        # estimate met tol, the plan summed afresh misses it by round-off: tighten and go on
        inner_tol *= 0.5
    return res


def _error_floor(point, reg: float) -> float:
    """Round-off floor of the marginal error at ``point``.

    Each plan entry ``exp((f_i + g_j - C_ij) / reg)`` carries a relative error
    of about ``eps (|f_i| + |g_j|) / reg`` from its exponent, so the sums, of
    total ``sum(P)``, cannot be measured closer than that.
    """
    return float(np.finfo(np.float64).eps * point.total
                 * (np.abs(point.f).max() + np.abs(point.g).max()) / reg)


def _at_floor(point, lowest: float, reg: float) -> bool:
    """A step to ``point`` that found no new lowest error, within ten times the round-off floor."""
    return not point.error < lowest and point.error < 10.0 * _error_floor(point, reg)


def _continuation(problem: OTProblem, eps_scaling, factor) -> list[float]:
    """Intermediate regularisations, largest first (empty without epsilon-scaling)."""
    if eps_scaling is False:
        return []
    lo, hi = problem.cost_range
    spread = hi - lo
    if spread <= 0 or (eps_scaling == "auto" and spread / problem.reg <= _EPS_AUTO_RATIO):
        return []
    regs = []
    reg = problem.reg * factor
    while spread / reg >= 100 and len(regs) < 8:
        regs.append(reg)
        reg *= factor
    return regs[::-1]


class _Stage:
    """One SNS solve at one ``reg``: Sinkhorn warm-up and switch, Hessian choice, Newton steps, fallbacks.

    Talks to the plan only through :class:`~snsot.solvers._plan.Plan` and to
    the marginal constraints only through
    :class:`~snsot.solvers._marginals.BalancedMarginals`. :meth:`run` is the
    whole stage; each phase is one method.
    """

    def __init__(self, plan: Plan, problem: OTProblem, opts: SNSOptions, rec: Recorder, tol: float, max_iter: int,
                 monitor=None):
        plan.attach(problem)
        self.monitor = monitor
        self.plan, self.opts, self.rec, self.tol, self.max_iter = plan, opts, rec, tol, max_iter
        self.marginals = marginals_for(problem)
        self.reg, self.mass = problem.reg, problem.mass
        self.n_sinkhorn = self.n_newton = 0
        self.n_fallbacks = 0  # each fallback makes the Hessian ten times denser
        self.fallback_steps = 10  # Sinkhorn steps of the next fallback (doubles each time)
        self.direction = None  # the last Newton direction: CG's next starting guess
        self.probe = None  # the dense probe the adaptive switch took, if any
        self.spare = None  # a third point for the extrapolating line search
        self.tau_next = 0.0
        m = plan.max_row_length
        if opts.variant == "paper":
            self.quota = self.quota_max = int(min(m, max(1, round(opts.sparsity * m))))
        elif opts.max_row_entries is None:
            self.quota, self.quota_max = _initial_quota(m), _quota_limit(plan)
        else:
            self.quota = self.quota_max = int(min(m, opts.max_row_entries))

    def run(self, f_init):
        """Returns ``(f, g, status, n_sinkhorn, n_newton)``."""
        st, status = self.warm_up(f_init)
        if status in _FINAL or st.count >= self.max_iter:
            return st.f, st.g, status, self.n_sinkhorn, 0
        cur = self.first_point(st)
        trial = self.plan.new_point(self.quota)
        stalled, lowest = 0, np.inf
        while True:
            err = cur.error
            if not np.isfinite(err):
                return cur.f, cur.g, "nonfinite", self.n_sinkhorn, self.n_newton
            if err < self.tol:
                return cur.f, cur.g, "success", self.n_sinkhorn, self.n_newton
            if self.n_sinkhorn + self.n_newton >= self.max_iter:
                return cur.f, cur.g, "max_iter", self.n_sinkhorn, self.n_newton
            t = self.newton_step(cur, trial)
            if t is not None:
                stalled = stalled + 1 if _at_floor(trial, lowest, self.reg) else 0
                lowest = min(lowest, trial.error)
                cur, trial = trial, cur
                self.n_newton += 1
                if self.rec(cur.error, cur.dual, STAGE_NEWTON):
                    return cur.f, cur.g, "callback", self.n_sinkhorn, self.n_newton
                if self.monitor is not None and not cur.error < self.tol and self.monitor(cur.f, cur.g, cur.error):
                    return cur.f, cur.g, "support", self.n_sinkhorn, self.n_newton
                if stalled >= _STALL_STEPS and not cur.error < self.tol:
                    return cur.f, cur.g, "floor", self.n_sinkhorn, self.n_newton
                if t == 1.0 and cur.error > _SLOW * err and self.quota < self.quota_max \
                        and cur.fullest_row * 2 >= self.quota:
                    # A full step that gains little while rows fill their quota: the
                    # per-row cap, not the error-controlled tau, is cutting the
                    # Hessian (a wide plan, e.g. 1-D W2 at reg 1e-2 wants ~400 of
                    # 1000 entries per row). Give rows more room and re-collect.
                    cur, trial = self.grow_quota(cur.f, cur.g, self.tau_next)
                continue
            # Newton failed here: fall back to Sinkhorn, then retry with a denser Hessian.
            st, status = self.fall_back(cur)
            if status in _FINAL:
                return st.f, st.g, status, self.n_sinkhorn, self.n_newton
            stalled = stalled + 1 if _at_floor(cur, lowest, self.reg) and not self.last_error() < lowest else 0
            if stalled >= _STALL_STEPS:
                return st.f, st.g, "floor", self.n_sinkhorn, self.n_newton
            tau = self.tau_of(self.last_error())
            if self.quota < self.quota_max:
                cur, trial = self.grow_quota(st.f, st.g, tau)
            else:
                self.evaluate(cur, st.f, st.g, tau)

    # -- phases ----------------------------------------------------------------
    def warm_up(self, f_init):
        """Sinkhorn until ``tol``, the paper's ``n_warmup`` steps, or the adaptive switch; ``(stepper, status)``."""
        opts, rec = self.opts, self.rec
        st = SinkhornStepper(self.plan, self.marginals, f_init)
        if opts.variant == "paper":
            status = run_sinkhorn(st, rec, self.tol, min(opts.n_warmup, self.max_iter))
        else:
            horizons = _HORIZONS if opts.switch_horizon is None else (opts.switch_horizon,) * 2
            if opts.hessian != "auto":
                horizons = (horizons[opts.hessian == "sparse"],) * 2

            def is_wide():
                # pinned: the plan must not move under the Sinkhorn step pending on it
                self.probe = self.dense_probe(st.f, st.g, pinned=True)
                return self.is_wide(self.probe)

            min_steps = _MIN_WARMUP if opts.n_warmup is None else opts.n_warmup
            status = run_sinkhorn(st, rec, self.tol, self.max_iter, _AdaptiveSwitch(self.tol, horizons, min_steps, is_wide))
        self.n_sinkhorn = st.count
        return st, status

    def first_point(self, st):
        """Choose the Hessian (the whole plan or a sparse one) and evaluate the Newton stage's first point."""
        tau0 = self.tau_of(self.last_error())
        cur = None
        dense = self.opts.hessian == "dense"
        if self.opts.hessian == "auto":
            # The switch may have probed this very point already (when it fired on the probe).
            probe = self.probe if self.probe is not None and self.probe.f is st.f else self.dense_probe(st.f, st.g)
            dense = self.is_wide(probe)
            cur = probe if dense else None  # a dense probe is the Newton stage's first point
        if dense:
            self.quota = self.quota_max = WHOLE_PLAN
        if cur is None:
            cur = self.evaluate(self.plan.new_point(self.quota), st.f, st.g, tau0)
        return cur

    def newton_step(self, cur, trial) -> float | None:
        """One Newton step from ``cur`` into ``trial``: the step length taken, or None if the step failed."""
        err = cur.error
        tau = max(self.tau_of(err), 0.0)
        delta = min(1e-3, err / self.mass)
        grad_rows, grad_cols = self.marginals.gradient(cur.f, cur.g, cur.row, cur.col)
        # Zero or non-finite sums give non-finite directions, which the checks
        # below turn into a fallback: no warnings on the way.
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            S = self.plan.hessian_block(cur, tau)
            d = None
            if S is not None:
                d_row, d_col = self.marginals.hessian_diagonal(cur.f, cur.g, cur.row, cur.col, delta)
                d = self.opts.direction(S, d_row, d_col, grad_rows, grad_cols, self.reg,
                                        rtol=_forcing(err, self.tol, self.mass), max_cg=self.opts.max_cg,
                                        guess=self.direction)
        self.direction = d
        slope = np.nan if d is None else float(grad_rows @ d.x + grad_cols @ d.y)
        if d is None or not (np.isfinite(d.residual) and np.isfinite(slope) and slope > 0):
            return None
        # Collect candidates for the next step with the tau its error is expected to need.
        self.tau_next = self.tau_of(max(err * min(1.0, err / self.mass), 1e-300))
        t = _trust_region(d, self.reg)
        if t < 1.0 and _CLIP_OUTLIERS:
            # A few unknowns (points nearly cut off from the rest of the plan, at the clouds'
            # edges) can ask for steps of hundreds of reg, where the quadratic model of the
            # exponential sums is far off; shrinking the whole step to the trust region shrinks
            # every other unknown's step as much (at n = 10^6: t ~ 0.02, the error fell 2% a step).
            # Clip those unknowns to half the trust region each instead, and search along that
            # down to the step the shrunk direction would have started from.
            half = 0.5 * _MAX_LOG_CHANGE * self.reg
            clipped = Direction(np.clip(d.x, -half, half), np.clip(d.y, -half, half), d.cg_iter, d.residual)
            slope_c = float(grad_rows @ clipped.x + grad_cols @ clipped.y)
            if slope_c > 0:
                step = self.line_search(cur, trial, clipped, slope_c, 1.0, t_min=t)
                if step is not None:
                    return step
        return self.line_search(cur, trial, d, slope, t)

    def line_search(self, cur, trial, d, slope, t, t_min=0.0) -> float | None:
        """Armijo backtracking from step ``t`` along ``d`` (not below ``t_min``); ``trial`` holds the accepted point."""
        for _ in range(_MAX_BACKTRACK):
            if t < t_min:
                return None
            self.evaluate(trial, cur.f + t * d.x, cur.g + t * d.y, self.tau_next)
            gain = trial.dual - cur.dual
            if gain >= _ARMIJO * t * slope or (
                gain >= -self.marginals.rounding(cur.f, cur.g, cur.total) and trial.error < cur.error
            ):
                if t == 1.0 and self.opts.extrapolate > 1:
                    t = self.extrapolate(cur, trial, d)
                return t
            t *= 0.5
        return None

    def extrapolate(self, cur, trial, d) -> float:
        """After a full step into ``trial``: double the step while the dual rises (option ``extrapolate``).

        Stays within the trust region; ``trial`` ends holding the best point
        (a spare point is evaluated and swapped in, no copy); returns its step.
        """
        change = _log_change(d, self.reg)
        t = 1.0
        if change < _EXTRAPOLATE_MIN_CHANGE:  # a step this short is in Newton's quadratic regime
            return t
        while 2.0 * t <= self.opts.extrapolate and 2.0 * t * change <= _MAX_LOG_CHANGE:
            spare = self.spare
            if spare is None or spare.quota != trial.quota or type(spare) is not type(trial):
                spare = self.spare = self.plan.new_point(trial.quota)
            self.evaluate(spare, cur.f + 2.0 * t * d.x, cur.g + 2.0 * t * d.y, self.tau_next)
            if not (spare.dual > trial.dual and np.isfinite(spare.error)):
                break
            trial.swap(spare)
            t *= 2.0
        return t

    def fall_back(self, cur):
        """Sinkhorn steps from ``cur`` (twice as many as last time); the Hessian gets ten times denser."""
        st = SinkhornStepper(self.plan, self.marginals, cur.f)
        budget = min(self.fallback_steps, self.max_iter - self.n_sinkhorn - self.n_newton)
        status = run_sinkhorn(st, self.rec, self.tol, budget)
        self.n_sinkhorn += st.count
        self.fallback_steps *= 2
        self.n_fallbacks += 1
        return st, status

    # -- helpers ---------------------------------------------------------------
    def tau_of(self, err: float) -> float:
        """Sparsity threshold at marginal error ``err``: at most ``kappa err`` of mass dropped, 10x less per fallback."""
        if self.opts.variant == "paper":
            return 0.0  # the per-row cap alone decides
        tau = self.opts.kappa * err / self.plan.support_size
        for _ in range(self.n_fallbacks):
            tau = 0.1 * tau
        return tau

    def evaluate(self, point, f, g, tau, pinned=False):
        """The plan's sums at ``(f, g)`` into ``point``, with the dual value and marginal error there."""
        if self.plan.evaluate(point, f, g, tau, pinned) is None:
            return None
        if np.isfinite(point.total) and np.isfinite(point.col).all():
            point.dual = self.marginals.dual(f, g, point.total)
            point.error = self.marginals.error(f, g, point.row, point.col)
        else:
            point.dual, point.error = -np.inf, np.inf
        return point

    def dense_probe(self, f, g, pinned=False):
        """A :data:`WHOLE_PLAN` point at ``(f, g)``: its sums and how many entries are above the threshold."""
        return self.evaluate(self.plan.new_point(WHOLE_PLAN), f, g, self.tau_of(self.last_error()), pinned)

    def is_wide(self, probe) -> bool:
        """Whether a probe found at least :data:`_DENSE_FRACTION` of the entries above the threshold."""
        return probe is not None and probe.count >= _DENSE_FRACTION * self.plan.support_size

    def grow_quota(self, f, g, tau):
        """Double the per-row quota (up to its limit): ``(cur, trial)``, ``cur`` evaluated at ``(f, g)``."""
        self.quota = min(self.quota_max, 2 * self.quota)
        return self.evaluate(self.plan.new_point(self.quota), f, g, tau), self.plan.new_point(self.quota)

    def last_error(self) -> float:
        return self.rec.error[-1] if self.rec.error else self.mass


def _trust_region(d, reg: float) -> float:
    """Largest step ``t <= 1`` changing no log plan entry by more than :data:`_MAX_LOG_CHANGE`.

    ``max_ij |x_i + y_j|`` (:func:`_log_change`) is exact from the extremes. Far-off trial points
    only overflow or get rejected, each at the price of an exponential pass.
    """
    change = _log_change(d, reg)
    return 1.0 if change <= _MAX_LOG_CHANGE else _MAX_LOG_CHANGE / change


def _log_change(d, reg: float) -> float:
    """Largest change ``max_ij |x_i + y_j| / reg`` a full step along ``d`` makes to a log plan entry
    (exact from the extremes of ``x`` and ``y``)."""
    return max(abs(d.x.max() + d.y.max()), abs(d.x.min() + d.y.min())) / reg


def _initial_quota(m: int) -> int:
    """Adaptive variant: per-row candidate quota of the first Newton step."""
    return min(m, max(64, m // _QUOTA_DIV))


def _quota_limit(plan: Plan) -> int:
    """Largest per-row candidate count the adaptive variant may grow to.

    Two candidate buffers (current point and trial) of ``n x quota`` entries
    (8-byte value, 4-byte column) may together take the memory of the plan
    held as float64 (one ``n x m`` array when dense), or 64 MB where that is
    more: all of ``m`` up to about 1600 x 1600, a third of it at n = m = 4000.
    """
    n = plan.shape[0]
    m = plan.max_row_length
    budget = max(8.0 * plan.support_size, 64e6)
    return int(max(_initial_quota(m), min(m, budget // (2 * 12 * n))))


def _forcing(err: float, tol: float, mass: float) -> float:
    """Relative CG residual asked of a Newton step at marginal error ``err``."""
    return min(0.1, max(math.sqrt(err / mass), 0.3 * tol / err))
