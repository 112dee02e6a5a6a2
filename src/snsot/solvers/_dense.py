"""The dense plan: every entry of ``P(f, g)``, through a stored plan that represents nearby plans by diagonal scaling.

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
from ._plan import WHOLE_PLAN, FinalPlan, Plan, PlanPoint, SinkhornStep, StoredBase
from .linalg import CsrOffDiagonal, OffDiagonal, SchurComplement

__all__ = ["DensePlan", "DenseOffDiagonal"]

#: Row and column sums a scaled Sinkhorn step divides by must be at least this
#: (and the new scalings at most its inverse); otherwise the step is redone in
#: the log domain. See the module docstring for why this keeps it exact.
_SAFE = 1e-100


class _DensePoint(PlanPoint):
    """A :class:`PlanPoint` with the per-row candidate buffers of the sparse Hessian (``quota > 0``)."""

    def __init__(self, n, m, quota):
        super().__init__(n, m, quota)
        cap = max(quota, 0)
        self.counts = np.zeros(n, dtype=np.int64)
        self.idx = np.empty((n, cap), dtype=np.int32)
        self.val = np.empty((n, cap))

    @property
    def fullest_row(self) -> int:
        return int(self.counts.max()) if self.counts.size else 0


class DensePlan(StoredBase, Plan):
    """Every entry of the plan of one problem, read through a stored base plan ``B = P(f0, g0)``.

    Implements :class:`~snsot.solvers._plan.Plan` with the kernels of
    :mod:`snsot._kernels`: a point near the base costs one read of ``B``
    (:func:`~snsot._kernels.scaled_pass`, :func:`~snsot._kernels.base_sinkhorn_step`, one nogil call per
    Sinkhorn iteration),
    a point far from it one exponential pass over ``C`` that also moves the
    base there (:func:`~snsot._kernels.plan_pass`).
    """

    def __init__(self, problem: OTProblem):
        self.problem = problem
        self.B: np.ndarray | None = None
        self.f0 = self.g0 = None
        self.shift = 0.0  # see StoredBase.shift
        self._rows = None  # the Sinkhorn pass's row sums (a buffer; read at once)
        self.n_chunks = K.default_chunks(problem.shape[0])

    # -- the interface -------------------------------------------------------
    @property
    def shape(self):
        return self.problem.shape

    @property
    def support_size(self) -> int:
        n, m = self.problem.shape
        return n * m

    @property
    def max_row_length(self) -> int:
        return self.problem.shape[1]

    def attach(self, problem: OTProblem) -> None:
        """Serve ``problem`` (same shape; e.g. another reg of epsilon-scaling): the base is dropped."""
        if problem is not self.problem:
            self.problem = problem
            self.f0 = self.g0 = None

    def sinkhorn_cols(self, f, marginals):
        p = self.problem
        g = np.empty(p.shape[1])
        K.col_update(p.C, f, marginals.log_b, p.reg, g, self.n_chunks)
        if marginals.col_exponent != 1.0:
            g *= marginals.col_exponent
        return g

    def sinkhorn_step(self, f, g, marginals) -> SinkhornStep:
        """One read of the base when ``(f, g)`` is near it and the sums are safe; else two log-domain passes over ``C``.

        The row update is ``f_new = kappa (f + reg log(a / P(f, g) 1))`` with
        ``kappa = marginals.row_exponent`` (1 for exact marginals, below 1 for
        a relaxed penalty), likewise the column update with ``col_exponent``.
        In the base's units ``f_new`` is ``u_new = a^kappa exp((kappa - 1)
        (f0/reg + shift)) / s^kappa``, ``s = B v``: everything but ``s`` is
        folded into the numerator the fused kernel divides, so the damped
        update costs the same one read of ``B``.
        """
        p = self.problem
        status = K.STEP_FAR
        if self.f0 is not None:
            status, shift, error, f_new, g_new = self._base_step(f, g, marginals)
        if status == K.STEP_FAR:
            self.rebase(f, g)
            if self.f0 is not None:  # else the plan at (f, g) is not finite
                status, shift, error, f_new, g_new = self._base_step(f, g, marginals)
        if status != K.STEP_FAR:
            self.shift = shift
        if status == K.STEP_TAKEN:
            if not getattr(marginals, "fixed_row_target", False):  # the kernel's error is ||rows - a||_1
                error = marginals.row_error(f, self._rows)
            return SinkhornStep(error, lambda: (f_new, g_new))
        kappa = marginals.row_exponent
        f_full = np.empty(p.shape[0])  # the undamped update: rows of P(f_full, g) equal a
        K.row_update(p.C, g, marginals.log_a, p.reg, f_full)
        f_new = f_full if kappa == 1.0 else kappa * f_full
        return SinkhornStep(marginals.sinkhorn_row_error(f, f_full),
                            lambda: (f_new, self.sinkhorn_cols(f_new, marginals)))

    def _base_step(self, f, g, marginals):
        """:func:`~snsot._kernels.base_sinkhorn_step` from the stored base: ``(status, shift, row_error, f_new, g_new)``."""
        p = self.problem
        n, m = p.shape
        if self._rows is None or len(self._rows) != n:
            self._rows = np.empty(n)
        f_new, g_new = np.empty(n), np.empty(m)
        status, shift, error = K.base_sinkhorn_step(
            self.B, f, g, self.f0, self.g0, p.reg, K.BASE_DRIFT, marginals.a, marginals.log_a,
            marginals.row_exponent, marginals.log_b, marginals.col_exponent, _SAFE, self.n_chunks,
            self._rows, f_new, g_new)
        return status, shift, error, f_new, g_new

    def new_point(self, quota: int) -> PlanPoint:
        n, m = self.problem.shape
        return _DensePoint(n, m, quota)

    def evaluate(self, point, f, g, tau, pinned=False):
        if pinned and self.scalings(f, g) is None:
            return None
        if point.quota == WHOLE_PLAN or point.quota == 0:
            sc = self.scalings_at(f, g)
            if sc is None:  # the plan at (f, g) is not finite: a rejected trial
                point.row[:] = np.inf
                point.col, point.count = np.full(len(g), np.inf), -1
            else:
                point.col, point.count = K.scaled_sums(self.B, sc[0], sc[1], tau, self.n_chunks, point.row)
        else:
            sc = self.scalings(f, g)
            if sc is None:  # the rebase pass also collects the candidates
                _, point.col = self.rebase(f, g, tau, point.quota, point.row, point.counts, point.idx, point.val)
            else:
                point.col = K.scaled_pass(self.B, sc[0], sc[1], tau, point.quota, self.n_chunks,
                                          point.row, point.counts, point.idx, point.val)
        point.f, point.g = f, g
        point.total = float(point.row.sum())
        return point

    def hessian_block(self, point, tau):
        if point.quota == WHOLE_PLAN:
            sc = self.scalings_at(point.f, point.g)
            return None if sc is None else DenseOffDiagonal(self.B, sc[0], sc[1], self.n_chunks)
        indptr, indices, data = K.compact_csr(point.counts, point.idx, point.val, tau)
        return CsrOffDiagonal(indptr, indices, data, self.problem.shape)

    def final(self, f, g) -> FinalPlan:
        """The plan computed afresh from ``C`` (one exponential pass, which also sums it and its cost), in the base's buffer, which is given up."""
        p = self.problem
        P, self.B = self.B, None
        self.f0 = self.g0 = None
        if P is None or P.shape != p.shape:
            P = np.empty(p.shape)
        row_sum = np.empty(p.shape[0])
        col_sum, cost = K.dense_plan_sums(p.C, f, g, p.reg, self.n_chunks, P, row_sum)
        return FinalPlan(plan=P, row_sum=row_sum, col_sum=col_sum, cost=cost)

    # -- the stored base -----------------------------------------------------
    def rebase(self, f, g, tau=np.inf, cap=0, row_sum=None, counts=None, idx=None, val=None):
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
        col = K.plan_pass(p.C, f, g, p.reg, tau, cap, self.n_chunks, row_sum, counts, idx, val, self.B)
        if np.isfinite(row_sum).all() and np.isfinite(col).all():
            self.f0, self.g0 = np.array(f, dtype=np.float64), np.array(g, dtype=np.float64)
        else:
            self.f0 = self.g0 = None
        return row_sum, col


class DenseOffDiagonal(OffDiagonal):
    """The whole plan ``P = diag(u) B diag(v)`` as the Newton matrix's off-diagonal block.

    For wide plans (a large fraction of the entries matter, e.g. 1-D
    densities at moderate ``reg``) the exact Hessian is both cheaper and
    better than a sparsified one: each Schur matvec is one read of the
    stored base ``B`` (:func:`snsot._kernels.dense_schur_matvec`, parallel,
    no indices), no candidates need selecting, and the step is a true Newton
    step. CG always runs on the column block.
    """

    def __init__(self, B, u, v, n_chunks):
        self.B, self.u, self.v, self.n_chunks = B, u, v, n_chunks
        self.shape = B.shape

    def matvec(self, y):
        return K.scaled_matvec(self.B, self.u, self.v, y)

    def schur(self, d_row, d_col, w):
        # one read of B gives both the elimination term and the preconditioner's diagonal
        elim, sq = K.dense_schur_setup(self.B, self.u, self.v, d_row, w, self.n_chunks)
        diag = d_col - sq
        return _DenseSchur(self, d_row, d_col, 1.0 / np.where(diag > 0, diag, d_col)), elim


class _DenseSchur(SchurComplement):
    def __init__(self, S: DenseOffDiagonal, d_row, d_col, inv_diag):
        self.S, self.d_row, self.d_col, self.inv_diag = S, d_row, d_col, inv_diag

    def matvec(self, y):
        S = self.S
        return K.dense_schur_matvec(S.B, S.u, S.v, self.d_row, self.d_col, y, S.n_chunks)

