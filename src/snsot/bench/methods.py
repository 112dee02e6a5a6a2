"""Every benchmarked method behind one call shape, returning a :class:`Run` re-measured here.

``solver(problem, reg, tol, cap, state, options) -> Run``; ``solver.module``
names the package it needs. Peers stop on their own norms, so their
tolerance is translated and verified (see :mod:`snsot.bench`).
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field

import numpy as np

_PROBE_ITERS = 10
_CALIBRATION_TRIES = 3


@dataclass
class Run:
    """What one solve returned, re-measured here."""

    plan: np.ndarray
    time: float
    n_iter: int | None
    n_sinkhorn: int | None = None
    n_newton: int | None = None
    capped: bool = False
    setting: str = ""
    per_iter: float | None = None  # seconds per iteration, where the method records it
    trace: dict = field(default_factory=dict)  # iteration, time, error arrays and the error's norm


def l1_marginal_error(P, a, b) -> float:
    """``||P 1 - a||_1 + ||P^T 1 - b||_1``: the one stopping measure of the benchmark."""
    return float(np.abs(P.sum(axis=1) - a).sum() + np.abs(P.sum(axis=0) - b).sum())


def _peer(name):
    """Import an optional peer package, or None if it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _snsot(method):
    def solve(problem, reg, tol, cap, state, options):
        import snsot

        start = time.perf_counter()

        def stop_at_cap(*_):
            return time.perf_counter() - start > cap

        # Sinkhorn needs many iterations at small reg; the time cap, not max_iter, bounds it.
        max_iter = 10**8 if method == "sinkhorn" else None
        res = snsot.solve(problem.C, problem.a, problem.b, reg=reg, method=method, tol=tol,
                          max_iter=max_iter, callback=stop_at_cap, warn=False, **options)
        elapsed = time.perf_counter() - start
        h = res.history
        trace = dict(iteration=np.arange(1, len(h) + 1), time=np.asarray(h.time),
                     error=np.asarray(h.marginal_error), norm="L1")
        setting = f"tol={tol:.3g}"
        if method == "sns":
            trace["stage"] = np.asarray(h.stage)
            regs = np.asarray(getattr(h, "reg", ()), dtype=float)
            if len(regs) and regs[0] > reg * (1 + 1e-9):  # the first iterates ran at a larger reg
                setting += f", epsilon-scaling from reg {regs[0]:.3g}"
        return Run(res.plan, elapsed, res.n_iter, res.n_sinkhorn, res.n_newton,
                   capped=not res.converged and elapsed > cap, setting=setting, trace=trace)

    solve.module = "snsot"
    return solve


def _calibrated(call, problem, tol, first_tol, cap, state):
    """Run a peer with a time-fitted iteration cap and a tolerance that reaches ``tol`` in L1.

    The first call for a problem (the warm-up) measures the time per
    iteration (``state["per_iter"]``, from a 10-iteration probe unless the
    caller measured it), sets ``state["max_iter"]`` to fit ``cap`` and
    tightens ``state["tol"]`` by 10 until the returned plan meets ``tol`` in
    L1; later calls reuse both.
    """
    if "tol" in state:
        return call(state["tol"], state["max_iter"])
    spent = 0.0
    if "per_iter" not in state:
        probe = call(first_tol, _PROBE_ITERS)
        state["per_iter"] = probe.per_iter or probe.time / max(probe.n_iter or 1, 1)
        spent = probe.time
    state["max_iter"] = max(_PROBE_ITERS, int(0.9 * cap / state["per_iter"]))
    state["tol"] = first_tol
    for _ in range(_CALIBRATION_TRIES):
        run = call(state["tol"], state["max_iter"])
        spent += run.time
        if run.capped and run.time < 0.5 * cap and run.n_iter:
            # The probe's early iterations misjudged the pace: refit the cap once
            # from this longer run, so the peer gets closer to its full time. At
            # most 1.5x more iterations: some peers (RegOT SPLR) slow down as
            # they go, and a full refit let them run three times over the cap.
            factor = min(1.5, 0.9 * cap / run.time)
            state["max_iter"] = max(state["max_iter"], int(factor * run.n_iter))
            run = call(state["tol"], state["max_iter"])
            spent += run.time
        if l1_marginal_error(run.plan, problem.a, problem.b) < tol or run.capped or spent > cap:
            break
        state["tol"] /= 10
    return run


def _regot(name):
    def solve(problem, reg, tol, cap, state, options):
        regot = _peer("regot")
        solver = getattr(regot, name)
        n, m = problem.shape

        def call(peer_tol, max_iter):
            start = time.perf_counter()
            res = solver(problem.fortran(), problem.a, problem.b, reg, tol=peer_tol, max_iter=max_iter)
            elapsed = time.perf_counter() - start
            errs = np.asarray(res.mar_errs)
            trace = dict(iteration=np.arange(len(errs)), error=errs,
                         time=np.asarray(res.run_times) / 1e3,  # RegOT records milliseconds
                         norm="L2 (RegOT's own)")
            err = l1_marginal_error(res.plan, problem.a, problem.b)
            # From RegOT's own clock, so a one-off setup cost does not shrink the iteration cap.
            per_iter = (trace["time"][-1] - trace["time"][0]) / (len(errs) - 1) if len(errs) > 1 else None
            return Run(np.asarray(res.plan), elapsed, int(res.niter), per_iter=per_iter,
                       capped=res.niter >= max_iter and not err < tol,
                       setting=f"tol={peer_tol:.3g}, max_iter={max_iter}", trace=trace)

        # RegOT's mar_errs is an L2 norm, never above our L1: start from tol itself
        # (the loosest candidate, fairest to the peer) and tighten only if the L1 check fails.
        return _calibrated(call, problem, tol, tol, cap, state)

    solve.module = "regot"
    return solve


def _pot_sinkhorn(problem, reg, tol, cap, state, options):
    ot = _peer("ot")
    m = problem.shape[1]

    def call(stop_thr, max_iter):
        start = time.perf_counter()
        P, log = ot.sinkhorn(problem.a, problem.b, problem.C, reg, method="sinkhorn_log",
                             stopThr=stop_thr, numItermax=max_iter, log=True, warn=False)
        elapsed = time.perf_counter() - start
        n_iter = int(log["niter"]) + 1  # POT logs the 0-based index of the last iteration
        errs = np.asarray(log["err"], dtype=float)
        # POT checks after iterations 1, 11, 21, ...; times assume equal-cost iterations.
        iters = 1 + 10 * np.arange(len(errs))
        err = l1_marginal_error(P, problem.a, problem.b)
        return Run(P, elapsed, n_iter, per_iter=state.get("per_iter"), capped=n_iter >= max_iter and not err < tol,
                   setting=f"stopThr={stop_thr:.3g}, numItermax={max_iter}",
                   trace=dict(iteration=iters, error=errs, time=elapsed * iters / n_iter,
                              norm="L2 of column error (POT's own)"))

    if not state:
        # POT keeps no clock: time 1 and 10 iterations so its setup (-C/reg, the
        # final plan) is not counted as iteration time when fitting the cap.
        one, ten = call(tol, 1), call(tol, _PROBE_ITERS)
        state["per_iter"] = max(ten.time - one.time, 1e-9) / (_PROBE_ITERS - 1)
    # POT's stopThr is the L2 norm of the column error: start from tol (loosest) as for RegOT.
    return _calibrated(call, problem, tol, tol, cap, state)


_pot_sinkhorn.module = "ot"

SOLVERS = {
    "snsot-sns": _snsot("sns"),
    "snsot-sinkhorn": _snsot("sinkhorn"),
    "regot-ssns": _regot("sinkhorn_ssns"),
    "regot-splr": _regot("sinkhorn_splr"),
    "regot-bcd": _regot("sinkhorn_bcd"),
    "pot-sinkhorn": _pot_sinkhorn,
}


def exact_cost(problem):
    """``(cost, seconds)`` of the unregularised OT problem by ``ot.emd``, or None without POT."""
    ot = _peer("ot")
    if ot is None:
        return None
    start = time.perf_counter()
    # numItermax: the default 1e5 stops early on problems with ~1e6 variables.
    P, log = ot.emd(problem.a, problem.b, problem.C, numItermax=10**8, log=True)
    elapsed = time.perf_counter() - start
    if log.get("warning"):
        return None
    return float(log["cost"]), elapsed

