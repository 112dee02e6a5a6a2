"""Log-domain Sinkhorn: alternating exact maximisation of the dual over f, then g.

Also the warm-up and fallback stage of SNS, which drives the same
:class:`SinkhornStepper`.
"""

from __future__ import annotations

import numpy as np

from ..problem import OTProblem
from ..result import STAGE_SINKHORN
from ._common import _MARGIN_RETRIES, Recorder, finalize, retry_can_help
from ._dense import DensePlan
from ._marginals import BalancedMarginals, marginals_for
from ._plan import Plan


class SinkhornStepper:
    """Log-domain Sinkhorn iterations on potentials ``(f, g)`` of a :class:`~snsot.solvers._plan.Plan`.

    After :meth:`step`, ``g`` is the exact maximiser of the dual given ``f``,
    so the columns of the plan match ``b``; the row error of the iterate is
    measured by the same pass that computes the next iteration
    (:meth:`~snsot.solvers._plan.Plan.sinkhorn_step`). How an iteration reads
    the plan is the plan's business (the dense plan reads a stored base plan
    scaled by the potentials' changes, and falls back to log-domain passes
    over ``C``).
    """

    def __init__(self, plan: Plan, marginals: BalancedMarginals, f=None):
        self.plan, self.marginals = plan, marginals
        n, m = plan.shape
        self.f = np.zeros(n) if f is None else np.array(f, dtype=np.float64)
        self._pending = None
        self.count = 0
        # Bring the iterate to the Sinkhorn manifold: columns exact.
        self.g = plan.sinkhorn_cols(self.f, marginals)

    def error(self) -> float:
        """L1 marginal error of the current iterate (rows; columns are exact).

        Computes the next iteration, which :meth:`step` then commits.
        """
        self._pending = self.plan.sinkhorn_step(self.f, self.g, self.marginals)
        return self._pending.error

    def objective(self) -> float:
        """Dual value of the current iterate (its columns are exact)."""
        return self.marginals.dual_with_exact_cols(self.f, self.g)

    def step(self):
        """One Sinkhorn iteration (f-update, then g-update); call after :meth:`error`."""
        self.f, self.g = self._pending.advance()
        self._pending = None
        self.count += 1


def solve_sinkhorn(problem: OTProblem, *, tol: float, max_iter: int, init=None, callback=None, _plan=None):
    """Log-domain Sinkhorn until the L1 marginal error is below ``tol``.

    Options
    -------
    init : tuple (f, g), optional
        Potentials to start from (only ``f`` is used: ``g`` is recomputed).
    callback : callable, optional
        ``callback(iteration, stage, marginal_error, objective)``; returning
        True stops the solve.
    _plan : Plan, optional
        The plan implementation to drive (default: :class:`~snsot.solvers._dense.DensePlan`).
    """
    rec = Recorder(callback)
    rec.reg = problem.reg
    plan = DensePlan(problem) if _plan is None else _plan
    plan.attach(problem)
    st = SinkhornStepper(plan, marginals_for(problem), None if init is None else init[0])
    inner_tol = tol
    for _ in range(_MARGIN_RETRIES + 1):
        status = run_sinkhorn(st, rec, inner_tol, max_iter - st.count)
        res = finalize(plan, st.marginals, st.f, st.g, method="sinkhorn", tol=tol, status=status, recorder=rec,
                       n_sinkhorn=st.count, n_newton=0)
        if status != "success" or res.converged or not retry_can_help(res, tol):
            break
        # The in-loop estimate met tol but the plan, summed afresh, misses it by
        # round-off: keep going with a tighter inner target.
        inner_tol *= 0.5
    return res


def run_sinkhorn(st: SinkhornStepper, rec: Recorder, tol: float, max_steps: int, switch=None) -> str:
    """Drive ``st`` until ``tol``, ``max_steps`` more steps, or ``switch(errors)`` says stop.

    The iterate reached after each step is recorded with its marginal error.
    Returns a status key of :data:`~snsot.solvers._common.MESSAGES`, or
    ``"switch"`` when ``switch`` asked to hand over (to the Newton stage).
    """
    errors = []
    start = st.count
    while True:
        err = st.error()
        errors.append(err)
        if st.count > start and rec(err, st.objective(), STAGE_SINKHORN):
            return "callback"
        if not np.isfinite(err):
            return "nonfinite"
        if err < tol:
            return "success"
        if st.count - start >= max_steps:
            return "max_iter"
        if switch is not None and switch(errors):
            return "switch"
        st.step()
