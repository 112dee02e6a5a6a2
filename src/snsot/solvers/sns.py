"""Sinkhorn-Newton-Sparse (Tang et al., ICLR 2024, Algorithm 1), with adaptive defaults.

Stage 1 runs log-domain Sinkhorn. Stage 2 takes Newton steps on the concave
dual ``D(f, g)`` with a sparsified Hessian: the diagonal blocks (row and
column sums of the plan) are exact, the off-diagonal block keeps only the
plan entries ``P_ij >= tau``; the direction comes from
:func:`~snsot.solvers.linalg.newton_direction` (or, with the whole plan as
the off-diagonal block, :func:`~snsot.solvers.linalg.dense_newton_direction`)
and an Armijo backtracking line search on ``D`` picks the step. The pass
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
  factor ``e**30``; larger steps are shortened before the line search.
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

from .. import _kernels as K
from ..problem import OTProblem
from ..result import STAGE_NEWTON
from ._base import PlanBase
from ._common import _MARGIN_RETRIES, Recorder, finalize
from ._kl_marginals import KLMarginals
from .linalg import dense_newton_direction, newton_direction
from .sinkhorn import SinkhornStepper, run_sinkhorn

_ARMIJO = 1e-4
#: epsilon-scaling "auto" turns on above this (max C - min C) / reg
_EPS_AUTO_RATIO = 500.0
_MAX_BACKTRACK = 40
#: Largest change of any log plan entry, in units of reg, one Newton step may make.
_MAX_LOG_CHANGE = 30.0
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
_ROUNDING = 64 * np.finfo(np.float64).eps


class _PlanState:
    """Potentials with their plan sums and, unless ``dense``, sparse Hessian candidates (one pass over the plan)."""

    def __init__(self, n, m, cap, dense=False):
        self.dense = dense
        self.count = -1  # dense: entries >= tau at this point (-1: not counted)
        self.row = np.empty(n)
        self.col = np.empty(m)
        self.counts = np.zeros(n, dtype=np.int64)
        self.idx = np.empty((n, cap), dtype=np.int32)
        self.val = np.empty((n, cap))
        self.f = self.g = None
        self.total = self.dual = self.error = np.nan

    def evaluate(self, problem: OTProblem, base: PlanBase, f, g, tau, n_chunks):
        cap = self.val.shape[1]
        if self.dense:
            sc = base.scalings_at(f, g)
            if sc is None:  # the plan at (f, g) is not finite: a rejected trial
                self.row[:] = np.inf
                self.col, self.count = np.full(len(g), np.inf), -1
            else:
                self.col, self.count = K.scaled_sums(base.B, sc[0], sc[1], tau, n_chunks, self.row)
        else:
            sc = base.scalings(f, g)
            if sc is None:  # the rebase pass also collects the candidates
                _, self.col = base.rebase(f, g, tau, cap, n_chunks, self.row, self.counts, self.idx, self.val)
            else:
                self.col = K.scaled_pass(base.B, sc[0], sc[1], tau, cap, n_chunks,
                                         self.row, self.counts, self.idx, self.val)
        self.f, self.g = f, g
        self.total = float(self.row.sum())
        if np.isfinite(self.total) and np.isfinite(self.col).all():
            marginals = KLMarginals.of(problem)
            self.dual = marginals.dual(f, g, self.total, problem.reg)
            self.error = marginals.error(f, g, self.row, self.col)
        else:
            self.dual, self.error = -np.inf, np.inf
        return self

    def rounding(self, problem: OTProblem) -> float:
        """Size of floating-point noise in the dual value at this point."""
        return _ROUNDING * float(np.abs(problem.a @ self.f) + np.abs(problem.b @ self.g) + problem.reg * self.total)


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
    _direction_hook=None,
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
        marginal error.
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
    init : tuple (f, g), optional
        Warm-start potentials (``f`` is used; ``g`` is recomputed exactly).
    callback : callable, optional
        ``callback(iteration, stage, marginal_error, objective)``; True stops.
    """
    if variant not in ("adaptive", "paper"):
        raise ValueError(f"variant: must be 'adaptive' or 'paper'; got {variant!r}")
    if hessian not in ("auto", "sparse", "dense"):
        raise ValueError(f"hessian: must be 'auto', 'sparse' or 'dense'; got {hessian!r}")
    if eps_scaling not in ("auto", True, False):
        raise ValueError(f"eps_scaling: must be 'auto', True or False; got {eps_scaling!r}")
    if not (np.isfinite(eps_factor) and eps_factor > 1):
        raise ValueError(f"eps_factor: must be a number > 1; got {eps_factor!r}")
    if variant == "paper":
        if hessian == "dense":
            raise ValueError("hessian: the paper variant sparsifies the Hessian; 'dense' needs variant='adaptive'")
        n_warmup = 20 if n_warmup is None else int(n_warmup)
        sparsity = 2.0 / problem.shape[0] if sparsity is None else float(sparsity)
        if not 0 < sparsity <= 1:
            raise ValueError(f"sparsity: must be in (0, 1]; got {sparsity!r}")
        if eps_scaling == "auto":
            eps_scaling = False
    if max_row_entries is not None:
        if hessian == "dense":
            raise ValueError("max_row_entries: caps the sparse Hessian's rows; it cannot go with hessian='dense'")
        hessian = "sparse"  # a cap on kept entries asks for the sparse Hessian
    opts = dict(variant=variant, n_warmup=n_warmup, sparsity=sparsity, kappa=kappa,
                switch_horizon=switch_horizon, max_row_entries=max_row_entries, max_cg=max_cg,
                hessian="sparse" if variant == "paper" else hessian, direction_hook=_direction_hook)

    rec = Recorder(callback)
    f = None if init is None else init[0]
    base = PlanBase(problem)
    opts["base"] = base
    n_sinkhorn = n_newton = 0
    for reg in _continuation(problem, eps_scaling, eps_factor):
        rec.reg = reg
        stage_tol = max(tol, 1e-3 * problem.mass)
        f, g, status, ns, nn = _sns_stage(problem.with_reg(reg), stage_tol, max_iter - n_sinkhorn - n_newton,
                                          f, rec, **opts)
        n_sinkhorn, n_newton = n_sinkhorn + ns, n_newton + nn
        if status in ("callback", "nonfinite") or n_sinkhorn + n_newton >= max_iter:
            break
    else:
        rec.reg = problem.reg
        inner_tol = tol
        for _ in range(_MARGIN_RETRIES + 1):
            f, g, status, ns, nn = _sns_stage(problem, inner_tol, max_iter - n_sinkhorn - n_newton, f, rec, **opts)
            n_sinkhorn, n_newton = n_sinkhorn + ns, n_newton + nn
            res = finalize(problem, f, g, method="sns", tol=tol, status=status, recorder=rec,
                           n_sinkhorn=n_sinkhorn, n_newton=n_newton, out=base.take())
            if status != "success" or res.converged or n_sinkhorn + n_newton >= max_iter:
                return res
            # estimate met tol, the plan summed afresh misses it by round-off: tighten and go on
            inner_tol *= 0.5
        return res
    # stopped inside continuation: bring the columns to the target reg
    st = SinkhornStepper(problem, f, base)
    return finalize(problem, st.f, st.g, method="sns", tol=tol, status=status, recorder=rec,
                    n_sinkhorn=n_sinkhorn, n_newton=n_newton, out=base.take())


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


def _sns_stage(problem, tol, max_iter, f_init, rec, *, variant, n_warmup, sparsity, kappa, switch_horizon,
               max_row_entries, max_cg, hessian, direction_hook, base):
    """One SNS solve at ``problem.reg``: Sinkhorn warm-up, then Newton with fallbacks.

    Returns ``(f, g, status, n_sinkhorn, n_newton)``.
    """
    n, m = problem.shape
    mass = problem.mass
    marginals = KLMarginals.of(problem)
    base.attach(problem)
    st = SinkhornStepper(problem, f_init, base)
    probes = []  # dense probes the adaptive switch took (see _probe)
    if variant == "paper":
        cap = cap_max = int(min(m, max(1, round(sparsity * m))))
        status = run_sinkhorn(st, rec, tol, min(n_warmup, max_iter))
        tau_of = lambda err: 0.0  # noqa: E731 - the per-row cap alone decides
    else:
        if max_row_entries is None:
            cap, cap_max = _initial_quota(m), _cap_limit(n, m)
        else:
            cap = cap_max = int(min(m, max(1, max_row_entries)))
        tau_of = lambda err: kappa * err / (n * m)  # noqa: E731
        horizons = _HORIZONS if switch_horizon is None else (switch_horizon, switch_horizon)
        if hessian != "auto":
            horizons = (horizons[hessian == "sparse"],) * 2

        def is_wide():
            # The base must not move under the Sinkhorn step pending on it.
            probes.append(_probe(problem, base, st.f, st.g, tau_of(_last_error(rec, mass)), move_base=False))
            return _wide(probes[-1])

        switch = _AdaptiveSwitch(tol, horizons, _MIN_WARMUP if n_warmup is None else int(n_warmup), is_wide)
        status = run_sinkhorn(st, rec, tol, max_iter, switch)

    n_sinkhorn, n_newton = st.count, 0
    if status in ("success", "callback", "nonfinite") or st.count >= max_iter:
        return st.f, st.g, status, n_sinkhorn, n_newton

    n_chunks = K.default_chunks(n)
    tau0 = tau_of(_last_error(rec, mass))
    dense, cur = hessian == "dense", None
    if hessian == "auto":
        # The switch may have probed this very point already (when it fired on the probe).
        probe = probes[-1] if probes and probes[-1] is not None and probes[-1].f is st.f else \
            _probe(problem, base, st.f, st.g, tau0)
        dense = _wide(probe)
        cur = probe if dense else None  # a dense probe is the Newton stage's first point
    if dense:
        cap = cap_max = 0
    if cur is None:
        cur = _PlanState(n, m, cap, dense).evaluate(problem, base, st.f, st.g, tau0, n_chunks)
    trial = _PlanState(n, m, cap, dense)
    n_fallback = 10
    d_prev = None
    status = "max_iter"
    while True:
        err = cur.error
        if not np.isfinite(err):
            status = "nonfinite"
            break
        if err < tol:
            status = "success"
            break
        if n_sinkhorn + n_newton >= max_iter:
            break

        ok = False
        tau = max(tau_of(err), 0.0)
        delta = min(1e-3, err / mass)
        target_rows, target_cols = marginals.targets(cur.f, cur.g)
        grad_rows, grad_cols = target_rows - cur.row, target_cols - cur.col
        extra = marginals.hessian_diagonal(cur.f, cur.g, problem.reg)
        # Zero or non-finite sums give non-finite directions, which the checks
        # below turn into a fallback: no warnings on the way.
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if dense:
                sc = base.scalings_at(cur.f, cur.g)
                d = None if sc is None else dense_newton_direction(
                    base.B, sc[0], sc[1], cur.row, cur.col, grad_rows, grad_cols, problem.reg, delta,
                    rtol=_forcing(err, tol, mass), max_cg=max_cg, n_chunks=n_chunks, guess=d_prev, extra=extra)
            else:
                csr = K.compact_csr(cur.counts, cur.idx, cur.val, tau)
                d = newton_direction(csr, cur.row, cur.col, grad_rows, grad_cols, problem.reg, delta,
                                     rtol=_forcing(err, tol, mass), max_cg=max_cg, guess=d_prev, extra=extra)
        if d is not None and direction_hook is not None:
            d = direction_hook(d)
        d_prev = d
        slope = np.nan if d is None else float(grad_rows @ d.x + grad_cols @ d.y)
        if d is not None and np.isfinite(d.residual) and np.isfinite(slope) and slope > 0:
            # Collect candidates for the next step with the tau its error is expected to need.
            tau_next = tau_of(max(err * min(1.0, err / mass), 1e-300))
            # Trust region on the plan: no entry's log may change by more than
            # _MAX_LOG_CHANGE at once (max_ij |x_i + y_j| is exact from the
            # extremes). Far-off trial points only overflow or get rejected,
            # each at the price of an exponential pass.
            change = max(abs(d.x.max() + d.y.max()), abs(d.x.min() + d.y.min())) / problem.reg
            t = 1.0 if change <= _MAX_LOG_CHANGE else _MAX_LOG_CHANGE / change
            for _ in range(_MAX_BACKTRACK):
                trial_f, trial_g = cur.f + t * d.x, cur.g + t * d.y
                trial.evaluate(problem, base, trial_f, trial_g, tau_next, n_chunks)
                gain = trial.dual - cur.dual
                if gain >= _ARMIJO * t * slope or (
                    gain >= -cur.rounding(problem) and trial.error < err
                ):
                    ok = True
                    break
                t *= 0.5
        if ok:
            cur, trial = trial, cur
            n_newton += 1
            if rec(cur.error, cur.dual, STAGE_NEWTON):
                status = "callback"
                break
            if t == 1.0 and cur.error > _SLOW * err and cap < cap_max and cur.counts.max() * 2 >= cap:
                # A full step that gains little while rows fill their quota: the
                # per-row cap, not the error-controlled tau, is cutting the
                # Hessian (a wide plan, e.g. 1-D W2 at reg 1e-2 wants ~400 of
                # 1000 entries per row). Give rows more room and re-collect.
                cap, cur, trial = _grown(cap, cap_max, n, m)
                cur.evaluate(problem, base, trial_f, trial_g, tau_next, n_chunks)
            continue

        # Newton failed here: fall back to Sinkhorn, then retry with a denser Hessian.
        st = SinkhornStepper(problem, cur.f, base)
        budget = min(n_fallback, max_iter - n_sinkhorn - n_newton)
        status = run_sinkhorn(st, rec, tol, budget)
        n_sinkhorn += st.count
        n_fallback *= 2
        tau_of = (lambda old: (lambda e: 0.1 * old(e)))(tau_of)
        if status in ("success", "callback", "nonfinite"):
            return st.f, st.g, status, n_sinkhorn, n_newton
        if cap < cap_max:
            cap, cur, trial = _grown(cap, cap_max, n, m)
        cur.evaluate(problem, base, st.f, st.g, tau_of(_last_error(rec, mass)), n_chunks)
        status = "max_iter"
    return cur.f, cur.g, status, n_sinkhorn, n_newton


def _probe(problem, base, f, g, tau, move_base=True):
    """A dense :class:`_PlanState` at ``(f, g)``: its sums, and how many plan entries are ``>= tau`` (one pass).

    With ``move_base=False`` the base is left where it is (a Sinkhorn step
    pending on it must not see it move); a point too far from it then gives
    None.
    """
    n, m = problem.shape
    if not move_base and base.scalings(f, g) is None:
        return None
    return _PlanState(n, m, 0, dense=True).evaluate(problem, base, f, g, tau, K.default_chunks(n))


def _wide(probe) -> bool:
    """Whether a probe found at least :data:`_DENSE_FRACTION` of the entries above the threshold."""
    return probe is not None and probe.count >= _DENSE_FRACTION * probe.row.size * probe.col.size


def _initial_quota(m: int) -> int:
    """Adaptive variant: per-row candidate quota of the first Newton step."""
    return min(m, max(64, m // _QUOTA_DIV))


def _grown(cap: int, cap_max: int, n: int, m: int):
    """Double the per-row quota (up to ``cap_max``): ``(cap, cur, trial)`` with fresh, empty states."""
    cap = min(cap_max, 2 * cap)
    return cap, _PlanState(n, m, cap), _PlanState(n, m, cap)


def _cap_limit(n: int, m: int) -> int:
    """Largest per-row candidate count the adaptive variant may grow to.

    Two candidate buffers (current point and trial) of ``n x cap`` entries
    (8-byte value, 4-byte column) may together take the memory of one dense
    ``n x m`` float64 array, or 64 MB where that is more: all of ``m`` up to
    about 1600 x 1600, a third of it at n = m = 4000.
    """
    budget = max(8.0 * n * m, 64e6)
    return int(max(_initial_quota(m), min(m, budget // (2 * 12 * n))))


def _last_error(rec: Recorder, default: float) -> float:
    return rec.error[-1] if rec.error else default


def _forcing(err: float, tol: float, mass: float) -> float:
    """Relative CG residual asked of a Newton step at marginal error ``err``."""
    return min(0.1, max(math.sqrt(err / mass), 0.3 * tol / err))
