"""Numba kernels on a sparse (CSR) support: the only loops over its entries.

The support is held as CSR arrays ``indptr`` (int64, n + 1), ``indices``
(column of each entry) and ``cost`` (``C_ij`` of each entry, float64). Absent
entries are pairs that carry no mass (forbidden, or truncated away by
:mod:`snsot.support`). Conventions as in :mod:`snsot._kernels`:
``P_ij = exp((f_i + g_j - C_ij) / reg)``.

A column-wise reduction is the same row-wise kernel run on the transposed
support (:func:`csr_transpose`), so every kernel here is a parallel loop over
rows with no write conflicts. Each kernel has a plain-numpy twin in
:mod:`snsot._sparse_reference` that the tests compare against.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._kernels import _LOOP_FLAGS, fast_exp, kernel, parallel_kernel

__all__ = ["csr_lse_update", "csr_plan", "csr_col_sums", "csr_threshold", "csr_transpose",
           "csr_scaled_rows", "csr_gather", "csr_scaled_plan"]


@parallel_kernel(fastmath=_LOOP_FLAGS)
def csr_lse_update(indptr, indices, cost, other, log_w, reg, out):
    """One log-domain Sinkhorn half-step on the support.

    ``out_i = reg log w_i - reg log sum_{j in row i} exp((other_j - C_ij) / reg)``,
    stabilised by the row maximum ``M_i = max_j (other_j - C_ij)`` so the sum
    is in ``[1, nnz_i]``. Run on the support it gives the ``f`` update (with
    ``other = g``, ``log_w = log a``); on the transposed support, the ``g``
    update. An empty row (or one whose partners all have potential ``-inf``)
    has no mass to receive: its ``out_i`` is ``-inf``.
    """
    n = indptr.shape[0] - 1
    inv_reg = 1.0 / reg
    for i in prange(n):
        lo, hi = indptr[i], indptr[i + 1]
        mx = -np.inf
        for t in range(lo, hi):
            mx = max(mx, other[indices[t]] - cost[t])
        if mx == -np.inf:
            out[i] = -np.inf
            continue
        s = 0.0
        for t in range(lo, hi):
            s += fast_exp((other[indices[t]] - cost[t] - mx) * inv_reg)
        out[i] = reg * log_w[i] - (mx + reg * math.log(s))


@parallel_kernel(fastmath=_LOOP_FLAGS)
def csr_plan(indptr, indices, cost, f, g, reg, P_out, row_sum):
    """Plan entries ``P_out[t] = exp((f_i + g_j - C_ij)/reg)`` on the support and their row sums.

    Entries below ``exp(-708)`` are stored as 0 (see :func:`snsot._kernels.fast_exp`).
    """
    n = indptr.shape[0] - 1
    inv_reg = 1.0 / reg
    for i in prange(n):
        fi = f[i]
        s = 0.0
        for t in range(indptr[i], indptr[i + 1]):
            p = fast_exp((fi + g[indices[t]] - cost[t]) * inv_reg)
            P_out[t] = p
            s += p
        row_sum[i] = s


@parallel_kernel(fastmath=_LOOP_FLAGS)
def csr_scaled_rows(indptr, indices, B, v, out):
    """``out_i = sum_{t in row i} B_t v_{j(t)}``: the row sums of ``B diag(v)``.

    With a stored base plan ``B = P(f0, g0)`` on the support and the scalings
    ``u``, ``v`` of :meth:`~snsot.solvers._sparse_plan.SparsePlan.scalings`,
    the rows of ``P(f, g) = diag(u) B diag(v)`` are ``u * out``: a Sinkhorn
    half-step without one exponential.
    """
    n = indptr.shape[0] - 1
    for i in prange(n):
        s = 0.0
        for t in range(indptr[i], indptr[i + 1]):
            s += B[t] * v[indices[t]]
        out[i] = s


@parallel_kernel(fastmath=_LOOP_FLAGS)
def csr_gather(t_indptr, t_rows, t_values, w, out):
    """``out_j = sum_{k in column j} w_{i(k)} t_values_k``: column sums of ``diag(w) V``.

    Runs on the transposed support of :func:`csr_transpose` with the values in
    that (column) order, ``t_values = values[t_pos]``: each column is one
    thread's (no write conflicts) and the values are read contiguously (with
    ``values[t_pos[k]]`` instead, the second random read per entry took 2-3x
    the time of the row pass). With ``w = 1`` it is the column sums of ``V``.
    """
    m = t_indptr.shape[0] - 1
    for j in prange(m):
        s = 0.0
        for k in range(t_indptr[j], t_indptr[j + 1]):
            s += w[t_rows[k]] * t_values[k]
        out[j] = s


@parallel_kernel(fastmath=_LOOP_FLAGS)
def csr_scaled_plan(indptr, indices, B, u, v, tau, P_out, row_sum, above):
    """``P_out[t] = u_i B_t v_j`` with its row sums and, per row, the count of entries ``>= tau``.

    The plan at ``(f, g)`` from the stored base ``B`` and the scalings (one
    multiplication per entry, no exponential); the counts size the sparse
    Newton Hessian.
    """
    n = indptr.shape[0] - 1
    for i in prange(n):
        ui = u[i]
        s = 0.0
        c = 0
        for t in range(indptr[i], indptr[i + 1]):
            p = ui * B[t] * v[indices[t]]
            P_out[t] = p
            s += p
            c += p >= tau
        row_sum[i] = s
        above[i] = c


@kernel()
def csr_col_sums(indices, values, m):
    """Column sums of a CSR matrix's ``values`` (serial scatter: nnz additions)."""
    col = np.zeros(m)
    for t in range(indices.shape[0]):
        col[indices[t]] += values[t]
    return col


@kernel()
def csr_threshold(indptr, indices, values, tau):
    """The entries with ``values >= tau`` as a new CSR ``(indptr, indices, data)``.

    This is the candidate set of the sparse Newton Hessian: the plan entries
    at or above the error-controlled threshold ``tau``.
    """
    n = indptr.shape[0] - 1
    out_ptr = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        c = 0
        for t in range(indptr[i], indptr[i + 1]):
            c += values[t] >= tau
        out_ptr[i + 1] = out_ptr[i] + c
    nnz = out_ptr[n]
    out_idx = np.empty(nnz, dtype=indices.dtype)
    out_val = np.empty(nnz)
    for i in range(n):
        pos = out_ptr[i]
        for t in range(indptr[i], indptr[i + 1]):
            if values[t] >= tau:
                out_idx[pos] = indices[t]
                out_val[pos] = values[t]
                pos += 1
    return out_ptr, out_idx, out_val


@kernel()
def csr_transpose(indptr, indices, m):
    """The transposed support: ``(t_indptr, t_rows, t_pos)``.

    Column ``j`` holds rows ``t_rows[t_indptr[j]:t_indptr[j+1]]`` (increasing)
    whose entries sit at positions ``t_pos[...]`` of the original arrays, so
    ``cost[t_pos]`` is the transposed cost and ``values[t_pos]`` any other
    per-entry array.
    """
    n = indptr.shape[0] - 1
    nnz = indices.shape[0]
    t_indptr = np.zeros(m + 1, dtype=np.int64)
    for t in range(nnz):
        t_indptr[indices[t] + 1] += 1
    for j in range(m):
        t_indptr[j + 1] += t_indptr[j]
    fill = t_indptr[:-1].copy()
    t_rows = np.empty(nnz, dtype=indices.dtype)
    t_pos = np.empty(nnz, dtype=np.int64)
    for i in range(n):
        for t in range(indptr[i], indptr[i + 1]):
            j = indices[t]
            k = fill[j]
            t_rows[k] = i
            t_pos[k] = t
            fill[j] = k + 1
    return t_indptr, t_rows, t_pos
