"""Many transport problems at once: :func:`solve_batch` and the work it shares with :func:`snsot.distances`.

Each problem is solved by :func:`snsot.solve` on one thread, with its own
stopping test, so a hard problem never holds back an easy one and every
result is the one a single call would give. Problems are grouped in chunks
that an engine (:mod:`snsot._engines`: a thread pool or Dask) runs; the
shared inputs (costs, histograms, options) travel once per worker.
"""

from __future__ import annotations

import inspect
import math
import time
import warnings
from contextlib import closing
from dataclasses import dataclass, field

import numpy as np

from ._engines import make_engine
from .problem import MASS_RTOL, OTProblem, _first_bad, _require_finite_nonnegative, _trusted, positive_float
from .result import ConvergenceWarning, OTResult
from .solvers import DEFAULT_MAX_ITER, available_methods, solve

__all__ = ["solve_batch", "BatchResult", "RECORD_FIELDS"]

#: Columns of the per-problem record a task returns (see :func:`_solve_chunk`).
RECORD_FIELDS = ("cost", "objective", "marginal_error", "converged", "n_iter", "time")

#: Rough seconds per cost entry and problem (about 100 passes of ~1 ns): only sizes chunks.
_SECONDS_PER_ENTRY = 1e-7


@dataclass
class BatchResult:
    r"""Results of :func:`solve_batch`, one entry per problem.

    Attributes
    ----------
    costs : ndarray, shape (k,)
        Transport costs :math:`\langle C, P\rangle` (POT's ``sinkhorn2``).
    objectives : ndarray, shape (k,)
        Entropic objectives (dual values) :math:`D(f, g)`.
    marginal_errors : ndarray, shape (k,)
        L1 marginal error of each plan.
    converged : ndarray of bool, shape (k,)
        True where that problem met ``tol``.
    n_iter : ndarray of int, shape (k,)
        Iterations of each solve.
    times : ndarray, shape (k,)
        Seconds of each solve (on its worker).
    time : float
        Wall-clock seconds of the whole batch.
    potentials : list of (f, g), optional
        With ``return_potentials=True``.
    results : list of OTResult, optional
        With ``return_results=True`` (plans included: memory grows with k n m).
    """

    costs: np.ndarray
    objectives: np.ndarray
    marginal_errors: np.ndarray
    converged: np.ndarray
    n_iter: np.ndarray
    times: np.ndarray
    time: float
    potentials: list | None = field(default=None, repr=False)
    results: list | None = field(default=None, repr=False)

    @property
    def values(self) -> np.ndarray:
        """Alias of :attr:`costs`."""
        return self.costs

    def __len__(self) -> int:
        return len(self.costs)

    def __repr__(self) -> str:
        return (f"BatchResult(k={len(self)}, converged={int(self.converged.sum())}/{len(self)}, "
                f"n_iter={int(self.n_iter.sum())}, time={self.time:.3g}s)")


# ---------------------------------------------------------------- the shared work


@dataclass
class _Work:
    """Everything a task needs, sent once to each worker.

    ``measures`` maps a name to an array of weight rows (or a list of 1-D
    weight arrays for point clouds); ``kinds[k] = (source, target, cost)``
    names the measures and the cost of the problems of kind ``k``; a cost is
    an ``(n, m)`` matrix shared by every pair, a ``(k, n, m)`` stack indexed
    by the pair's source, or ``None`` for point clouds (``clouds[name][i]``
    are the points, ``metric`` the ground cost).
    """

    measures: dict
    kinds: list
    costs: dict
    reg: float
    method: str
    tol: float
    max_iter: int
    options: dict
    clouds: dict | None = None
    metric: object = "sqeuclidean"
    warm_start: bool = False
    keep: str = "none"  # "none", "potentials" or "results"
    cost_ranges: dict = field(default_factory=dict)

    def problem(self, kind: int, i: int, j: int) -> OTProblem:
        src, tgt, cost_key = self.kinds[kind]
        a, b = self.measures[src][i], self.measures[tgt][j]
        if cost_key is None:
            from .costs import pairwise

            C = pairwise(self.clouds[src][i], self.clouds[tgt][j], self.metric)
            return _trusted(C, a, b, self.reg)
        C = self.costs[cost_key]
        if C.ndim == 3:
            C = C[i]
        p = _trusted(C, a, b, self.reg)
        if C.ndim == 2 and cost_key in self.cost_ranges:
            p.__dict__["cost_range"] = self.cost_ranges[cost_key]
        return p


def _solve_chunk(work: _Work, chunk: np.ndarray):
    """Solve the problems ``(kind, i, j)`` of ``chunk`` in turn, each on one thread.

    Returns ``(records, extras)``: ``records[r]`` holds :data:`RECORD_FIELDS`
    for row ``r``; ``extras`` is None, or the potentials or OTResults asked
    for by ``work.keep``. With ``work.warm_start``, a problem whose source
    is that of the previous row starts from the previous potentials (without
    epsilon-scaling, which would discard them).
    """
    records = np.empty((len(chunk), len(RECORD_FIELDS)))
    extras = [] if work.keep != "none" else None
    previous = None
    for r, (kind, i, j) in enumerate(chunk):
        options = dict(work.options)
        init = None
        if work.warm_start and previous is not None and previous[0] == (kind, i):
            init = previous[1]
            if work.method == "sns":
                options["eps_scaling"] = False
        res = solve(work.problem(kind, i, j), method=work.method, tol=work.tol, max_iter=work.max_iter,
                    init=init, warn=False, n_threads=1, **options)
        records[r] = (res.cost, res.objective, res.marginal_error, res.converged, res.n_iter, res.time)
        if work.warm_start:
            previous = ((kind, i), res.potentials)
        if work.keep == "potentials":
            extras.append(res.potentials)
        elif work.keep == "results":
            extras.append(res)
    return records, extras


def finite_cost_range(C: np.ndarray, what: str = "C: cost") -> tuple[float, float]:
    """``(min, max)`` of a cost; ``ValueError`` naming the first entry that is not finite.

    Negative entries are accepted: each solve shifts them as :func:`snsot.solve`
    does (see :attr:`snsot.OTProblem.cost_offset`), so a batch gives the
    plans, costs and objectives of single solves of the same ``C``.
    """
    lo, hi = float(C.min()), float(C.max())
    if np.isfinite(lo) and np.isfinite(hi):
        return lo, hi
    raise ValueError(f"{what} must be finite (forbidden pairs, +inf, are not supported in a batch); "
                     f"{_first_bad(C, ~np.isfinite(C))}")


def warn_not_converged(count: int, total: int, tol: float, what: str) -> None:
    """One ConvergenceWarning for a batch (``converged`` says which)."""
    warnings.warn(f"{count} of {total} {what} stopped with a marginal error >= tol {tol:g} (see converged)",
                  ConvergenceWarning, stacklevel=3)


def chunk_size_for(total: int, workers: int, pair_entries: float, engine_name: str, chunk_size=None) -> int:
    """Problems per task: enough to amortise the engine's per-task overhead, few enough to balance.

    Dask pays about a millisecond or more per task (scheduling, pickling the
    result), so its chunks aim at about 0.5 s of work; the thread pool pays
    microseconds and aims at 0.05 s. Either way at least 4 chunks per worker
    are made when there are enough problems, so no core idles at the end.
    """
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
            raise ValueError(f"chunk_size: must be a positive integer or None; got {chunk_size!r}")
        return int(chunk_size)
    target = {"dask": 0.5, "processes": 0.1}.get(engine_name, 0.05)
    by_time = math.ceil(target / max(pair_entries * _SECONDS_PER_ENTRY, 1e-6))
    by_balance = max(1, total // (4 * max(1, workers)))
    return int(max(1, min(by_time, by_balance, 256)))


def rechunk(blocks, chunk_size: int):
    """Chunks of exactly ``chunk_size`` rows (the last may be shorter) from ``(N, 3)`` row blocks of any size.

    Lazy: only the block being cut and one partial chunk are held, so the
    rows of a large matrix never exist all at once.
    """
    carry = np.empty((0, 3), dtype=np.int64)
    for block in blocks:
        if len(carry):
            block = np.concatenate([carry, block])
        stop = len(block) - len(block) % chunk_size
        for s in range(0, stop, chunk_size):
            yield block[s:s + chunk_size]
        carry = block[stop:]
    if len(carry):
        yield carry


def run_chunks(engine, work: _Work, chunks):
    """Run the chunks (``(n, 3)`` int arrays of ``(kind, i, j)``, any iterable) and yield ``(rows, records, extras)``.

    Chunks are drawn from ``chunks`` only as the engine submits them, and
    dropped once their results are back.
    """
    drawn = {}

    def source():
        for k, chunk in enumerate(chunks):
            drawn[k] = chunk
            yield chunk

    for k, (records, extras) in engine.run(_solve_chunk, work, source()):
        yield drawn.pop(k), records, extras


def check_method_options(method, max_iter, options):
    """Validate ``method``, ``max_iter`` and solver options once, before any work is sent out."""
    if method not in available_methods():
        raise ValueError(f"method: unknown method {method!r}; available: {', '.join(available_methods())}")
    if max_iter is None:
        max_iter = DEFAULT_MAX_ITER[method]
    elif isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter: must be a positive integer; got {max_iter!r}")
    for name in ("init", "n_threads", "warn", "callback"):
        if name in options:
            raise ValueError(f"{name}: not accepted here (each problem is solved on one thread, without callbacks)")
    # Option names are checked here, not on a worker; their values by the first solve.
    from .solvers import _REGISTRY

    accepted = set(inspect.signature(_REGISTRY[method]).parameters) - {"problem", "tol", "max_iter", "init",
                                                                         "callback"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"{unknown[0]}: not an option of method {method!r}; options: "
                         f"{', '.join(sorted(a for a in accepted if not a.startswith('_')))}")
    return int(max_iter)


def _as_stack(W, name: str, size: int) -> np.ndarray:
    """Weights as a (k, size) float64 array; one 1-D vector is k = 1 (broadcast later)."""
    try:
        W = np.asarray(W, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: weights must be a numeric array ({exc})") from None
    if W.ndim == 1:
        W = W[None, :]
    if W.ndim != 2:
        raise ValueError(f"{name}: weights must be (k, {size}) or ({size},); got shape {W.shape}")
    if W.shape[1] != size:
        raise ValueError(f"{name}: rows have {W.shape[1]} weights but the cost has {size} "
                         f"{'rows' if name == 'A' else 'columns'}")
    if W.shape[0] == 0:
        raise ValueError(f"{name}: no problems (0 rows)")
    _require_finite_nonnegative(W, f"{name}: weights")
    totals = W.sum(axis=1)
    if not (totals > 0).all():
        raise ValueError(f"{name}: row {int(np.flatnonzero(~(totals > 0))[0])} has total mass 0")
    return W


def solve_batch(C, A=None, B=None, *, reg, method: str = "sns", tol: float = 1e-9, max_iter: int | None = None,
                engine="threads", n_jobs: int | None = None, client=None, chunk_size: int | None = None,
                return_potentials: bool = False, return_results: bool = False, warn: bool = True,
                **options) -> BatchResult:
    r"""Solve many entropic transport problems, each to its own tolerance.

    Problem ``k`` is ``snsot.solve(C[k], A[k], B[k], reg=reg, ...)`` (or
    ``C`` when the cost is shared), solved on one thread; problems run in
    parallel on ``engine``. Each stops as soon as its own marginal error is
    below ``tol``.

    Parameters
    ----------
    C : array_like, shape (n, m) or (k, n, m)
        One cost shared by every problem, or one per problem; finite.
        Negative entries are shifted as :func:`snsot.solve` shifts them (same
        plans, costs and objectives as single solves).
    A, B : array_like, shape (k, n) / (k, m), or (n,) / (m,), optional
        Source and target weights, one row per problem; a 1-D vector is
        shared by every problem, ``None`` is uniform. The number of problems
        ``k`` is the largest of the leading dimensions; others must be 1 or k.
        Totals of ``A[k]`` and ``B[k]`` must agree (relative 1e-8), as for
        :class:`~snsot.OTProblem`.
    reg : float
        Entropic regularisation, shared by every problem.
    method, tol, max_iter, **options
        As for :func:`snsot.solve`.
    engine : {"threads", "processes", "dask"}
        ``"threads"``: a pool of ``n_jobs`` threads in this process.
        ``"processes"``: a pool of ``n_jobs`` worker processes on this machine
        (the Python-level work of each solve, which holds the GIL, then runs
        in parallel too). ``"dask"``: Dask distributed (see ``client``).
    n_jobs : int, optional
        Threads, or local Dask workers; default one per core.
    client : dask.distributed.Client or str, optional
        With ``engine="dask"``: a client, a scheduler address
        (``"tcp://host:8786"``), or ``None`` for a local cluster.
    chunk_size : int, optional
        Problems per task (default: sized to the engine's overhead).
    return_potentials, return_results : bool
        Also keep each problem's potentials, or its full :class:`OTResult`.
    warn : bool
        Emit one :class:`~snsot.ConvergenceWarning` when some problems miss ``tol``.

    Returns
    -------
    BatchResult

    Raises
    ------
    ValueError
        On bad input (the message names the argument and, for weights, the row).
    ConnectionError
        When a Dask scheduler address cannot be reached.

    Examples
    --------
    >>> import numpy as np, snsot
    >>> C = snsot.costs.grid((8, 8))
    >>> A = np.random.default_rng(0).random((5, 64))
    >>> A /= A.sum(axis=1, keepdims=True)
    >>> out = snsot.solve_batch(C, A, A[::-1], reg=1e-2)
    >>> bool(out.converged.all())
    True
    """
    t0 = time.perf_counter()
    if isinstance(C, OTProblem):
        raise TypeError("C: expected a cost matrix or a stack of them, got an OTProblem")
    try:
        C = np.asarray(C)
    except Exception as exc:
        raise ValueError(f"C: cost must be a numeric array ({exc})") from None
    if C.dtype == object or not (np.issubdtype(C.dtype, np.number) or C.dtype == bool) or np.iscomplexobj(C):
        raise ValueError(f"C: cost must be real numbers; got dtype {C.dtype}")
    if C.ndim not in (2, 3) or 0 in C.shape:
        raise ValueError(f"C: expected a non-empty (n, m) cost or a (k, n, m) stack; got shape {C.shape}")
    C = np.ascontiguousarray(C, dtype=np.float32 if C.dtype == np.float32 else np.float64)
    n, m = C.shape[-2:]
    cost_range = finite_cost_range(C)
    A = np.full((1, n), 1.0 / n) if A is None else _as_stack(A, "A", n)
    B = np.full((1, m), 1.0 / m) if B is None else _as_stack(B, "B", m)
    sizes = {len(A), len(B), len(C) if C.ndim == 3 else 1} - {1}
    if len(sizes) > 1:
        raise ValueError(f"A, B, C: numbers of problems differ: A has {len(A)} rows, B {len(B)}"
                         + (f", C {len(C)} matrices" if C.ndim == 3 else ""))
    k = sizes.pop() if sizes else 1
    A = np.broadcast_to(A, (k, n)) if len(A) == 1 else A
    B = np.broadcast_to(B, (k, m)) if len(B) == 1 else B
    ta, tb = A.sum(axis=1), B.sum(axis=1)
    bad = np.abs(ta - tb) > MASS_RTOL * np.maximum(ta, tb)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise ValueError(f"B: row {r} has total mass {tb[r]!r} but A's row {r} has {ta[r]!r}; "
                         "normalise each pair to the same total")
    B = B * (ta / tb)[:, None]  # exactly a's total, as OTProblem does
    reg = positive_float(reg, "reg")
    tol = positive_float(tol, "tol")
    max_iter = check_method_options(method, max_iter, options)

    keep = "results" if return_results else "potentials" if return_potentials else "none"
    if C.ndim == 3 and len(C) == 1:
        C = C[0]
    work = _Work(measures={"a": np.ascontiguousarray(A), "b": np.ascontiguousarray(B)}, kinds=[("a", "b", "C")],
                 costs={"C": C}, reg=reg, method=method, tol=tol, max_iter=max_iter, options=options, keep=keep,
                 cost_ranges={"C": cost_range} if C.ndim == 2 else {})
    rows = np.zeros((k, 3), dtype=np.int64)
    rows[:, 1] = rows[:, 2] = np.arange(k)

    eng, owned = make_engine(engine, n_jobs, client)
    try:
        size = chunk_size_for(k, eng.n_workers, n * m, eng.name, chunk_size)
        records = np.full((k, len(RECORD_FIELDS)), np.nan)
        extras = [None] * k if keep != "none" else None
        with closing(run_chunks(eng, work, rechunk([rows], size))) as results:
            for chunk, recs, ext in results:
                records[chunk[:, 1]] = recs
                if extras is not None:
                    for r, idx in enumerate(chunk[:, 1]):
                        extras[idx] = ext[r]
    finally:
        if owned:
            eng.close()
    converged = records[:, 3] == 1
    if warn and not converged.all():
        warn_not_converged(int((~converged).sum()), k, tol, "problems")
    return BatchResult(costs=records[:, 0], objectives=records[:, 1], marginal_errors=records[:, 2],
                       converged=records[:, 3].astype(bool), n_iter=records[:, 4].astype(np.int64),
                       times=records[:, 5], time=time.perf_counter() - t0,
                       potentials=[r.potentials for r in extras] if keep == "results" else extras,
                       results=extras if keep == "results" else None)
