"""The sparse Newton system of SNS, solved through a Schur complement.

With ``S`` the sparsified plan and ``r``, ``c`` the exact row and column
sums, the Newton direction ``(x, y)`` of the dual solves

    [[(1 + delta) diag(r), S], [S^T, (1 + delta) diag(c)]] [x; y] = reg [a - r; b - c],

whose matrix is ``reg`` times the (shifted) Hessian of ``-D``. The shift
``delta > 0`` removes the null direction ``(1, -1)`` and keeps the matrix
positive definite whatever was dropped (``S <= P`` entrywise, so the shifted
matrix is strictly diagonally dominant). It is relative, a Levenberg-Marquardt
term scaled by the diagonal: an absolute shift would swamp the Hessian of
rows and columns with tiny mass (background pixels of an image hold ~1e-6 of
the mean mass) and turn their Newton steps into short gradient steps; on an
MNIST pair that made SNS take 57 instead of 16 Newton steps. Eliminating
``x`` leaves the ``m x m`` system
``((1 + delta) diag(c) - S^T ((1 + delta) diag(r))^{-1} S) y = rhs``,
solved by preconditioned CG (:func:`pcg`): Jacobi on small blocks, and on
large CSR blocks the two-level aggregation preconditioner
:class:`TwoLevelPreconditioner`, whose iteration count does not grow with
the size of the problem as Jacobi's does (``K`` is a weighted graph
Laplacian of the transport graph plus a small shift: Jacobi-CG needs
``O(sqrt(cond))`` iterations, and the condition number grows with ``m`` and
``1/reg``).

The plan supplies ``S`` as an :class:`OffDiagonal` operator: the kept
entries in CSR form (:class:`CsrOffDiagonal`, SNS proper) or the whole plan
through its stored base (:class:`~snsot.solvers._dense.DenseOffDiagonal`).
One :func:`newton_direction` serves both. A CSR block with ``m > n`` is
transposed so that CG runs on the smaller block; the dense one always runs
CG on the column block (one fused read of the plan per iteration needs the
columns' unknowns; the vector work is negligible either way).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .. import _kernels as K


@dataclass
class Direction:
    """A Newton direction: steps ``x`` for ``f`` and ``y`` for ``g``, with how CG got there."""

    x: np.ndarray  # step for f
    y: np.ndarray  # step for g
    cg_iter: int
    residual: float  # relative CG residual reached (NaN on breakdown)
    #: The preconditioner CG used, offered to the next Newton step (which may reuse it).
    preconditioner: object = None


class SchurComplement:
    """``K = diag(d_col) - S^T diag(1/d_row) S`` on the column unknowns, with its Jacobi preconditioner.

    Subclasses give :meth:`matvec` and :attr:`inv_diag`; :meth:`solve` is
    :func:`pcg` over them (an operator may replace it with a compiled twin of
    the same algorithm).
    """

    inv_diag: np.ndarray
    #: A previous step's preconditioner that :meth:`solve` may reuse (set by :func:`newton_direction`).
    previous = None
    #: The preconditioner :meth:`solve` used, if worth offering to the next step.
    used = None

    def matvec(self, y) -> np.ndarray:
        raise NotImplementedError

    def solve(self, rhs, rtol: float, max_iter: int, y0=None):
        """``(y, n_iter, residual)`` with ``||K y - rhs|| <= rtol ||rhs||``; see :func:`pcg`."""
        return pcg(self.matvec, rhs, self.inv_diag, rtol, max_iter, y0)


class OffDiagonal:
    """The Newton matrix's off-diagonal block ``S`` (``n x m``), as :func:`newton_direction` uses it."""

    shape: tuple[int, int]

    def matvec(self, y) -> np.ndarray:
        """``S @ y``."""
        raise NotImplementedError

    def schur(self, d_row, d_col, w):
        """``(SchurComplement, S^T w)``: the operator CG runs on and the right-hand side's elimination term."""
        raise NotImplementedError

    def solve_on_rows(self) -> bool:
        """Whether CG should run on the row block instead (then :attr:`T` is used)."""
        return False

    @property
    def T(self) -> "OffDiagonal":
        """``S^T`` (needed only where :meth:`solve_on_rows` can be True)."""
        raise NotImplementedError


class CsrOffDiagonal(OffDiagonal):
    """The kept entries of the plan, ``S`` in CSR form ``(indptr, indices, data)``.

    CG runs on the smaller block: a block with more columns than rows is
    transposed first. ``preconditioner`` is one of :data:`PRECONDITIONERS`:
    ``"jacobi"`` (the default: the compiled :func:`snsot._kernels.schur_cg`),
    ``"aggregation"`` (:class:`TwoLevelPreconditioner`) or ``"auto"``
    (aggregation from :data:`AGGREGATION_MIN_SIZE` unknowns on). The sparse
    support's plan (:class:`~snsot.solvers._sparse_plan.SparsePlan`) asks for
    ``"auto"``; the dense plan's sparsified Hessian and the torch backward
    keep Jacobi, whose per-row quota makes rows long and CG short there
    (not measured with aggregation).
    """

    def __init__(self, indptr, indices, data, shape, preconditioner: str = "jacobi"):
        self.indptr, self.indices, self.data = indptr, indices, data
        self.shape = shape
        if preconditioner not in PRECONDITIONERS:
            raise ValueError(f"preconditioner: expected one of {PRECONDITIONERS}; got {preconditioner!r}")
        self.preconditioner = preconditioner

    def matvec(self, y):
        return K.csr_matvec(self.indptr, self.indices, self.data, y)

    def rmatvec(self, w):
        """``S^T @ w``."""
        return K.csr_rmatvec(self.indptr, self.indices, self.data, w, self.shape[1])

    def schur(self, d_row, d_col, w):
        return _CsrSchur(self, d_row, d_col, self.preconditioner), self.rmatvec(w)

    def solve_on_rows(self) -> bool:
        return self.shape[1] > self.shape[0]

    @property
    def T(self) -> "CsrOffDiagonal":
        import scipy.sparse as sp

        n, m = self.shape
        T = sp.csr_matrix((self.data, self.indices, self.indptr), shape=(n, m)).T.tocsr()
        return CsrOffDiagonal(T.indptr.astype(np.int64), T.indices.astype(np.int32), T.data, (m, n), self.preconditioner)


class _CsrSchur(SchurComplement):
    """Schur complement of a CSR block.

    :meth:`solve` is :func:`snsot._kernels.schur_cg`, a compiled twin of
    :func:`pcg` (the same iterates up to round-off; ``tests/test_linalg.py``
    checks it). It is kept because on small problems the Python loop's
    overhead per CG iteration is not negligible next to a sparse matvec:
    SNS with the sparse Hessian took 1.06x (n = 1000) to 1.54x (n = 100)
    longer with :func:`pcg` over the same compiled matvec (medians of 5,
    random assignment at reg 1/1200).
    """

    def __init__(self, S: CsrOffDiagonal, d_row, d_col, preconditioner="jacobi"):
        self.S, self.d_row, self.d_col = S, d_row, d_col
        self.preconditioner = preconditioner

    @property
    def inv_diag(self):
        S = self.S
        diag = self.d_col - K.csr_rmatvec(S.indptr, S.indices, S.data * S.data, 1.0 / self.d_row, S.shape[1])
        return 1.0 / np.where(diag > 0, diag, self.d_col)

    def _solve_two_level(self, rhs, rtol, max_iter, y0):
        """CG with a :class:`TwoLevelPreconditioner`: the previous step's when it still serves, else a new one.

        Building one costs about as much as 20-40 CG iterations (aggregation,
        the coarse Galerkin product and its factorisation); successive Newton
        steps change the plan little, and a stale preconditioner is still a
        fixed SPD operator, so CG stays valid with it and only needs more
        iterations. It is kept while CG needs at most :data:`REUSE_ITERATIONS`
        times the iterations per digit of residual reduction it took when
        built (plus 2); beyond that it is marked for a rebuild at the next step, and a solve
        that misses ``rtol`` with it is redone, warm, with a fresh one.

        BLAS runs on one thread meanwhile: CG's dot products are on vectors of
        a few 10^4 entries, where OpenBLAS's threads only add wake-up latency
        and, on a busy machine, fight the other threads for the cores (17 ms of
        a 20 ms CG iteration at m = 5e3 aggregates / 3e4 columns, loaded
        machine; 0.3 ms on one thread).
        """
        from .._engines import one_blas_thread

        with one_blas_thread():
            return self._solve_two_level_serial(rhs, rtol, max_iter, y0)

    def _solve_two_level_serial(self, rhs, rtol, max_iter, y0):
        S = self.S
        M = self.previous
        if M is not None and not M.fits(S):
            M = None
        fresh = M is None
        try:
            if fresh:
                M = TwoLevelPreconditioner(S, self.d_row, self.d_col)
            y, it, res = pcg(self.matvec, rhs, None, rtol, max_iter, y0, precond=M)
            if not fresh and not res <= rtol:
                M, fresh, y0 = TwoLevelPreconditioner(S, self.d_row, self.d_col), True, y
                y, it2, res = pcg(self.matvec, rhs, None, rtol, max_iter, y0, precond=M)
                it += it2
        except RuntimeError:  # SuperLU: coarse operator singular to working precision
            return None
        if not np.isfinite(res):
            return None
        # Iterations per digit of residual reduction: later Newton steps ask
        # for more digits, which alone must not count as wear.
        rate = it / max(-math.log10(max(res, 1e-300)), 0.5)
        if fresh:
            M.built_rate = rate
        elif rate > REUSE_ITERATIONS * M.built_rate + 2:
            M = None  # worn out: the next step builds a new one
        self.used = M
        return y, it, res

    def matvec(self, y):
        S = self.S
        out = np.empty(S.shape[1])
        K.schur_matvec_chunked(S.indptr, S.indices, S.data, self.d_row, self.d_col, y,
                               K.default_chunks(S.shape[0]), out)
        return out

    def uses_aggregation(self) -> bool:
        """Whether :meth:`solve` runs the two-level preconditioner (see :data:`AGGREGATION_MIN_SIZE`)."""
        if self.preconditioner == "jacobi":
            return False
        if self.preconditioner == "auto" and self.S.shape[1] < AGGREGATION_MIN_SIZE:
            return False
        return bool(np.all(self.d_col > 0) and np.all(self.d_row > 0) and np.isfinite(self.S.data).all())

    def solve(self, rhs, rtol, max_iter, y0=None):
        if self.uses_aggregation():
            out = self._solve_two_level(rhs, rtol, max_iter, y0)
            if out is not None:
                return out
            # breakdown or a singular coarse operator: the compiled Jacobi CG decides (it reports NaN the same way)
        S = self.S
        y0 = np.empty(0) if y0 is None else y0
        y, it, res = K.schur_cg(S.indptr, S.indices, S.data, self.d_row, self.d_col, rhs, rtol, max_iter, y0)
        return y, int(it), float(res)


def newton_direction(S: OffDiagonal, d_row, d_col, grad_rows, grad_cols, reg, rtol, max_cg, guess=None) -> Direction:
    """Solve the shifted Newton system of the module docstring for ``(x, y)``.

    Parameters
    ----------
    S : OffDiagonal
        Off-diagonal block (the sparsified or the whole plan), from
        :meth:`~snsot.solvers._plan.Plan.hessian_block`.
    d_row, d_col : ndarray
        Diagonal blocks: the exact row and column sums of the plan, shifted
        by ``1 + delta`` (:meth:`~snsot.solvers._marginals.BalancedMarginals.hessian_diagonal`).
    grad_rows, grad_cols : ndarray
        Gradient of the dual, ``a - P 1`` and ``b - P^T 1``.
    reg : float
        Regularisation.
    rtol : float
        Relative residual asked of CG.
    max_cg : int
        CG iteration cap.
    guess : Direction, optional
        A previous direction; CG starts from its block of the unknowns
        (successive Newton directions are close, which saves iterations).

    Returns
    -------
    Direction
    """
    swap = S.solve_on_rows()
    if swap:
        S = S.T
        d_row, d_col, grad_rows, grad_cols = d_col, d_row, grad_cols, grad_rows
    rhs_rows = reg * grad_rows
    # eliminate x: rhs = reg g_cols - S^T D_row^{-1} reg g_rows
    schur, elim = S.schur(d_row, d_col, rhs_rows / d_row)
    rhs = reg * grad_cols - elim
    y0 = None if guess is None else (guess.x if swap else guess.y)
    if guess is not None:
        schur.previous = guess.preconditioner
    y, it, res = schur.solve(rhs, rtol, max_cg, y0)
    x = (rhs_rows - S.matvec(y)) / d_row
    if swap:
        x, y = y, x
    return Direction(x=x, y=y, cg_iter=int(it), residual=float(res), preconditioner=schur.used)


def pcg(matvec, rhs, inv_diag, rtol, max_iter, y0=None, precond=None):
    """Preconditioned conjugate gradients for an SPD operator given by ``matvec``.

    Parameters
    ----------
    matvec : callable
        ``y -> K y``.
    rhs : ndarray
        Right-hand side.
    inv_diag : ndarray or None
        Inverse of a diagonal (Jacobi) preconditioner; ignored when
        ``precond`` is given.
    rtol : float
        Stop when ``||K y - rhs|| <= rtol ||rhs||``.
    max_iter : int
        Iteration cap.
    y0 : ndarray, optional
        Starting guess, kept only if its residual is smaller than ``||rhs||``.
    precond : callable, optional
        ``r -> M^{-1} r`` for a symmetric positive definite ``M`` (e.g. a
        :class:`TwoLevelPreconditioner`), instead of ``inv_diag``.

    Returns
    -------
    y : ndarray
    n_iter : int
    residual : float
        Relative residual reached; NaN on breakdown (``p^T K p <= 0`` or NaN).

    Each iteration costs one ``matvec`` (and one ``precond``); the few
    vector operations around it are negligible next to the pass over the
    plan that it makes.
    """
    if precond is None:
        precond = lambda r: r * inv_diag  # noqa: E731
    rhs_norm = float(np.sqrt(rhs @ rhs))
    y = np.zeros_like(rhs)
    if rhs_norm == 0.0:
        return y, 0, 0.0
    r = rhs
    if y0 is not None and y0.shape == rhs.shape:
        r0 = rhs - matvec(y0)
        if r0 @ r0 < rhs @ rhs:  # keep the warm start only if it helps
            y, r = y0.copy(), r0
    z = precond(r)
    p = z
    rz = float(r @ z)
    res = float(np.sqrt(r @ r)) / rhs_norm
    it = 0
    while res > rtol and it < max_iter:
        q = matvec(p)
        pq = float(p @ q)
        if not pq > 0.0:  # breakdown: not positive definite along p, or NaN
            return y, it, np.nan
        alpha = rz / pq
        y = y + alpha * p
        r = r - alpha * q
        it += 1
        res = float(np.sqrt(r @ r)) / rhs_norm
        if res <= rtol:
            break
        z = precond(r)
        rz_new = float(r @ z)
        p = z + (rz_new / rz) * p
        rz = rz_new
    return y, it, res


#: Names accepted by ``CsrOffDiagonal(preconditioner=...)``.
PRECONDITIONERS = ("auto", "jacobi", "aggregation")

#: ``"auto"`` uses :class:`TwoLevelPreconditioner` on Schur complements with at
#: least this many unknowns, compiled Jacobi CG below. Below it Jacobi-CG
#: needs few iterations and the setup (aggregation, coarse factorisation)
#: would not pay. At n = 3000 (2-D clouds, reg 3e-4) the two-level CG still
#: took 0.11 s against Jacobi's 0.39 s over the last scale's Newton steps
#: (`benchmarks/cg_precond.py --sizes 3000 --regs 3e-4`, loaded machine).
AGGREGATION_MIN_SIZE = 2000

#: A row's entries at least this fraction of its largest are its strong
#: links (:func:`snsot._kernels.aggregate_columns`): 0.1 gave aggregates of
#: about 6 columns and the same CG iterations at both sizes measured (2-D
#: clouds, n = 10k and 30k: 21-22 additive, 10-11 symmetric at rtol ~1e-3);
#: looser values give larger aggregates, a smaller coarse problem and more
#: iterations (0.01: ~10 columns, twice the iterations; 0.03 and 0.3 took
#: longer than 0.1 over the 30k Newton systems).
STRONG_FRACTION = 0.1

#: The aggregation hierarchy of :class:`TwoLevelPreconditioner` goes down until a level has at most
#: this many unknowns, which SuperLU factorises (or until a level keeps more than
#: :data:`_MIN_COARSENING` of the previous one's). The coarse problem holds n/6 to n/13 unknowns,
#: and its factors grow faster than it: at n = 10^6 (2-D clouds, reg 1e-6) one factorisation of
#: its 174,174 unknowns took 43.7 s (1.1e8 entries of L and U; points in input order), the whole
#: V-cycle hierarchy (196k, 28k, 3.9k, then 520 factorised; points in tree order) 2.7-4.5 s, for
#: 1.3-2x the CG iterations (measured at n = 10^5).
COARSEST_SIZE = 3000
_MIN_COARSENING = 0.7

#: A reused :class:`TwoLevelPreconditioner` is rebuilt once CG needs more than
#: this many times the iterations per digit it took with it fresh (plus 2).
#: Measured on the 20 Newton systems of a 2-D cloud (n = 30k, reg 3.3e-5;
#: CPU seconds, loaded machine): see benchmarks/cg_precond.py.
REUSE_ITERATIONS = 1.0


def _aggregate_matrix(W, strong):
    """Aggregates of a symmetric matrix's unknowns from its entries' magnitudes ``W = |A|`` (CSR):
    :func:`snsot._kernels.aggregate_columns` on the off-diagonal ones, each row's own unknown counted
    as its strongest link."""
    W = (W - sp.diags(W.diagonal())).tocsr()
    W.eliminate_zeros()
    row_max = W.max(axis=1).toarray().ravel()
    W = (W + sp.diags(np.where(row_max > 0, row_max, 1.0))).tocsr()
    return K.aggregate_columns(W.indptr.astype(np.int64), W.indices.astype(np.int64), W.data, W.shape[0], strong)


class TwoLevelPreconditioner:
    """Two-level aggregation preconditioner of ``K = D_col - S^T D_row^{-1} S``.

    The columns are grouped into aggregates (:func:`snsot._kernels.aggregate_columns`,
    from ``S`` alone, so it serves any CSR block, point cloud or user-given
    sparse cost); ``R`` is the 0/1 aggregation matrix. The coarse operator
    is the Galerkin product ``Kc = R K R^T = diag(R d_col) - (S R^T)^T
    D_row^{-1} (S R^T)``, formed from the merged block ``S R^T`` without
    forming ``K``, and factorised once by SuperLU (symmetric mode).

    ``cycle="additive"`` (the default) applies ``M^{-1} = D_col^{-1} + R^T
    Kc^{-1} R``: symmetric positive definite as the sum of an SPD and a
    positive semidefinite term, with no product with ``K``.
    ``cycle="symmetric"`` is the two-grid cycle with Jacobi smoothing on
    ``D_col``::

        x = D_col^{-1} r
        x += R^T Kc^{-1} R (r - K x)
        x += D_col^{-1} (r - K x)

    It halves the iterations but costs two products with ``K`` more per
    iteration; measured on the Newton systems of a 2-D cloud (n = 10k,
    reg 1e-4) the two took the same time fresh, and the additive one
    is faster when reused across Newton steps (:meth:`_CsrSchur.solve`).
    Why ``D_col`` and a unit step in the symmetric cycle: ``0 <= S^T D_row^{-1} S`` gives ``K <= D_col``,
    so the smoother's eigenvalues ``1 - lambda(D_col^{-1} K)`` lie in
    ``[0, 1)``: it converges in the ``K``-norm, and with the exact coarse
    solve the cycle is symmetric positive definite, which keeps CG valid.
    The near-null vector of ``K`` (the constant, exact when the shift and
    the dropped entries vanish) lies in the range of ``R^T``, which is what
    makes the coarse correction remove the slow modes Jacobi leaves.

    **Deeper levels.** When ``Kc`` has more than ``coarsest`` unknowns,
    ``Kc^{-1}`` is replaced by a symmetric V-cycle over an aggregation
    hierarchy of ``Kc`` itself (:func:`_aggregate_matrix` on its off-diagonal
    magnitudes, Galerkin products ``R A R^T``), with l1-Jacobi smoothing
    (``D = diag(sum_k |A_jk|)``, so ``A <= D`` and the smoother converges in
    the ``A``-norm) and SuperLU only at the last level. The V-cycle is
    symmetric positive definite (by induction from the exact last level), so
    ``M`` stays SPD and plain CG stays valid. ``Kc``'s factors grow faster
    than ``Kc``: at n = 10^6 (2-D clouds, reg 1e-6; 174k coarse unknowns) one
    factorisation took 43.7 s (1.1e8 entries), the hierarchy 2.7-4.5 s.

    Parameters
    ----------
    S : CsrOffDiagonal
    d_row, d_col : ndarray
        Positive diagonals of the Schur complement.
    strong : float
        Strong-link fraction of :func:`snsot._kernels.aggregate_columns`.
    cycle : {"additive", "symmetric"}
    coarsest : float, optional
        Most unknowns of the factorised level (default :data:`COARSEST_SIZE`;
        ``inf``: ``Kc`` itself, the two-level method).

    Raises
    ------
    RuntimeError
        When SuperLU finds the coarse operator singular.

    References
    ----------
    P. Vanek, J. Mandel, M. Brezina, Algebraic multigrid by smoothed
    aggregation for second and fourth order elliptic problems, Computing 56
    (1996) (the greedy aggregation); Y. Notay, An aggregation-based
    algebraic multigrid method, ETNA 37 (2010) (unsmoothed aggregation with
    a symmetric two-grid cycle).
    """

    def __init__(self, S, d_row, d_col, strong: float = STRONG_FRACTION, cycle: str = "additive",
                 coarsest: float | None = None):
        from scipy.sparse.linalg import splu

        if cycle not in ("additive", "symmetric"):
            raise ValueError(f"cycle: expected 'additive' or 'symmetric'; got {cycle!r}")
        coarsest = COARSEST_SIZE if coarsest is None else coarsest
        self.cycle = cycle
        n, m = self.shape = S.shape
        # The additive cycle needs only d_col, the labels and the factorisation: a
        # reused preconditioner then holds no older plan values alive.
        self.S = S if cycle == "symmetric" else None
        self.d_row, self.d_col = d_row, d_col
        self.labels, self.n_coarse = K.aggregate_columns(S.indptr, S.indices, S.data, m, strong)
        ptr, idx, val = K.merge_columns(S.indptr, S.indices, S.data, self.labels, self.n_coarse)
        SR = sp.csr_matrix((val, idx, ptr), shape=(n, self.n_coarse))
        d_coarse = np.bincount(self.labels, weights=d_col, minlength=self.n_coarse)
        A = (sp.diags(d_coarse) - SR.T @ sp.diags(1.0 / d_row) @ SR).tocsr()
        # Deeper levels (an aggregation hierarchy of the coarse operator itself, see _vcycle) until
        # one has at most `coarsest` unknowns; that one is factorised.
        self.hierarchy = []  # (A, l1 diagonal, labels, n_next)
        while A.shape[0] > coarsest:
            magnitudes = abs(A).tocsr()  # for the aggregates and the l1 diagonal alike
            labels, n_next = _aggregate_matrix(magnitudes, strong)
            if n_next > _MIN_COARSENING * A.shape[0]:
                break
            l1 = np.asarray(magnitudes.sum(axis=1)).ravel()
            self.hierarchy.append((A, l1, labels, n_next))
            R = sp.csr_matrix((np.ones(A.shape[0]), (labels, np.arange(A.shape[0]))), shape=(n_next, A.shape[0]))
            A = (R @ A @ R.T).tocsr()
        self.coarse = splu(sp.csc_matrix(A), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                           options=dict(SymmetricMode=True))
        self._q = np.empty(m) if cycle == "symmetric" else None
        self.built_rate = 0.0  # CG iterations per digit when it was built (set by _CsrSchur)

    def fits(self, S) -> bool:
        """Whether this preconditioner can serve a block ``S`` (same shape; any values or pattern)."""
        return self.shape == S.shape

    def matvec(self, y):
        """``K y`` (the symmetric cycle's smoothing residual; that cycle keeps ``S``)."""
        S = self.S
        K._schur_matvec(S.indptr, S.indices, S.data, self.d_row, self.d_col, y, self._q)
        return self._q

    def coarse_correction(self, r):
        """``R^T Kc^{-1} R r`` (``Kc^{-1}`` approximated by a symmetric V-cycle when the hierarchy is deeper)."""
        rc = np.bincount(self.labels, weights=r, minlength=self.n_coarse)
        return self._vcycle(0, rc)[self.labels]

    def _vcycle(self, level, r):
        """Symmetric V-cycle for ``A_level x = r``: l1-Jacobi, the next level's correction, l1-Jacobi.

        With ``D`` the l1 diagonal (row sums of ``|A|``), ``A <= D`` (``D - A`` is
        diagonally dominant), so the smoother converges in the ``A``-norm and the
        cycle, exact at the last level, is symmetric positive definite.
        """
        if level == len(self.hierarchy):
            return self.coarse.solve(r)
        A, l1, labels, n_next = self.hierarchy[level]
        x = r / l1
        rc = np.bincount(labels, weights=r - A @ x, minlength=n_next)
        x += self._vcycle(level + 1, rc)[labels]
        x += (r - A @ x) / l1
        return x

    def __call__(self, r):
        """``M^{-1} r`` (see the class docstring)."""
        if self.cycle == "additive":
            return r / self.d_col + self.coarse_correction(r)
        x = r / self.d_col
        x += self.coarse_correction(r - self.matvec(x))
        x += (r - self.matvec(x)) / self.d_col
        return x
