"""The plan on a sparse support: the second implementation of :class:`~snsot.solvers._plan.Plan`.

Every verb the Sinkhorn and SNS loops ask for is one pass over the support's
CSR arrays (:mod:`snsot._sparse_kernels`): memory and work O(nnz), never
O(n m). The column half-step is the row kernel run on the transposed support
(built once). The plan at a point is stored per :class:`_SparsePoint` (one
value per support entry), so the Newton matrix's off-diagonal block is a
threshold of those values; the whole support's plan is the "dense" Hessian.

Mass outside the support: for a user-given sparse cost there is none; for a
truncated point-cloud support, :meth:`final` reports the certified bound of
:meth:`snsot.support.Support.outside_mass` at the final potentials.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .. import _sparse_kernels as SK
from ._plan import WHOLE_PLAN, FinalPlan, Plan, PlanPoint, SinkhornStep
from .linalg import CsrOffDiagonal

__all__ = ["SparsePlan"]


class _SparsePoint(PlanPoint):
    """A :class:`PlanPoint` holding the plan's value on every support entry (``P``)."""

    def __init__(self, n, m, quota, nnz):
        super().__init__(n, m, quota)
        self.P = np.empty(nnz)
        self.above = np.zeros(0, dtype=np.int64)  # per-row count of entries >= tau

    @property
    def fullest_row(self) -> int:
        return int(self.above.max()) if self.above.size else 0


class SparsePlan(Plan):
    """The plan ``P(f, g)`` on the support of a :class:`~snsot.support.SupportProblem`.

    Parameters
    ----------
    problem : SupportProblem
        Its ``support`` gives the CSR pairs and costs; weights all positive.
    """

    def __init__(self, problem):
        self.problem = problem
        sup = problem.support
        self.support = sup
        self.indptr, self.indices, self.cost = sup.indptr, sup.indices, sup.cost
        self.t_indptr, self.t_rows, self.t_pos, self.t_cost = sup.transpose()
        row_len = np.diff(self.indptr)
        self._max_row = int(row_len.max()) if row_len.size else 0

    # -- the interface -------------------------------------------------------
    @property
    def shape(self):
        return self.support.shape

    @property
    def support_size(self) -> int:
        return max(self.support.nnz, 1)

    @property
    def max_row_length(self) -> int:
        return max(self._max_row, 1)

    def attach(self, problem) -> None:
        if problem.support is not self.support:
            raise ValueError("SparsePlan.attach: the problem is on another support; make a new plan")
        self.problem = problem

    def sinkhorn_cols(self, f, marginals):
        g = np.empty(self.shape[1])
        SK.csr_lse_update(self.t_indptr, self.t_rows, self.t_cost, f, marginals.log_b, self.problem.reg, g)
        if marginals.col_exponent != 1.0:
            g *= marginals.col_exponent
        return g

    def sinkhorn_step(self, f, g, marginals) -> SinkhornStep:
        reg = self.problem.reg
        f_full = np.empty(self.shape[0])  # the balanced update: rows of P(f_full, g) equal a
        SK.csr_lse_update(self.indptr, self.indices, self.cost, g, marginals.log_a, reg, f_full)
        # Rows of P(f, g) are a_i exp((f_i - f_full_i)/reg): the row error without a plan pass.
        with np.errstate(over="ignore", invalid="ignore"):
            row = marginals.a * np.exp((f - f_full) / reg)
            err = float(marginals.row_error(f, row))
        if not np.isfinite(err):
            err = np.inf
        f_new = f_full if marginals.row_exponent == 1.0 else marginals.row_exponent * f_full
        return SinkhornStep(err, lambda: (f_new, self.sinkhorn_cols(f_new, marginals)))

    def new_point(self, quota: int) -> PlanPoint:
        n, m = self.shape
        return _SparsePoint(n, m, quota, self.support.nnz)

    def evaluate(self, point, f, g, tau, pinned=False):
        # Nothing is cached between calls, so pinned points never move any state.
        n, m = self.shape
        SK.csr_plan(self.indptr, self.indices, self.cost, f, g, self.problem.reg, point.P, point.row)
        point.col = SK.csr_col_sums(self.indices, point.P, m)
        if not (np.isfinite(point.row).all() and np.isfinite(point.col).all()):
            point.row[:] = np.inf
            point.col = np.full(m, np.inf)
            point.count = -1
        elif point.quota == WHOLE_PLAN:
            point.count = int(np.count_nonzero(point.P >= tau))
        elif point.quota > 0:
            hit = (point.P >= tau).astype(np.int64)
            point.above = np.add.reduceat(hit, self.indptr[:-1]) if hit.size else np.zeros(n, np.int64)
            # reduceat repeats the next value for an empty row: zero those rows
            point.above[np.diff(self.indptr) == 0] = 0
        point.f, point.g = f, g
        point.total = float(point.row.sum())
        return point

    def hessian_block(self, point, tau):
        if not np.isfinite(point.total):
            return None
        if point.quota == WHOLE_PLAN:
            return CsrOffDiagonal(self.indptr, self.indices, point.P, self.shape)
        indptr, indices, data = SK.csr_threshold(self.indptr, self.indices, point.P, tau)
        return CsrOffDiagonal(indptr, indices, data, self.shape)

    def final(self, f, g) -> FinalPlan:
        """The plan at ``(f, g)`` as scipy CSR, its sums, cost and the certified outside-mass bound."""
        n, m = self.shape
        P = np.empty(self.support.nnz)
        row = np.empty(n)
        SK.csr_plan(self.indptr, self.indices, self.cost, f, g, self.problem.reg, P, row)
        col = SK.csr_col_sums(self.indices, P, m)
        plan = sp.csr_matrix((P, self.indices, self.indptr), shape=(n, m))
        return FinalPlan(plan=plan, row_sum=row, col_sum=col, cost=float(P @ self.cost),
                         outside_mass=self.support.outside_mass(f, g))
