"""The plan on a sparse support: the second implementation of :class:`~snsot.solvers._plan.Plan`.

Every verb the Sinkhorn and SNS loops ask for is one pass over the support's
CSR arrays (:mod:`snsot._sparse_kernels`): memory and work O(nnz), never
O(n m). Column sums and the column half-step run on the transposed support
(built once, :meth:`snsot.support.Support.transpose`).

As the dense plan does (:mod:`snsot.solvers._dense`, the absorption scheme
of stabilised scaling), the plan keeps its values ``B = P(f0, g0)`` at a
base point and represents a nearby ``P(f, g) = diag(u) B diag(v)``,
``u = exp((f - f0)/reg - c)``, ``v = exp((g - g0)/reg + c)``: a Sinkhorn
iteration is then two passes of multiplications over the support
(:func:`~snsot._sparse_kernels.csr_scaled_rows`, then
:func:`~snsot._sparse_kernels.csr_gather` on the transpose) instead of two
log-sum-exp passes with an exponential per entry, and a Newton trial point
one multiplication per entry (:func:`~snsot._sparse_kernels.csr_scaled_plan`).
The base moves (one exponential pass) when the drift leaves
:data:`snsot._kernels.BASE_DRIFT`, with the same exactness argument as the
dense plan: base entries below :data:`snsot._kernels.P_FLOOR` are stored as
0, every product stays a normal number, and a step whose sums are not
comfortably normal is redone in the log domain
(:func:`~snsot._sparse_kernels.csr_lse_update`). The plan at each point is
kept per :class:`_SparsePoint` (one value per support entry), so the Newton
matrix's off-diagonal block is a threshold of those values; the whole
support's plan is the "dense" Hessian.

Mass outside the support: for a user-given sparse cost there is none; for a
truncated point-cloud support, :meth:`final` reports the certified bound of
:meth:`snsot.support.Support.outside_mass` at the final potentials.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .. import _kernels as K
from .. import _sparse_kernels as SK
from ._plan import WHOLE_PLAN, FinalPlan, Plan, PlanPoint, SinkhornStep, StoredBase
from .linalg import CsrOffDiagonal

__all__ = ["SparsePlan"]

#: Sums a scaled Sinkhorn step divides by must be at least this (and the new
#: scalings at most its inverse), else the step is redone in the log domain
#: (as :data:`snsot.solvers._dense._SAFE`).
_SAFE = 1e-100


class _SparsePoint(PlanPoint):
    """A :class:`PlanPoint` holding the plan's value on every support entry (``P``)."""

    def __init__(self, n, m, quota, nnz):
        super().__init__(n, m, quota)
        self.P = np.empty(nnz)
        self.above = np.zeros(0, dtype=np.int64)  # per-row count of entries >= tau

    @property
    def fullest_row(self) -> int:
        return int(self.above.max()) if self.above.size else 0


class SparsePlan(StoredBase, Plan):
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
        self.B: np.ndarray | None = None  # plan values at the base point (f0, g0)
        self.BT: np.ndarray | None = None  # the same in the transposed support's (column) order
        self.f0 = self.g0 = None
        self.shift = 0.0  # see StoredBase.shift

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
        if problem is not self.problem:  # e.g. another reg: the base's values mean another plan
            self.problem = problem
            self.f0 = self.g0 = None

    def sinkhorn_cols(self, f, marginals):
        g = np.empty(self.shape[1])
        SK.csr_lse_update(self.t_indptr, self.t_rows, self.t_cost, f, marginals.log_b, self.problem.reg, g)
        if marginals.col_exponent != 1.0:
            g *= marginals.col_exponent
        return g

    def sinkhorn_step(self, f, g, marginals) -> SinkhornStep:
        """Two passes of multiplications over the support when ``(f, g)`` is near the base; else two log-domain passes.

        With ``P(f, g) = diag(u) B diag(v)`` and ``s = B v``, the rows are
        ``u s``, the row update is ``u_new = a / s`` and the column update
        ``v_new = b / (B^T u_new)`` (exact marginals only; a relaxed penalty,
        ``row_exponent != 1``, takes the log-domain step).
        """
        reg = self.problem.reg
        sc = self.scalings_at(f, g) if marginals.row_exponent == 1.0 and marginals.col_exponent == 1.0 else None
        if sc is not None:
            u, v = sc
            s = np.empty(self.shape[0])
            SK.csr_scaled_rows(self.indptr, self.indices, self.B, v, s)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                u_new = marginals.a / s
            col = np.empty(self.shape[1])
            SK.csr_gather(self.t_indptr, self.t_rows, self.BT, u_new, col)
            if s.min() >= _SAFE and u_new.max() <= 1.0 / _SAFE and col.min() >= _SAFE and np.isfinite(col).all():
                f0, g0, shift, log_b = self.f0, self.g0, self.shift, marginals.log_b

                def advance():
                    # u_new and col carry the factors exp(-shift) of the scalings' convention
                    return f0 + reg * (np.log(u_new) + shift), g0 + reg * (log_b - np.log(col) - shift)

                return SinkhornStep(marginals.row_error(f, u * s), advance)
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
        """The plan at ``(f, g)`` from the base (one multiplication per entry), moving the base first if it is far.

        ``pinned``: the base must not move (a Sinkhorn step is pending on
        it); None when ``(f, g)`` is too far from it.
        """
        n, m = self.shape
        sc = self.scalings(f, g)
        if sc is None:
            if pinned:
                return None
            sc = self.scalings_at(f, g)
        if sc is None:  # the plan at (f, g) is not finite: a rejected trial
            point.row[:] = np.inf
            point.col = np.full(m, np.inf)
            point.count = -1
        else:
            above = np.empty(n, dtype=np.int64)
            SK.csr_scaled_plan(self.indptr, self.indices, self.B, sc[0], sc[1], tau, point.P, point.row, above)
            # columns of diag(u) B diag(v): v times B^T u, read from the base in column order
            point.col = np.empty(m)
            SK.csr_gather(self.t_indptr, self.t_rows, self.BT, sc[0], point.col)
            point.col *= sc[1]
            if point.quota == WHOLE_PLAN:
                point.count = int(above.sum())
            elif point.quota > 0:
                point.above = above
        point.f, point.g = f, g
        point.total = float(point.row.sum())
        return point

    def hessian_block(self, point, tau):
        if not np.isfinite(point.total):
            return None
        # "auto": the two-level CG on large blocks, whose Jacobi-CG iterations
        # grow with n and 1/reg on a point cloud's transport graph (linalg).
        if point.quota == WHOLE_PLAN:
            return CsrOffDiagonal(self.indptr, self.indices, point.P, self.shape, "auto")
        indptr, indices, data = SK.csr_threshold(self.indptr, self.indices, point.P, tau)
        return CsrOffDiagonal(indptr, indices, data, self.shape, "auto")

    def final(self, f, g) -> FinalPlan:
        """The plan at ``(f, g)`` as scipy CSR, its sums, cost and the certified outside-mass bound."""
        n, m = self.shape
        P = np.empty(self.support.nnz)
        row = np.empty(n)
        SK.csr_plan(self.indptr, self.indices, self.cost, f, g, self.problem.reg, P, row)
        col = SK.csr_col_sums(self.indices, P, m)
        plan = sp.csr_matrix((P, self.indices, self.indptr), shape=(n, m))
        self.B = self.BT = None  # the base is given up (as DensePlan does): its memory is the final plan's
        self.f0 = self.g0 = None
        return FinalPlan(plan=plan, row_sum=row, col_sum=col, cost=float(P @ self.cost),
                         outside_mass=self.support.outside_mass(f, g))

    # -- the stored base -----------------------------------------------------
    def rebase(self, f, g) -> None:
        """Store the plan values at ``(f, g)`` (one exponential pass) as the new base."""
        n = self.shape[0]
        if self.B is None:
            self.B = np.empty(self.support.nnz)
        row = np.empty(n)
        SK.csr_plan(self.indptr, self.indices, self.cost, f, g, self.problem.reg, self.B, row)
        # No denormals in products with the scalings (see snsot._kernels.P_FLOOR).
        self.B[self.B < K.P_FLOOR] = 0.0
        if self.BT is None:
            self.BT = np.empty(self.support.nnz)
        np.take(self.B, self.t_pos, out=self.BT)
        if np.isfinite(row).all() and np.isfinite(self.B).all():
            self.f0, self.g0 = np.array(f, dtype=np.float64), np.array(g, dtype=np.float64)
        else:
            self.f0 = self.g0 = None
