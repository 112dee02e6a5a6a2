"""Distance matrices between many histograms or point clouds: :func:`distances`.

Every entry is one :func:`snsot.solve` on one thread (see
:mod:`snsot.batch`); the engines of :mod:`snsot._engines` run them on the
cores of this machine or on a Dask cluster. With ``out=`` the matrix lives
in an ``.npy`` file written as results arrive, so a long run that is stopped
(Ctrl-C, a crash, a lost machine) resumes with the same call.

Files written with ``out="D.npy"``:

* ``D.npy``: the ``(k, l)`` matrix, ``NaN`` where an entry is not known yet;
* ``D.npy.json``: a fingerprint of the problem (a hash of the inputs and the
  options that change the numbers), checked before resuming;
* ``D.npy.solves.npy``: one row per solve (done flag, cost, objective,
  marginal error, converged, iterations, seconds), the ground truth that
  ``D.npy`` is rebuilt from.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from contextlib import closing
from dataclasses import dataclass

import numpy as np

from . import costs as _costs
from ._engines import make_engine
from .batch import (RECORD_FIELDS, _Work, check_method_options, chunk_size_for, finite_cost_range, rechunk,
                    run_chunks, warn_not_converged)
from .problem import _require_finite_nonnegative, positive_float

__all__ = ["distances", "DistanceInfo", "VALUES"]

VALUES = ("cost", "objective", "divergence")

#: Columns of the solves file: a done flag, then :data:`snsot.batch.RECORD_FIELDS`.
_COLUMNS = ("done",) + RECORD_FIELDS
_COST, _OBJ, _ERR, _CONV, _NIT, _TIME = range(1, 7)
_FORMAT = 2  # 2: a symmetric matrix's solves table holds its upper triangle only
#: Solves per block when the solves are listed, counted or refilled: bounds the index arrays held at once.
_BLOCK = 1 << 16


@dataclass
class DistanceInfo:
    """What :func:`distances` returns beside the matrix with ``return_info=True``.

    Attributes
    ----------
    converged : ndarray of bool, shape (k, l)
        True where the entry's solve met ``tol`` (for ``"divergence"``: the
        pair's solve and both self-terms).
    n_iter : ndarray of int, shape (k, l)
        Iterations of the entry's solve (-1 where not done).
    marginal_error : ndarray, shape (k, l)
        L1 marginal error of the entry's plan (NaN where not done).
    n_solves : int
        Solves the matrix needs in all (unordered pairs once, the diagonal
        and the self-terms of a divergence included).
    n_solved : int
        Solves done by this call (fewer when it resumed an ``out`` file).
    total_iter : int
        Iterations of all solves done so far.
    time : float
        Wall-clock seconds of this call.
    solve_time : float
        Seconds spent inside the solves, summed over workers.
    engine : str
        ``"threads"`` or ``"dask"``.
    n_workers : int
        Threads or Dask worker threads used.
    """

    converged: np.ndarray
    n_iter: np.ndarray
    marginal_error: np.ndarray
    n_solves: int
    n_solved: int
    total_iter: int
    time: float
    solve_time: float
    engine: str
    n_workers: int

    def __repr__(self) -> str:
        return (f"DistanceInfo(shape={self.converged.shape}, converged={int(self.converged.sum())}/"
                f"{self.converged.size}, n_solved={self.n_solved}/{self.n_solves}, total_iter={self.total_iter}, "
                f"time={self.time:.3g}s, engine={self.engine!r} x {self.n_workers})")


# ---------------------------------------------------------------- inputs


def _histograms(X, name):
    """(k, size) float64 rows normalised to total 1, and the grid shape when X is a stack of images."""
    if isinstance(X, (list, tuple)):
        lengths = {np.shape(x) for x in X}
        if len(lengths) > 1:
            sizes = [np.size(x) for x in X]
            bad = next(r for r, s in enumerate(sizes) if s != sizes[0])
            raise ValueError(f"{name}: histograms have different lengths: row 0 has {sizes[0]} bins, "
                             f"row {bad} has {sizes[bad]}")
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: histograms must be a numeric (k, n) array ({exc})") from None
    if X.ndim < 2:
        raise ValueError(f"{name}: expected k histograms as a (k, n) array (or k images, (k, h, w)); "
                         f"got shape {X.shape}")
    if X.shape[0] == 0 or X[0].size == 0:
        raise ValueError(f"{name}: no histograms or no bins; got shape {X.shape}")
    grid = X.shape[1:] if X.ndim > 2 else None
    X = X.reshape(len(X), -1)
    _require_finite_nonnegative(X, f"{name}: weights")
    totals = X.sum(axis=1)
    if not (totals > 0).all():
        raise ValueError(f"{name}: row {int(np.flatnonzero(~(totals > 0))[0])} has total mass 0")
    return np.ascontiguousarray(X / totals[:, None]), grid


def _is_clouds(X) -> bool:
    if not isinstance(X, (list, tuple)) or len(X) == 0:
        return False
    first = X[0]
    return isinstance(first, tuple) or np.ndim(first) == 2


def _clouds(X, name):
    """Point clouds as (points list, weights list), each cloud validated and its weights normalised."""
    points, weights = [], []
    for r, item in enumerate(X):
        if isinstance(item, tuple):
            if len(item) != 2:
                raise ValueError(f"{name}[{r}]: a weighted cloud is a pair (points, weights)")
            p, w = item
        else:
            p, w = item, None
        try:
            p = _costs._points(p, f"{name}[{r}]")
        except (TypeError, ValueError) as exc:
            raise ValueError(str(exc)) from None
        if w is None:
            w = np.full(len(p), 1.0 / len(p))
        else:
            w = np.asarray(w, dtype=np.float64)
            if w.shape != (len(p),):
                raise ValueError(f"{name}[{r}]: {w.size} weights for {len(p)} points")
            _require_finite_nonnegative(w, f"{name}[{r}]: weights")
            if not w.sum() > 0:
                raise ValueError(f"{name}[{r}]: weights have total 0")
            w = w / w.sum()
        points.append(np.ascontiguousarray(p))
        weights.append(w)
    dims = {p.shape[1] for p in points}
    if len(dims) > 1:
        raise ValueError(f"{name}: point clouds have different dimensions {sorted(dims)}")
    return points, weights


def _cost(C, shape, name="C"):
    try:
        C = np.asarray(C)
    except Exception as exc:
        raise ValueError(f"{name}: cost must be a numeric array ({exc})") from None
    if C.dtype == object or not np.issubdtype(C.dtype, np.number) or np.iscomplexobj(C):
        raise ValueError(f"{name}: cost must be real numbers; got dtype {C.dtype}")
    if C.shape != shape:
        raise ValueError(f"{name}: has shape {C.shape} but the histograms need {shape} "
                         f"({shape[0]} bins in X, {shape[1]} in Y)")
    C = np.ascontiguousarray(C, dtype=np.float32 if C.dtype == np.float32 else np.float64)
    return C, finite_cost_range(C, f"{name}: cost")


def _prepare(X, Y, C, points, metric, value):
    """Measures, costs and kinds of solve for the matrix; also whether it is symmetric."""
    symmetric = Y is None
    if _is_clouds(X) or (Y is not None and _is_clouds(Y)):
        if C is not None or points is not None:
            raise ValueError("C, points: point clouds carry their own positions; give neither")
        if not (_is_clouds(X) and (symmetric or _is_clouds(Y))):
            raise ValueError("X, Y: give both as lists of point clouds, or both as histograms")
        _costs._check_metric(metric)
        px, wx = _clouds(X, "X")
        py, wy = (px, wx) if symmetric else _clouds(Y, "Y")
        if px[0].shape[1] != py[0].shape[1]:
            raise ValueError(f"Y: points have dimension {py[0].shape[1]} but X's have {px[0].shape[1]}")
        measures, clouds = {"x": wx, "y": wy}, {"x": px, "y": py}
        cost_keys = {"xy": None, "xx": None, "yy": None}
        cost_mats, ranges = {}, {}
    else:
        X, grid_x = _histograms(X, "X")
        Yh, grid_y = (X, grid_x) if symmetric else _histograms(Y, "Y")
        n, m = X.shape[1], Yh.shape[1]
        measures, clouds = {"x": X, "y": Yh}, None
        cost_mats, ranges = {}, {}
        if C is not None:
            if points is not None:
                raise ValueError("C, points: give the cost C or the bin positions points, not both")
            cost_mats["xy"], ranges["xy"] = _cost(C, (n, m))
            if value == "divergence" and not symmetric:
                if n != m:
                    raise ValueError("value: 'divergence' needs the self-costs of X and of Y; with a "
                                     f"rectangular C ({n} x {m}) give points=(points_x, points_y) instead")
                # A square C with Y: X and Y are taken to share their bins (documented).
                cost_mats["xx"] = cost_mats["yy"] = cost_mats["xy"]
                ranges["xx"] = ranges["yy"] = ranges["xy"]
        else:
            if points is not None:
                if isinstance(points, (list, tuple)) and len(points) == 2 and np.ndim(points[0]) == 2:
                    qx, qy = points
                else:
                    qx = qy = points
                qx, qy = _costs._points(qx, "points"), _costs._points(qy, "points")
                if len(qx) != n or len(qy) != m:
                    raise ValueError(f"points: {len(qx)} and {len(qy)} positions for histograms of "
                                     f"{n} and {m} bins")
                make = lambda p, q: _costs.pairwise(p, q, metric)  # noqa: E731
            elif grid_x is not None and grid_y is not None:
                qx, qy = grid_x, grid_y
                make = lambda p, q: _costs.grid(p, metric, shape_b=q)  # noqa: E731
            else:
                raise ValueError("C: histograms need their ground cost: give C (n, m), the bin positions "
                                 "points=, or images as a (k, h, w) array (grid cost)")
            cost_mats["xy"] = make(qx, qy)
            if value == "divergence" and not symmetric:
                cost_mats["xx"], cost_mats["yy"] = make(qx, qx), make(qy, qy)
            ranges = {key: (float(c.min()), float(c.max())) for key, c in cost_mats.items()}
        cost_keys = {key: key for key in ("xy", "xx", "yy")}
    if symmetric:
        kinds = [("x", "x", cost_keys["xy"])]
    else:
        kinds = [("x", "y", cost_keys["xy"]), ("x", "x", cost_keys["xx"]), ("y", "y", cost_keys["yy"])]
    k = len(measures["x"])
    l = len(measures["y"])
    return measures, clouds, cost_mats, ranges, kinds, symmetric, k, l


# ---------------------------------------------------------------- the store of solves


class _Layout:
    """Where each solve ``(kind, i, j)`` lives in the flat solves table, and which solves the matrix needs."""

    def __init__(self, k, l, symmetric, divergence):
        self.k, self.l, self.symmetric, self.divergence = k, l, symmetric, divergence
        self.size = k * (k + 1) // 2 if symmetric else k * l + (k + l if divergence else 0)

    def flat(self, rows):
        kind, i, j = rows[:, 0], rows[:, 1], rows[:, 2]
        if self.symmetric:
            return self.pair_index(i, j)
        return np.where(kind == 0, i * self.l + j, np.where(kind == 1, self.k * self.l + i,
                                                            self.k * self.l + self.k + j))

    def pair_index(self, i, j):
        """Row of the unordered pair ``i <= j`` in a symmetric matrix's table: its upper triangle, row by row."""
        return i * self.k - i * (i - 1) // 2 + (j - i)

    @property
    def n_solves(self) -> int:
        """Solves the matrix needs: unordered pairs and the diagonal, or all pairs and the self-terms."""
        k, l = self.k, self.l
        if self.symmetric:
            return k * (k + 1) // 2
        return k * l + (k + l if self.divergence else 0)

    def blocks(self, target: int | None = None):
        """Every solve as ``(N, 3)`` arrays of ``(kind, i, j)`` of about ``target`` rows, generated lazily.

        Order: self-terms first, then pairs by source row (so warm starts
        share a source). No array of all k l (or k^2 / 2) solves is ever made.
        """
        k, l = self.k, self.l
        target = target or _BLOCK
        if self.symmetric:
            i0 = 0
            while i0 < k:
                # row i of the upper triangle holds the k - i solves (i, i..k-1)
                i1, count = i0 + 1, k - i0
                while i1 < k and count + (k - i1) <= target:
                    count, i1 = count + k - i1, i1 + 1
                i = np.arange(i0, i1)
                lens = k - i
                I = np.repeat(i, lens)
                J = np.arange(len(I)) - np.repeat(np.cumsum(lens) - lens, lens) + I
                yield np.stack([np.zeros_like(I), I, J], axis=1)
                i0 = i1
            return
        if self.divergence:
            for kind, size in ((1, k), (2, l)):
                for s in range(0, size, target):
                    r = np.arange(s, min(size, s + target))
                    yield np.stack([np.full(len(r), kind), r, r], axis=1)
        per = max(1, target // l)
        for s in range(0, k, per):
            i = np.arange(s, min(k, s + per))
            yield np.stack([np.zeros(len(i) * l, np.int64), np.repeat(i, l), np.tile(np.arange(l), len(i))], axis=1)

    def pending(self, table, target: int | None = None):
        """The solves not marked done in ``table``, block by block (see :meth:`blocks`)."""
        for rows in self.blocks(target):
            rows = rows[table[self.flat(rows), 0] != 1]
            if len(rows):
                yield rows

    def count(self, table, test, target: int | None = None) -> int:
        """Solves whose table rows pass ``test(records)``, counted block by block."""
        return sum(int(test(table[self.flat(rows)]).sum()) for rows in self.blocks(target))

    def entries(self, rows):
        """Matrix entries ``(I, J)`` whose value may change when the solves ``rows`` finish."""
        I, J = [], []
        for kind, i, j in rows:
            if not self.divergence or (self.symmetric and i != j) or (not self.symmetric and kind == 0):
                I.append([i]), J.append([j])
            elif self.symmetric:  # a diagonal solve is the self-term of row and column i
                I.append(np.full(self.k, i)), J.append(np.arange(self.k))
            elif kind == 1:
                I.append(np.full(self.l, i)), J.append(np.arange(self.l))
            else:
                I.append(np.arange(self.k)), J.append(np.full(self.k, j))
        return np.concatenate(I).astype(np.int64), np.concatenate(J).astype(np.int64)


def _fill(D, table, layout, value, I, J):
    """Write ``D[I, J]`` (and ``D[J, I]`` when symmetric) from the solves table; NaN where not all solves are done."""
    col = _COST if value == "cost" else _OBJ
    if layout.symmetric:
        lo, hi = np.minimum(I, J), np.maximum(I, J)
        v = table[layout.pair_index(lo, hi), col]
        if value == "divergence":
            diagonal = np.arange(layout.k)
            d = table[layout.pair_index(diagonal, diagonal), _OBJ]
            v = v - 0.5 * (d[lo] + d[hi])
        D[I, J] = v
        D[J, I] = v
        return
    v = table[I * layout.l + J, col]
    if value == "divergence":
        base = layout.k * layout.l
        v = v - 0.5 * (table[base + I, _OBJ] + table[base + layout.k + J, _OBJ])
    D[I, J] = v


def _fingerprint(header: dict, arrays) -> str:
    h = hashlib.sha256(json.dumps(header, sort_keys=True, default=repr).encode())
    for name, a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _open_out(out, shape, size, fingerprint, header, resume):
    """The matrix and solves table as memmaps, new or resumed; refuse a file from another problem."""
    out = os.fspath(out)
    if not out.endswith(".npy"):
        raise ValueError(f"out: must be a .npy file name; got {out!r}")
    meta_path, table_path = out + ".json", out + ".solves.npy"
    if os.path.exists(out):
        if not os.path.exists(meta_path) or not os.path.exists(table_path):
            raise ValueError(f"out: {out} exists but was not written by snsot.distances (no {meta_path} or "
                             f"{table_path}); remove it or choose another file")
        try:
            with open(meta_path) as fh:
                meta = json.load(fh)
        except (OSError, ValueError) as exc:
            raise ValueError(f"out: cannot read {meta_path} ({exc})") from None
        if meta.get("fingerprint") != fingerprint:
            raise ValueError(f"out: {out} holds a different problem (its fingerprint in {meta_path} does not match "
                             "these inputs and options); remove it or choose another file to start afresh")
        if not resume:
            raise ValueError(f"out: {out} exists (same problem); pass resume=True (--resume) to continue it")
        D = np.lib.format.open_memmap(out, mode="r+")
        table = np.lib.format.open_memmap(table_path, mode="r+")
        if D.shape != shape or table.shape != (size, len(_COLUMNS)):
            raise ValueError(f"out: {out} or {table_path} has the wrong shape; remove them to start afresh")
        return D, table, True
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"out: folder {folder} does not exist")
    from . import __version__

    with open(meta_path, "w") as fh:
        json.dump({"fingerprint": fingerprint, "snsot": __version__, **header}, fh, indent=1, default=repr)
    table = np.lib.format.open_memmap(table_path, mode="w+", dtype=np.float64, shape=(size, len(_COLUMNS)))
    table[:] = np.nan
    table[:, 0] = 0
    D = np.lib.format.open_memmap(out, mode="w+", dtype=np.float64, shape=shape)
    D[:] = np.nan
    return D, table, False


class _Progress:
    """A tqdm bar (auto: only on a terminal, after 2 s), a user callable ``progress(done, total)``, or nothing."""

    def __init__(self, progress, total, initial, label):
        self.bar = self.call = None
        if callable(progress):
            self.call = progress
        elif progress or (progress is None and hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
            try:
                from tqdm.auto import tqdm
            except ImportError:
                if progress:
                    raise ImportError("progress=True needs tqdm: pip install tqdm") from None
            else:
                self.bar = tqdm(total=total, initial=initial, desc=label, unit="solve", delay=0 if progress else 2,
                                smoothing=0.1)
        self.done, self.total = initial, total

    def update(self, n):
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        if self.call is not None:
            self.call(self.done, self.total)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------- the entry point


def distances(X, Y=None, *, C=None, points=None, metric="sqeuclidean", reg, value: str = "cost",
              method: str = "sns", tol: float = 1e-9, max_iter: int | None = None, engine="threads",
              n_jobs: int | None = None, client=None, chunk_size: int | None = None, warm_start: bool = False,
              out=None, resume: bool = True, progress=None, return_info: bool = False, warn: bool = True, **options):
    r"""Entropic transport values between every row of ``X`` and every row of ``Y``.

    Entry ``D[i, j]`` comes from ``snsot.solve(C, X[i], Y[j], reg=reg, ...)``
    solved on one thread to ``tol``; entries run in parallel on ``engine``.
    With ``Y=None`` the matrix is between the rows of ``X`` and is symmetric:
    each unordered pair is solved once, and the diagonal is the self-term.

    Parameters
    ----------
    X, Y : array_like or list
        Histograms as a ``(k, n)`` array (rows are normalised to total 1),
        images as a ``(k, h, w)`` array (histograms on the pixel grid,
        positions spanning [0, 1] per axis, as :func:`snsot.costs.grid`),
        or a list of point clouds, each an ``(n_i, d)`` array (uniform
        weights) or a pair ``(points, weights)``.
    C : array_like, shape (n, m), optional
        Ground cost between the bins of ``X`` and of ``Y`` (histograms);
        finite, negative entries allowed (shifted as :func:`snsot.solve` does).
    points : array_like (n, d), or a pair of them, optional
        Positions of the bins (shared, or ``(points_x, points_y)``); the cost
        is then ``snsot.costs.pairwise(points_x, points_y, metric)``.
    metric : str or float
        Ground cost for ``points``, images and point clouds (see
        :func:`snsot.costs.pairwise`).
    reg : float
        Entropic regularisation, in the cost's units.
    value : {"cost", "objective", "divergence"}
        ``"cost"``: :math:`\langle C, P\rangle` of the entropic plan (POT's
        ``sinkhorn2``); ``"objective"``: the entropic objective
        :math:`\mathrm{OT}_\varepsilon` (dual value); ``"divergence"``: the
        Sinkhorn divergence :math:`\mathrm{OT}_\varepsilon(a, b) -
        \tfrac12 \mathrm{OT}_\varepsilon(a, a) - \tfrac12
        \mathrm{OT}_\varepsilon(b, b)`, each self-term solved once per
        row and column (zero on the diagonal of a symmetric matrix). With
        ``Y`` and a square ``C``, X and Y are taken to share their bins; with
        a rectangular ``C`` give ``points`` instead.
    method, tol, max_iter, **options
        As for :func:`snsot.solve` (each solve has its own stopping test).
    engine : {"threads", "processes", "dask"}
        Threads of this process (default), worker processes on this machine
        (the Python-level work of each solve, which holds the GIL, then runs
        in parallel too), or a Dask cluster (``client``).
    n_jobs : int, optional
        Threads, or workers of a local Dask cluster; default one per core.
    client : dask.distributed.Client or str, optional
        With ``engine="dask"``: a client, a scheduler address, or ``None``
        for a ``LocalCluster`` with one single-threaded worker per core.
    chunk_size : int, optional
        Solves per task (default: sized to amortise the engine's overhead).
    warm_start : bool
        Start each solve from the potentials of the previous solve with the
        same source in its chunk (results then depend on ``tol``-level
        round-off on the chunking). Off by default: the measured gain on
        MNIST is small (see the README).
    out : str or path-like, optional
        A ``.npy`` file for the matrix, written as entries arrive (NaN until
        known), with ``out + ".json"`` (the problem's fingerprint) and
        ``out + ".solves.npy"`` (per-solve records) beside it. If ``out``
        exists from the same problem, only missing solves are done; from a
        different problem, ``ValueError``.
    resume : bool
        Allow continuing an existing ``out`` file of the same problem.
    progress : bool, callable or None
        A tqdm bar (None: only on a terminal, after 2 s), none (False), or a
        callable ``progress(done, total)`` called as solves finish.
    return_info : bool
        Also return a :class:`DistanceInfo` (per-entry ``converged``, iterations, time).
    warn : bool
        Emit one :class:`~snsot.ConvergenceWarning` when some solves miss ``tol``.

    Returns
    -------
    D : ndarray, shape (k, l)
        The matrix (the memmap of ``out`` when given).
    info : DistanceInfo
        Only with ``return_info=True``.

    Raises
    ------
    ValueError
        On bad input (histograms of different lengths, a ``C`` of the wrong
        shape, NaN, a foreign ``out`` file); the message names the argument.
    ConnectionError
        When a Dask scheduler address cannot be reached (within seconds).
    KeyboardInterrupt
        Re-raised after Ctrl-C, once everything finished so far is written.

    Examples
    --------
    >>> import numpy as np, snsot
    >>> X = np.random.default_rng(0).random((4, 5, 5))       # four 5 x 5 images
    >>> D = snsot.distances(X, reg=1e-2)
    >>> D.shape, bool(np.allclose(D, D.T))
    ((4, 4), True)
    """
    t0 = time.perf_counter()
    if value not in VALUES:
        raise ValueError(f"value: expected one of {', '.join(map(repr, VALUES))}; got {value!r}")
    reg = positive_float(reg, "reg")
    tol = positive_float(tol, "tol")
    max_iter = check_method_options(method, max_iter, options)
    measures, clouds, cost_mats, ranges, kinds, symmetric, k, l = _prepare(X, Y, C, points, metric, value)
    layout = _Layout(k, l, symmetric, value == "divergence")
    work = _Work(measures=measures, kinds=kinds, costs=cost_mats, reg=reg, method=method, tol=tol,
                 max_iter=max_iter, options=options, clouds=clouds, metric=metric, warm_start=bool(warm_start),
                 cost_ranges=ranges)

    header = {"format": _FORMAT, "shape": [k, l], "value": value, "reg": reg, "tol": tol, "method": method,
              "max_iter": max_iter, "options": {key: repr(v) for key, v in sorted(options.items())},
              "metric": repr(metric), "symmetric": symmetric, "warm_start": bool(warm_start)}
    if out is not None:
        arrays = [(f"{s}{r}", w) for s in ("x", "y") for r, w in enumerate(measures[s])] if clouds else \
            [("x", measures["x"]), ("y", measures["y"])]
        if clouds:
            arrays += [(f"p{s}{r}", p) for s in ("x", "y") for r, p in enumerate(clouds[s])]
        arrays += sorted(cost_mats.items())
        D, table, _ = _open_out(out, (k, l), layout.size, _fingerprint(header, arrays), header, resume)
    else:
        D = np.full((k, l), np.nan)
        table = np.full((layout.size, len(_COLUMNS)), np.nan)
        table[:, 0] = 0

    n_total = layout.n_solves
    n_done = layout.count(table, lambda rec: rec[:, 0] == 1)
    if n_done:  # resumed: rebuild every entry from the solves (D may lag behind the table)
        for rows in layout.blocks():
            rows = rows[rows[:, 0] == 0]  # every entry is one pair solve (self-terms come in through _fill)
            _fill(D, table, layout, value, rows[:, 1], rows[:, 2])
    n_todo = n_total - n_done
    n_solved = 0
    if n_todo:
        eng, owned = make_engine(engine, n_jobs, client)
        bar = _Progress(progress, n_total, n_done, f"{value} {k}x{l}")
        try:
            n_workers = eng.n_workers
            pair_entries = float(np.mean([np.size(w) for w in measures["x"]]) *
                                 np.mean([np.size(w) for w in measures["y"]]))
            size = chunk_size_for(n_todo, n_workers, pair_entries, eng.name, chunk_size)
            with closing(run_chunks(eng, work, rechunk(layout.pending(table), size))) as results:
                for chunk, records, _ in results:
                    idx = layout.flat(chunk)
                    table[idx, 1:] = records
                    table[idx, 0] = 1  # last, so a crash mid-write leaves the solve marked undone
                    I, J = layout.entries(chunk)
                    _fill(D, table, layout, value, I, J)
                    n_solved += len(chunk)
                    bar.update(len(chunk))
        finally:
            bar.close()
            if owned:
                eng.close()
            if out is not None:
                table.flush()
                D.flush()
    else:
        n_workers = 0
    missed = layout.count(table, lambda rec: (rec[:, 0] == 1) & (rec[:, _CONV] != 1))
    if warn and missed:
        warn_not_converged(missed, n_total, tol, "solves")
    if not return_info:
        return D
    return D, _info(table, layout, n_total, n_solved, time.perf_counter() - t0,
                    engine if isinstance(engine, str) else engine.name, n_workers)


def _info(table, layout, n_solves, n_solved, wall, engine_name, n_workers) -> DistanceInfo:
    k, l = layout.k, layout.l
    I, J = (a.ravel() for a in np.indices((k, l)))
    if layout.symmetric:
        idx = layout.pair_index(np.minimum(I, J), np.maximum(I, J))
    else:
        idx = I * l + J
    rec = table[idx]
    done = rec[:, 0] == 1
    converged = done & (rec[:, _CONV] == 1)
    if layout.divergence:
        if layout.symmetric:
            selfs = table[layout.pair_index(np.arange(k), np.arange(k)), _CONV] == 1
            converged &= selfs[I] & selfs[J]
        else:
            base = k * l
            converged &= (table[base + I, _CONV] == 1) & (table[base + k + J, _CONV] == 1)
    n_iter = np.where(done, np.nan_to_num(rec[:, _NIT]), -1).astype(np.int64)
    all_done = table[:, 0] == 1
    return DistanceInfo(converged=converged.reshape(k, l), n_iter=n_iter.reshape(k, l),
                        marginal_error=np.where(done, rec[:, _ERR], np.nan).reshape(k, l), n_solves=n_solves,
                        n_solved=n_solved, total_iter=int(np.nansum(table[all_done, _NIT])), time=wall,
                        solve_time=float(np.nansum(table[all_done, _TIME])), engine=engine_name,
                        n_workers=n_workers)
