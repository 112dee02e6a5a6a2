"""What every solver shares: the iteration record, stopping messages and the final result."""

from __future__ import annotations

import time

import numpy as np

from .. import _kernels as K
from ..problem import OTProblem
from ..result import History, OTResult
from ._kl_marginals import KLMarginals

# One table of stopping messages (as scipy.optimize does).
MESSAGES = {
    "success": "marginal error below tol",
    "max_iter": "maximum number of iterations reached before tol",
    "stalled": "no further progress possible in floating point before tol",
    "nonfinite": "non-finite values met; returning the last finite iterate",
    "callback": "stopped by the callback",
}


#: Times a solver tightens its inner tolerance when the final measurement of the
#: plan misses ``tol`` by round-off although the in-loop estimate met it.
_MARGIN_RETRIES = 3


class Recorder:
    """Collects the per-iteration history of one solve and the callback."""

    def __init__(self, callback=None):
        self.t0 = time.perf_counter()
        self.error: list[float] = []
        self.objective: list[float] = []
        self.time: list[float] = []
        self.stage: list[int] = []
        self.regs: list[float] = []
        self.reg = np.nan  # regularisation of the iterates being recorded (epsilon-scaling changes it)
        self.callback = callback

    def __call__(self, error: float, objective: float, stage: int) -> bool:
        """Record one iterate; returns True if the callback asks to stop."""
        self.error.append(float(error))
        self.objective.append(float(objective))
        self.time.append(time.perf_counter() - self.t0)
        self.stage.append(stage)
        self.regs.append(self.reg)
        if self.callback is not None:
            return bool(self.callback(len(self.error), stage, error, objective))
        return False

    def history(self) -> History:
        return History(
            marginal_error=np.asarray(self.error, dtype=np.float64),
            objective=np.asarray(self.objective, dtype=np.float64),
            time=np.asarray(self.time, dtype=np.float64),
            stage=np.asarray(self.stage, dtype=np.int8),
            reg=np.asarray(self.regs, dtype=np.float64),
        )

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def dual_value(problem: OTProblem, f, g, plan_total: float) -> float:
    """D(f, g) = <a, f> + <b, g> - reg * sum(P), or its unbalanced form (:mod:`._kl_marginals`)."""
    return KLMarginals.of(problem).dual(f, g, plan_total, problem.reg)


def finalize(problem: OTProblem, f, g, *, method, tol, status, recorder, n_sinkhorn, n_newton,
             out=None) -> OTResult:
    """Build the :class:`OTResult` from final potentials, measuring everything on the plan itself.

    The plan is computed afresh from ``C`` into ``out`` (a spare ``n x m``
    float64 buffer, e.g. the solver's stored plan) or a new array.
    """
    P = np.empty(problem.shape) if out is None or out.shape != problem.shape else out
    K.dense_plan(problem.C, f, g, problem.reg, P)
    r, c = P.sum(axis=1), P.sum(axis=0)
    err = KLMarginals.of(problem).error(f, g, r, c)
    total = float(r.sum())
    cost = float(np.vdot(problem.C, P)) if problem.C.dtype == np.float64 else float(
        np.einsum("ij,ij->", problem.C, P, dtype=np.float64)
    )
    converged = bool(np.isfinite(err) and err < tol)
    if converged:
        status = "success"
    elif status == "success":  # the in-loop estimate and the final measurement disagree at the margin
        status = "stalled"
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
        message=MESSAGES[status],
        time=recorder.elapsed(),
        history=recorder.history(),
    )
