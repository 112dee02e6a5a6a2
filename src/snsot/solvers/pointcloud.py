"""Entropic OT between point clouds and on user-given sparse supports, with memory O(nnz).

Both drive the one SNS loop (:func:`~snsot.solvers.sns.solve_sns`) with a
:class:`~snsot.solvers._sparse_plan.SparsePlan` instead of the dense plan.

Point clouds (multiscale epsilon-scaling with kernel truncation, after
Schmitzer's sparse scaling and GeomLoss's multiscale backend):

1. **A hierarchy of clusterings.** At regularisation ``reg`` the plan of a
   point is about ``reg^(1/p)`` wide, so at large ``reg`` the points are far
   too many partners. Each ``reg`` of the schedule (``reg * eps_factor**k``
   down to the target) is solved on grid clusters of width
   ``w(reg) ~ (theta reg)^(1/p)`` (:func:`_cluster_width`), chosen so that a
   cluster has about ``start_partners`` partners, carrying their points'
   mass; once clusters would be nearly as many as the points, the points
   themselves (:data:`_POINTS_FRACTION` of them on both sides). Every
   level's support then holds about ``start_partners`` pairs per cluster or
   point: memory O(n k) from the first scale to the last (each scale's
   largest count is reported in ``result.scales``). Clusters are kept until
   they are 0.8 of the points, with 200 partners each: on the points, the
   scale before the last would hold 4 times the final support (the plan is
   4 times wider there), which is what decides how far ``n`` can go.
2. **Coarse start.** The first ``reg`` is the smallest of the schedule whose
   clusters are at most ``n_coarse`` per side; that small problem is solved
   densely by SNS.
3. **Carry.** From one level to the next, a point's potential is its
   cluster's plus a first-order correction: ``f_i = F_I + grad F_I . (x_i -
   X_I)``, where ``grad F_I`` is the plan-weighted mean of ``grad_x c(X_I,
   Y_J)`` (envelope theorem). For the squared cost this is ``2 (X_I -
   T(X_I))`` with ``T`` the barycentric map, so the carried potential is
   accurate to ``O(h^2 / reg)`` instead of ``O(h / reg)`` for clusters of
   width ``h``; a finer cluster takes its points' mass-weighted mean.
4. **Predict.** Before carrying, the potentials are extrapolated in ``reg``:
   entropic potentials move like ``f_reg ~ f_0 + reg h`` (``h`` from the log
   densities), by tens of reg in a Gaussian's tail between ``4 reg`` and
   ``reg``, so each scale adds ``(r_prev - r) / (r_prevprev - r_prev)`` times
   the drift of the previous scale (its solution minus its carried start).
   At n = 10^5 (reg 1e-5) the last scale then starts at a marginal error of
   8.8e-3 instead of 1.2e-2 and the intermediate supports are 1.1-1.7x
   smaller.
5. **Refine.** At each ``reg``: settle the carried potentials with a few
   Sinkhorn steps (on the previous support when the clustering is the same,
   else, at the last scale, on one truncated at the carried potentials),
   truncate the support at them with a certified outside mass below
   ``outside_fraction * tol`` (:func:`snsot.support.truncate`), solve on it
   with SNS, and refresh the support when the bound at the new potentials
   exceeds that target: after the solve, and also after any Newton step
   where the bound reaches a tenth of the error left (a support that lacks
   pairs the solution needs otherwise draws Newton towards its own optimum).
   Intermediate scales are solved to ``1e-3`` of the mass, the last to
   ``tol``; SNS runs with ``extrapolate=8`` (the last scale starts 10 to 20
   reg from its optimum near the clouds' edges).

Each cloud is first put in the leaf order of a k-d tree over it (and each
level's clusters in that of their centres): a point's partners then have
nearby indices, so the passes over the support gather and scatter within
cache. At n = 10^6 a CG product over the 4.4e7 pairs took 1.23 s with the
points in input order and 0.1 s in tree order.

Before any of this, the final support's size is estimated
(:func:`estimate_support`) and a problem that would not fit in ``max_nnz``
pairs is refused with the estimate and what to change.

The result's ``history`` holds every iterate of every scale (with its
``reg``), and ``scales`` one record per scale (clusters, support size,
largest pairs per point, iterations, error, seconds).

The reported ``marginal_error`` is the one measured on the support plus twice
the certified outside mass (it can move every row's and column's sum by that
much in L1), and ``converged`` is True only when that total is below ``tol``.
"""

from __future__ import annotations

import functools
import math
import os
import time

import numpy as np
import scipy.sparse as sp

from .._kernels import thread_limit
from .._tree import spatial_order
from ..geometry import PointCloud
from scipy.spatial import cKDTree

from ..result import History
from ..support import BYTES_PER_ENTRY, SupportProblem, from_sparse_cost, truncate
from ._sparse_plan import SparsePlan
from .sns import solve_sns

__all__ = ["solve_pointcloud", "solve_sparse_cost", "finite_support_pays", "solve_on_finite_support"]

#: Iterations of one solve on a support before its bound is checked (and the support refreshed).
_CHUNK_ITER = 300
#: Iterations settling the potentials of a new reg on the previous (wider) support.
_SETTLE_ITER = 10
#: A support is built for this fraction of the outside-mass target (see the refresh loop).
_REFRESH_ROOM = 0.1
#: Supports tried per reg before giving up (converged stays False then).
_MAX_REFRESH = 12
#: A solve on a support stops for a refresh once the bound on the mass outside exceeds this
#: fraction of its marginal error (and the target).
_MONITOR_FRACTION = 0.1
#: Sinkhorn steps before Newton may take over on a support whose potentials were settled or solved
#: at this reg already (SNS's default minimum, 20, is for a cold start).
_RESTART_WARMUP = 3
#: SNS's ``extrapolate`` on supports (see :func:`~snsot.solvers.sns.solve_sns`): the last scale starts
#: 10 to 20 reg away from its optimum near the clouds' edges, where Newton advances 2 to 4 reg a step.
_EXTRAPOLATE = 8
#: Truncation levels theta about this large are typical at tol ~ 1e-9 (used only to size the hierarchy
#: and to estimate the support before solving).
_THETA_TYPICAL = 30.0
#: A level switches to the points once its clusters would be at least this fraction of them on both sides.
_POINTS_FRACTION = 0.8
#: Predict each scale's potentials from the previous scale's drift (see :func:`solve_pointcloud`).
_PREDICT = True


def _finish(res, plan_shape, rows, cols, bound, support_size):
    """Embed the solved sub-problem and report the support (``finalize`` already added
    twice the outside-mass bound to ``marginal_error`` and decided ``converged`` on it)."""
    n, m = plan_shape
    P = res.plan.tocoo()
    res.plan = sp.csr_matrix((P.data, (rows[P.row], cols[P.col])), shape=(n, m))
    f = np.full(n, -np.inf)
    g = np.full(m, -np.inf)
    f[rows], g[cols] = res.potentials
    res.potentials = (f, g)
    res.support_size = int(support_size)
    res.outside_mass = float(bound)
    return res


def solve_sparse_cost(C, a, b, *, reg, tol, max_iter, init=None, callback=None, solver=solve_sns, **options):
    """SNS (or another loop, ``solver``) on the support of a ``scipy.sparse`` cost.

    Absent entries are forbidden pairs. ``a`` and ``b`` are validated weights
    (see :func:`snsot.solve`); ``solver`` is :func:`~snsot.solvers.sns.solve_sns`
    (default) or :func:`~snsot.solvers.sinkhorn.solve_sinkhorn`, driven by a
    :class:`SparsePlan`; options are the solver's. ``tol`` is relative to the
    total mass, as in :func:`snsot.solve`.
    """
    support = from_sparse_cost(C)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    tol_rel, tol = tol, tol * float(a.sum())  # relative to the mass, as in snsot.solve
    support.check_feasible(a, b)
    rows, cols = np.flatnonzero(a > 0), np.flatnonzero(b > 0)
    if rows.size < a.size or cols.size < b.size:
        support = from_sparse_cost(support.to_scipy()[rows][:, cols])
    problem = SupportProblem(support, a[rows], b[cols], reg)
    if init is not None:
        init = (np.asarray(init[0])[rows], np.asarray(init[1])[cols])
    res = solver(problem, tol=tol, max_iter=max_iter, init=init, callback=callback,
                 _plan=SparsePlan(problem), **options)
    res.tol = tol_rel
    return _finish(res, (a.size, b.size), rows, cols, 0.0, support.nnz)


#: A dense cost with at least this fraction of ``+inf`` (forbidden) entries is solved on
#: its finite entries by the CSR kernels (see :func:`finite_support_pays`).
SPARSE_INF_FRACTION = 0.9
#: ... when it has at least this many entries (below, one dense pass is too short to matter).
SPARSE_MIN_ENTRIES = 100_000


def finite_support_pays(problem, method) -> bool:
    """Whether :func:`snsot.solve` should solve a dense ``problem`` on its finite entries.

    A pass of a CSR kernel reads only the allowed pairs but costs about 2 to 4
    times as much per pair as a dense pass (indirect column indices, a
    transposed copy for the column half-step), so it pays once the forbidden
    pairs (``+inf``) are most of the matrix. Measured at n = 2000, 2-D
    clouds, nearest pairs allowed (``benchmarks/forbidden_pairs.py``), dense
    time / sparse time: 0.4-1.1 at 70-80% inf, 1.1-2.8 at 90%, 3-8 at 95%;
    hence :data:`SPARSE_INF_FRACTION`. Balanced float64 problems only (the
    float32 and unbalanced paths stay dense).
    """
    C = problem.C
    if method not in ("sns", "sinkhorn") or not problem.balanced or C.dtype != np.float64:
        return False
    if C.size < SPARSE_MIN_ENTRIES:
        return False
    return np.count_nonzero(np.isfinite(C)) <= (1.0 - SPARSE_INF_FRACTION) * C.size


def solve_on_finite_support(problem, *, method, tol, max_iter, init=None, callback=None, n_threads=None,
                            stop_at_floor=True, **options):
    """Solve a dense ``problem`` (validated, shifted, positive weights) on its finite entries.

    The same problem as the dense one (``+inf`` pairs carry no mass either
    way), held in CSR form: memory and work per pass O(finite entries). The
    plan comes back dense, as for any dense cost; ``support_size`` says how
    many pairs were held.
    """
    from .sinkhorn import solve_sinkhorn

    C = problem.C
    mask = np.isfinite(C)
    indptr = np.zeros(C.shape[0] + 1, dtype=np.int64)
    np.cumsum(mask.sum(axis=1), out=indptr[1:])
    cost = sp.csr_matrix((C[mask], np.nonzero(mask)[1], indptr), shape=C.shape)
    del mask
    solver = solve_sns if method == "sns" else solve_sinkhorn

    def solve_unit(a1, b1, init1):  # at unit mass, under the stall rule, as solve_scaled does a dense cost
        with thread_limit(cost.nnz, n_threads):
            return solve_sparse_cost(cost, a1, b1, reg=problem.reg, tol=tol, max_iter=max_iter, init=init1,
                                     callback=callback, solver=solver, **options)

    from ._scale import solve_weights_scaled

    res = solve_weights_scaled(solve_unit, problem.a, problem.b, reg=problem.reg, tol=tol, shape=C.shape,
                               stop_at_floor=stop_at_floor, init=init)
    res.plan = res.plan.toarray()
    return res


# ---------------------------------------------------------------------------
# Point clouds
# ---------------------------------------------------------------------------


class _Level:
    """One level of the clustering hierarchy: grid clusters of width ``width`` (or the points).

    ``lx``/``ly`` give each point's cluster (None at the points level); ``X``,
    ``Y`` are the clusters' mass-weighted centres and ``A``, ``B`` their masses.
    """

    def __init__(self, cloud, a, b, width=None):
        self.width = width
        if width is None:
            self.lx = self.ly = None
            self.X, self.Y, self.A, self.B = cloud.x, cloud.y, a, b
        else:
            origin = np.minimum(cloud.x.min(axis=0), cloud.y.min(axis=0))
            self.lx, self.X, self.A = _grid_clusters(cloud.x, a, width, origin)
            self.ly, self.Y, self.B = _grid_clusters(cloud.y, b, width, origin)
        self.cloud = PointCloud(self.X, self.Y, cloud.p) if width is not None else cloud

    @property
    def is_points(self) -> bool:
        return self.width is None

    @property
    def shape(self):
        return self.X.shape[0], self.Y.shape[0]


def _grid_clusters(points, weights, width, origin):
    """Cells of a grid of side ``width`` (same origin for both clouds): ``(labels, centres, masses)``."""
    cell = np.floor((points - origin) / width).astype(np.int64)
    span = cell.max(axis=0) + 1
    if float(np.prod(span.astype(np.float64))) < 2.0**62:
        # One integer key per cell: a 1-D unique is ~10x faster than np.unique(axis=0)'s row sort.
        _, labels = np.unique(np.ravel_multi_index(cell.T, span), return_inverse=True)
    else:
        _, labels = np.unique(cell, axis=0, return_inverse=True)
    labels = labels.ravel()
    mass = np.bincount(labels, weights=weights)
    d = points.shape[1]
    centres = np.stack([np.bincount(labels, weights=weights * points[:, k]) for k in range(d)], axis=1)
    centres /= mass[:, None]
    # Clusters numbered in the leaf order of a k-d tree over their centres (see solve_pointcloud).
    order = spatial_order(centres)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[labels], centres[order], mass[order]


def _ball_volume(d) -> float:
    return math.pi ** (d / 2) / math.gamma(d / 2 + 1)


def _cluster_width(reg, d, p, partners):
    """Grid width at ``reg`` giving about ``partners`` pairs per cluster.

    A cluster's pairs lie where ``C <~ reg * theta``: a ball of radius
    ``(theta reg)^(1/p)`` around its image, holding ``V_d (theta reg)^(d/p) / w^d``
    cells of width ``w``. Solving the clustered problem at that width moves a
    log-plan entry by about ``(w / 2)^2 / reg`` for the squared cost (a fraction
    of a unit at 2-D, ``partners = 400``): a warm start, not a solution.
    """
    return (_ball_volume(d) / partners) ** (1.0 / d) * (_THETA_TYPICAL * reg) ** (1.0 / p)


def _plan_gradient(P, X, Y, p):
    """Envelope gradients ``grad F_I = sum_J P_IJ grad_x c(X_I, Y_J) / sum_J P_IJ`` (and for G), from a CSR plan."""
    row = np.asarray(P.sum(axis=1)).ravel()
    col = np.asarray(P.sum(axis=0)).ravel()
    row = np.where(row > 0, row, 1.0)
    col = np.where(col > 0, col, 1.0)
    if p == 2.0:  # 2 (X_I - T(X_I)) with the barycentric map T
        return 2.0 * (X - (P @ Y) / row[:, None]), 2.0 * (Y - (P.T @ X) / col[:, None])
    Q = P.tocoo()
    diff = X[Q.row] - Y[Q.col]
    dist = np.sqrt((diff * diff).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(dist > 0, p * dist ** (p - 2.0), 0.0) * Q.data
    gx = np.stack([np.bincount(Q.row, weights=scale * diff[:, k], minlength=X.shape[0]) for k in range(X.shape[1])], 1)
    gy = -np.stack([np.bincount(Q.col, weights=scale * diff[:, k], minlength=Y.shape[0]) for k in range(Y.shape[1])], 1)
    return gx / row[:, None], gy / col[:, None]


def _carry(prev, new, f, g, r_prev, r, plan, p, cloud, a, b):
    """Potentials of level ``new`` at ``reg = r`` from those of level ``prev`` at ``r_prev``.

    Carried in the normalised form ``f~ = f - reg log A`` (the plan is then
    ``A_I B_J exp((f~_I + g~_J - C_IJ)/reg)``), which does not depend on how
    mass is split into points and converges to a Kantorovich potential as
    ``reg -> 0``. A point's ``f~`` is its cluster's plus the first-order
    correction ``grad F~_I . (x_i - X_I)`` (envelope theorem: the gradient is
    the plan-weighted mean of ``grad_x c``), accurate to ``O(h^2 / reg)`` for
    clusters of width ``h``; a new cluster's ``f~`` is the mass-weighted mean of
    its points' (exact for the linear part).
    """
    ft = f - r_prev * np.log(prev.A)
    gt = g - r_prev * np.log(prev.B)
    if prev is not new:
        gx, gy = _plan_gradient(plan, prev.X, prev.Y, p)
        if not prev.is_points:
            ft = ft[prev.lx] + ((cloud.x - prev.X[prev.lx]) * gx[prev.lx]).sum(axis=1)
            gt = gt[prev.ly] + ((cloud.y - prev.Y[prev.ly]) * gy[prev.ly]).sum(axis=1)
        if not new.is_points:
            ft = np.bincount(new.lx, weights=a * ft) / new.A
            gt = np.bincount(new.ly, weights=b * gt) / new.B
    return ft + r * np.log(new.A), gt + r * np.log(new.B)


def estimate_support(cloud: PointCloud, b, reg, theta=_THETA_TYPICAL, sample=256, seed=0) -> float:
    """Estimated pairs of the truncated support of a point-cloud problem at ``reg``.

    A point ``x_i`` keeps the partners ``y_j`` with ``C_ij <~ reg * theta`` around
    its image, and the images are distributed like ``b``: so the estimate is
    ``n`` times the mean, over ``sample`` points ``y_k`` drawn from ``b``, of the
    number of ``y_j`` within ``(theta reg)^(1/p)`` of ``y_k`` (one tree count).
    """
    n, m = cloud.shape
    rng = np.random.default_rng(seed)
    w = np.asarray(b, dtype=np.float64)
    k = rng.choice(m, size=min(sample, m), p=w / w.sum())
    radius = (theta * reg) ** (1.0 / cloud.p)
    counts = cKDTree(cloud.y).query_ball_point(cloud.y[k], radius, return_length=True)
    return float(n) * float(np.mean(counts))


def _default_max_nnz() -> int:
    """Pairs that fit in half the machine's memory (at :data:`~snsot.support.BYTES_PER_ENTRY` each)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 16e9
    return int(0.5 * total / BYTES_PER_ENTRY)


def _history(parts, t_start):
    """One :class:`History` of every stage's solves, times from the start of the whole solve."""
    if not parts:
        return History()
    def cat(name):
        return np.concatenate([getattr(h, name) for h, _, _ in parts])
    time_ = np.concatenate([h.time + offset for h, offset, _ in parts])
    regs = np.concatenate([np.where(np.isnan(h.reg), r, h.reg) for h, _, r in parts])
    return History(marginal_error=cat("marginal_error"), objective=cat("objective"), time=time_,
                   stage=cat("stage").astype(np.int8), reg=regs)


def _max_partners(support) -> int:
    """Most pairs any point (row or column) has in the support."""
    if support.nnz == 0:
        return 0
    rows = int(np.diff(support.indptr).max())
    cols = int(np.bincount(support.indices, minlength=support.shape[1]).max())
    return max(rows, cols)


def solve_pointcloud(cloud: PointCloud, a, b, *, reg, tol, max_iter, init=None, callback=None,
                     outside_fraction=0.01, max_nnz=None, n_coarse=1024, eps_factor=4.0,
                     start_partners=200, stage_tol=1e-3, stage_outside_fraction=None, n_threads=None, **options):
    """SNS between two point clouds on an adaptively truncated sparse support.

    See the module docstring for the algorithm. ``tol`` is relative to the
    total mass, as in :func:`snsot.solve`.

    Options
    -------
    outside_fraction : float
        The certified mass outside the support is kept below
        ``outside_fraction * tol`` (so it takes at most ``2 * outside_fraction``
        of the error budget).
    max_nnz : int, optional
        Refuse (ValueError, naming the estimated size and what to change) a
        problem whose support would hold more pairs: checked before solving
        from an estimate (:func:`estimate_support`) and again at every
        truncation. Default: the pairs that fit in half the machine's memory.
    n_coarse : int
        Most clusters per side of the first (dense) problem of the hierarchy.
    eps_factor : float
        Ratio of successive regularisations in the schedule.
    start_partners : int
        Pairs per cluster each level of the hierarchy aims at (the clusters'
        width follows from it, :func:`_cluster_width`).
    stage_tol : float
        Marginal error (relative to the mass) each scale before the last is
        solved to: a warm start for the next, not an answer.
    stage_outside_fraction : float, optional
        ``outside_fraction`` for the scales before the last (default: the same):
        a looser one keeps fewer pairs there (their supports are the largest).
    Other options are passed to :func:`~snsot.solvers.sns.solve_sns`
    (``extrapolate`` defaults to 8 here).
    """
    from .. import solve

    t_start = time.perf_counter()
    options = {"extrapolate": _EXTRAPOLATE, **options}
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    rows, cols = np.flatnonzero(a > 0), np.flatnonzero(b > 0)
    # The points with mass, each cloud in the leaf order of a k-d tree over it: a point's partners
    # then have nearby indices, so every pass over the support (Sinkhorn, the plan, CG's products)
    # gathers and scatters within cache instead of across the whole potential vector.
    rows, cols = rows[spatial_order(cloud.x[rows])], cols[spatial_order(cloud.y[cols])]
    sub = PointCloud(cloud.x[rows], cloud.y[cols], cloud.p)
    a_s, b_s = a[rows], b[cols]
    mass = float(a_s.sum())
    tol_abs = tol * mass
    p, d = cloud.p, cloud.dim
    max_nnz = _default_max_nnz() if max_nnz is None else int(max_nnz)
    stage_tol_rel = float(stage_tol)
    if stage_outside_fraction is not None and not 0.0 < stage_outside_fraction < 0.5:
        raise ValueError(f"stage_outside_fraction: must lie in (0, 0.5); got {stage_outside_fraction!r}")

    # Refuse early, before any solve, when the final support would not fit.
    estimate = estimate_support(sub, b_s, reg)
    if estimate > max_nnz:
        raise ValueError(
            f"reg: the truncated support at reg={reg:g} is estimated at {estimate:.3g} pairs "
            f"({estimate * BYTES_PER_ENTRY / 1e9:.3g} GB; limit max_nnz={max_nnz:.3g}, "
            f"{max_nnz * BYTES_PER_ENTRY / 1e9:.3g} GB); pairs grow like reg^({d}/{p:g}) and like the number "
            "of points: use a smaller reg, fewer points, or a larger max_nnz if the memory is there"
        )

    levels: dict = {}

    def level_at(r):
        """The clustering for ``r`` (``start_partners`` per cluster); the points once clusters would be nearly as many."""
        if "points" in levels:
            return levels["points"]
        lev = _Level(sub, a_s, b_s, _cluster_width(r, d, p, start_partners))
        if lev.shape[0] >= _POINTS_FRACTION * sub.shape[0] and lev.shape[1] >= _POINTS_FRACTION * sub.shape[1]:
            levels["points"] = _Level(sub, a_s, b_s)
            return levels["points"]
        return lev

    parts = []  # (history, time offset, reg) of every solve
    scales = []  # one record per reg of the schedule
    if init is not None:
        level = levels["points"] = _Level(sub, a_s, b_s)
        f, g = np.asarray(init[0], dtype=np.float64)[rows], np.asarray(init[1], dtype=np.float64)[cols]
        regs, plan = [reg], None
        first_counts = (0, 0)
    else:
        # Start at the largest reg of the schedule whose clusters are at most n_coarse per side:
        # a small dense problem, solved by dense SNS.
        extent = np.maximum(sub.x.max(axis=0), sub.y.max(axis=0)) - np.minimum(sub.x.min(axis=0), sub.y.min(axis=0))
        r0 = reg
        while float(np.prod(extent / _cluster_width(r0, d, p, start_partners) + 1.0)) > n_coarse:
            r0 *= eps_factor
        level = level_at(r0)
        if max(level.shape) > 4 * n_coarse:  # a very skewed cloud: coarser clusters than the formula says
            level = _Level(sub, a_s, b_s, float(np.max(extent)) / n_coarse ** (1.0 / d))
        t0 = time.perf_counter()
        C = level.cloud.dense_cost(max_bytes=64e9)
        coarse = solve(C, level.A, level.B, reg=r0, tol=max(tol, 1e-6), warn=False, method="sns",
                       n_threads=n_threads)
        parts.append((coarse.history, t0 - t_start, r0))
        first_counts = (coarse.n_sinkhorn, coarse.n_newton)
        f, g = coarse.potentials
        plan = sp.csr_matrix(coarse.plan)
        scales.append(dict(reg=r0, points=level.is_points, n_x=level.shape[0], n_y=level.shape[1],
                           width=level.width, support_size=int(C.size), pairs_per_point=float(level.shape[1]),
                           max_pairs_per_point=int(max(level.shape)), n_sinkhorn=coarse.n_sinkhorn,
                           n_newton=coarse.n_newton, marginal_error=coarse.marginal_error, refreshes=0,
                           time=time.perf_counter() - t0))
        regs = []
        r = r0 / eps_factor
        while r > reg * (1 + 1e-12):
            regs.append(r)
            r /= eps_factor
        regs.append(reg)
        r_prev = r0

    start = None  # normalised potentials carried into the previous scale, and the reg they came from
    used = 0
    counts = np.array(first_counts, dtype=np.int64)  # Sinkhorn and Newton steps over every stage and refresh
    res = support = None
    bound = math.inf
    for k, r in enumerate(regs):
        last = k == len(regs) - 1
        t_stage = time.perf_counter()
        stage_counts = counts.copy()
        if last and "points" not in levels:
            levels["points"] = _Level(sub, a_s, b_s)
        new = level_at(r)
        if plan is not None:
            if start is not None and _PREDICT:
                # The entropic potentials move like f_reg ~ f_0 + reg h (h from the log densities:
                # tens of reg in a Gaussian's tail between 4 reg and reg); predict this reg's from
                # the drift over the previous scale, from its carried start to its solution.
                w = (r_prev - r) / (start[2] - r_prev)
                f = f + w * (f - r_prev * np.log(level.A) - start[0])
                g = g + w * (g - r_prev * np.log(level.B) - start[1])
            f, g = _carry(level, new, f, g, r_prev, r, plan, p, sub, a_s, b_s)
            start = (f - r * np.log(new.A), g - r * np.log(new.B), r_prev)
        if new is not level:
            support = None  # another clustering: its support is built afresh
        level = new
        r_prev = r
        stage_tol = tol_abs if last else max(tol_abs, stage_tol_rel * mass)
        fraction = outside_fraction if last or stage_outside_fraction is None else stage_outside_fraction
        target = fraction * stage_tol
        refreshes = 0
        max_partners = 0
        if support is None and last and plan is not None:
            # Arriving from clusters, there is no support of this level to settle on, and
            # the carried potentials are too rough to truncate at for the last time (at
            # n = 10^4 their support is 1.6x the final one): settle them on a support
            # truncated at them, then truncate afresh.
            support = truncate(level.cloud, f, g, r, _REFRESH_ROOM * target, max_nnz=max_nnz)
            max_partners = _max_partners(support)
        if support is not None:
            # Settle the potentials at the new reg on the previous support first: it is
            # wider (the plan narrows as reg shrinks), so the truncation that follows
            # sees potentials of this reg, not the carried ones.
            problem = SupportProblem(support, level.A, level.B, r)
            with thread_limit(support.nnz, n_threads):
                pre = solve_sns(problem, tol=max(stage_tol, stage_tol_rel * mass),
                                max_iter=max(min(_SETTLE_ITER, max_iter - used), 1), init=(f, g), callback=callback,
                                _plan=SparsePlan(problem), eps_scaling=False, **options)
            parts.append((pre.history, t_stage - t_start, r))
            used += pre.n_iter
            counts += (pre.n_sinkhorn, pre.n_newton)
            if np.isfinite(pre.potentials[0]).all() and np.isfinite(pre.potentials[1]).all():
                f, g = pre.potentials
        warm = support is not None  # potentials settled (or solved) at this reg already
        for refreshes in range(_MAX_REFRESH):
            # A tenth of the target: room for the potentials to move (the bound grows like
            # exp(drift / reg)) before a refresh is needed, for about 2.3 more units of theta.
            support = truncate(level.cloud, f, g, r, _REFRESH_ROOM * target, max_nnz=max_nnz)
            max_partners = max(max_partners, _max_partners(support))
            problem = SupportProblem(support, level.A, level.B, r)
            # In chunks: a support that misses mass the solution needs shows as a bound
            # that grows while the error stalls; re-truncating then beats iterating on.
            # Also after each Newton step: once the bound on the mass outside reaches a
            # fraction of the error left, the steps head for the optimum of a support that
            # lacks pairs the solution needs (potentials moving by several reg per step,
            # linear convergence); re-truncating then is cheaper than iterating on.
            def outgrown(f1, g1, err, support=support):
                return support.outside_mass(f1, g1) > max(target, _MONITOR_FRACTION * err)

            t_chunk = time.perf_counter()
            with thread_limit(support.nnz, n_threads):
                res = solve_sns(problem, tol=stage_tol * (1.0 - 2.0 * fraction),
                                max_iter=max(min(_CHUNK_ITER, max_iter - used), 1), init=(f, g), callback=callback,
                                _plan=SparsePlan(problem), eps_scaling=False,
                                _monitor=outgrown if refreshes < _MAX_REFRESH - 1 else None,
                                **{"n_warmup": _RESTART_WARMUP if warm else None, **options})
            parts.append((res.history, t_chunk - t_start, r))
            warm = True
            used += res.n_iter
            counts += (res.n_sinkhorn, res.n_newton)
            if np.isfinite(res.potentials[0]).all() and np.isfinite(res.potentials[1]).all():
                f, g = res.potentials
            bound = support.outside_mass(f, g)
            # converged already counts twice the bound at the final potentials (finalize)
            if res.converged or used >= max_iter or res.status == "callback":
                break
            # Stalled at round-off with the outside mass within its target: a new support
            # would hold the same pairs and stall again (the refresh cannot help).
            if res.status == "floor" and bound <= target:
                break
        plan = res.plan
        done = counts - stage_counts
        scales.append(dict(reg=r, points=level.is_points, n_x=level.shape[0], n_y=level.shape[1],
                           width=level.width, support_size=support.nnz,
                           pairs_per_point=support.nnz / max(level.shape[0], 1), max_pairs_per_point=max_partners,
                           n_sinkhorn=int(done[0]), n_newton=int(done[1]), marginal_error=res.marginal_error,
                           refreshes=refreshes, time=time.perf_counter() - t_stage))
        if used >= max_iter or res.status == "callback":
            break
    if not level.is_points:  # stopped early on a clustered level: no point-level answer to give
        res.converged = False
        res.status = "max_iter" if used >= max_iter else res.status
    # The counts, time and history cover the whole schedule, every stage and refresh.
    res.n_sinkhorn, res.n_newton = int(counts[0]), int(counts[1])
    res.n_iter = res.n_sinkhorn + res.n_newton
    res.time = time.perf_counter() - t_start
    res.tol = tol  # the stages ran at a tighter tol, leaving room for the outside mass
    res.history = _history(parts, t_start)
    res.scales = scales
    return _finish(res, (a.size, b.size), rows, cols, bound, support.nnz)


def _weights(a, b, n, m):
    """Validated weights for a problem without a dense cost (as :class:`~snsot.OTProblem` does them)."""
    from ..problem import MASS_RTOL, _as_weights

    a = _as_weights(a, "a", n)
    b = _as_weights(b, "b", m)
    ta, tb = a.sum(), b.sum()
    if abs(ta - tb) > MASS_RTOL * max(ta, tb):
        raise ValueError(
            f"b: total mass {tb!r} differs from the total of a {ta!r} "
            f"(relative difference {abs(ta - tb) / max(ta, tb):.3g} > {MASS_RTOL:g}); "
            "normalise a and b to the same total"
        )
    return a, b * (ta / tb)


def solve_without_dense_cost(C, a, b, *, reg, method, tol, max_iter, init, callback, warn, n_threads,
                             stop_at_floor=True, **options):
    """:func:`snsot.solve` for a :class:`~snsot.geometry.PointCloud` or a ``scipy.sparse`` cost.

    A point cloud of dimension above ``max_tree_dim`` (option, default
    :data:`~snsot.geometry.MAX_TREE_DIM` = 3) is solved with its dense cost
    when that fits in ``max_dense_bytes`` (option, default 4 GB), else refused
    with a ValueError naming the size. Where the truncated path stops paying
    (measured, ``snsot bench --pointcloud --pointcloud-dims 2,3,4,5,6,8``):
    see ``benchmarks/POINTCLOUD.md``; pass ``max_tree_dim=8`` to force it.

    As for a dense cost, ``tol`` is relative to the total mass, the weights
    are solved at unit mass (an exact power-of-two rescaling) and the stall
    rule ``stop_at_floor`` applies (:func:`snsot.solvers._scale.solve_weights_scaled`).
    """
    import inspect
    import warnings

    from ..geometry import MAX_TREE_DIM
    from ..problem import positive_float
    from ..result import ConvergenceWarning
    from . import DEFAULT_MAX_ITER, solve
    from ._scale import solve_weights_scaled

    max_tree_dim = options.pop("max_tree_dim", MAX_TREE_DIM) if isinstance(C, PointCloud) else MAX_TREE_DIM
    if isinstance(C, PointCloud) and C.dim > max_tree_dim:
        max_dense = options.pop("max_dense_bytes", 4e9)
        return solve(C.dense_cost(max_bytes=max_dense), a, b, reg=reg, method=method, tol=tol,
                     max_iter=max_iter, init=init, callback=callback, warn=warn, n_threads=n_threads,
                     stop_at_floor=stop_at_floor, **options)
    kind = "point clouds" if isinstance(C, PointCloud) else "a sparse cost"
    methods = ("sns",) if isinstance(C, PointCloud) else ("sns", "sinkhorn")
    if method not in methods:
        raise ValueError(f"method: {kind} can be solved with {' or '.join(map(repr, methods))}; got {method!r}")
    if reg is None:
        raise ValueError("reg: the entropic regularisation is required")
    reg = positive_float(reg, "reg")
    tol = positive_float(tol, "tol")
    if max_iter is None:
        max_iter = DEFAULT_MAX_ITER[method]
    if isinstance(max_iter, (bool, np.bool_)) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter: must be a positive integer; got {max_iter!r}")
    n, m = C.shape
    a, b = _weights(a, b, n, m)
    if init is not None:
        f0, g0 = (np.asarray(v, dtype=np.float64) for v in init)
        if f0.shape != (n,) or g0.shape != (m,):
            raise ValueError(f"init: potentials must have shapes ({n},) and ({m},); got {f0.shape} and {g0.shape}")
        init = (f0, g0)
    if isinstance(C, PointCloud):
        solver = solve_pointcloud
    elif method == "sns":
        solver = solve_sparse_cost
    else:
        from .sinkhorn import solve_sinkhorn

        solver = functools.partial(solve_sparse_cost, solver=solve_sinkhorn)
    accepted = set(inspect.signature(solver).parameters) | set(inspect.signature(solve_sns).parameters)
    accepted |= {"max_tree_dim"} if isinstance(C, PointCloud) else set()
    accepted -= {"problem", "tol", "max_iter", "init", "callback", "_plan", "_monitor", "cloud", "C", "a", "b", "reg",
                 "solver"}
    unknown = sorted(k for k in options if k not in accepted)
    if unknown:
        raise ValueError(f"{unknown[0]}: not an option for {kind}; options: {', '.join(sorted(accepted))}")
    def solve_unit(a1, b1, init1):
        if isinstance(C, PointCloud):  # threads chosen per stage, by the size of its support
            return solver(C, a1, b1, reg=reg, tol=tol, max_iter=int(max_iter), init=init1, callback=callback,
                          n_threads=n_threads, **options)
        with thread_limit(C.nnz, n_threads):  # the dense rule, applied to the entries actually read
            return solver(C, a1, b1, reg=reg, tol=tol, max_iter=int(max_iter), init=init1, callback=callback,
                          **options)

    # BLAS on one thread throughout: its calls here are vector products of n or m entries,
    # and OpenBLAS's worker, woken by them, spins on a core the compiled kernels' threads
    # need (at n = 10^4 on 2 cores: two threads no faster than one; with BLAS capped,
    # wall time 1.9 -> 1.4 s).
    from .._engines import one_blas_thread

    with one_blas_thread():
        res = solve_weights_scaled(solve_unit, a, b, reg=reg, tol=tol, shape=(n, m), stop_at_floor=stop_at_floor,
                                   init=init)
    if warn and not res.converged:
        warnings.warn(
            f"{method}: stopped after {res.n_iter} iterations with marginal error "
            f"{res.marginal_error:.3g} >= tol {tol:g} x mass {float(a.sum()):.3g} ({res.message})",
            ConvergenceWarning,
            stacklevel=3,
        )
    return res
