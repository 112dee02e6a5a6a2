"""What the solver loops ask of the marginal penalty.

The dual of entropic OT with exact (balanced) marginals is

    D(f, g) = <a, f> + <b, g> - reg * sum_ij P(f, g)_ij,

whose gradient is ``(a - P 1, b - P^T 1)`` and whose Hessian has the diagonal
blocks ``diag(P 1)``, ``diag(P^T 1)``. A relaxed penalty (e.g. KL, for
unbalanced transport) changes the linear terms, the diagonal blocks and
the Sinkhorn update's exponent, nothing else: it is a second
implementation of the few methods below, not a branch in the loops
(:class:`~snsot.solvers._kl_marginals.KLMarginals`; :func:`marginals_for`
picks one from the problem's ``reg_m``).

Every method takes the point ``(f, g)`` it is asked about, even where the
balanced answer does not depend on it: a relaxed penalty's targets do.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BalancedMarginals", "marginals_for"]

_ROUNDING = 64 * np.finfo(np.float64).eps


class BalancedMarginals:
    """Exact marginal constraints ``P 1 = a``, ``P^T 1 = b`` of one problem.

    Attributes
    ----------
    a, b : ndarray
        The weights (all positive: zero-mass bins are removed before a solve).
    log_a, log_b : ndarray
        Their logarithms (the Sinkhorn updates' targets).
    mass : float
        Total mass, the scale of marginal errors.
    reg : float
        Regularisation of the dual.
    row_exponent, col_exponent : float
        Exponent of the Sinkhorn update ``f <- exponent * (reg log a - softmin)``:
        1 for exact marginals (a relaxed penalty gives a value below 1).
    fixed_row_target : bool
        True: the row target is ``a`` itself, so a plan's fused Sinkhorn pass
        may return ``||P 1 - a||_1`` instead of asking :meth:`row_error`
        (a relaxed penalty's target depends on ``f``: False there).
    """

    row_exponent = col_exponent = 1.0
    #: :meth:`row_error` is ``||row - a||_1`` whatever ``f``: a plan may measure it in its own pass.
    fixed_row_target = True

    def __init__(self, problem):
        self.a, self.b = problem.a, problem.b
        self.log_a = np.log(problem.a)
        self.log_b = np.log(problem.b)
        self.mass = problem.mass
        self.reg = problem.reg

    def dual(self, f, g, plan_total: float) -> float:
        """``D(f, g)`` given ``sum(P(f, g))``."""
        # np.dot, not @: the same BLAS ddot (bit-identical) for a third less call overhead, once per iteration
        return float(np.dot(self.a, f) + np.dot(self.b, g) - self.reg * plan_total)

    def dual_with_exact_cols(self, f, g) -> float:
        """``D(f, g)`` at a Sinkhorn iterate, whose columns are exact: ``sum(P) = sum(b)``."""
        return self.dual(f, g, self.mass)

    def row_error(self, f, row) -> float:
        """``||P 1 - a||_1`` from the rows alone (a Sinkhorn iterate's columns are exact)."""
        return float(np.abs(row - self.a).sum())

    def sinkhorn_row_error(self, f, f_full) -> float:
        """:meth:`row_error` at ``f`` when the rows are ``a exp((f - f_full) / reg)``.

        ``f_full`` is the undamped row update (``reg log a - softmin_j(C_ij -
        g_j)``); written with ``expm1`` this is exact where ``f`` is close to it,
        unlike summing the rows and subtracting ``a``.
        """
        return float(np.abs(self.a * np.expm1((f - f_full) / self.reg)).sum())

    def gradient(self, f, g, row, col):
        """``(dD/df, dD/dg) = (a - P 1, b - P^T 1)``."""
        return self.a - row, self.b - col

    def error(self, f, g, row, col) -> float:
        """L1 marginal error ``||P 1 - a||_1 + ||P^T 1 - b||_1`` (the stopping measure)."""
        return float(np.abs(self.a - row).sum() + np.abs(self.b - col).sum())

    def hessian_diagonal(self, f, g, row, col, delta: float):
        """Diagonal blocks of ``-reg`` times the Hessian, shifted by the relative ``delta``: ``((1+delta) P 1, (1+delta) P^T 1)``."""
        return row * (1.0 + delta), col * (1.0 + delta)

    def rounding(self, f, g, plan_total: float) -> float:
        """Size of floating-point noise in :meth:`dual` at this point."""
        return _ROUNDING * float(np.abs(self.a @ f) + np.abs(self.b @ g) + self.reg * plan_total)


def marginals_for(problem) -> BalancedMarginals:
    """The marginal penalty of ``problem``: exact constraints, or KL penalties when its ``reg_m`` is finite."""
    if problem.balanced:
        return BalancedMarginals(problem)
    from ._kl_marginals import KLMarginals

    return KLMarginals(problem)
