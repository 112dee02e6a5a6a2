"""Honest flags at any scale of the weights: a relative tolerance, a unit-mass solve, a stall rule.

:func:`solve_scaled` wraps one solver call made by :func:`snsot.solve`:

- **Relative tolerance.** ``converged`` means ``marginal_error < tol * mass``
  (``mass`` = the total of ``a``), so ``tol`` means the same for weights
  summing to ``1e-10`` as to ``1``.
- **Unit mass.** The solver works on ``a / M`` and ``b / M`` with ``M`` the
  power of two nearest the mass, so no weight, plan entry or error is
  denormal or overflows because of the scale alone (``1e-300`` to
  ``1e300``, denormal totals included). Scaling by a power of two is exact
  in floating point, and the entropic problem transforms in closed form:
  for ``a = M a1``, ``b = M b1`` the plan is ``P = M P1``, the potentials
  are ``f = f1 + h``, ``g = g1 + h`` with ``h = reg log(M) / 2`` (any split
  of ``reg log M`` between them gives the same plan; this one is
  symmetric), the cost is ``M cost1`` and the dual value is
  ``M D1 + reg log(M) mass``. The marginal error of the returned plan is
  measured on it in the caller's units; if its entries underflow (weights
  so small that the plan has no float64 representation), that error is
  large and ``converged`` is False.
- **Stall rule.** A ``tol`` below what round-off allows cannot be met; the
  :class:`~snsot.solvers._common.Recorder` stops the solve when the
  marginal error has made no new low (by 1%) for :data:`STALL_WINDOW`
  Sinkhorn-equivalent iterations (a Newton step counts as
  :data:`NEWTON_WEIGHT`) while its best is already below the round-off
  scale :func:`stall_floor`; the result says so, with ``converged=False``.

The recorder learns the units and the stall rule from a context variable
set here, so solvers need no extra argument (and concurrent solves in
several threads each see their own).
"""

from __future__ import annotations

import contextvars
import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ..problem import OTProblem, _trusted
from ..result import STATUS_MESSAGES, OTResult

__all__ = ["solve_scaled", "solve_weights_scaled", "stall_floor", "STALL_WINDOW", "NEWTON_WEIGHT", "Watch", "current_watch"]

#: Iterations without a new low of the marginal error, near round-off, that end a solve.
STALL_WINDOW = 100
#: A Newton step counts as this many Sinkhorn iterations in :data:`STALL_WINDOW`
#: (four steps): near round-off it costs a CG solve run to its cap (seconds
#: at n = 2000), and where Newton works it converges quadratically, so four
#: steps without progress at the round-off scale mean none will come.
NEWTON_WEIGHT = 25
#: A new low must beat the previous one by this factor to count as progress
#: (round-off noise keeps setting new lows by hair-widths).
_PROGRESS = 0.99


def stall_floor(problem: OTProblem) -> float:
    """Round-off scale of the L1 marginal error of a float64 plan: ``eps * mass * sqrt(n m)``.

    Measured floors (random point clouds, n = m = 500, reg 1e-1 to 1e-3) lie
    at 1e-16 to 2e-15 times the mass, 100x below this; it is a bound under
    which "no progress" means "round-off", not a prediction of the floor.
    """
    n, m = problem.shape
    return float(np.finfo(np.float64).eps * problem.mass * math.sqrt(n * m))


@dataclass(frozen=True)
class Watch:
    """What the :class:`~snsot.solvers._common.Recorder` of one solve needs from :func:`snsot.solve`.

    ``exponent`` ``e``: the solver sees weights divided by ``2**e``; recorded
    errors and objectives are mapped back (``mass`` is the caller's total).
    ``floor``: the stall rule's round-off scale in the solver's units, or
    None to never stop on a stall.
    """

    exponent: int = 0
    mass: float = 1.0
    floor: float | None = None
    reg: float = float("nan")  # the problem's; for iterates whose solver did not say theirs

    def to_caller(self, error, objective, reg):
        """Marginal errors and dual values (at regularisation ``reg``) in the caller's units (floats or arrays)."""
        if self.exponent == 0:
            return error, objective
        e = self.exponent
        reg = np.where(np.isnan(reg), self.reg, reg)
        return np.ldexp(error, e), np.ldexp(objective, e) + reg * e * math.log(2.0) * self.mass


_WATCH: contextvars.ContextVar[Watch | None] = contextvars.ContextVar("snsot_watch", default=None)


def current_watch() -> Watch | None:
    """The :class:`Watch` of the solve running in this context (None outside :func:`snsot.solve`)."""
    return _WATCH.get()


@contextmanager
def _watching(watch: Watch):
    token = _WATCH.set(watch)
    try:
        yield
    finally:
        _WATCH.reset(token)


def mass_exponent(mass: float) -> int:
    """``e`` with ``2**e`` the power of two nearest ``mass`` (in log scale); 0 for masses in [0.71, 1.41)."""
    return int(np.rint(np.log2(mass)))


def solve_scaled(solver, problem: OTProblem, *, tol: float, stop_at_floor: bool = True, init=None,
                 **kwargs) -> OTResult:
    """``solver(problem, tol=..., init=..., **kwargs)`` at unit mass, with ``tol`` relative; see the module docstring."""
    mass = problem.mass
    # Unbalanced OT is not invariant to scaling a and b (the entropy adds reg log(2^e) sum(P)), and
    # _trusted below would drop reg_m: solve it as given.
    e = mass_exponent(mass) if problem.balanced else 0
    if e != 0:
        scaled = _trusted(problem.C, np.ldexp(problem.a, -e), np.ldexp(problem.b, -e), problem.reg)
        if "cost_range" in problem.__dict__:
            scaled.__dict__["cost_range"] = problem.cost_range
        if init is not None:
            h = 0.5 * problem.reg * e * math.log(2.0)
            init = (init[0] - h, init[1] - h)
    else:
        scaled = problem
    watch = Watch(exponent=e, mass=mass, floor=stall_floor(scaled) if stop_at_floor else None, reg=problem.reg)
    with _watching(watch):
        res = solver(scaled, tol=tol * scaled.mass, init=init, **kwargs)
    res.tol = tol
    if e != 0:
        _to_caller_units(res, problem, e)
    return res


def solve_weights_scaled(solve_unit, a, b, *, reg: float, tol: float, shape, stop_at_floor: bool = True,
                         init=None) -> OTResult:
    """:func:`solve_scaled` for problems without a dense cost (point clouds, ``scipy.sparse`` costs).

    ``solve_unit(a1, b1, init1)`` solves with the weights divided by ``2**e``
    (``e`` from :func:`mass_exponent`) and ``tol`` relative to their mass, as
    :func:`snsot.solve` defines it; it runs under the same :class:`Watch`, so
    the stall rule and the caller's units in the history and the callback
    are those of a dense solve. The result is mapped back to the caller's
    weights (plan, potentials, cost, dual value, marginal error) and
    ``converged`` judged against ``tol`` times the caller's mass.
    """
    from types import SimpleNamespace

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    mass = float(a.sum())
    e = mass_exponent(mass)
    a1, b1 = np.ldexp(a, -e), np.ldexp(b, -e)
    if init is not None and e != 0:
        h = 0.5 * reg * e * math.log(2.0)
        init = (init[0] - h, init[1] - h)
    n, m = shape
    floor = float(np.finfo(np.float64).eps * a1.sum() * math.sqrt(n * m)) if stop_at_floor else None
    with _watching(Watch(exponent=e, mass=mass, floor=floor, reg=reg)):
        res = solve_unit(a1, b1, init)
    res.tol = tol
    if e != 0:
        _to_caller_units(res, SimpleNamespace(a=a, b=b, reg=reg, mass=mass), e)
    return res


def _to_caller_units(res: OTResult, problem: OTProblem, e: int) -> None:
    """Map a unit-mass result back to weights ``2**e`` times larger (in place)."""
    plan = res.plan
    if not isinstance(plan, np.ndarray):  # a scipy.sparse plan (CSR)
        plan = plan.copy()
        np.ldexp(plan.data, e, out=plan.data)
        row, col = np.asarray(plan.sum(axis=1)).ravel(), np.asarray(plan.sum(axis=0)).ravel()
    else:
        plan = np.ldexp(plan, e, out=plan if plan.dtype == np.float64 else None)
        row, col = plan.sum(axis=1), plan.sum(axis=0)
    h = 0.5 * problem.reg * e * math.log(2.0)
    f, g = res.potentials
    res.plan, res.potentials = plan, (f + h, g + h)
    res.cost = math.ldexp(res.cost, e)
    res.objective = math.ldexp(res.objective, e) + problem.reg * e * math.log(2.0) * problem.mass
    # 2**e times the unit-mass error (which may include a bound for mass
    # outside a sparse plan's support), unless entries under- or overflowed
    # on the way back: then the error measured on the plan returned is larger.
    measured = float(np.abs(row - problem.a).sum() + np.abs(col - problem.b).sum())
    err = max(math.ldexp(res.marginal_error, e), measured) if np.isfinite(measured) else measured
    res.marginal_error = err
    was_converged = res.converged
    res.converged = bool(np.isfinite(err) and err < res.tol * problem.mass)
    if was_converged and not res.converged:
        res.status = "underflow"
        res.message = f"{STATUS_MESSAGES['underflow']} ({problem.mass:.3g}): the returned plan misses tol"
