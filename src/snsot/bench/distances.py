"""``snsot bench --distances``: throughput of :func:`snsot.distances` on MNIST, and its peers.

Every figure comes from one run of one command, on the packaged MNIST
digits (grid cost |x - y|^2 with pixels spanning [0, 1], reg 1/1200 by
default). It measures

* snsot on ``--sample-pairs`` seeded random pairs ``i < j`` of ``--digits``
  digits with :func:`snsot.solve_batch`, the same pairs on 1 and 2 threads,
  2 worker processes, 2 Dask workers left with the nanny's malloc settings
  (the Dask engine before it let malloc reuse memory) and 2 Dask workers
  (with ``--repeats 2`` again in the reverse order); then the whole matrix
  (all pairs, diagonal included) with :func:`snsot.distances` on 2 threads
  and on a Dask ``LocalCluster`` of 2 single-threaded workers (and again,
  Dask first, with ``--repeats 2``); warm starts against cold starts on all
  pairs of 16 of the digits;
* inside each worker, whatever the engine: the solve's wall time, the
  thread's CPU time and minor page faults per solve, and where its time
  went (Linux schedstat): on a core, waiting for a core (other jobs), or
  blocked (the GIL);
* the fan-out's own cost, per solve: worker-seconds not spent inside a solve,
  ``(wall x workers - sum of solve times) / solves``, on MNIST and on tiny
  problems with one solve per task (where it is nearly all overhead);
* on ``--peer-pairs`` of those pairs: POT's ``ot.batch.solve_batch``
  (log-domain Sinkhorn, the method that does not underflow at this reg) with
  an iteration cap, joblib loops of ``ot.emd2`` (exact) and of
  ``ot.sinkhorn2(method="sinkhorn_log")`` (capped), and snsot to the same
  marginal error as POT's batch solver reached, and to ``tol``. Every marginal
  error is re-measured here from the returned plans.

The machine is shared (other jobs run beside the benchmark); the report
prints the load average before and after so ratios can be judged.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .. import costs, datasets
from .._engines import DaskEngine, ProcessEngine, ThreadEngine, one_blas_thread
from ..batch import solve_batch
from ..distances import distances

__all__ = ["run", "mnist_histograms"]


def mnist_histograms(n_digits: int, floor: float = datasets.DEFAULT_FLOOR) -> np.ndarray:
    """``n_digits`` packaged digits spread over all classes, as (k, 784) histograms with the paper's floor."""
    images, _ = datasets.mnist_images()
    idx = np.linspace(0, len(images) - 1, n_digits).astype(int)
    return np.stack([datasets._normalise(images[i], floor) for i in idx])


def _marginal_errors(P, A, B):
    return np.abs(P.sum(axis=2) - A).sum(axis=1) + np.abs(P.sum(axis=1) - B).sum(axis=1)


def _timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def _row(name, solves, wall, *, cpu=None, info=None, workers=None, error=None, note=""):
    row = dict(name=name, solves=int(solves), wall=wall, per_second=solves / wall, note=note)
    if cpu is not None:
        row["cpu_per_wall"] = cpu / wall
    if info is not None:
        row["overhead_ms"] = 1e3 * (wall * info.n_workers - info.solve_time) / max(1, info.n_solved)
        row["converged"] = f"{int(info.converged.sum())}/{info.converged.size}"
        row["max_error"] = float(np.nanmax(info.marginal_error))
    if workers is not None:
        row["workers"] = workers
    if error is not None:
        row["max_error"] = float(error)
    return row


class _ProbedTask:
    """``task(data, chunk)`` measured in the worker thread that runs it (picklable, for processes and Dask).

    Returns ``(records, stats)`` in place of ``(records, extras)`` (the
    benchmark keeps no extras): ``stats`` are the chunk's wall seconds, the
    thread's seconds on a core and waiting for one (Linux schedstat), its CPU
    seconds (``time.thread_time``) and its minor page faults.
    """

    def __init__(self, task):
        self.task = task

    def __call__(self, data, chunk):
        t0, s0, c0, f0 = time.perf_counter(), _schedstat(), time.thread_time(), _minor_faults()
        records, _ = self.task(data, chunk)
        t1, s1, c1, f1 = time.perf_counter(), _schedstat(), time.thread_time(), _minor_faults()
        sched = (s1[0] - s0[0], s1[1] - s0[1]) if s0 is not None and s1 is not None else None
        faults = f1 - f0 if f0 is not None and f1 is not None else None
        return records, dict(wall=t1 - t0, sched=sched, cpu=c1 - c0, faults=faults, solves=len(chunk))


class _Probe:
    """Engine mixin: sums what :class:`_ProbedTask` measured in the workers over a run.

    Shares of the workers' wall time inside chunks: on a core, waiting for a
    core (other jobs on the machine), blocked (the rest: for threads, waiting
    for the GIL; in a worker process, anything else that stops it, such as
    its own event loop or profiler holding the GIL).
    """

    def _reset(self):
        self.wall = self.on_core = self.waiting = self.sched_wall = self.cpu = 0.0
        self.faults, self.solves, self.faults_known = 0, 0, True
        self._lock = threading.Lock()

    def run(self, task, data, chunks):
        if not hasattr(self, "_lock"):
            self._reset()
        for k, (records, st) in super().run(_ProbedTask(task), data, chunks):
            with self._lock:
                self.wall += st["wall"]
                self.cpu += st["cpu"]
                self.solves += st["solves"]
                if st["sched"] is not None:
                    self.sched_wall += st["wall"]
                    self.on_core += st["sched"][0]
                    self.waiting += st["sched"][1]
                if st["faults"] is None:
                    self.faults_known = False
                else:
                    self.faults += st["faults"]
            yield k, (records, None)

    def shares(self) -> dict:
        if not getattr(self, "sched_wall", 0):
            return {}
        return dict(on_core=self.on_core / self.sched_wall, waiting=self.waiting / self.sched_wall,
                    blocked=max(0.0, 1.0 - (self.on_core + self.waiting) / self.sched_wall))

    def per_solve(self) -> dict:
        """CPU milliseconds and minor page faults per solve, inside the workers."""
        if not getattr(self, "solves", 0):
            return {}
        out = dict(cpu_ms=1e3 * self.cpu / self.solves)
        if self.faults_known:
            out["faults"] = self.faults / self.solves
        return out


class _ProbedThreads(_Probe, ThreadEngine):
    """The thread engine, measured in each worker thread (see :class:`_Probe`)."""

    def __init__(self, n_jobs):
        super().__init__(n_jobs)
        self._reset()


class _ProbedProcesses(_Probe, ProcessEngine):
    """The process engine, measured in each worker process (see :class:`_Probe`)."""

    def __init__(self, n_jobs):
        super().__init__(n_jobs)
        self._reset()


class _ProbedDask(_Probe, DaskEngine):
    """The Dask engine on a given client, measured in each worker (see :class:`_Probe`)."""

    def __init__(self, client):
        super().__init__(client)
        self._reset()


def _blas_only(task, data, chunk):
    """The Dask task wrapper as it was before workers let malloc reuse memory (one BLAS thread only)."""
    with one_blas_thread():
        return task(data, chunk)


class _ProbedDaskAsBefore(_ProbedDask):
    """Dask workers left with the nanny's malloc settings (``MALLOC_TRIM_THRESHOLD_=65536``): the old engine."""

    _wrap = staticmethod(_blas_only)


def _minor_faults():
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    except (ImportError, AttributeError, OSError):  # RUSAGE_THREAD is Linux-only
        return None


def _schedstat():
    try:
        with open("/proc/thread-self/schedstat") as fh:
            run, wait, _ = fh.read().split()
        return int(run) / 1e9, int(wait) / 1e9
    except (OSError, ValueError):
        return None


def sample_pairs(n_digits: int, size: int, seed: int = 0) -> np.ndarray:
    """``size`` unordered pairs ``i < j`` drawn without replacement (all of them if fewer), sorted."""
    i, j = np.triu_indices(n_digits, k=1)
    if size < len(i):
        pick = np.sort(np.random.default_rng(seed).choice(len(i), size=size, replace=False))
        i, j = i[pick], j[pick]
    return np.stack([i, j], axis=1)


def run(args, log=print) -> int:
    """Run the distances benchmark with the parsed ``snsot bench`` arguments; write DISTANCES.md/.json."""
    n_digits = args.digits
    reg = args.reg[0] if args.reg else 1 / 1200
    tol = args.tol
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    started = time.perf_counter()
    X = mnist_histograms(n_digits)
    C = costs.grid((28, 28))
    distances(X[:2], C=C, reg=reg, tol=tol, n_jobs=1)  # load the kernels
    rows = []
    pairs = sample_pairs(n_digits, getattr(args, "sample_pairs", None) or 1000)
    A, B = X[pairs[:, 0]], X[pairs[:, 1]]
    n_all = n_digits * (n_digits - 1) // 2

    def add(name, solves, wall, cpu, *, workers, converged, max_error, overhead=None, engine=None, solve_ms=None,
            note=""):
        row = dict(name=name, solves=int(solves), wall=wall, per_second=solves / wall, cpu_per_wall=cpu / wall,
                   workers=workers, converged=converged, max_error=float(max_error), note=note)
        if overhead is not None:
            row["overhead_ms"] = overhead
        if solve_ms is not None:
            row["solve_ms"] = solve_ms
        if isinstance(engine, _Probe):
            row.update({f"share_{k}": v for k, v in engine.shares().items()})
            row.update({f"worker_{k}": v for k, v in engine.per_solve().items()})
        rows.append(row)
        log(f"  {name}: {solves} solves in {wall:.1f} s ({solves / wall:.2f}/s)")

    def batch_run(name, eng, n_jobs):
        out, wall, cpu = _timed(lambda: solve_batch(C, A, B, reg=reg, tol=tol, engine=eng))
        add(name, len(out), wall, cpu, workers=n_jobs, converged=f"{int(out.converged.sum())}/{len(out)}",
            max_error=out.marginal_errors.max(), overhead=1e3 * (wall * n_jobs - out.times.sum()) / len(out),
            engine=eng, solve_ms=1e3 * out.times.mean(), note=f"{len(out)} of the {n_all} pairs")
        return out

    def matrix_run(name, Xm, eng, **kw):
        (D, info), wall, cpu = _timed(lambda: distances(Xm, C=C, reg=reg, tol=tol, return_info=True, engine=eng,
                                                        **kw))
        add(name, info.n_solved, wall, cpu, workers=info.n_workers,
            converged=f"{int(info.converged.sum())}/{info.converged.size}", max_error=np.nanmax(info.marginal_error),
            overhead=1e3 * (wall * info.n_workers - info.solve_time) / max(1, info.n_solved), engine=eng,
            solve_ms=1e3 * info.solve_time / max(1, info.n_solved),
            note=f"all pairs of {len(Xm)} digits" + (", warm starts" if kw.get("warm_start") else ""))
        return D

    # Dask clusters first (their start-up is not timed): one for the engine as it is, and one whose
    # workers keep the nanny's malloc settings (the engine before the fix), for the same pairs.
    dask_rows, clusters = {}, []
    try:
        import distributed
    except ImportError:
        distributed = None
        log("  dask: not installed, skipped")

    def local_cluster():
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=50)
        clusters.append(cluster)
        return distributed.Client(cluster)

    try:
        if distributed is not None:
            t = time.perf_counter()
            client = local_cluster()
            distances(X[:3], C=C, reg=reg, tol=tol, engine="dask", client=client)  # workers load the kernels
            dask_rows["startup_seconds"] = time.perf_counter() - t
            client_before = local_cluster()
            solve_batch(C, X[:2], X[1:3], reg=reg, tol=tol, engine=_ProbedDaskAsBefore(client_before))

        log(f"snsot on {len(pairs)} of the {n_all} pairs of {n_digits} MNIST digits, then on all of them; "
            f"reg {reg:g}, tol {tol:g}")
        # The same pairs on every engine, run in one order and then (with --repeats 2) in the reverse
        # order, so a change in the machine's load hits all alike.
        sample_runs = [("threads x1", lambda: _ProbedThreads(1), 1), ("threads x2", lambda: _ProbedThreads(2), 2),
                       ("processes x2", lambda: _ProbedProcesses(2), 2)]
        if distributed is not None:
            sample_runs += [("Dask x2, nanny's malloc (engine before the fix)",
                             lambda: _ProbedDaskAsBefore(client_before), 2),
                            ("Dask x2", lambda: _ProbedDask(client), 2)]
        sample = {name: batch_run(name, make(), n) for name, make, n in sample_runs}
        if args.repeats and args.repeats > 1:
            for name, make, n in sample_runs[::-1]:
                batch_run(f"{name} (again)", make(), n)
        same_threads = max(float(np.abs(sample["threads x1"].costs - out.costs).max()) for out in sample.values())
        if distributed is not None:
            client_before.close()
            clusters.pop().close()

        # Warm starts need pairs that share a source: all pairs of a few digits, cold and warm.
        Xw = X[:: max(1, n_digits // 16)][:16]
        matrix_run("threads x2, cold", Xw, _ProbedThreads(2))
        matrix_run("threads x2, warm starts", Xw, _ProbedThreads(2), warm_start=True)

        # The whole matrix on 2 threads and on Dask (threads, Dask; then Dask, threads with --repeats 2).
        D2 = matrix_run("threads x2, whole matrix", X, _ProbedThreads(2))
        if distributed is not None:
            Dd = matrix_run("Dask LocalCluster x2, whole matrix", X, _ProbedDask(client))
            dask_rows["max_difference_to_threads"] = float(np.abs(Dd - D2).max())
            if args.repeats and args.repeats > 1:
                matrix_run("Dask LocalCluster x2, whole matrix (again)", X, _ProbedDask(client))
                matrix_run("threads x2, whole matrix (again)", X, _ProbedThreads(2))
            # Tiny problems, one solve per task: the per-task cost of the fan-out itself.
            rng = np.random.default_rng(0)
            tiny = rng.random((40, 9)) + 0.1
            tc = costs.grid((3, 3))
            for name, kw in (("tiny 3x3, threads x1", dict(n_jobs=1)),
                             ("tiny 3x3, threads x2, 1 per task", dict(n_jobs=2, chunk_size=1)),
                             ("tiny 3x3, Dask x2, 1 per task", dict(engine="dask", client=client, chunk_size=1))):
                (D, info), wall, cpu = _timed(lambda: distances(tiny, C=tc, reg=0.05, tol=tol, return_info=True,
                                                                 **kw))
                rows.append(_row(name, info.n_solved, wall, cpu=cpu, info=info, workers=info.n_workers))
    finally:
        for cluster in clusters:
            cluster.close()

    peer_rows = _peers(X, C, reg, tol, args, log)
    rows += peer_rows
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()
    command = getattr(args, "command_line", None) or (
        "snsot " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else "snsot bench --distances")
    by = {r["name"]: r for r in rows}
    rate = lambda name: by[name]["per_second"] if name in by else None  # noqa: E731
    ratios = {}
    for label, top, bottom in (("threads x2 / x1, same pairs", "threads x2", "threads x1"),
                               ("threads x2 / x1, same pairs (again)", "threads x2 (again)", "threads x1 (again)"),
                               ("processes x2 / threads x1, same pairs", "processes x2", "threads x1"),
                               ("Dask x2 / threads x2, same pairs", "Dask x2", "threads x2"),
                               ("Dask x2 / processes x2, same pairs", "Dask x2", "processes x2"),
                               ("Dask x2 before the fix / threads x2, same pairs",
                                "Dask x2, nanny's malloc (engine before the fix)", "threads x2"),
                               ("threads x2 whole matrix / threads x1 sample", "threads x2, whole matrix", "threads x1"),
                               ("Dask x2 / threads x2, whole matrix", "Dask LocalCluster x2, whole matrix",
                                "threads x2, whole matrix"),
                               ("Dask x2 / threads x2, whole matrix (again)",
                                "Dask LocalCluster x2, whole matrix (again)", "threads x2, whole matrix (again)"),
                               ("warm starts / cold (x2)", "threads x2, warm starts", "threads x2, cold"),
                               ("snsot / POT batch, equal error", "snsot to POT's error, threads x2",
                                "POT ot.batch.solve_batch (log_sinkhorn)")):
        if rate(top) and rate(bottom):
            ratios[label] = rate(top) / rate(bottom)
    if "Dask LocalCluster x2, whole matrix" in by and "threads x2, whole matrix" in by:
        dask_rows["overhead_ms_per_solve_more_than_threads"] = (by["Dask LocalCluster x2, whole matrix"]["overhead_ms"]
                                                                - by["threads x2, whole matrix"]["overhead_ms"])
    payload = dict(command=command, digits=n_digits, reg=reg, tol=tol, rows=rows, ratios=ratios,
                   threads_difference=same_threads, dask=dask_rows, load_before=load_before, load_after=load_after,
                   cpus=os.cpu_count(), elapsed=elapsed, sample=len(pairs), all_pairs=n_all)
    (out_dir / "distances.json").write_text(json.dumps(payload, indent=1))
    text = _markdown(payload)
    (out_dir / "DISTANCES.md").write_text(text)
    print(text)
    return 0


def _peers(X, C, reg, tol, args, log):
    """POT's batch solver, joblib loops of ot.emd2 and ot.sinkhorn2, and snsot, on the same few pairs."""
    rows = []
    try:
        import ot
    except ImportError:
        log("  POT: not installed, peers skipped")
        return rows
    k = min(args.peer_pairs, len(X) - 1)
    if k < 1:
        return rows
    rng = np.random.default_rng(1)
    pairs = [(int(i), int(j)) for i, j in (rng.choice(len(X), size=2, replace=False) for _ in range(k))]
    A = np.stack([X[i] for i, _ in pairs])
    B = np.stack([X[j] for _, j in pairs])
    log(f"peers on {k} pairs")
    try:
        import ot.batch

        M = np.broadcast_to(C, (k,) + C.shape).copy()
        res, wall, cpu = _timed(lambda: ot.batch.solve_batch(M, reg, a=A, b=B, max_iter=args.pot_iter, tol=tol,
                                                              method="log_sinkhorn", grad="detach"))
        err = _marginal_errors(np.asarray(res.plan), A, B)
        rows.append(_row("POT ot.batch.solve_batch (log_sinkhorn)", k, wall, cpu=cpu, error=err.max(),
                         note=f"max_iter {args.pot_iter}"))
        log(f"  POT batch: {wall:.1f} s, marginal error up to {err.max():.2g}")
        pot_err = float(err.max())
    except Exception as exc:  # a missing ot.batch (POT < 0.9.6) or a failure: reported, not fatal
        log(f"  POT batch: failed ({type(exc).__name__}: {exc})")
        pot_err = None

    for name, t in ((("snsot to POT's error, threads x2", pot_err) if pot_err and pot_err > tol else (None, None)),
                    ("snsot to tol, threads x2", tol)):
        if name is None:
            continue
        out, wall, cpu = _timed(lambda: solve_batch(C, A, B, reg=reg, tol=t, n_jobs=2))
        rows.append(_row(name, k, wall, cpu=cpu, error=out.marginal_errors.max(), workers=2, note=f"tol {t:.2g}"))

    try:
        from joblib import Parallel, delayed
    except ImportError:
        log("  joblib: not installed, loops skipped")
        return rows
    vals, wall, cpu = _timed(lambda: Parallel(n_jobs=2)(delayed(ot.emd2)(a, b, C) for a, b in zip(A, B)))
    rows.append(_row("joblib x2 loop of ot.emd2 (exact)", k, wall, workers=2, note="unregularised"))

    def sinkhorn_pair(a, b):
        P = ot.sinkhorn(a, b, C, reg, method="sinkhorn_log", numItermax=args.pot_iter, stopThr=tol, warn=False)
        return float(np.abs(P.sum(1) - a).sum() + np.abs(P.sum(0) - b).sum())

    errs, wall, cpu = _timed(lambda: Parallel(n_jobs=2)(delayed(sinkhorn_pair)(a, b) for a, b in zip(A, B)))
    rows.append(_row("joblib x2 loop of ot.sinkhorn2 (sinkhorn_log)", k, wall, workers=2, error=max(errs),
                     note=f"numItermax {args.pot_iter}"))
    return rows


def _markdown(p) -> str:
    lines = [f"# snsot.distances benchmark", "", f"Command: `{p['command']}`", "",
             f"{p['digits']} packaged MNIST digits ({p['all_pairs']} pairs), grid cost |x - y|^2, reg {p['reg']:.6g}, "
             f"tol {p['tol']:g}; {p['cpus']} CPUs, load average {p['load_before'][0]:.1f} before and "
             f"{p['load_after'][0]:.1f} after (ratios from this one run), {p['elapsed']:.0f} s in all.", "",
             f"Rows on \"{p['sample']} of the {p['all_pairs']} pairs\" solve the same seeded random sample of pairs with "
             "`solve_batch` (so 1 and 2 workers are compared on identical work); \"whole matrix\" rows are "
             "`distances` on all pairs (diagonal included).",
             "", "| run | solves | wall s | solves/s | CPU/wall | overhead ms/solve | solve ms | worker CPU ms/solve "
             "| page faults/solve | on core | waiting for a core | blocked | converged | max marginal error | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in p["rows"]:
        cell = lambda key, fmt: (fmt % r[key]) if key in r and r[key] is not None else ""  # noqa: E731
        pct = lambda key: ("%.0f%%" % (100 * r[key])) if key in r else ""  # noqa: E731
        lines.append(f"| {r['name']} | {r['solves']} | {r['wall']:.2f} | {r['per_second']:.3g} | "
                     f"{cell('cpu_per_wall', '%.2f')} | {cell('overhead_ms', '%.2f')} | {cell('solve_ms', '%.1f')} | "
                     f"{cell('worker_cpu_ms', '%.1f')} | {cell('worker_faults', '%.0f')} | {pct('share_on_core')} | "
                     f"{pct('share_waiting')} | {pct('share_blocked')} | {r.get('converged', '')} | "
                     f"{cell('max_error', '%.2g')} | {r['note']} |")
    lines += ["", "Ratios (this run): " + "; ".join(f"{k} = {v:.2f}" for k, v in p["ratios"].items()), "",
              f"Largest difference between the threads x1 costs and those of every other engine on the same pairs: "
              f"{p['threads_difference']:.2g}"]
    if p["dask"].get("max_difference_to_threads") is not None:
        d = p["dask"]
        lines.append(f"Largest difference between the Dask and threads matrices: "
                     f"{d['max_difference_to_threads']:.2g}; LocalCluster start and worker warm-up "
                     f"{d['startup_seconds']:.1f} s (not counted in solves/s)"
                     + (f"; Dask's overhead per solve beyond the thread pool's: "
                        f"{d['overhead_ms_per_solve_more_than_threads']:.2f} ms"
                        if "overhead_ms_per_solve_more_than_threads" in d else ""))
    lines += ["", "overhead ms/solve = (wall x workers - sum of solve times) / solves: worker time not spent "
              "solving (scheduling, transfers, idle workers at the end, and time lost to other jobs on the machine).",
              "Solve ms: mean wall time of one solve, timed inside the worker. Worker CPU ms/solve and page "
              "faults/solve: CPU time (`time.thread_time`) and minor page faults (`getrusage`) of the worker thread "
              "over its chunks, per solve; they do not depend on other jobs on the machine.",
              "On core / waiting for a core / blocked: shares of the workers' wall time inside chunks, from "
              "/proc/thread-self/schedstat of the thread that ran them. Waiting for a core is time lost to other "
              "jobs; blocked is time the thread could not run at all: for threads, waiting for the GIL (the Python "
              "parts of a solve hold it, the kernels release it); in a worker process, its own other threads "
              "(Dask's event loop and profiler) holding the GIL.",
              "\"Dask x2, nanny's malloc\" runs the same chunks on Dask workers left as the nanny starts them "
              "(`MALLOC_TRIM_THRESHOLD_=65536`, which pins glibc's mmap threshold at 128 KiB), as the engine did "
              "before it let malloc reuse freed memory: each solve's large temporaries are then mapped and faulted "
              "in afresh (the page-fault column)."]
    return "\n".join(lines) + "\n"
