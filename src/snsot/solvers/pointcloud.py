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

import functools
import math
import time

import numpy as np
import scipy.sparse as sp

from .._kernels import thread_limit
from ..geometry import PointCloud
from ..support import SupportProblem, from_sparse_cost, truncate
from ._sparse_plan import SparsePlan
from .sns import solve_sns

__all__ = ["solve_pointcloud", "solve_sparse_cost"]

#: Iterations of one solve on a support before its bound is checked (and the support refreshed).
_CHUNK_ITER = 300
#: Iterations settling the potentials of a new reg on the previous (wider) support.
_SETTLE_ITER = 10
#: A support is built for this fraction of the outside-mass target (see the refresh loop).
_REFRESH_ROOM = 0.1
#: Supports tried per reg before giving up (converged stays False then).
_MAX_REFRESH = 12
#: Most refinement levels (factors eps_factor) between the coarse solve and the target reg.
_MAX_LEVELS = 4
#: Truncation levels theta about this large are typical at tol ~ 1e-9 (used only to size the schedule).
_THETA_TYPICAL = 30.0


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
    support.check_feasible(a, b)
    rows, cols = np.flatnonzero(a > 0), np.flatnonzero(b > 0)
    if rows.size < a.size or cols.size < b.size:
        support = from_sparse_cost(support.to_scipy()[rows][:, cols])
    problem = SupportProblem(support, a[rows], b[cols], reg)
    if init is not None:
        init = (np.asarray(init[0])[rows], np.asarray(init[1])[cols])
    res = solver(problem, tol=tol * problem.mass, max_iter=max_iter, init=init, callback=callback,
                 _plan=SparsePlan(problem), **options)
    res.tol = tol
    return _finish(res, (a.size, b.size), rows, cols, 0.0, support.nnz)


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
    while partners(r * eps_factor) <= start_partners and r * eps_factor < eps_factor**_MAX_LEVELS * reg * 1.0001:
        r *= eps_factor
    return r


def solve_pointcloud(cloud: PointCloud, a, b, *, reg, tol, max_iter, init=None, callback=None,
                     outside_fraction=0.01, max_nnz=int(2e8), n_coarse=1024, eps_factor=4.0,
                     start_partners=400, n_threads=None, **options):
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

    t_start = time.perf_counter()
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    rows, cols = np.flatnonzero(a > 0), np.flatnonzero(b > 0)
    sub = PointCloud(cloud.x[rows], cloud.y[cols], cloud.p) if rows.size < a.size or cols.size < b.size else cloud
    a_s, b_s = a[rows], b[cols]
    mass = float(a_s.sum())
    tol_abs = tol * mass
    p = cloud.p

    reg0 = _start_reg(sub, reg, eps_factor, start_partners)
    if init is not None:
        f, g = np.asarray(init[0], dtype=np.float64)[rows], np.asarray(init[1], dtype=np.float64)[cols]
        reg0 = reg
    else:
        lx, X, A = _clusters(sub.x, a_s, n_coarse)
        ly, Y, B = _clusters(sub.y, b_s, n_coarse)
        C = PointCloud(X, Y, p).dense_cost()
        coarse = solve(C, A, B, reg=reg0, tol=max(tol, 1e-6 * mass), warn=False, method="sns", n_threads=n_threads)
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
    counts = np.zeros(2, dtype=np.int64)  # Sinkhorn and Newton steps over every stage and refresh
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
        stage_tol = tol_abs if last else max(tol_abs, 1e-3 * mass)
        target = outside_fraction * stage_tol
        if support is not None:
            # Settle the potentials at the new reg on the previous support first: it is
            # wider (the plan narrows as reg shrinks), so the truncation that follows
            # sees potentials of this reg, not the carried ones.
            problem = SupportProblem(support, a_s, b_s, r)
            with thread_limit(support.nnz, n_threads):
                pre = solve_sns(problem, tol=max(stage_tol, 1e-3 * mass),
                                max_iter=max(min(_SETTLE_ITER, max_iter - used), 1), init=(f, g), callback=callback,
                                _plan=SparsePlan(problem), eps_scaling=False, **options)
            used += pre.n_iter
            counts += (pre.n_sinkhorn, pre.n_newton)
            if np.isfinite(pre.potentials[0]).all() and np.isfinite(pre.potentials[1]).all():
                f, g = pre.potentials
        for _refresh in range(_MAX_REFRESH):
            # A tenth of the target: room for the potentials to move (the bound grows like
            # exp(drift / reg)) before a refresh is needed, for about 2.3 more units of theta.
            support = truncate(sub, f, g, r, _REFRESH_ROOM * target, max_nnz=max_nnz)
            problem = SupportProblem(support, a_s, b_s, r)
            # In chunks: a support that misses mass the solution needs shows as a bound
            # that grows while the error stalls; re-truncating then beats iterating on.
            with thread_limit(support.nnz, n_threads):
                res = solve_sns(problem, tol=stage_tol * (1.0 - 2.0 * outside_fraction),
                                max_iter=max(min(_CHUNK_ITER, max_iter - used), 1), init=(f, g), callback=callback,
                                _plan=SparsePlan(problem), eps_scaling=False, **options)
            used += res.n_iter
            counts += (res.n_sinkhorn, res.n_newton)
            if np.isfinite(res.potentials[0]).all() and np.isfinite(res.potentials[1]).all():
                f, g = res.potentials
            bound = support.outside_mass(f, g)
            # converged already counts twice the bound at the final potentials (finalize)
            if res.converged or used >= max_iter or res.status == "callback":
                break
        if used >= max_iter or res.status == "callback":
            break
    # The result's history is the last solve's; its counts and time cover the whole schedule.
    res.n_sinkhorn, res.n_newton = int(counts[0]), int(counts[1])
    res.n_iter = res.n_sinkhorn + res.n_newton
    res.time = time.perf_counter() - t_start
    res.tol = tol  # the stages ran at a tighter tol, leaving room for the outside mass
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

    A point cloud of dimension above :data:`~snsot.geometry.MAX_TREE_DIM` is
    solved with its dense cost when that fits in ``max_dense_bytes`` (option,
    default 4 GB), else refused with a ValueError naming the size.

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

    if isinstance(C, PointCloud) and C.dim > MAX_TREE_DIM:
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
    accepted -= {"problem", "tol", "max_iter", "init", "callback", "_plan", "cloud", "C", "a", "b", "reg", "solver"}
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
