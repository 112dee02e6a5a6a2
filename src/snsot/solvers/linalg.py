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
solved by Jacobi-preconditioned CG (:func:`snsot._kernels.schur_cg`); when
``m > n`` the roles of rows and columns are swapped so CG always runs on the
smaller block. :func:`dense_newton_direction` solves the same system with the
whole plan as ``S``, applied through a stored base plan; it always runs CG on
the column block (one fused read of the plan per iteration needs the
columns' unknowns; the vector work is negligible either way).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _kernels as K


@dataclass
class Direction:
    x: np.ndarray  # step for f
    y: np.ndarray  # step for g
    cg_iter: int
    residual: float  # relative CG residual reached (NaN on breakdown)


def _transpose_csr(indptr, indices, data, n_cols):
    import scipy.sparse as sp

    T = sp.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, n_cols)).T.tocsr()
    return T.indptr.astype(np.int64), T.indices.astype(np.int32), T.data


def newton_direction(csr, row_sum, col_sum, grad_rows, grad_cols, reg, delta, rtol, max_cg, guess=None,
                     extra=(0.0, 0.0)) -> Direction:
    """Solve the shifted sparse Newton system; see the module docstring.

    Parameters
    ----------
    csr : tuple (indptr, indices, data)
        Sparsified plan ``S`` (n x m) in CSR form.
    row_sum, col_sum : ndarray
        Exact ``P 1`` and ``P^T 1`` (the Hessian's diagonal blocks are kept exact).
    grad_rows, grad_cols : ndarray
        ``a - P 1`` and ``b - P^T 1``, the gradient of the dual.
    reg : float
        Regularisation.
    delta : float
        Relative diagonal shift (> 0).
    rtol : float
        Relative residual asked of CG.
    max_cg : int
        CG iteration cap.
    guess : Direction, optional
        A previous direction; CG starts from its block of the unknowns
        (successive Newton directions are close, which saves iterations).
    extra : pair of (ndarray or float)
        Added to the diagonal blocks after the shift: what a marginal
        penalty adds to the Hessian (``reg / rho * target`` for KL
        marginals, :mod:`snsot.solvers._kl_marginals`; 0 when balanced).
    """
    indptr, indices, data = csr
    n, m = len(row_sum), len(col_sum)
    swap = m > n
    extra_rows, extra_cols = extra
    if swap:
        indptr, indices, data = _transpose_csr(indptr, indices, data, m)
        row_sum, col_sum, grad_rows, grad_cols = col_sum, row_sum, grad_cols, grad_rows
        extra_rows, extra_cols = extra_cols, extra_rows
    d_row = row_sum * (1.0 + delta) + extra_rows
    d_col = col_sum * (1.0 + delta) + extra_cols
    rhs_rows = reg * grad_rows
    # rhs = reg gb - S^T D_row^{-1} reg ga
    w = rhs_rows / d_row
    rhs = reg * grad_cols - K.csr_rmatvec(indptr, indices, data, w, len(col_sum))
    y0 = np.empty(0) if guess is None else (guess.x if swap else guess.y)
    y, it, res = K.schur_cg(indptr, indices, data, d_row, d_col, rhs, rtol, max_cg, y0)
    x = (rhs_rows - K.csr_matvec(indptr, indices, data, y)) / d_row
    if swap:
        x, y = y, x
    return Direction(x=x, y=y, cg_iter=int(it), residual=float(res))



def dense_newton_direction(base_plan, u, v, row_sum, col_sum, grad_rows, grad_cols, reg, delta, rtol, max_cg,
                           n_chunks, guess=None, extra=(0.0, 0.0)) -> Direction:
    """The same shifted Newton system with the whole plan ``P = diag(u) B diag(v)`` as ``S``.

    For wide plans (a large fraction of the entries matter, e.g. 1-D
    densities at moderate ``reg``) the exact Hessian is both cheaper and
    better than a sparsified one: each Schur matvec is one read of the
    stored base ``B`` (:func:`snsot._kernels.dense_schur_matvec`, parallel,
    no indices), no candidates need selecting, and the step is a true Newton
    step. CG always runs on the column block. Arguments as in
    :func:`newton_direction`, with the plan given by ``base_plan`` (``B``)
    and the scalings ``u``, ``v``.
    """
    d_row = row_sum * (1.0 + delta) + extra[0]
    d_col = col_sum * (1.0 + delta) + extra[1]
    rhs_rows = reg * grad_rows
    elim, sq = K.dense_schur_setup(base_plan, u, v, d_row, rhs_rows / d_row, n_chunks)
    rhs = reg * grad_cols - elim
    diag = d_col - sq
    inv_diag = 1.0 / np.where(diag > 0, diag, d_col)

    def matvec(y):
        return K.dense_schur_matvec(base_plan, u, v, d_row, d_col, y, n_chunks)

    y, it, res = _pcg(matvec, rhs, inv_diag, rtol, max_cg, None if guess is None else guess.y)
    x = (rhs_rows - K.scaled_matvec(base_plan, u, v, y)) / d_row
    return Direction(x=x, y=y, cg_iter=it, residual=res)


def _pcg(matvec, rhs, inv_diag, rtol, max_iter, y0):
    """Preconditioned CG, as :func:`snsot._kernels.schur_cg` does it, for an operator given by ``matvec``.

    Each iteration costs one ``matvec``; the few vector operations around it
    are negligible next to the pass over the plan that it makes.
    """
    rhs_norm = float(np.sqrt(rhs @ rhs))
    y = np.zeros_like(rhs)
    if rhs_norm == 0.0:
        return y, 0, 0.0
    r = rhs
    if y0 is not None and y0.shape == rhs.shape:
        r0 = rhs - matvec(y0)
        if r0 @ r0 < rhs @ rhs:  # keep the warm start only if it helps
            y, r = y0.copy(), r0
    z = r * inv_diag
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
        z = r * inv_diag
        rz_new = float(r @ z)
        p = z + (rz_new / rz) * p
        rz = rz_new
    return y, it, res
