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
Let ``N_i(t) = #{j : e_ij > -t}``. One tree search finds every pair with
``e_ij > -t_max``, at a level where even ``n m exp(-t_max)`` is 1% of the
target, so ``N_i(t_max)`` is exact and their plan mass is summed exactly;
every pair beyond weighs at most ``exp(-t_max)``, so the mass of row ``i``
beyond ``t_max`` is at most

.. math::
    e^{-t_{max}} (m - N_i(t_{max})).

The support then drops the lightest of the found pairs while their exact
mass plus this tail stays within the target: the per-row bound ``R_i`` is
the dropped pairs' exact mass plus the tail. This is far tighter than the
count bound ``n m e^{-theta}``: in dimension d, ``N_i(t)`` grows like
``t^{d/2}``, not like ``m``. (Searching at ``t_max`` rather than at a lower
level plus a count there costs ``(t_max / theta)^{d/2}``, about 1.3x, more
pairs found; a count is a second traversal, as dear as the search.)

At other potentials ``(f, g)`` every entry is multiplied by
``exp(df_i + dg_j)`` with ``df = (f - f0)/reg``, ``dg = (g - g0)/reg``. The
dropped pairs are kept (column and ``e``), so their mass is summed again
exactly; each pair never found weighs at most ``exp(-t_max + df_i + dg_j)``,
so row ``i``'s tail is at most ``exp(-t_max + df_i) min((m - N_i) exp(max dg),
sum_j exp(dg_j))`` (:meth:`Support.outside_mass`), which tells the solver when
to refresh. (Bounding the dropped pairs by ``R_i exp(df_i + max dg)`` instead
let one column's drift, anywhere, call for refreshes that added a few pairs
in 10^5.)

Finding the pairs
-----------------
With ``k_j = G - g0_j >= 0`` (``G = max g0``), ``e_ij > -t`` reads
``C_ij + k_j < f0_i + G + reg t``: a branch-and-bound over a k-d tree on the
``y_j`` that skips a box when its distance to ``x_i`` (to the power ``p``)
plus its smallest ``k`` is already too large (for the squared cost, the
fixed-radius query in the lifted space ``(y_j, sqrt(k_j))``), compiled and
parallel over rows (:mod:`snsot._tree`). The tree depends only on the
points: it is built once per cloud (:meth:`PointCloud.column_tree`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from . import _sparse_kernels as SK
from ._tree import drop_light, light_histogram, moved_mass
from .geometry import PointCloud

__all__ = ["Support", "from_sparse_cost", "truncate", "BYTES_PER_ENTRY"]

#: Memory the solver needs per support entry: column index (4), cost (8), the
#: transposed copy (row 4, position 8, cost 8), the sparse plan's stored base in
#: both orders (8 + 8), the plan at the current and the trial Newton point
#: (8 + 8), the Newton Hessian's thresholded copy (index 4, value 8), and the
#: dropped pairs kept for the bound (column 4 and ``e`` 8, about 0.7 of them per kept pair).
BYTES_PER_ENTRY = 84


@dataclass(eq=False)
class Support:
    """Pairs that may carry mass, in CSR form, with the cost of each.

    Attributes
    ----------
    indptr, indices, cost : ndarray
        CSR arrays: row ``i``'s pairs are ``indices[indptr[i]:indptr[i+1]]``
        with costs ``cost[...]``, no pair twice; increasing for a user-given
        support, in the tree's (spatial) order for a truncated one.
    shape : tuple
        ``(n, m)``.
    row_bound : ndarray or None
        Certified per-row bound ``R_i`` on the plan mass outside the support at
        the potentials ``(f0, g0)`` it was built at; None when nothing lies
        outside (a user-given support: absent pairs are forbidden).
    theta : float
        Truncation level (``inf`` for a user-given support).
    dropped : tuple or None
        The pairs found but left out, ``(indptr, cols, e)`` with their log-plan
        entries at ``(f0, g0)``; ``tail`` the per-row bound on the pairs never
        found (all below ``-t_max``).
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
    dropped: tuple | None = field(default=None, repr=False)
    tail: np.ndarray | None = field(default=None, repr=False)
    t_max: float = math.inf
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
            coarse = math.inf if top > 0 or np.isnan(top) else 0.0
        else:
            coarse = float(math.exp(top) * np.exp(log_terms - top).sum()) if top < 700 else math.inf
        if self.dropped is None or coarse == 0.0 or max(df.max(), dg.max()) > 300.0:
            return coarse
        # Both bounds hold; the pair-by-pair one is far tighter when a few potentials moved far.
        moved = float(moved_mass(self.dropped, df, dg).sum())
        live_cols = np.isfinite(self.g0)
        spread = float(np.exp(dg[live_cols]).sum())
        unfound = np.minimum(self.tail * math.exp(dg.max()), math.exp(-self.t_max) * spread)
        tail = float((unfound * np.exp(df)).sum())
        return min(coarse, moved + tail)

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


def _append_pairs(indptr, cols, cost, rows_new, cols_new, cloud):
    """CSR ``(indptr, cols, cost)`` with the pairs ``(rows_new, cols_new)`` appended at the end of their rows.

    The new pairs are guards for empty rows or columns, so none is already in the
    CSR; duplicates among them are dropped. O(nnz) moves, no sort of the old pairs
    (at 1e5 points a sort of the 2e7 keys took seconds).
    """
    n, m = indptr.size - 1, cloud.shape[1]
    _, first = np.unique(rows_new * m + cols_new, return_index=True)  # sorted by row, no duplicates
    rows_new, cols_new = rows_new[first], cols_new[first]
    counts = np.diff(indptr)
    extra = np.bincount(rows_new, minlength=n)
    new_indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts + extra, out=new_indptr[1:])
    pos_old = np.arange(indptr[-1], dtype=np.int64) + np.repeat(new_indptr[:-1] - indptr[:-1], counts)
    rank = np.arange(rows_new.size) - np.searchsorted(rows_new, rows_new, side="left")
    pos_new = new_indptr[rows_new] + counts[rows_new] + rank
    out_cols = np.empty(new_indptr[-1], dtype=cols.dtype)
    out_cost = np.empty(new_indptr[-1])
    out_cols[pos_old], out_cost[pos_old] = cols, cost
    out_cols[pos_new], out_cost[pos_new] = cols_new, cloud.pair_costs(rows_new, cols_new)
    return new_indptr, out_cols, out_cost


def truncate(cloud: PointCloud, f0, g0, reg, max_outside, max_nnz=int(2e8)) -> Support:
    """The truncated support of a point-cloud problem at potentials ``(f0, g0)``.

    Finds every pair above the level ``t_max`` at which even the count bound
    ``n m exp(-t_max)`` is 1% of the target, with one compiled tree search
    (:class:`snsot._tree.ColumnTree`, built once per cloud), measures their
    plan mass exactly, and drops the lightest of them while the dropped mass
    plus the certified tail beyond ``t_max`` (module docstring) stays within
    ``max_outside``; ``theta`` is the resulting cut.

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
        Refuse (ValueError, with the size) when the pairs kept would be more,
        or the pairs found before dropping more than twice as many (they are
        held briefly at a third of the solver's bytes per pair).

    Returns
    -------
    Support
        With ``row_bound`` certified at ``(f0, g0)``.
    """
    n, m = cloud.shape
    f0 = np.asarray(f0, dtype=np.float64)
    g0 = np.asarray(g0, dtype=np.float64)
    live_r, live_c = np.isfinite(f0), np.isfinite(g0)
    n_live, m_live = int(live_r.sum()), int(live_c.sum())
    # Beyond t_max even the count bound n m exp(-t) is 1% of the target: every pair
    # there weighs at most exp(-t_max), so the tail needs no count of its own.
    t_max = math.log(max(n_live * m_live, 1) / max_outside) + math.log(100.0)

    def refuse(size, what):
        raise ValueError(
            f"reg: the truncated support at reg={reg:g} would hold about {size:.3g} pairs{what} "
            f"({size * BYTES_PER_ENTRY / 1e9:.3g} GB, limit max_nnz={max_nnz:.3g}); use a smaller reg, "
            "fewer points (or coarser clusters), or a looser tol"
        )

    try:
        indptr, cols, cost, e = cloud.column_tree().pairs(cloud.x, f0, g0, reg, t_max, cloud.p,
                                                          max_nnz=2 * max_nnz, order=cloud.row_order())
    except OverflowError as found:
        refuse(found.args[0], " before dropping the lightest")
    found_per_row = np.diff(indptr)
    tail = math.exp(-t_max) * np.maximum(m_live - found_per_row, 0)
    tail[~live_r] = 0.0
    # Drop the lightest pairs while their exact mass fits in what the tail leaves of
    # the target. Only a pair lighter than the target can be dropped; instead of
    # sorting those, bin them by e (width 1/256) and drop whole bins in order: the
    # same cut as a sort up to one bin (a few pairs kept that could go), O(nnz).
    budget = max_outside - float(tail.sum())
    log_cap = math.log(max_outside)
    width = 1.0 / 256.0
    n_bins = max(int(math.ceil((log_cap + t_max) / width)) + 1, 1)
    n_drop = 0
    if budget > 0:
        dropped_mass = np.cumsum(light_histogram(e, t_max, width, log_cap, n_bins))
        n_drop = int(np.searchsorted(dropped_mass, budget, side="right"))
    theta = t_max - n_drop * width
    indptr, cols, cost, dropped, dropped_pairs = drop_light(indptr, cols, cost, e, t_max, width, log_cap, n_drop)
    R = tail + dropped
    del e
    if indptr[-1] > max_nnz:
        refuse(int(indptr[-1]), "")
    # Guard partners for live rows and columns left empty (they may lie below -theta:
    # harmless, they only enlarge the support).
    empty_r = np.flatnonzero((np.diff(indptr) == 0) & live_r)
    empty_c = np.flatnonzero((np.bincount(cols, minlength=m) == 0) & live_c)
    if empty_r.size or empty_c.size:
        indptr, cols, cost = _append_pairs(indptr, cols, cost, *_best_partners(cloud, f0, g0, empty_r, empty_c),
                                           cloud)
    idx_dtype = np.int32 if m < 2**31 else np.int64
    d_indptr, d_cols, d_logp = dropped_pairs
    dropped_pairs = (d_indptr, d_cols.astype(idx_dtype, copy=False), d_logp)
    return Support(
        indptr, cols.astype(idx_dtype, copy=False), np.ascontiguousarray(cost), (n, m),
        row_bound=R, theta=float(theta), f0=f0.copy(), g0=g0.copy(), reg=float(reg),
        dropped=dropped_pairs, tail=tail, t_max=float(t_max),
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
