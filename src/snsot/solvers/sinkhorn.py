"""Log-domain Sinkhorn: alternating exact maximisation of the dual over f, then g.

Also the warm-up and fallback stage of SNS, which drives the same
:class:`SinkhornStepper`.
"""

from __future__ import annotations

import numpy as np

from .. import _kernels as K
from ..problem import OTProblem
from ..result import STAGE_SINKHORN
from ._base import PlanBase
from ._common import _MARGIN_RETRIES, Recorder, finalize
from ._kl_marginals import KLMarginals


#: Row and column sums a scaled Sinkhorn step divides by must be at least this
#: (and the new scalings at most its inverse); otherwise the step is redone in
#: the log domain. See :mod:`snsot.solvers._base` for why this keeps it exact.
_SAFE = 1e-100


class SinkhornStepper:
    """Log-domain Sinkhorn iterations on potentials ``(f, g)``.

    After :meth:`step`, ``g`` is the exact maximiser of the dual given ``f``,
    so the columns of the plan match ``b``; the row error of the iterate is
    measured by the same pass that computes the next iteration.

    An iteration is one read of a stored plan (:class:`~snsot.solvers._base.PlanBase`)
    scaled by ``exp((f - f0)/reg)`` and ``exp((g - g0)/reg)``; the plan is
    recomputed from ``C`` (one exponential pass) only when the potentials
    drift too far from where it was stored, and an iteration whose sums
    leave the safe range is redone with the log-domain kernels (two passes
    over ``C`` per half-step, stabilised by row and column maxima).

    The marginal penalty (:class:`~snsot.solvers._kl_marginals.KLMarginals`)
    supplies the targets the error is measured against and the damping
    ``kappa`` of each half-step (1 for a hard constraint: plain Sinkhorn).
    """

    def __init__(self, problem: OTProblem, f=None, base: PlanBase | None = None):
        self.problem = problem
        n, m = problem.shape
        self.marginals = KLMarginals.of(problem)
        self.kappa = self.marginals.damping(problem.reg)
        self.log_a = np.log(problem.a)
        self.log_b = np.log(problem.b)
        self.n_chunks = K.default_chunks(n)
        self.base = PlanBase(problem) if base is None else base
        self.base.attach(problem)
        self.f = np.zeros(n) if f is None else np.array(f, dtype=np.float64)
        self.g = np.empty(m)
        self._rows = np.empty(n)
        self._u_new = np.empty(n)
        self._f_new = np.empty(n)
        self._col_new = None  # pending scaled step (column sums), or None for a log-domain one
        self._shift = 0.0  # the base's shift when _col_new was computed (see PlanBase.shift)
        self.count = 0
        # Bring the iterate to the Sinkhorn manifold: columns exact.
        self._col_log_update()

    def _col_log_update(self):
        """g = argmax of the dual over g given f, in the log domain (two passes over C)."""
        p = self.problem
        K.col_update(p.C, self.f, self.log_b, p.reg, self.g, self.n_chunks)
        self.g *= self.kappa[1]

    def error(self) -> float:
        """L1 marginal error of the current iterate (rows; columns are exact).

        Computes the next iteration, which :meth:`step` then commits.
        """
        p = self.problem
        kappa = self.kappa[0]
        target = self.marginals.targets(self.f, self.g)[0]
        sc = self.base.scalings_at(self.f, self.g)
        if sc is not None:
            u, v = sc
            base = self.base
            # The damped update f_new = kappa (f0 + reg (log(a / s) + shift)) in the
            # base's units is u_new = a^kappa exp((kappa - 1)(f0/reg + shift)) / s^kappa:
            # fold everything but s into the kernel's numerator.
            num = p.a if kappa == 1.0 else np.exp(
                kappa * self.log_a + (kappa - 1.0) * (base.f0 / p.reg + base.shift))
            col = K.scaled_sinkhorn(base.B, u, v, num, self.n_chunks, self._rows, self._u_new, kappa)
            un = self._u_new
            if un.max() <= 1.0 / _SAFE and (num / un).min() >= _SAFE and col.min() >= _SAFE \
                    and np.isfinite(col).all():
                self._col_new = col
                self._shift = base.shift
                return float(np.abs(self._rows - target).sum())
        self._col_new = None
        K.row_update(p.C, self.g, self.log_a, p.reg, self._f_new)
        # The plan's rows are a exp((f - f_new)/reg) with f_new the undamped update, its
        # targets a exp(-f/rho) (a itself, and "+ f/rho" exactly 0, for a hard constraint).
        error = float(np.abs(target * np.expm1((self.f - self._f_new) / p.reg + self.f / self.marginals.rho[0])).sum())
        self._f_new *= kappa
        return error

    def objective(self) -> float:
        """Dual value of the current iterate; the plan's total is that of the column targets (columns are exact)."""
        p = self.problem
        total = float(self.marginals.targets(self.f, self.g)[1].sum())
        return self.marginals.dual(self.f, self.g, total, p.reg)

    def step(self):
        """One Sinkhorn iteration (f-update, then g-update); call after :meth:`error`."""
        p = self.problem
        if self._col_new is not None:
            base = self.base
            # u_new and col carry the factors exp(-shift) of the scalings' convention
            self.f = base.f0 + p.reg * (np.log(self._u_new) + self._shift)
            self.g = base.g0 + p.reg * (self.log_b - np.log(self._col_new) - self._shift)
            self.g *= self.kappa[1]
        else:
            self.f, self._f_new = self._f_new, np.empty_like(self.f)
            self.g = np.empty_like(self.g)
            self._col_log_update()
        self._col_new = None
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
                       n_sinkhorn=st.count, n_newton=0, out=st.base.take())
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
