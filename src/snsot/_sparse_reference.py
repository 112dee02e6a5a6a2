"""Plain-numpy twins of :mod:`snsot._sparse_kernels`, for the tests.

Each builds the same quantity through ``scipy.sparse`` and dense reductions,
sharing no code with the numba kernels.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.special import logsumexp


def _rows(indptr):
    return np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))


def csr_lse_update_reference(indptr, indices, cost, other, log_w, reg):
    n = len(indptr) - 1
    z = np.full((n, len(other)), -np.inf)
    z[_rows(indptr), indices] = (other[indices] - cost) / reg
    with np.errstate(invalid="ignore", divide="ignore"):
        lse = logsumexp(z, axis=1)
        out = reg * log_w - reg * lse
    out[~np.isfinite(lse)] = -np.inf
    return out


def csr_plan_reference(indptr, indices, cost, f, g, reg):
    """``(P values, row sums)``; values below ``exp(-708)`` are 0 as in the kernel."""
    e = (f[_rows(indptr)] + g[indices] - cost) / reg
    P = np.where(e < -708.0, 0.0, np.exp(e))
    n = len(indptr) - 1
    row_sum = np.bincount(_rows(indptr), weights=P, minlength=n)
    return P, row_sum


def csr_col_sums_reference(indptr, indices, values, m):
    n = len(indptr) - 1
    return np.asarray(sp.csr_matrix((values, indices, indptr), shape=(n, m)).sum(axis=0)).ravel()


def csr_threshold_reference(indptr, indices, values, tau, m):
    """The thresholded matrix as scipy CSR (explicit zeros kept if tau <= 0)."""
    n = len(indptr) - 1
    rows = _rows(indptr)
    keep = values >= tau
    return sp.csr_matrix((values[keep], (rows[keep], indices[keep])), shape=(n, m))


def csr_scaled_rows_reference(indptr, indices, B, v):
    """Row sums of ``B diag(v)``."""
    n = len(indptr) - 1
    return np.asarray(sp.csr_matrix((B, indices, indptr), shape=(n, len(v))) @ v).ravel()


def csr_gather_reference(indptr, indices, values, w, m):
    """Column sums of ``diag(w) V`` (``values`` in the row-ordered support's order)."""
    n = len(indptr) - 1
    return np.asarray(sp.csr_matrix((values, indices, indptr), shape=(n, m)).T @ w).ravel()


def csr_scaled_plan_reference(indptr, indices, B, u, v, tau):
    """``(P, row sums, per-row counts of P >= tau)`` for ``P = diag(u) B diag(v)``."""
    n = len(indptr) - 1
    rows = _rows(indptr)
    P = u[rows] * B * v[indices]
    row_sum = np.bincount(rows, weights=P, minlength=n)
    above = np.bincount(rows, weights=(P >= tau).astype(float), minlength=n).astype(np.int64)
    return P, row_sum, above
