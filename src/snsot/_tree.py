r"""A compiled k-d tree over one point cloud, for the truncated support's pair search.

The truncated support (:mod:`snsot.support`) needs, for every row ``i``, every
column ``j`` with log-plan entry

.. math::  e_{ij} = (f_i + g_j - C_{ij}) / \varepsilon > -t,
    \qquad C_{ij} = |x_i - y_j|^p.

With ``k_j = G - g_j >= 0`` (``G = max g``) and ``L_i = f_i + G + reg t`` this is
``C_ij + k_j < L_i``: a branch-and-bound over a tree on the ``y_j``, where a
node whose box lies at distance ``delta`` from ``x_i`` and whose smallest
``k`` is ``kmin`` is skipped when ``delta^p + kmin >= L_i`` (for the squared
cost this is the fixed-radius query in the lifted space ``(y_j, sqrt(k_j))``,
without building it). The tree's shape depends only on the points, so it is
built once per cloud and reused for every truncation; ``kmin`` is recomputed
per truncation in one O(m) pass.

The tree is balanced and implicit: node ``k`` has children ``2k+1`` and
``2k+2``, every leaf sits at depth ``depth`` and holds ``leaf_size / 2`` to
``leaf_size`` points, split at the median of the box's widest side. Each row
is an independent query (a parallel loop, no write conflicts); a first pass
counts the pairs per row (so the caller can refuse a support that would not
fit before allocating it), a second writes them in CSR order with their cost
and log-plan entry. Within a row the columns come in tree order (nearby points
together), not sorted: a valid CSR layout that no kernel here depends on, and
sorting them cost a third of the search.

:func:`pairs_reference` is the plain-numpy twin (all ``n m`` pairs, for the
tests).
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._kernels import kernel, parallel_kernel

__all__ = ["ColumnTree", "spatial_order", "pairs_reference", "light_histogram", "drop_light", "drop_light_reference",
           "moved_mass", "moved_mass_reference"]

#: Points per leaf (at most).
LEAF_SIZE = 16

# Relative room in the pruning test: a node is skipped only when its lower
# bound exceeds the level by more than rounding could explain, so no pair that
# the exact test ``e_ij > -t`` accepts is ever skipped.
_PRUNE_SLACK = 1e-12


@kernel()
def _build(points, depth):
    """``(perm, box_lo, box_hi, node_lo, node_hi)`` of the implicit median-split tree."""
    m, d = points.shape
    n_nodes = 2 ** (depth + 1) - 1
    perm = np.arange(m)
    node_lo = np.zeros(n_nodes, dtype=np.int64)
    node_hi = np.zeros(n_nodes, dtype=np.int64)
    node_hi[0] = m
    for k in range(2 ** depth - 1):  # parents before children
        lo, hi = node_lo[k], node_hi[k]
        best, dim = -1.0, 0
        for c in range(d):
            mn, mx = np.inf, -np.inf
            for t in range(lo, hi):
                v = points[perm[t], c]
                mn = min(mn, v)
                mx = max(mx, v)
            if mx - mn > best:
                best, dim = mx - mn, c
        seg = perm[lo:hi].copy()
        order = np.argsort(points[seg, dim])
        perm[lo:hi] = seg[order]
        mid = (lo + hi) // 2
        node_lo[2 * k + 1], node_hi[2 * k + 1] = lo, mid
        node_lo[2 * k + 2], node_hi[2 * k + 2] = mid, hi
    first_leaf = 2 ** depth - 1
    box_lo = np.empty((n_nodes, d))
    box_hi = np.empty((n_nodes, d))
    for k in range(n_nodes - 1, -1, -1):  # children before parents
        if k >= first_leaf:
            for c in range(d):
                mn, mx = np.inf, -np.inf
                for t in range(node_lo[k], node_hi[k]):
                    v = points[perm[t], c]
                    mn = min(mn, v)
                    mx = max(mx, v)
                box_lo[k, c], box_hi[k, c] = mn, mx
        else:
            for c in range(d):
                box_lo[k, c] = min(box_lo[2 * k + 1, c], box_lo[2 * k + 2, c])
                box_hi[k, c] = max(box_hi[2 * k + 1, c], box_hi[2 * k + 2, c])
    return perm, box_lo, box_hi, node_lo, node_hi


@kernel()
def _node_min(values, node_lo, node_hi, depth):
    """Smallest of ``values`` (given in tree order) under every node (``inf`` if none)."""
    n_nodes = node_lo.shape[0]
    first_leaf = 2 ** depth - 1
    out = np.empty(n_nodes)
    for k in range(n_nodes - 1, -1, -1):
        if k >= first_leaf:
            mn = np.inf
            for t in range(node_lo[k], node_hi[k]):
                mn = min(mn, values[t])
            out[k] = mn
        else:
            out[k] = min(out[2 * k + 1], out[2 * k + 2])
    return out


@parallel_kernel()
def _node_planes(points, k, node_lo, node_hi, box_lo, box_hi, slope, offset):
    """Per node, a slope ``s`` (per-axis least squares of ``k`` on ``y - c``, ``c`` the box
    centre) and ``offset = min_j (k_j - s . (y_j - c))`` over its points of finite ``k``.

    Any slope gives a valid lower bound ``k_j >= offset + s . (y_j - c)``; the fit
    only makes it tight (``offset`` then misses ``k`` by the curvature over the box,
    a second-order term, instead of the first-order ``|grad k| * width``).
    """
    n_nodes, d = box_lo.shape
    for node in prange(n_nodes):
        lo, hi = node_lo[node], node_hi[node]
        kbar, count = 0.0, 0
        for t in range(lo, hi):
            if math.isfinite(k[t]):
                kbar += k[t]
                count += 1
        if count == 0:
            offset[node] = np.inf
            for c in range(d):
                slope[node, c] = 0.0
            continue
        kbar /= count
        for c in range(d):
            centre = 0.5 * (box_lo[node, c] + box_hi[node, c])
            num, den = 0.0, 0.0
            for t in range(lo, hi):
                if math.isfinite(k[t]):
                    u = points[t, c] - centre
                    num += u * (k[t] - kbar)
                    den += u * u
            slope[node, c] = num / den if den > 0.0 else 0.0
        mn, mag = np.inf, 0.0
        for t in range(lo, hi):
            if math.isfinite(k[t]):
                v, size = k[t], abs(k[t])
                for c in range(d):
                    su = slope[node, c] * (points[t, c] - 0.5 * (box_lo[node, c] + box_hi[node, c]))
                    v -= su
                    size += abs(su)
                mn = min(mn, v)
                mag = max(mag, size)
        # lowered by far more than the rounding of the sums above: a lower bound in exact arithmetic
        offset[node] = mn - _PRUNE_SLACK * mag


@parallel_kernel()
def _search(x, f, G, reg, t, p, points, g, perm, box_lo, box_hi, node_lo, node_hi, kmin, slope, offset,
            depth, indptr, fill, cols, cost, logp, order):
    """Count (``fill`` False: into ``indptr[1:]``) or write (``fill`` True) the pairs with ``e_ij > -t``.

    ``points``, ``g`` are in tree order (``perm`` maps back to column indices);
    rows with ``f_i = -inf`` get no pairs. When writing, row ``i``'s pairs go to
    ``cols/cost/logp[indptr[i]:indptr[i+1]]``, in tree order. Rows are visited
    in the order ``order`` (a permutation of the rows; spatially sorted, it
    keeps the tree nodes that neighbouring rows share in cache).
    """
    n, d = x.shape
    first_leaf = 2 ** depth - 1
    level_shift = G + reg * t
    for q in prange(n):
        i = order[q]
        fi = f[i]
        level = fi + level_shift
        if not (level > 0.0) or not math.isfinite(fi):
            if not fill:
                indptr[i + 1] = 0
            continue
        prune = level + _PRUNE_SLACK * (abs(level) + abs(fi) + abs(G))
        stack = np.empty(depth + 2, dtype=np.int64)
        stack[0] = 0
        top = 1
        found = 0
        start = indptr[i] if fill else 0
        while top > 0:
            top -= 1
            node = stack[top]
            d2 = 0.0
            for c in range(d):
                v = x[i, c]
                if v < box_lo[node, c]:
                    d2 += (box_lo[node, c] - v) ** 2
                elif v > box_hi[node, c]:
                    d2 += (v - box_hi[node, c]) ** 2
            bound = d2 if p == 2.0 else (math.sqrt(d2) if p == 1.0 else d2 ** (0.5 * p))
            bound += kmin[node]
            if p == 2.0 and bound <= prune:
                # Tilted bound: with u = y - c and k >= offset + s.u on the node,
                # |x - y|^2 + k >= |x - c|^2 + offset + sum_c min_u (v_c u + u^2),
                # v = s - 2 (x - c), each term minimised exactly over the box's side.
                tilt = offset[node]
                mag = abs(tilt)
                for c in range(d):
                    centre = 0.5 * (box_lo[node, c] + box_hi[node, c])
                    w = x[i, c] - centre
                    v = slope[node, c] - 2.0 * w
                    u = min(max(-0.5 * v, box_lo[node, c] - centre), box_hi[node, c] - centre)
                    tilt += w * w + v * u + u * u
                    mag += w * w + abs(v * u) + u * u
                bound = max(bound, tilt - _PRUNE_SLACK * mag)  # minus far more than its rounding
            if bound > prune:
                continue
            if node < first_leaf:
                stack[top] = 2 * node + 2
                stack[top + 1] = 2 * node + 1
                top += 2
                continue
            for s in range(node_lo[node], node_hi[node]):
                gs = g[s]
                if not math.isfinite(gs):
                    continue
                d2 = 0.0
                for c in range(d):
                    d2 += (x[i, c] - points[s, c]) ** 2
                cij = d2 if p == 2.0 else (math.sqrt(d2) if p == 1.0 else d2 ** (0.5 * p))
                e = (fi + gs - cij) / reg
                if e > -t:
                    if fill:
                        cols[start + found] = perm[s]
                        cost[start + found] = cij
                        logp[start + found] = e
                    found += 1
        if not fill:
            indptr[i + 1] = found


def spatial_order(points) -> np.ndarray:
    """A permutation of ``points`` (shape ``(n, d)``) listing them leaf by leaf of a median-split
    k-d tree (leaves of at most :data:`LEAF_SIZE` points): nearby points come together."""
    points = np.ascontiguousarray(points, dtype=np.float64)
    n = points.shape[0]
    depth = max(0, math.ceil(math.log2(max(n, 1) / LEAF_SIZE))) if n else 0
    return _build(points, depth)[0]


class ColumnTree:
    """A k-d tree over the columns' points ``y`` (built once, queried at any potentials).

    Parameters
    ----------
    y : ndarray, shape (m, d)
    leaf_size : int
    """

    def __init__(self, y, leaf_size: int = LEAF_SIZE):
        y = np.ascontiguousarray(y, dtype=np.float64)
        m = y.shape[0]
        self.depth = max(0, math.ceil(math.log2(max(m, 1) / leaf_size))) if m else 0
        self.perm, self.box_lo, self.box_hi, self.node_lo, self.node_hi = _build(y, self.depth)
        self.points = np.ascontiguousarray(y[self.perm])

    def pairs(self, x, f, g, reg, t, p, max_nnz=None, order=None):
        """Every pair with ``e_ij = (f_i + g_j - |x_i - y_j|^p) / reg > -t``.

        ``order``: the order the rows are searched in (a permutation, e.g.
        :func:`spatial_order` of ``x``; default their own); the result does
        not depend on it.

        Returns
        -------
        indptr : ndarray of int64, shape (n + 1,)
        cols : ndarray of int64
            Columns, in tree order within each row (not sorted).
        cost, logp : ndarray of float64
            ``C_ij`` and ``e_ij`` of each pair.

        Raises
        ------
        OverflowError
            With the pair count as its argument, when it exceeds ``max_nnz``
            (found by the counting pass, before anything is allocated).
        """
        x = np.ascontiguousarray(x, dtype=np.float64)
        f = np.ascontiguousarray(f, dtype=np.float64)
        g = np.asarray(g, dtype=np.float64)
        n = x.shape[0]
        g_tree = np.ascontiguousarray(g[self.perm])
        live = np.isfinite(g_tree)
        G = float(g_tree[live].max()) if live.any() else 0.0
        k = np.where(live, G - g_tree, np.inf)
        kmin = _node_min(k, self.node_lo, self.node_hi, self.depth)
        n_nodes, d = self.box_lo.shape
        slope, offset = np.zeros((n_nodes, d)), np.full(n_nodes, np.inf)
        if p == 2.0:
            _node_planes(self.points, k, self.node_lo, self.node_hi, self.box_lo, self.box_hi, slope, offset)
        indptr = np.zeros(n + 1, dtype=np.int64)
        order = np.arange(n, dtype=np.int64) if order is None else np.asarray(order, dtype=np.int64)
        if order.shape != (n,):
            raise ValueError(f"order: expected a permutation of the {n} rows; got shape {order.shape}")
        args = (x, f, G, float(reg), float(t), float(p), self.points, g_tree, self.perm, self.box_lo,
                self.box_hi, self.node_lo, self.node_hi, kmin, slope, offset, self.depth, indptr)
        empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0)
        if not live.any():
            return indptr, empty_i, empty_f, empty_f
        _search(*args, False, empty_i, empty_f, empty_f, order)
        np.cumsum(indptr, out=indptr)
        nnz = int(indptr[-1])
        if max_nnz is not None and nnz > max_nnz:
            raise OverflowError(nnz)
        cols = np.empty(nnz, dtype=np.int64)
        cost = np.empty(nnz)
        logp = np.empty(nnz)
        _search(*args, True, cols, cost, logp, order)
        return indptr, cols, cost, logp


# ---------------------------------------------------------------------------
# After the search: drop the lightest pairs (see snsot.support.truncate)
# ---------------------------------------------------------------------------


@kernel()
def light_histogram(logp, t_max, width, log_cap, n_bins):
    """Plan mass ``sum exp(e)`` of the pairs with ``e <= log_cap`` in bins of ``e``:
    bin ``floor((e + t_max) / width)`` (clipped to ``[0, n_bins)``)."""
    out = np.zeros(n_bins)
    for s in range(logp.shape[0]):
        e = logp[s]
        if e <= log_cap:
            b = min(max(int((e + t_max) / width), 0), n_bins - 1)
            out[b] += math.exp(e)
    return out


@parallel_kernel()
def _count_kept(indptr, logp, t_max, width, log_cap, n_drop, kept, dropped_count, dropped_mass):
    n = indptr.shape[0] - 1
    for i in prange(n):
        count, n_dropped, mass = 0, 0, 0.0
        for s in range(indptr[i], indptr[i + 1]):
            e = logp[s]
            if e <= log_cap and int((e + t_max) / width) < n_drop:
                mass += math.exp(e)
                n_dropped += 1
            else:
                count += 1
        kept[i + 1] = count
        dropped_count[i + 1] = n_dropped
        dropped_mass[i] = mass


@parallel_kernel()
def _copy_kept(indptr, logp, cols, cost, t_max, width, log_cap, n_drop, new_indptr, new_cols, new_cost,
               drop_indptr, drop_cols, drop_logp):
    n = indptr.shape[0] - 1
    for i in prange(n):
        out = new_indptr[i]
        out_drop = drop_indptr[i]
        for s in range(indptr[i], indptr[i + 1]):
            e = logp[s]
            if not (e <= log_cap and int((e + t_max) / width) < n_drop):
                new_cols[out] = cols[s]
                new_cost[out] = cost[s]
                out += 1
            else:
                drop_cols[out_drop] = cols[s]
                drop_logp[out_drop] = e
                out_drop += 1


def drop_light(indptr, cols, cost, logp, t_max, width, log_cap, n_drop):
    """Remove the pairs with ``e <= log_cap`` in the first ``n_drop`` bins of :func:`light_histogram`.

    Returns ``(indptr, cols, cost, dropped_mass, dropped)``: the kept pairs in
    CSR form, the dropped mass per row, and the dropped pairs themselves as
    ``(indptr, cols, logp)`` (so that their mass can be summed again at other
    potentials, :meth:`snsot.support.Support.outside_mass`).
    """
    n = indptr.size - 1
    kept = np.zeros(n + 1, dtype=np.int64)
    drop_indptr = np.zeros(n + 1, dtype=np.int64)
    dropped_mass = np.zeros(n)
    _count_kept(indptr, logp, t_max, width, log_cap, n_drop, kept, drop_indptr, dropped_mass)
    np.cumsum(kept, out=kept)
    np.cumsum(drop_indptr, out=drop_indptr)
    new_cols = np.empty(int(kept[-1]), dtype=cols.dtype)
    new_cost = np.empty(int(kept[-1]))
    drop_cols = np.empty(int(drop_indptr[-1]), dtype=cols.dtype)
    drop_logp = np.empty(int(drop_indptr[-1]))
    _copy_kept(indptr, logp, cols, cost, t_max, width, log_cap, n_drop, kept, new_cols, new_cost,
               drop_indptr, drop_cols, drop_logp)
    return kept, new_cols, new_cost, dropped_mass, (drop_indptr, drop_cols, drop_logp)


def drop_light_reference(indptr, cols, cost, logp, t_max, width, log_cap, n_drop):
    """Numpy twin of :func:`drop_light` (and, through ``np.bincount``, of :func:`light_histogram`)."""
    n = indptr.size - 1
    with np.errstate(invalid="ignore"):
        bins = np.floor((logp + t_max) / width)
    drop = (logp <= log_cap) & (bins < n_drop)
    rows = np.repeat(np.arange(n), np.diff(indptr))
    dropped_mass = np.bincount(rows[drop], weights=np.exp(logp[drop]), minlength=n)
    kept = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[~drop], minlength=n), out=kept[1:])
    drop_indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[drop], minlength=n), out=drop_indptr[1:])
    return kept, cols[~drop], cost[~drop], dropped_mass, (drop_indptr, cols[drop], logp[drop])


@parallel_kernel()
def _moved_mass(drop_indptr, drop_cols, drop_logp, df, dg, out):
    n = drop_indptr.shape[0] - 1
    for i in prange(n):
        total = 0.0
        shift = df[i]
        for s in range(drop_indptr[i], drop_indptr[i + 1]):
            total += math.exp(drop_logp[s] + shift + dg[drop_cols[s]])
        out[i] = total


def moved_mass(dropped, df, dg):
    """Per row, ``sum_j exp(e_ij + df_i + dg_j)`` over the pairs ``dropped = (indptr, cols, logp)``:
    their plan mass after the log-potentials moved by ``df``, ``dg`` (in units of reg)."""
    indptr, cols, logp = dropped
    out = np.empty(indptr.size - 1)
    _moved_mass(indptr, cols, logp, np.ascontiguousarray(df, dtype=np.float64),
                np.ascontiguousarray(dg, dtype=np.float64), out)
    return out


def moved_mass_reference(dropped, df, dg):
    """Numpy twin of :func:`moved_mass`."""
    indptr, cols, logp = dropped
    rows = np.repeat(np.arange(indptr.size - 1), np.diff(indptr))
    return np.bincount(rows, weights=np.exp(logp + df[rows] + dg[cols]), minlength=indptr.size - 1)


def pairs_reference(x, y, f, g, reg, t, p):
    """Numpy twin of :meth:`ColumnTree.pairs` (all ``n m`` pairs, small problems only)."""
    d2 = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    C = d2 if p == 2.0 else (np.sqrt(d2) if p == 1.0 else d2 ** (0.5 * p))
    with np.errstate(invalid="ignore"):
        E = (f[:, None] + g[None, :] - C) / reg
    keep = E > -t  # NaN (from -inf - -inf) and -inf are never kept
    rows, cols = np.nonzero(keep)  # sorted within rows; the tree's order differs
    indptr = np.zeros(x.shape[0] + 1, dtype=np.int64)
    np.cumsum(keep.sum(axis=1), out=indptr[1:])
    return indptr, cols.astype(np.int64), C[rows, cols], E[rows, cols]
