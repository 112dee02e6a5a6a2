"""What every solver shares: the iteration record, stopping messages and the final result."""

from __future__ import annotations

import time

import numpy as np

from ..result import STATUS_MESSAGES, History, OTResult

# One table of stopping messages (as scipy.optimize does); the keys are OTResult.status.
MESSAGES = STATUS_MESSAGES


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


def finalize(plan, marginals, f, g, *, method, tol, status, recorder, n_sinkhorn, n_newton) -> OTResult:
    """Build the :class:`OTResult` from final potentials, measuring everything on the plan itself.

    The plan is computed afresh (:meth:`~snsot.solvers._plan.Plan.final`);
    its marginal error (plus twice the bound on any mass outside a sparse
    plan's support), not the loop's estimate, decides ``converged``.
    """
    final = plan.final(f, g)
    # mass outside a sparse plan's support can move each marginal by at most that much
    err = marginals.error(f, g, final.row_sum, final.col_sum) + 2.0 * final.outside_mass
    converged = bool(np.isfinite(err) and err < tol)
    if converged:
        status = "success"
    elif status == "success":  # the in-loop estimate and the final measurement disagree at the margin
        status = "stalled"
    return OTResult(
        plan=final.plan,
        potentials=(f, g),
        cost=final.cost,
        objective=marginals.dual(f, g, float(final.row_sum.sum())),
        marginal_error=err,
        n_iter=n_sinkhorn + n_newton,
        n_sinkhorn=n_sinkhorn,
        n_newton=n_newton,
        converged=converged,
        method=method,
        reg=marginals.reg,
        tol=tol,
        message=MESSAGES[status],
        time=recorder.elapsed(),
        history=recorder.history(),
        status=status,
    )
