"""A stored plan that represents nearby plans by diagonal scaling.

Every iteration of Sinkhorn or SNS needs sums of the plan
``P(f, g)_ij = exp((f_i + g_j - C_ij) / reg)``. Computing them from ``C``
costs one exponential per entry (about six reads of ``C`` on a 2-core AVX2
machine). But ``P(f, g) = diag(u) P(f0, g0) diag(v)`` with
``u = exp((f - f0)/reg)`` and ``v = exp((g - g0)/reg)``: with the plan ``B``
at a base point ``(f0, g0)`` stored, a point nearby costs one read of ``B``
and two multiplications per entry. This is the absorption scheme of
stabilised scaling algorithms (Schmitzer, SIAM J. Sci. Comput. 2019): the
potentials stay in the log domain, and the base is moved ("rebased", one
exponential pass) whenever the scalings would leave a safe range.

Exactness: the base is used only while ``(max|f - f0 - c| + max|g - g0 + c|) / reg
<= BASE_DRIFT`` (100), with the constant ``c`` (which leaves every ``f_i + g_j``
unchanged) centring the range of ``f - f0``, so no product overflows or becomes denormal, and base
entries stored as 0 (those below ``P_FLOOR = 1e-250``) stand for less than
``3e-207`` of mass each. Callers also check that every row and column sum they
divide by is a comfortably normal number, and fall back to the log-domain
kernels when one is not.
"""

from __future__ import annotations

import numpy as np

from .. import _kernels as K
from ..problem import OTProblem


class PlanBase:
    """The plan ``B`` stored at a base point ``(f0, g0)`` of one problem."""

    def __init__(self, problem: OTProblem):
        self.problem = problem
        self.B: np.ndarray | None = None
        self.f0 = self.g0 = None
        #: The constant of the last :meth:`scalings` (units of reg): its ``u`` is
        #: ``exp((f - f0)/reg - shift)`` and its ``v`` is ``exp((g - g0)/reg + shift)``.
        self.shift = 0.0

    def attach(self, problem: OTProblem) -> None:
        """Serve ``problem`` (same shape; e.g. another reg of epsilon-scaling): the base is dropped."""
        if problem is not self.problem:
            self.problem = problem
            self.f0 = self.g0 = None

    def scalings(self, f, g):
        """``(u, v)`` with ``P(f, g) = diag(u) B diag(v)``, or None when ``(f, g)`` is too far from the base.

        ``u`` and ``v`` carry opposite constant factors ``exp(-+shift)`` (see
        :attr:`shift`), which keep both in range and cancel in the plan.
        """
        if self.f0 is None:
            return None
        inv_reg = 1.0 / self.problem.reg
        x = (f - self.f0) * inv_reg
        y = (g - self.g0) * inv_reg
        # The plan depends on f and g only through f_i + g_j: moving a constant
        # from x to y changes no product u_i v_j. Centring x's range minimises
        # the drift (Newton steps move along (1, -1) freely, which would
        # otherwise force a rebase, an exponential pass, at nearly every step).
        c = 0.5 * (x.max() + x.min())
        x -= c
        y += c
        drift = np.abs(x).max() + np.abs(y).max()
        if not drift <= K.BASE_DRIFT:  # also catches NaN
            return None
        self.shift = float(c)
        return np.exp(x), np.exp(y)

    def scalings_at(self, f, g):
        """:meth:`scalings` at ``(f, g)``, first moving the base there (:meth:`rebase`) if it is too far.

        None only when the plan at ``(f, g)`` itself is not finite.
        """
        sc = self.scalings(f, g)
        if sc is None:
            self.rebase(f, g)
            sc = self.scalings(f, g)
        return sc

    def rebase(self, f, g, tau=np.inf, cap=0, n_chunks=1, row_sum=None, counts=None, idx=None, val=None):
        """Store the plan at ``(f, g)`` (one exponential pass); returns its ``(row_sum, col_sum)``.

        The optional arguments are those of :func:`snsot._kernels.plan_pass`,
        whose candidates for the sparse Hessian come out of the same pass.
        """
        p = self.problem
        n, m = p.shape
        if self.B is None:
            self.B = np.empty((n, m))
        if row_sum is None:
            row_sum = np.empty(n)
            counts = np.zeros(n, dtype=np.int64)
            idx = np.empty((n, 0), dtype=np.int32)
            val = np.empty((n, 0))
        col = K.plan_pass(p.C, f, g, p.reg, tau, cap, n_chunks, row_sum, counts, idx, val, self.B)
        if np.isfinite(row_sum).all() and np.isfinite(col).all():
            self.f0, self.g0 = np.array(f, dtype=np.float64), np.array(g, dtype=np.float64)
        else:
            self.f0 = self.g0 = None
        return row_sum, col

    def take(self) -> np.ndarray | None:
        """Hand over the buffer (e.g. to hold the final plan); the base is dropped."""
        B, self.B = self.B, None
        self.f0 = self.g0 = None
        return B
