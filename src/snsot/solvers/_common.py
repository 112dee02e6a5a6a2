"""What every solver shares: the iteration record, stopping messages and the final result."""

from __future__ import annotations

import time

import numpy as np

from .. import _kernels as K
from ..problem import OTProblem
from ..result import STAGE_NEWTON, History, OTResult
from ._scale import _PROGRESS, NEWTON_WEIGHT, STALL_WINDOW, current_watch

# One table of stopping messages (as scipy.optimize does).
MESSAGES = {
    "success": "marginal error below tol",
    "max_iter": "maximum number of iterations reached before tol",
    "stalled": "no further progress possible in floating point before tol",
    "nonfinite": "non-finite values met; returning the last finite iterate",
    "callback": "stopped by the callback",
    "floor": "marginal error stalled at its round-off floor above tol",
}


#: Times a solver tightens its inner tolerance when the final measurement of the
#: plan misses ``tol`` by round-off although the in-loop estimate met it.
_MARGIN_RETRIES = 3


class Recorder:
    """Collects the per-iteration history of one solve and the callback.

    Inside :func:`snsot.solve` it also records in the caller's units (the
    solver may work at unit mass) and applies the stall rule: see
    :mod:`snsot.solvers._scale`. :attr:`stalled` is then the best marginal
    error (caller's units) when the rule stopped the solve, else None.
    """

    def __init__(self, callback=None):
        self.t0 = time.perf_counter()
        self.error: list[float] = []
        self.objective: list[float] = []
        self.time: list[float] = []
        self.stage: list[int] = []
        self.regs: list[float] = []
        self.reg = np.nan  # regularisation of the iterates being recorded (epsilon-scaling changes it)
        self.callback = callback
        self.watch = current_watch()
        self.stalled: float | None = None
        self._best = np.inf  # lowest error so far (solver's units) and iterations since it
        self._since = 0

    def __call__(self, error: float, objective: float, stage: int) -> bool:
        """Record one iterate; returns True if the callback asks to stop, or the stall rule does.

        The lists keep the solver's own units (solvers read them back);
        :meth:`history` and the callback get the caller's.
        """
        error, objective = float(error), float(objective)
        self.error.append(error)
        self.objective.append(objective)
        self.time.append(time.perf_counter() - self.t0)
        self.stage.append(stage)
        self.regs.append(self.reg)
        watch = self.watch
        stall = False
        if watch is not None and watch.floor is not None:
            if error < _PROGRESS * self._best:
                self._best, self._since = error, 0
            else:
                self._since += NEWTON_WEIGHT if stage == STAGE_NEWTON else 1
            stall = self._since >= STALL_WINDOW and self._best <= watch.floor
        if self.callback is not None:
            if watch is not None:
                error, objective = watch.to_caller(error, objective, self.reg)
            if self.callback(len(self.error), stage, error, objective):
                return True
        if stall:
            lowest = min(self.error)
            self.stalled = float(watch.to_caller(lowest, 0.0, self.reg)[0])
            return True
        return False

    def history(self) -> History:
        error = np.asarray(self.error, dtype=np.float64)
        objective = np.asarray(self.objective, dtype=np.float64)
        regs = np.asarray(self.regs, dtype=np.float64)
        if self.watch is not None and self.watch.exponent != 0:
            error, objective = self.watch.to_caller(error, objective, regs)
        return History(
            marginal_error=error,
            objective=objective,
            time=np.asarray(self.time, dtype=np.float64),
            stage=np.asarray(self.stage, dtype=np.int8),
            reg=regs,
        )

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def dual_value(problem: OTProblem, f, g, plan_total: float) -> float:
    """D(f, g) = <a, f> + <b, g> - reg * sum(P)."""
    return float(problem.a @ f + problem.b @ g - problem.reg * plan_total)


def finalize(problem: OTProblem, f, g, *, method, tol, status, recorder, n_sinkhorn, n_newton,
             out=None) -> OTResult:
    """Build the :class:`OTResult` from final potentials, measuring everything on the plan itself.

    The plan is computed afresh from ``C`` into ``out`` (a spare ``n x m``
    float64 buffer, e.g. the solver's stored plan) or a new array.
    """
    P = np.empty(problem.shape) if out is None or out.shape != problem.shape else out
    K.dense_plan(problem.C, f, g, problem.reg, P)
    r, c = P.sum(axis=1), P.sum(axis=0)
    err = float(np.abs(r - problem.a).sum() + np.abs(c - problem.b).sum())
    total = float(r.sum())
    cost = float(np.vdot(problem.C, P)) if problem.C.dtype == np.float64 else float(
        np.einsum("ij,ij->", problem.C, P, dtype=np.float64)
    )
    converged = bool(np.isfinite(err) and err < tol)
    if converged:
        status = "success"
    elif status == "success":  # the in-loop estimate and the final measurement disagree at the margin
        status = "stalled"
    elif recorder.stalled is not None:
        status = "floor"
    message = MESSAGES[status]
    if status == "floor":
        mass = recorder.watch.mass
        message += (f": no new low below {recorder.stalled:.3g} ({recorder.stalled / mass:.2g} of the mass) "
                    f"in {STALL_WINDOW} Sinkhorn-equivalent iterations; float64 cannot resolve a smaller tol here")
    return OTResult(
        plan=P,
        potentials=(f, g),
        cost=cost,
        objective=dual_value(problem, f, g, total),
        marginal_error=err,
        n_iter=n_sinkhorn + n_newton,
        n_sinkhorn=n_sinkhorn,
        n_newton=n_newton,
        converged=converged,
        method=method,
        reg=problem.reg,
        tol=tol,
        message=message,
        time=recorder.elapsed(),
        history=recorder.history(),
    )
