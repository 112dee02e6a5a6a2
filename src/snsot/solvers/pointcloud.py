"""Entropic OT between point clouds and on user-given sparse supports, with memory O(nnz).

Both drive the one SNS loop (:func:`~snsot.solvers.sns.solve_sns`) with a
:class:`~snsot.solvers._sparse_plan.SparsePlan` instead of the dense plan.

Point clouds (multiscale epsilon-scaling with kernel truncation, after
Schmitzer's sparse scaling and GeomLoss's multiscale backend):

1. **Coarse.** Points are binned into at most ``n_coarse`` grid clusters per
   side, carrying their mass; the cluster problem is solved densely by SNS at
   the starting ``reg``, the largest in the schedule whose truncated support
   on the points stays small (about ``start_partners`` pairs per point).
2. **Carry.** A point's potential is its cluster's plus a first-order
   correction: ``f_i = F_I + grad F_I . (x_i - X_I)``, where ``grad F_I`` is
   the plan-weighted mean of ``grad_x c(X_I, Y_J)`` (envelope theorem). For
   the squared cost this is ``2 (X_I - T(X_I))`` with ``T`` the barycentric
   map, so the carried potential is accurate to ``O(h^2 / reg)`` instead of
   ``O(h / reg)`` for clusters of width ``h``.
3. **Refine.** For ``reg`` from the start down to the target (factor
   ``eps_factor``): truncate the support at the current potentials with a
   certified outside mass below ``outside_fraction * tol``
   (:func:`snsot.support.truncate`), solve on it with SNS, and refresh the
   support while the bound at the new potentials exceeds that target.

The reported ``marginal_error`` is the one measured on the support plus twice
the certified outside mass (it can move every row's and column's sum by that
much in L1), and ``converged`` is True only when that total is below ``tol``.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from ..geometry import PointCloud
from ..support import SupportProblem, from_sparse_cost, truncate
from ._sparse_plan import SparsePlan
from .sns import solve_sns

__all__ = ["solve_pointcloud", "solve_sparse_cost"]

#: Truncation levels theta about this large are typical at tol ~ 1e-9 (used only to size the schedule).
_THETA_TYPICAL = 30.0


def _finish(res, plan_shape, rows, cols, bound, support_size, tol):
    """Embed the solved sub-problem, add the outside mass to the error, decide ``converged``."""
    n, m = plan_shape
    P = res.plan.tocoo()
    res.plan = sp.csr_matrix((P.data, (rows[P.row], cols[P.col])), shape=(n, m))
    f = np.full(n, -np.inf)
    g = np.full(m, -np.inf)
    f[rows], g[cols] = res.potentials
    res.potentials = (f, g)
    res.marginal_error = float(res.marginal_error + 2.0 * bound)
    was = res.converged
    res.converged = bool(np.isfinite(res.marginal_error) and res.marginal_error < tol)
    if was and not res.converged:
        res.message = (f"stopped with the marginal error on the support below tol, but the bound on the mass "
                       f"outside it ({bound:.3g}) leaves the total above tol")
    res.support_size = int(support_size)
    res.outside_mass = float(bound)
    return res


def solve_sparse_cost(C, a, b, *, reg, tol, max_iter, init=None, callback=None, **options):
    """SNS on the support of a ``scipy.sparse`` cost (absent entries are forbidden pairs).

    ``a`` and ``b`` are validated weights (see :func:`snsot.solve`); options
    are those of :func:`~snsot.solvers.sns.solve_sns`.
    """
    support = from_sparse_cost(C)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    support.check_feasible(a, b)
    rows, cols = np.flatnonzero(a > 0), np.flatnonzero(b > 0)
    if rows.size < a.size or cols.size < b.size:
        support = from_sparse_cost(support.to_scipy()[rows][:, cols])
    problem = SupportProblem(support, a[rows], b[cols], reg)
    if init is not None:
        init = (np.asarray(init[0])[rows], np.asarray(init[1])[cols])
    res = solve_sns(problem, tol=tol, max_iter=max_iter, init=init, callback=callback,
                    _plan=SparsePlan(problem), **options)
    return _finish(res, (a.size, b.size), rows, cols, 0.0, support.nnz, tol)


# ---------------------------------------------------------------------------
# Point clouds
# ---------------------------------------------------------------------------


def _clusters(points, weights, max_clusters):
    """Grid clusters: ``(labels, centres, masses)``, at most ``max_clusters`` non-empty cells."""
    n, d = points.shape
    if n <= max_clusters:
        return np.arange(n), points, weights
    lo, hi = points.min(axis=0), points.max(axis=0)
    per_axis = max(1, int(max_clusters ** (1.0 / d)))
    while True:
        width = np.maximum(hi - lo, 1e-300) / per_axis
        cell = np.minimum(((points - lo) / width).astype(np.int64), per_axis - 1)
        key = np.ravel_multi_index(cell.T, (per_axis,) * d)
        uniq, labels = np.unique(key, return_inverse=True)
        if uniq.size <= max_clusters or per_axis == 1:
            break
        per_axis -= 1
    mass = np.bincount(labels, weights=weights)
    centres = np.stack([np.bincount(labels, weights=weights * points[:, k]) for k in range(d)], axis=1)
    return labels, centres / mass[:, None], mass


def _grad_x_cost(X, Y, p):
    """``grad_x |x - y|^p`` for all pairs: shape (n, m, d) (0 where x = y)."""
    diff = X[:, None, :] - Y[None, :, :]
    if p == 2.0:
        return 2.0 * diff
    dist = np.sqrt((diff * diff).sum(-1, keepdims=True))
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(dist > 0, p * dist ** (p - 2.0), 0.0)
    return scale * diff


def _carry(points, labels, centres, F, grad):
    """First-order extension of cluster potentials ``F`` to the points."""
    return F[labels] + ((points - centres[labels]) * grad[labels]).sum(axis=1)


def _start_reg(cloud, reg, eps_factor, start_partners):
    """Largest ``reg * eps_factor**k`` whose truncated support has about ``start_partners`` pairs per point."""
    n, m = cloud.shape
    d = cloud.dim
    extent = np.maximum(cloud.y.max(axis=0) - cloud.y.min(axis=0), 1e-12)
    # A pair is kept when C_ij <~ reg * theta: a ball of radius (reg theta)^(1/p) around each point's image.
    def partners(r):
        radius = (r * _THETA_TYPICAL) ** (1.0 / cloud.p)
        ball = math.pi ** (d / 2) / math.gamma(d / 2 + 1) * radius**d
        return m * min(1.0, ball / float(np.prod(np.maximum(extent, radius))))

    r = reg
    while partners(r * eps_factor) <= start_partners and r * eps_factor < 1e6 * reg:
        r *= eps_factor
    return r


def solve_pointcloud(cloud: PointCloud, a, b, *, reg, tol, max_iter, init=None, callback=None,
                     outside_fraction=0.01, max_nnz=int(2e8), n_coarse=2048, eps_factor=4.0,
                     start_partners=400, **options):
    """SNS between two point clouds on an adaptively truncated sparse support.

    See the module docstring for the algorithm.

    Options
    -------
    outside_fraction : float
        The certified mass outside the support is kept below
        ``outside_fraction * tol`` (so it takes at most ``2 * outside_fraction``
        of the error budget).
    max_nnz : int
        Refuse (ValueError, naming the size) a support with more pairs.
    n_coarse : int
        Most clusters per side of the coarse dense problem.
    eps_factor : float
        Ratio of successive regularisations in the schedule.
    start_partners : int
        Pairs per point the schedule's first truncated support aims at.
    Other options are passed to :func:`~snsot.solvers.sns.solve_sns`.
    """
    from .. import solve

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    rows, cols = np.flatnonzero(a > 0), np.flatnonzero(b > 0)
    sub = PointCloud(cloud.x[rows], cloud.y[cols], cloud.p) if rows.size < a.size or cols.size < b.size else cloud
    a_s, b_s = a[rows], b[cols]
    mass = float(a_s.sum())
    p = cloud.p

    reg0 = _start_reg(sub, reg, eps_factor, start_partners)
    if init is not None:
        f, g = np.asarray(init[0], dtype=np.float64)[rows], np.asarray(init[1], dtype=np.float64)[cols]
        reg0 = reg
    else:
        lx, X, A = _clusters(sub.x, a_s, n_coarse)
        ly, Y, B = _clusters(sub.y, b_s, n_coarse)
        C = PointCloud(X, Y, p).dense_cost()
        coarse = solve(C, A, B, reg=reg0, tol=max(tol, 1e-6 * mass), warn=False, method="sns")
        F, G = coarse.potentials
        P = coarse.plan
        if p == 2.0:  # 2 (X_I - T(X_I)) with the barycentric map T, without the (n, m, d) array
            gx = 2.0 * (X - (P @ Y) / A[:, None])
            gy = 2.0 * (Y - (P.T @ X) / B[:, None])
        else:
            grad = _grad_x_cost(X, Y, p)
            gx = np.einsum("ij,ijd->id", P, grad) / A[:, None]
            gy = -np.einsum("ij,ijd->jd", P, grad) / B[:, None]
        # Carried in the normalised form f - reg log a (the plan is then a_i b_j
        # exp((f~_i + g~_j - C_ij)/reg)), which does not depend on how mass is split
        # into points: a cluster's F~ is its points' f~ to first order.
        f = _carry(sub.x, lx, X, F - reg0 * np.log(A), gx) + reg0 * np.log(a_s)
        g = _carry(sub.y, ly, Y, G - reg0 * np.log(B), gy) + reg0 * np.log(b_s)

    regs = []
    r = reg0
    while r > reg * (1 + 1e-12):
        regs.append(r)
        r /= eps_factor
    regs.append(reg)

    used = 0
    res = support = None
    bound = math.inf
    log_a, log_b = np.log(a_s), np.log(b_s)
    r_prev = regs[0]
    for k, r in enumerate(regs):
        last = k == len(regs) - 1
        # New reg: keep f - reg log a (which converges to a Kantorovich potential
        # as reg -> 0), not f itself, whose log-plan entries would scale by r_prev / r.
        f = f + (r - r_prev) * log_a
        g = g + (r - r_prev) * log_b
        r_prev = r
        stage_tol = tol if last else max(tol, 1e-3 * mass)
        target = outside_fraction * stage_tol
        for _refresh in range(8):
            support = truncate(sub, f, g, r, target, max_nnz=max_nnz)
            problem = SupportProblem(support, a_s, b_s, r)
            res = solve_sns(problem, tol=stage_tol * (1.0 - 2.0 * outside_fraction), max_iter=max(max_iter - used, 1),
                            init=(f, g), callback=callback, _plan=SparsePlan(problem), eps_scaling=False, **options)
            used += res.n_iter
            f, g = res.potentials
            bound = support.outside_mass(f, g)
            if bound <= target or used >= max_iter or res.message.startswith("stopped by the callback"):
                break
        if used >= max_iter:
            break
    return _finish(res, (a.size, b.size), rows, cols, bound, support.nnz, tol)
