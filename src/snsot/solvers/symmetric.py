r"""Self-transport ``OT(a, a)`` on a symmetric cost, by Newton on the symmetric dual.

The debiasing terms of the Sinkhorn divergence transport a measure onto
itself. Their optimal potentials are equal, ``f = g``, and the general
solver is at its worst there: at small ``reg`` the plan is nearly
``diag(a)``, so every direction ``(x, -x)`` is almost a null direction of
the Hessian ``[[diag(a), P], [P^T, diag(a)]]`` (SNS took 750 to 1,100
Newton steps on 1,000 points at ``reg = 1e-4``). Restricted to ``f = g`` the
dual

.. math::
    D(f) = 2 \langle a, f\rangle - \varepsilon \sum_{ij} \exp((f_i + f_j - C_{ij})/\varepsilon)

has gradient ``2 (a - r)`` (``r = P 1``) and Hessian ``-(2 / reg) (diag(r)
+ P)``, and ``x^T (diag(r) + P) x = 1/2 sum_ij P_ij (x_i + x_j)^2`` is
positive definite whenever the diagonal of ``P`` is positive (``C_ii``
finite): those near-null directions are gone, and the matrix is close to
``2 diag(a)`` exactly where the general one is singular. Jacobi-preconditioned
CG solves it in a few iterations, on the plan's entries above a tiny
threshold only (:data:`TRUNCATION`): at small ``reg`` the plan has a few
entries per row above it, so a CG step is nearly free.

The start is the small-``reg`` limit ``P_ii = a_i``, i.e. ``f_i = (C_ii +
reg log a_i) / 2``; an Armijo line search on ``D`` makes the iteration
globally convergent (``D`` is concave) and a trust region keeps each step's
change of any plan entry below ``e**30``.
"""

from __future__ import annotations

import numpy as np

from .. import _kernels as K
from ..problem import OTProblem
from ..result import STAGE_NEWTON
from . import linalg
from ._common import Recorder, finalize
from ._dense import DensePlan
from ._marginals import BalancedMarginals

__all__ = ["solve_symmetric"]

#: Plan entries below ``TRUNCATION * min(a) / n`` are left out of the Newton matrix (not of the
#: plan, its sums or the objective, which stay exact).
TRUNCATION = 1e-9


def solve_symmetric(problem: OTProblem, *, tol: float, max_iter: int = 200, callback=None):
    """Solve ``OT(a, a)`` for a problem with ``a == b`` and a symmetric cost; see the module docstring.

    Parameters
    ----------
    problem : OTProblem
        Its weights must be positive (remove empty bins first), ``b`` equal
        to ``a`` and ``C`` symmetric; this is not re-checked.
    tol : float
        Stop when the L1 marginal error ``2 ||P 1 - a||_1`` (both marginals)
        is below ``tol``.
    max_iter : int
        Cap on Newton steps.
    callback : callable, optional
        As in :func:`snsot.solve`.

    Returns
    -------
    OTResult
        With potentials ``(f, f)``; ``converged`` is False (and ``message``
        says why) when ``tol`` was not met, so the caller can fall back to
        :func:`snsot.solve`.
    """
    C, a, reg = problem.C, problem.a, problem.reg
    mass = float(a.sum())
    recorder = Recorder(callback)
    recorder.reg = reg
    f = 0.5 * (np.diagonal(C).astype(np.float64) + reg * np.log(a))
    P = np.empty(problem.shape)
    trial = np.empty(problem.shape)
    tau = TRUNCATION * float(a.min()) / len(a)

    def evaluate(f, out):
        K.dense_plan(C, f, f, reg, out)
        r = out.sum(axis=1)
        return r, 2.0 * float(a @ f) - reg * float(r.sum())

    r, value = evaluate(f, P)
    status, n_newton = "max_iter", 0
    while True:
        err = 2.0 * float(np.abs(r - a).sum())
        if not np.isfinite(err):
            status = "nonfinite"
            break
        if recorder(err, value, STAGE_NEWTON):
            status = "callback"
            break
        if err < tol:
            status = "success"
            break
        if n_newton >= max_iter:
            break
        grad = a - r  # half the gradient of D
        # Forcing term as in SNS: inexact early, tighter near the optimum.
        rtol = min(0.1, np.sqrt(err / mass), 0.3 * tol / err if err > tol else 1.0)
        # The Newton matrix on the plan's entries >= tau only: a CG step then costs O(nnz), and
        # there are no BLAS threads (a dense gemv here was 10-20x slower with OpenBLAS's threads
        # contending with numba's and torch's on a loaded 2-core machine). diag(r) + S stays
        # positive definite (r >= the row sums of S >= 0, diagonal of S positive), and the
        # dropped mass per row is below n * tau = TRUNCATION * min(a), so the direction's
        # relative error is at most about that: quadratic convergence down to that level.
        S = K.dense_threshold_csr(P, tau)
        x, _, res = linalg.pcg(lambda v: r * v + K.csr_matvec(*S, v), reg * grad, 1.0 / (r + np.diagonal(P)),
                                rtol, max(50, len(a)), None)
        slope = 2.0 * float(grad @ x)
        if not (np.isfinite(res) and slope > 0):
            status = "stalled"
            break
        largest = float(np.abs(x).max())
        step = min(1.0, 15.0 * reg / largest) if largest > 0 else 1.0
        for _ in range(40):
            r_new, value_new = evaluate(f + step * x, trial)
            if np.isfinite(value_new) and value_new >= value + 1e-4 * step * slope:
                break
            # Near the optimum the gain is below the round-off of D (about 1e-16 |D|):
            # then a step that does not lose more than that and lowers the error is taken.
            if (np.isfinite(value_new) and value_new >= value - 64 * np.finfo(float).eps * abs(value)
                    and np.abs(r_new - a).sum() < 0.5 * err):
                break
            step *= 0.5
        else:
            status = "stalled"
            break
        f = f + step * x
        P, trial = trial, P
        r, value = r_new, value_new
        n_newton += 1
    del P, trial  # the final plan is recomputed from f by the shared finaliser
    return finalize(DensePlan(problem), BalancedMarginals(problem), f, f.copy(), method="symmetric-newton", tol=tol,
                    status=status, recorder=recorder, n_sinkhorn=0, n_newton=n_newton)
