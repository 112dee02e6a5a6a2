"""Serial vs parallel kernel builds, and solves from Python threads: medians of interleaved runs.

Run from the repository root::

    PYTHONPATH=$PWD/src python benchmarks/threads_bench.py [--reps 7]

Three measurements, each as the median over ``--reps`` interleaved rounds
(A B, B A, A B, ...) of the ratio of neighbouring runs, so that load that
drifts during the run (a shared machine) hits both sides alike:

1. one thread, whole solves: the serial build (what ``n_threads=1`` runs now)
   against the parallel build run on one thread (what ran before there was
   a serial build);
2. kernels on a cost of more than ``PARALLEL_MIN_SIZE`` entries: the
   parallel build on all of numba's threads against the serial build;
3. throughput of independent solves (pairs/s) from a pool of 2 Python
   threads against 1: the serial builds release the GIL.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

import snsot
from snsot import _kernels as K


def _problem(n, seed):
    rng = np.random.default_rng(seed)
    return snsot.costs.pairwise(rng.random((n, 2)), rng.random((n, 2)))


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def interleaved(a, b, reps):
    """Medians of the times of ``a`` and ``b`` and of the ratio ``time(a) / time(b)`` of neighbouring runs."""
    ta, tb, ratios = [], [], []
    for r in range(reps):
        if r % 2 == 0:
            x, y = _timed(a), _timed(b)
        else:
            y, x = _timed(b), _timed(a)
        ta.append(x)
        tb.append(y)
        ratios.append(x / y)
    return statistics.median(ta), statistics.median(tb), statistics.median(ratios)


def _parallel_builds_on_one_thread(fn):
    """Run ``fn`` with every kernel call going to its parallel build (as before the serial builds)."""

    def run():
        original = K.runs_serial
        K.runs_serial = lambda: False
        try:
            fn()
        finally:
            K.runs_serial = original

    return run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args(argv)
    snsot.solvers._warm_up()
    print(f"numba {numba.__version__}, threading layer {numba.threading_layer()}, "
          f"{numba.config.NUMBA_NUM_THREADS} threads, reps {args.reps}")

    print("\n1. one thread, whole solve (method, n, reg): serial build vs parallel build on 1 thread")
    print(f"{'case':<22} {'serial s':>9} {'parallel s':>10} {'serial/parallel':>16}")
    for method, n, reg in [("sinkhorn", 100, 0.05), ("sns", 100, 0.01), ("sinkhorn", 400, 0.05),
                           ("sns", 400, 0.01), ("sns", 800, 0.01)]:
        C = _problem(n, 0)
        solve = lambda: snsot.solve(C, reg=reg, method=method, n_threads=1, warn=False)  # noqa: E731
        solve(), _parallel_builds_on_one_thread(solve)()  # compile both
        ts, tp, ratio = interleaved(solve, _parallel_builds_on_one_thread(solve), args.reps)
        print(f"{method + ' ' + str(n) + ' ' + str(reg):<22} {ts:9.4f} {tp:10.4f} {ratio:16.3f}")

    print(f"\n2. kernels on {numba.config.NUMBA_NUM_THREADS} threads (parallel build) vs serial build, n = m = 1100")
    n = 1100
    C = _problem(n, 1)
    rng = np.random.default_rng(2)
    f, g = rng.normal(size=n) * 0.01, rng.normal(size=n) * 0.01
    log_w = np.full(n, -np.log(n))
    P = np.empty((n, n))
    out = np.empty(n)
    chunks = max(1, numba.config.NUMBA_NUM_THREADS)
    print(f"{'kernel':<14} {'parallel s':>10} {'serial s':>9} {'parallel/serial':>16}")
    for name, call in [
        ("row_update", lambda k: k(C, g, log_w, 0.05, out)),
        ("col_update", lambda k: k(C, f, log_w, 0.05, out, chunks)),
        ("dense_plan", lambda k: k(C, f, g, 0.05, P)),
    ]:
        kern = getattr(K, name)
        call(kern.parallel), call(kern.serial)
        tp, ts, ratio = interleaved(lambda: call(kern.parallel), lambda: call(kern.serial), args.reps)
        print(f"{name:<14} {tp:10.4f} {ts:9.4f} {ratio:16.3f}")

    print("\n3. independent solves from Python threads (sns, n = 300, reg = 0.01, 8 problems per run)")
    problems = [_problem(300, s) for s in range(8)]
    solve_one = lambda C: snsot.solve(C, reg=0.01, warn=False)  # noqa: E731

    def pool(k):
        def run():
            with ThreadPoolExecutor(k) as ex:
                list(ex.map(solve_one, problems))
        return run

    pool(2)()
    t1, t2, ratio = interleaved(pool(1), pool(2), args.reps)
    print(f"1 thread: {len(problems) / t1:.2f} pairs/s   2 threads: {len(problems) / t2:.2f} pairs/s   "
          f"speed-up (median of neighbouring ratios) {ratio:.2f}x")


if __name__ == "__main__":
    main()
