"""What every solver shares: the iteration record, stopping messages and the final result."""

from __future__ import annotations

import time

import numpy as np

from ..result import STAGE_NEWTON, STATUS_MESSAGES, History, OTResult
from ._scale import _PROGRESS, NEWTON_WEIGHT, STALL_WINDOW, current_watch

# One table of stopping messages (as scipy.optimize does); the keys are OTResult.status.
MESSAGES = STATUS_MESSAGES


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
    elif recorder.stalled is not None:
        status = "floor"
    message = MESSAGES[status]
    if status == "floor" and recorder.stalled is None:  # SNS's own test: Newton steps with no new low near round-off
        errors = recorder.history().marginal_error
        if errors.size:
            message += (f": no new low below {float(errors.min()):.3g} over the last Newton steps; "
                        "float64 cannot resolve a smaller tol here")
    elif status == "floor":  # the Recorder's rule
        mass = recorder.watch.mass
        message += (f": no new low below {recorder.stalled:.3g} ({recorder.stalled / mass:.2g} of the mass) "
                    f"in {STALL_WINDOW} Sinkhorn-equivalent iterations; float64 cannot resolve a smaller tol here")
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
        message=message,
        time=recorder.elapsed(),
        history=recorder.history(),
        status=status,
        outside_mass=final.outside_mass,
    )


def retry_can_help(res: OTResult, tol: float) -> bool:
    """Whether a tighter inner tolerance can still bring a finished solve below ``tol``.

    ``marginal_error`` counts twice the bound on the mass outside a truncated
    support (:func:`finalize`); when that alone reaches ``tol``, iterating on
    the same support cannot help (only a new support can, which is the
    point-cloud driver's refresh), so the solve returns at once instead of
    running its margin retries.
    """
    return not 2.0 * res.outside_mass >= tol
