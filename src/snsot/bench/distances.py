"""``snsot bench --distances``: throughput of :func:`snsot.distances` on MNIST, and its peers.

Every figure comes from one run of one command, on the packaged MNIST
digits (grid cost |x - y|^2 with pixels spanning [0, 1], reg 1/1200 by
default). It measures

* snsot on all unordered pairs of ``--digits`` digits (diagonal included):
  solves per second with the thread engine on 1 and on 2 threads, with warm
  starts, and with a Dask ``LocalCluster`` of 2 single-threaded workers;
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
import time
from pathlib import Path

import numpy as np

from .. import costs, datasets
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

    def snsot_run(name, **kw):
        (D, info), wall, cpu = _timed(lambda: distances(X, C=C, reg=reg, tol=tol, return_info=True, **kw))
        rows.append(_row(name, info.n_solved, wall, cpu=cpu, info=info, workers=info.n_workers,
                         note=kw.get("note", "")))
        log(f"  {name}: {info.n_solved} solves in {wall:.1f} s ({info.n_solved / wall:.2f}/s)")
        return D

    log(f"snsot.distances on {n_digits} MNIST digits ({n_digits * (n_digits + 1) // 2} solves), reg {reg:g}, "
        f"tol {tol:g}")
    # Interleaved 1, 2, 2, 1 so a change in the machine's load hits both settings alike.
    D1 = snsot_run("snsot threads x1", n_jobs=1)
    D2 = snsot_run("snsot threads x2", n_jobs=2)
    if args.repeats and args.repeats > 1:
        snsot_run("snsot threads x2 (again)", n_jobs=2)
        snsot_run("snsot threads x1 (again)", n_jobs=1)
    snsot_run("snsot threads x2, warm starts", n_jobs=2, warm_start=True)
    Dp = snsot_run("snsot processes x2", engine="processes", n_jobs=2)
    same_threads = max(float(np.abs(D1 - D2).max()), float(np.abs(D1 - Dp).max()))

    dask_rows = {}
    try:
        import distributed
    except ImportError:
        distributed = None
        log("  dask: not installed, skipped")
    if distributed is not None:
        t = time.perf_counter()
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=50)
        client = distributed.Client(cluster)
        distances(X[:3], C=C, reg=reg, tol=tol, engine="dask", client=client)  # workers load the kernels
        startup = time.perf_counter() - t
        try:
            Dd = snsot_run("snsot Dask LocalCluster x2", engine="dask", client=client)
            dask_rows["max_difference_to_threads"] = float(np.abs(Dd - D1).max())
            dask_rows["startup_seconds"] = startup
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
            client.close()
            cluster.close()

    peer_rows = _peers(X, C, reg, tol, args, log)
    rows += peer_rows
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()
    command = getattr(args, "command_line", None) or "snsot bench --distances"
    by = {r["name"]: r for r in rows}
    ratios = {}
    if "snsot threads x1" in by:
        ratios["threads x2 / x1"] = by["snsot threads x2"]["per_second"] / by["snsot threads x1"]["per_second"]
        ratios["warm starts / cold (x2)"] = (by["snsot threads x2, warm starts"]["per_second"]
                                             / by["snsot threads x2"]["per_second"])
    if "snsot processes x2" in by and "snsot threads x1" in by:
        ratios["processes x2 / threads x1"] = (by["snsot processes x2"]["per_second"]
                                               / by["snsot threads x1"]["per_second"])
    if "snsot Dask LocalCluster x2" in by:
        ratios["Dask x2 / threads x2"] = by["snsot Dask LocalCluster x2"]["per_second"] / by["snsot threads x2"][
            "per_second"]
    if "POT ot.batch.solve_batch (log_sinkhorn)" in by and "snsot to POT's error, threads x2" in by:
        ratios["snsot / POT batch, equal error"] = (by["snsot to POT's error, threads x2"]["per_second"]
                                                     / by["POT ot.batch.solve_batch (log_sinkhorn)"]["per_second"])
    payload = dict(command=command, digits=n_digits, reg=reg, tol=tol, rows=rows, ratios=ratios,
                   threads_difference=same_threads, dask=dask_rows, load_before=load_before, load_after=load_after,
                   cpus=os.cpu_count(), elapsed=elapsed)
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

    from ..batch import solve_batch

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
             f"{p['digits']} packaged MNIST digits, grid cost |x - y|^2, reg {p['reg']:.6g}, tol {p['tol']:g}; "
             f"{p['cpus']} CPUs, load average {p['load_before'][0]:.1f} before and {p['load_after'][0]:.1f} after "
             f"(the machine is shared: absolute rates are low, ratios from this one run), {p['elapsed']:.0f} s in all.",
             "", "| run | solves | wall s | solves/s | CPU/wall | overhead ms/solve | converged | max marginal error "
             "| note |", "|---|---|---|---|---|---|---|---|---|"]
    for r in p["rows"]:
        cell = lambda key, fmt: (fmt % r[key]) if key in r and r[key] is not None else ""  # noqa: E731
        lines.append(f"| {r['name']} | {r['solves']} | {r['wall']:.2f} | {r['per_second']:.3g} | "
                     f"{cell('cpu_per_wall', '%.2f')} | {cell('overhead_ms', '%.2f')} | {r.get('converged', '')} | "
                     f"{cell('max_error', '%.2g')} | {r['note']} |")
    lines += ["", "Ratios (this run): " + "; ".join(f"{k} = {v:.2f}" for k, v in p["ratios"].items()), "",
              f"Largest difference between the threads x1 matrix and the threads x2 and processes x2 ones: "
              f"{p['threads_difference']:.2g}"]
    if p["dask"]:
        lines.append(f"Largest difference between the Dask and threads matrices: "
                     f"{p['dask']['max_difference_to_threads']:.2g}; LocalCluster start "
                     f"and worker warm-up {p['dask']['startup_seconds']:.1f} s (not counted in solves/s)")
    lines += ["", "overhead ms/solve = (wall x workers - sum of solve times) / solves: worker time not spent "
              "solving (scheduling, transfers, idle workers at the end, and time lost to other jobs on the machine)."]
    return "\n".join(lines) + "\n"
