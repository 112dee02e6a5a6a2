"""Readable numpy references for the maths of the numba kernels in :mod:`snsot._kernels`.

Each function states in a few lines of numpy what a kernel computes in one
fused pass; the tests compare the two on random inputs, including
underflow and zero-mass cases. Nothing here is used by the solvers.
Convention: ``P_ij = exp((f_i + g_j - C_ij) / reg)``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp


def plan(C, f, g, reg):
    """``P(f, g)`` (:func:`snsot._kernels.dense_plan`)."""
    return np.exp((f[:, None] + g[None, :] - np.asarray(C, np.float64)) / reg)


def row_update(C, g, log_a, reg):
    """``f`` with the rows of ``P(f, g)`` equal to ``a`` (:func:`snsot._kernels.row_update`)."""
    return reg * log_a - reg * logsumexp((g[None, :] - np.asarray(C, np.float64)) / reg, axis=1)


def col_update(C, f, log_b, reg):
    """``g`` with the columns of ``P(f, g)`` equal to ``b`` (:func:`snsot._kernels.col_update`)."""
    return reg * log_b - reg * logsumexp((f[:, None] - np.asarray(C, np.float64)) / reg, axis=0)


def scaled_plan(B, u, v):
    """``diag(u) B diag(v)``: the plan a stored base represents."""
    return u[:, None] * B * v[None, :]


def large_entries(P, tau, cap):
    """Per row, the entries a candidate pass keeps: those ``>= tau``, cut to at most ``cap``.

    When more than ``cap`` qualify the cut rises to the smallest power of two
    ``2**e`` leaving at most ``cap`` entries ``>= 2**e``
    (:func:`snsot._kernels.plan_pass`, :func:`snsot._kernels.scaled_pass`).
    Returns a boolean mask of the kept entries.
    """
    keep = P >= tau
    for i in np.flatnonzero(keep.sum(axis=1) > cap):
        row = P[i]
        # exponents of the entries: 2**e <= x < 2**(e + 1)
        e = np.floor(np.log2(np.where(row > 0, row, np.finfo(float).tiny)))
        cut = None
        for k in np.unique(e)[::-1]:
            if (row >= 2.0 ** k).sum() > cap:
                break
            cut = 2.0 ** k
        keep[i] = row >= cut if cut is not None else False
    return keep


def schur_matvec(S, d_row, d_col, y):
    """``diag(d_col) y - S^T diag(1/d_row) S y`` (:func:`snsot._kernels.dense_schur_matvec` and the CSR one)."""
    return d_col * y - S.T @ ((S @ y) / d_row)


def schur_setup(S, d_row, w):
    """``(S^T w, sum_i S_ij**2 / d_row_i)`` (:func:`snsot._kernels.dense_schur_setup`)."""
    return S.T @ w, (S**2 / d_row[:, None]).sum(axis=0)


def aggregate_columns(indptr, indices, data, m, strong):
    """Column aggregates of a CSR block (:func:`snsot._kernels.aggregate_columns`: same rules, same labels).

    1. rows in order: a row whose strong columns (``>= strong`` times its largest entry) are all
       free makes them an aggregate; 2. a free column joins the aggregate of the heaviest
       aggregated column of the row where it has its largest entry, or stands alone.
    """
    labels = -np.ones(m, dtype=np.int64)
    n_agg = 0
    rows = [(indices[indptr[i]:indptr[i + 1]], data[indptr[i]:indptr[i + 1]]) for i in range(len(indptr) - 1)]
    for cols, vals in rows:
        if cols.size == 0 or not vals.max() > 0:
            continue
        sel = cols[vals >= strong * vals.max()]
        if (labels[sel] < 0).all():
            labels[sel] = n_agg
            n_agg += 1
    best, joins = np.full(m, -1.0), -np.ones(m, dtype=np.int64)
    for cols, vals in rows:
        done = labels[cols] >= 0
        if not done.any():
            continue
        target = labels[cols[np.flatnonzero(done)[np.argmax(vals[done])]]]
        for j, v in zip(cols, vals):
            if labels[j] < 0 and v > best[j]:
                best[j], joins[j] = v, target
    for j in range(m):
        if labels[j] < 0:
            if joins[j] >= 0:
                labels[j] = joins[j]
            else:
                labels[j], n_agg = n_agg, n_agg + 1
    return labels, n_agg


def centred_scalings(f, g, f0, g0, reg, max_drift):
    """``(u, v, c)`` of :func:`snsot._kernels.centred_scalings`, or None where it returns NaN."""
    x = (f - f0) * (1.0 / reg)
    y = (g - g0) * (1.0 / reg)
    if x.size == 0 or y.size == 0:
        return None
    c = 0.5 * (x.max() + x.min())
    x, y = x - c, y + c
    drift = np.abs(x).max() + np.abs(y).max()
    if not drift <= max_drift:  # also NaN
        return None
    return np.exp(x), np.exp(y), float(c)


def base_sinkhorn_step(B, f, g, f0, g0, reg, max_drift, a, log_a, kappa, log_b, kappa_col, safe):
    """:func:`snsot._kernels.base_sinkhorn_step` in numpy: ``(status, c, row_error, rows, f_new, g_new)``.

    ``status`` is 0 (step taken), 1 (too far from the base: the rest None)
    or 2 (unsafe sums: ``f_new``, ``g_new`` None).
    """
    sc = centred_scalings(f, g, f0, g0, reg, max_drift)
    if sc is None:
        return 1, np.nan, np.nan, None, None, None
    u, v, c = sc
    num = a if kappa == 1.0 else np.exp(kappa * log_a + (kappa - 1.0) * (f0 / reg + c))
    s = B @ v
    rows = u * s
    u_new = num / s**kappa
    col = B.T @ u_new
    row_error = float(np.abs(rows - a).sum())
    with np.errstate(invalid="ignore"):
        safe_step = (u_new.max() <= 1.0 / safe and (num / u_new).min() >= safe and col.min() >= safe
                     and np.isfinite(col).all())
    if not safe_step:
        return 2, c, row_error, rows, None, None
    f_new = f0 + reg * (np.log(u_new) + c)
    g_new = kappa_col * (g0 + reg * (log_b - np.log(col) - c))
    return 0, c, row_error, rows, f_new, g_new


def plan_cost(C, P):
    """``<C, P>`` in float64, with ``+inf * 0 = 0`` on forbidden pairs (``C_ij = +inf``, where ``P_ij = 0``)."""
    C = np.asarray(C, np.float64)
    forbidden = np.isinf(C) & (P == 0)
    return float(np.vdot(np.where(forbidden, 0.0, C), P))


def dense_plan_sums(C, f, g, reg):
    """``(P, row_sum, col_sum, cost)`` of :func:`snsot._kernels.dense_plan_sums`."""
    P = plan(C, f, g, reg)
    return P, P.sum(axis=1), P.sum(axis=0), plan_cost(C, P)
