r"""Sparse supports: where a plan can carry mass, and a certified bound on what it leaves out.

A :class:`Support` is a set of pairs ``(i, j)`` in CSR form with the cost of
each pair. It comes either from the user (:func:`from_sparse_cost`: a
``scipy.sparse`` cost whose absent entries are forbidden pairs, so nothing
lies outside) or from truncation of a point-cloud problem
(:func:`truncate`): at potentials ``(f0, g0)`` it keeps every pair whose
log-plan entry

.. math::  e_{ij} = (f0_i + g0_j - C_{ij}) / \varepsilon

is above ``-theta``, found with a k-d tree, and it certifies the plan mass
outside.

The certified bound
-------------------
Let ``N_i(t) = #{j : e_ij > -t}``. One tree query finds every pair with
``e_ij > -t_top`` and their plan mass is summed exactly; a count query gives
an upper bound ``U_i >= N_i(t_max)`` at a level ``t_max`` where even
``n m exp(-t_max)`` is negligible. Every pair between the levels weighs at
most ``exp(-t_top)`` and every pair beyond ``t_max`` at most ``exp(-t_max)``,
so the mass of row ``i`` beyond ``t_top`` is at most

.. math::
    e^{-t_{top}} (U_i - N_i(t_{top})) + e^{-t_{max}} (m - U_i),

where ``U_i`` enters with the coefficient ``e^{-t_top} - e^{-t_max} >= 0`` (so an
upper bound, a tree count with a slightly enlarged radius, is enough) and
``N_i(t_top)`` is exact. The support then drops the lightest of the found
pairs while their exact mass plus this tail stays within the target: the
per-row bound ``R_i`` is the dropped pairs' exact mass plus the tail. This is
far tighter than the count bound ``n m e^{-theta}``: in dimension d,
``N_i(t)`` grows like ``t^{d/2}``, not like ``m``.

At other potentials ``(f, g)`` every entry is multiplied by
``exp((f_i - f0_i)/reg + (g_j - g0_j)/reg)``, so the outside mass is at most
``sum_i R_i exp((f_i - f0_i)/reg) * exp(max_j (g_j - g0_j)/reg)``
(:meth:`Support.outside_mass`), which tells the solver when to refresh.

Finding the pairs
-----------------
For the squared Euclidean cost, lifting ``y_j`` to ``(y_j, sqrt(G - g0_j))``
with ``G = max g0`` and ``x_i`` to ``(x_i, 0)`` gives
``|x'_i - y'_j|^2 = C_ij + G - g0_j``, so ``e_ij > -t`` is exactly the
fixed-radius condition ``|x'_i - y'_j|^2 < f0_i + G + reg t``: one tree query
per level. For other powers ``p`` the columns are split into groups by
``g0``; within a group ``g0_j <= G_q`` and a query of radius
``(f0_i + G_q + reg t)^{1/p}`` finds a superset, filtered exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from . import _sparse_kernels as SK
from .geometry import PointCloud

__all__ = ["Support", "from_sparse_cost", "truncate", "BYTES_PER_ENTRY"]

#: Memory the solver needs per support entry: column index (4), cost (8),
#: plan value (8), and the transposed copy (row 4, position 8, cost 8).
BYTES_PER_ENTRY = 40

# Relative enlargement of a query radius: tree distances are rounded, and a
# count must never fall below the true count it bounds.
_RADIUS_SLACK = 1e-9

# Rows per tree query: bounds the Python lists query_ball_point builds.
_QUERY_ROWS = 2048


@dataclass(eq=False)
class Support:
    """Pairs that may carry mass, in CSR form, with the cost of each.

    Attributes
    ----------
    indptr, indices, cost : ndarray
        CSR arrays: row ``i``'s pairs are ``indices[indptr[i]:indptr[i+1]]``
        (increasing) with costs ``cost[...]``.
    shape : tuple
        ``(n, m)``.
    row_bound : ndarray or None
        Certified per-row bound ``R_i`` on the plan mass outside the support at
        the potentials ``(f0, g0)`` it was built at; None when nothing lies
        outside (a user-given support: absent pairs are forbidden).
    theta : float
        Truncation level (``inf`` for a user-given support).
    """

    indptr: np.ndarray
    indices: np.ndarray
    cost: np.ndarray
    shape: tuple
    row_bound: np.ndarray | None = None
    theta: float = math.inf
    f0: np.ndarray | None = None
    g0: np.ndarray | None = None
    reg: float | None = None
    _transpose: tuple | None = field(default=None, repr=False)

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    def transpose(self):
        """``(t_indptr, t_rows, t_pos, t_cost)``: the support column by column (computed once)."""
        if self._transpose is None:
            t_indptr, t_rows, t_pos = SK.csr_transpose(self.indptr, self.indices, self.shape[1])
            self._transpose = (t_indptr, t_rows, t_pos, self.cost[t_pos])
        return self._transpose

    def outside_mass(self, f, g) -> float:
        """Certified upper bound on the plan mass at ``(f, g)`` outside the support (0 when none is)."""
        if self.row_bound is None:
            return 0.0
        with np.errstate(invalid="ignore"):
            df = (np.asarray(f) - self.f0) / self.reg
            dg = (np.asarray(g) - self.g0) / self.reg
        # A zero-mass point keeps potential -inf at both ends: no drift there.
        df = np.where(np.isnan(df), 0.0, df)
        dg = np.where(np.isnan(dg), 0.0, dg)
        live = self.row_bound > 0
        if not live.any():
            return 0.0
        log_terms = np.log(self.row_bound[live]) + df[live] + dg.max()
        top = log_terms.max()
        if not np.isfinite(top):
            return math.inf if top > 0 or np.isnan(top) else 0.0
        return float(math.exp(top) * np.exp(log_terms - top).sum()) if top < 700 else math.inf

    def to_scipy(self, values=None) -> sp.csr_matrix:
        """The support as a scipy CSR matrix holding ``values`` (default: the costs)."""
        data = self.cost if values is None else values
        return sp.csr_matrix((data, self.indices, self.indptr), shape=self.shape)

    def check_feasible(self, a, b) -> None:
        """ValueError when a point with positive mass has no pair at all in the support."""
        row_nnz = np.diff(self.indptr)
        bad = np.flatnonzero((row_nnz == 0) & (np.asarray(a) > 0))
        if bad.size:
            raise ValueError(
                f"C: row {bad[0]} has positive mass a[{bad[0]}] = {a[bad[0]]!r} but no allowed pair "
                f"({bad.size} such rows); the problem is infeasible"
            )
        col_nnz = np.bincount(self.indices, minlength=self.shape[1])
        bad = np.flatnonzero((col_nnz == 0) & (np.asarray(b) > 0))
        if bad.size:
            raise ValueError(
                f"C: column {bad[0]} has positive mass b[{bad[0]}] = {b[bad[0]]!r} but no allowed pair "
                f"({bad.size} such columns); the problem is infeasible"
            )


def from_sparse_cost(C) -> Support:
    """The support of a ``scipy.sparse`` cost matrix: stored entries are the allowed pairs.

    An absent entry is a forbidden pair (as ``+inf`` in a dense cost); a stored
    zero is an allowed pair of cost 0.

    Raises
    ------
    ValueError
        On a non-finite or negative stored cost, an empty matrix, or duplicate
        entries (whose meaning, summed or not, would be a guess).
    """
    if not sp.issparse(C):
        raise TypeError(f"C: expected a scipy.sparse matrix; got {type(C).__name__}")
    if C.ndim != 2 or C.shape[0] == 0 or C.shape[1] == 0:
        raise ValueError(f"C: sparse cost must be a non-empty 2-D matrix; got shape {C.shape}")
    if np.iscomplexobj(C.data) or not np.issubdtype(C.dtype, np.number):
        raise ValueError(f"C: sparse cost must be real and numeric; got dtype {C.dtype}")
    # Duplicates: a COO (or an unsorted CSR) can hold the same pair twice, and
    # converting would sum them, a cost nobody meant; refuse instead.
    coo = C.tocoo()
    n_pairs = np.unique(coo.row.astype(np.int64) * C.shape[1] + coo.col).size
    if n_pairs != coo.nnz:
        raise ValueError(
            f"C: sparse cost holds {coo.nnz - n_pairs} duplicate entries; give each pair once"
        )
    csr = sp.csr_matrix(C, dtype=np.float64, copy=True)
    csr.sort_indices()
    data = csr.data
    if data.size:
        bad = ~np.isfinite(data) | (data < 0)
        if bad.any():
            t = int(np.flatnonzero(bad)[0])
            i = int(np.searchsorted(csr.indptr, t, side="right") - 1)
            raise ValueError(
                f"C: stored costs must be finite and non-negative; found {float(data[t])!r} at "
                f"({i}, {int(csr.indices[t])}) (leave a forbidden pair out instead of storing inf)"
            )
    indices = csr.indices.astype(np.int32) if csr.shape[1] < 2**31 else csr.indices.astype(np.int64)
    return Support(csr.indptr.astype(np.int64), indices, np.ascontiguousarray(data), tuple(csr.shape))


# ---------------------------------------------------------------------------
# Truncation of a point-cloud problem
# ---------------------------------------------------------------------------


class _Finder:
    """Tree queries for ``e_ij > -t`` at fixed potentials ``(f0, g0)``."""

    def __init__(self, cloud: PointCloud, f0, g0, reg, n_groups=8):
        self.cloud, self.reg = cloud, reg
        self.f0 = np.asarray(f0, dtype=np.float64)
        self.g0 = np.asarray(g0, dtype=np.float64)
        self.rows = np.flatnonzero(np.isfinite(self.f0))
        cols = np.flatnonzero(np.isfinite(self.g0))
        self.n_live_cols = cols.size
        if cloud.p == 2.0:
            G = self.g0[cols].max() if cols.size else 0.0
            lift = np.sqrt(np.maximum(G - self.g0[cols], 0.0))
            y = np.hstack([cloud.y[cols], lift[:, None]])
            x = np.hstack([cloud.x[self.rows], np.zeros((self.rows.size, 1))])
            self.groups = [(cKDTree(y), cols, x, G)] if cols.size else []
        else:
            order = cols[np.argsort(self.g0[cols], kind="stable")]
            x = cloud.x[self.rows]
            self.groups = [
                (cKDTree(cloud.y[part]), part, x, self.g0[part].max())
                for part in np.array_split(order, min(n_groups, max(order.size, 1)))
                if part.size
            ]

    def _radius(self, G, t, slack):
        # Condition (sqeuclidean, lifted): dist^2 < f0 + G + reg t; (power p): dist^p < f0 + G + reg t.
        level = self.f0[self.rows] + G + self.reg * t
        power = 2.0 if self.cloud.p == 2.0 else self.cloud.p
        r = np.where(level > 0, np.maximum(level, 0.0) ** (1.0 / power), -1.0)
        return r * (1.0 + slack) if slack else r

    def count(self, t) -> np.ndarray:
        """Per-row upper bound on ``N_i(t)`` (0 for rows with ``f0 = -inf``)."""
        out = np.zeros(self.cloud.shape[0], dtype=np.int64)
        for tree, _, x, G in self.groups:
            r = self._radius(G, t, _RADIUS_SLACK)
            ok = r >= 0
            out[self.rows[ok]] += tree.query_ball_point(x[ok], r[ok], return_length=True)
        return out

    def _lifted_pairs(self, t):
        """Squared cost: candidate pairs from one dual-tree query with a common radius.

        Lifting both sides, ``x''_i = (x_i, sqrt(F - f0_i), 0)`` and
        ``y''_j = (y_j, 0, sqrt(G - g0_j))`` with ``F = max f0``, ``G = max g0``,
        gives ``|x''_i - y''_j|^2 = C_ij + F - f0_i + G - g0_j``, so ``e_ij > -t``
        is ``|x''_i - y''_j|^2 < F + G + reg t`` for every row: scipy's
        ``sparse_distance_matrix`` then returns the pairs from compiled code
        (no per-row Python lists). A superset, filtered exactly by the caller.
        """
        _, cols, _, G = self.groups[0]
        f = self.f0[self.rows]
        F = f.max()
        zx, zy = np.zeros((self.rows.size, 1)), np.zeros((cols.size, 1))
        x = np.hstack([self.cloud.x[self.rows], np.sqrt(np.maximum(F - f, 0.0))[:, None], zx])
        y = np.hstack([self.cloud.y[cols], zy, np.sqrt(np.maximum(G - self.g0[cols], 0.0))[:, None]])
        level = F + G + self.reg * t
        if level <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        radius = math.sqrt(level) * (1.0 + _RADIUS_SLACK)
        found = cKDTree(x).sparse_distance_matrix(cKDTree(y), radius, output_type="ndarray")
        return self.rows[found["i"]].astype(np.int64), cols[found["j"]].astype(np.int64)

    def pairs(self, t):
        """Exactly the pairs with ``e_ij > -t``, as CSR ``(indptr, indices, cost)``, chunked over rows."""
        n = self.cloud.shape[0]
        rows_out, cols_out = [], []
        if self.cloud.p == 2.0 and self.groups and self.rows.size:
            rows, cols = self._lifted_pairs(t)
            cost = self.cloud.pair_costs(rows, cols)
            keep = (self.f0[rows] + self.g0[cols] - cost) / self.reg > -t
            return rows[keep], cols[keep], cost[keep]
        for tree, cols, x, G in self.groups:
            r = self._radius(G, t, _RADIUS_SLACK)
            for start in range(0, self.rows.size, _QUERY_ROWS):
                sl = slice(start, start + _QUERY_ROWS)
                ok = r[sl] >= 0
                found = tree.query_ball_point(x[sl][ok], r[sl][ok], return_sorted=False)
                lens = np.fromiter((len(h) for h in found), dtype=np.int64, count=len(found))
                if lens.sum() == 0:
                    continue
                rr = np.repeat(self.rows[sl][ok], lens)
                cc = cols[np.concatenate([np.asarray(h, dtype=np.int64) for h in found if h])]
                rows_out.append(rr)
                cols_out.append(cc)
        rows = np.concatenate(rows_out) if rows_out else np.zeros(0, np.int64)
        cols = np.concatenate(cols_out) if cols_out else np.zeros(0, np.int64)
        cost = self.cloud.pair_costs(rows, cols)
        keep = (self.f0[rows] + self.g0[cols] - cost) / self.reg > -t
        rows, cols, cost = rows[keep], cols[keep], cost[keep]
        return rows, cols, cost


def _best_partners(cloud: PointCloud, f0, g0, rows, cols):
    """For the given rows and columns (of finite potential), one partner maximising
    ``f0_i + g0_j - C_ij`` (exactly for the squared Euclidean cost, a nearest point
    otherwise), so that no point with mass ends up with an empty row or column."""
    live_r = np.flatnonzero(np.isfinite(f0))
    live_c = np.flatnonzero(np.isfinite(g0))
    if not live_r.size or not live_c.size or not (rows.size or cols.size):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    jr = ic = np.zeros(0, np.int64)
    if cloud.p == 2.0:
        if rows.size:
            G = g0[live_c].max()
            ty = cKDTree(np.hstack([cloud.y[live_c], np.sqrt(np.maximum(G - g0[live_c], 0))[:, None]]))
            jr = ty.query(np.hstack([cloud.x[rows], np.zeros((rows.size, 1))]))[1]
        if cols.size:
            F = f0[live_r].max()
            tx = cKDTree(np.hstack([cloud.x[live_r], np.sqrt(np.maximum(F - f0[live_r], 0))[:, None]]))
            ic = tx.query(np.hstack([cloud.y[cols], np.zeros((cols.size, 1))]))[1]
    else:
        if rows.size:
            jr = cKDTree(cloud.y[live_c]).query(cloud.x[rows])[1]
        if cols.size:
            ic = cKDTree(cloud.x[live_r]).query(cloud.y[cols])[1]
    return (np.concatenate([rows, live_r[ic]]).astype(np.int64),
            np.concatenate([live_c[jr], cols]).astype(np.int64))


def truncate(cloud: PointCloud, f0, g0, reg, max_outside, max_nnz=int(2e8)) -> Support:
    """The truncated support of a point-cloud problem at potentials ``(f0, g0)``.

    Finds the pairs above a level ``t_top`` with one tree query, measures
    their plan mass exactly, and drops the lightest of them while the dropped
    mass plus the certified tail beyond ``t_top`` (module docstring) stays
    within ``max_outside``; ``theta`` is the resulting cut.

    Parameters
    ----------
    cloud : PointCloud
    f0, g0 : ndarray
        Potentials (``-inf`` for zero-mass points, which get no pairs).
    reg : float
    max_outside : float
        Target for the certified plan mass left outside (absolute, same units
        as the weights).
    max_nnz : int
        Refuse (ValueError, with the size) when the pairs would be more.

    Returns
    -------
    Support
        With ``row_bound`` certified at ``(f0, g0)``.
    """
    n, m = cloud.shape
    f0 = np.asarray(f0, dtype=np.float64)
    g0 = np.asarray(g0, dtype=np.float64)
    finder = _Finder(cloud, f0, g0, reg)
    m_live, n_live = finder.n_live_cols, finder.rows.size
    # Beyond t_max even the count bound n m exp(-t) is 1% of the target.
    t_max = math.log(max(n_live * m_live, 1) / max_outside) + math.log(100.0)
    n_max = finder.count(t_max)
    # The tail beyond t_top weighs at most exp(-t_top) N(t_max) + 1% of the target: half of it at most.
    t_top = min(t_max, math.log(2.0 * max(int(n_max.sum()), 1) / max_outside))
    # The count at t_top (a second tree pass) is needed only when the one at t_max, its
    # upper bound, does not already show that the pairs fit.
    n_top = int(n_max.sum())
    if n_top > max_nnz:
        n_top = int(finder.count(t_top).sum())
    if n_top > max_nnz:
        raise ValueError(
            f"reg: the truncated support at reg={reg:g} would hold about {n_top:.3g} pairs "
            f"({n_top * BYTES_PER_ENTRY / 1e9:.3g} GB, limit max_nnz={max_nnz:.3g}); use a smaller reg, "
            "fewer points (or coarser clusters), or a looser tol"
        )
    rows, cols, cost = finder.pairs(t_top)
    e = (f0[rows] + g0[cols] - cost) / reg
    n_in_top = np.bincount(rows, minlength=n)
    tail = math.exp(-t_top) * np.maximum(n_max - n_in_top, 0)
    if t_top < t_max:
        tail = tail + math.exp(-t_max) * np.maximum(m_live - n_max, 0)
    tail[~np.isfinite(f0)] = 0.0
    # Drop the lightest pairs while their exact mass fits in what the tail leaves of the target.
    # Only a pair lighter than the target can be dropped: sort those alone (the same
    # prefix as sorting all, at a fraction of the cost).
    light = np.flatnonzero(e <= math.log(max_outside)) if max_outside > 0 else np.zeros(0, np.int64)
    order = light[np.argsort(e[light], kind="stable")]
    with np.errstate(over="ignore"):  # far-off potentials: an infinite total simply drops nothing
        dropped_mass = np.cumsum(np.exp(e[order]))
    k = int(np.searchsorted(dropped_mass, max_outside - tail.sum(), side="right"))
    drop = order[:k]
    theta = float(-e[order[k - 1]]) if k else t_top
    R = tail + np.bincount(rows[drop], weights=np.exp(e[drop]), minlength=n)
    keep = np.ones(rows.size, dtype=bool)
    keep[drop] = False
    rows, cols, cost = rows[keep], cols[keep], cost[keep]
    # Guard partners for live rows and columns left empty (they may lie below -theta:
    # harmless, they only enlarge the support).
    empty_r = np.flatnonzero((np.bincount(rows, minlength=n) == 0) & np.isfinite(f0))
    empty_c = np.flatnonzero((np.bincount(cols, minlength=m) == 0) & np.isfinite(g0))
    br, bc = _best_partners(cloud, f0, g0, empty_r, empty_c)
    rows = np.concatenate([rows, br])
    cols = np.concatenate([cols, bc])
    cost = np.concatenate([cost, cloud.pair_costs(br, bc)])
    key = rows * m + cols
    key, first = np.unique(key, return_index=True)  # sorted by row then column, no duplicates
    rows, cols, cost = rows[first], cols[first], cost[first]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    idx_dtype = np.int32 if m < 2**31 else np.int64
    return Support(
        indptr, cols.astype(idx_dtype), np.ascontiguousarray(cost), (n, m),
        row_bound=R, theta=theta, f0=f0.copy(), g0=g0.copy(), reg=float(reg),
    )


# ---------------------------------------------------------------------------
# A problem on a support
# ---------------------------------------------------------------------------


class SupportProblem:
    """An entropic OT problem restricted to a :class:`Support`: what the solver loops see.

    It answers what the loops ask of :class:`~snsot.OTProblem` (``a``, ``b``,
    ``reg``, ``shape``, ``mass``, ``cost_range``, :meth:`with_reg`) without a
    dense cost. The weights are trusted (validated by the caller, all positive).
    """

    def __init__(self, support: Support, a, b, reg):
        self.support = support
        self.a = np.asarray(a, dtype=np.float64)
        self.b = np.asarray(b, dtype=np.float64)
        self.reg = float(reg)

    @property
    def shape(self):
        return self.support.shape

    #: Supports carry balanced OT only (the KL-relaxed marginals need a dense problem for now).
    balanced = True
    reg_m = (float("inf"), float("inf"))

    @property
    def mass(self) -> float:
        return float(self.a.sum())

    @property
    def cost_range(self):
        c = self.support.cost
        return (float(c.min()), float(c.max())) if c.size else (0.0, 0.0)

    def with_reg(self, reg) -> "SupportProblem":
        return SupportProblem(self.support, self.a, self.b, reg)
