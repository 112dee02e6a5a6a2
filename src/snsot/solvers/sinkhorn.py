"""Log-domain Sinkhorn: alternating exact maximisation of the dual over f, then g.

Also the warm-up and fallback stage of SNS, which drives the same
:class:`SinkhornStepper`.
"""

from __future__ import annotations

import numpy as np

from .. import _kernels as K
from ..problem import OTProblem
from ..result import STAGE_SINKHORN
from ._common import _MARGIN_RETRIES, Recorder, finalize


class SinkhornStepper:
    """Log-domain Sinkhorn iterations on potentials ``(f, g)``.

    After :meth:`step`, ``g`` is the exact maximiser of the dual given ``f``,
    so the columns of the plan match ``b``; the row error of the iterate is
    measured for free by the next f-update, since
    ``(P 1)_i = a_i exp((f_i - f_new_i)/reg)``.
    """

    def __init__(self, problem: OTProblem, f=None):
        self.problem = problem
        n, m = problem.shape
        self.log_a = np.log(problem.a)
        self.log_b = np.log(problem.b)
        self.n_chunks = K.default_chunks(n)
        self.f = np.zeros(n) if f is None else np.array(f, dtype=np.float64)
        self.g = np.empty(m)  # set by the column update below
        self._f_new = np.empty(n)
        self.count = 0
        # Bring the iterate to the Sinkhorn manifold: columns exact.
        self._col()

    def _col(self):
        p = self.problem
        K.col_update(p.C, self.f, self.log_b, p.reg, self.g, self.n_chunks)

    def error(self) -> float:
        """L1 marginal error of the current iterate (rows; columns are exact).

        Computes the next f-update, which :meth:`step` then reuses.
        """
        p = self.problem
        K.row_update(p.C, self.g, self.log_a, p.reg, self._f_new)
        return float(np.abs(p.a * np.expm1((self.f - self._f_new) / p.reg)).sum())

    def objective(self) -> float:
        """Dual value of the current iterate; sum(P) = sum(b) since columns are exact."""
        p = self.problem
        return float(p.a @ self.f + p.b @ self.g - p.reg * p.mass)

    def step(self):
        """One Sinkhorn iteration (f-update, then g-update); call after :meth:`error`."""
        self.f, self._f_new = self._f_new, self.f
        self._col()
        self.count += 1


def solve_sinkhorn(problem: OTProblem, *, tol: float, max_iter: int, init=None, callback=None):
    """Log-domain Sinkhorn until the L1 marginal error is below ``tol``.

    Options
    -------
    init : tuple (f, g), optional
        Potentials to start from (only ``f`` is used: ``g`` is recomputed).
    callback : callable, optional
        ``callback(iteration, stage, marginal_error, objective)``; returning
        True stops the solve.
    """
    rec = Recorder(callback)
    rec.reg = problem.reg
    st = SinkhornStepper(problem, None if init is None else init[0])
    inner_tol = tol
    for _ in range(_MARGIN_RETRIES + 1):
        status = run_sinkhorn(st, rec, inner_tol, max_iter - st.count)
        res = finalize(problem, st.f, st.g, method="sinkhorn", tol=tol, status=status, recorder=rec,
                       n_sinkhorn=st.count, n_newton=0)
        if status != "success" or res.converged:
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
