"""What the solver loops ask of the marginal penalty.

The dual of entropic OT with exact (balanced) marginals is

    D(f, g) = <a, f> + <b, g> - reg * sum_ij P(f, g)_ij,

whose gradient is ``(a - P 1, b - P^T 1)`` and whose Hessian has the diagonal
blocks ``diag(P 1)``, ``diag(P^T 1)``. A relaxed penalty (e.g. KL, for
unbalanced transport) changes the linear terms, the diagonal blocks and
the Sinkhorn update's exponent, nothing else: it is a second
implementation of the few methods below, not a branch in the loops.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BalancedMarginals"]

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
    """

    row_exponent = col_exponent = 1.0

    def __init__(self, problem):
        self.a, self.b = problem.a, problem.b
        self.log_a = np.log(problem.a)
        self.log_b = np.log(problem.b)
        self.mass = problem.mass
        self.reg = problem.reg

    def dual(self, f, g, plan_total: float) -> float:
        """``D(f, g)`` given ``sum(P(f, g))``."""
        return float(self.a @ f + self.b @ g - self.reg * plan_total)

    def dual_with_exact_cols(self, f, g) -> float:
        """``D(f, g)`` at a Sinkhorn iterate, whose columns are exact: ``sum(P) = sum(b)``."""
        return self.dual(f, g, self.mass)

    def row_error(self, f, row) -> float:
        """``||P 1 - a||_1`` from the rows alone (a Sinkhorn iterate's columns are exact)."""
        return float(np.abs(row - self.a).sum())

    def gradient(self, row, col):
        """``(dD/df, dD/dg) = (a - P 1, b - P^T 1)``."""
        return self.a - row, self.b - col

    def error(self, row, col) -> float:
        """L1 marginal error ``||P 1 - a||_1 + ||P^T 1 - b||_1`` (the stopping measure)."""
        return float(np.abs(self.a - row).sum() + np.abs(self.b - col).sum())

    def hessian_diagonal(self, row, col, delta: float):
        """Diagonal blocks of ``-reg`` times the Hessian, shifted by the relative ``delta``: ``((1+delta) P 1, (1+delta) P^T 1)``."""
        return row * (1.0 + delta), col * (1.0 + delta)

    def rounding(self, f, g, plan_total: float) -> float:
        """Size of floating-point noise in :meth:`dual` at this point."""
        return _ROUNDING * float(np.abs(self.a @ f) + np.abs(self.b @ g) + self.reg * plan_total)
