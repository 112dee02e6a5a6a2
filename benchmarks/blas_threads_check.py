"""Does a one-thread distances run keep one core busy? CPU/wall and CPU per OS thread, BLAS capped or not.

    PYTHONPATH=$PWD/src python benchmarks/blas_threads_check.py [--digits 12]

"uncapped" runs the thread engine without :func:`snsot._engines.one_blas_thread`
(the behaviour before it): OpenBLAS's worker thread, woken by the plan-cost
dot product at the end of each solve, then spins and shows up as a second
busy OS thread. Linux only (/proc/self/task).
"""

import argparse
import contextlib
import os
import time

from snsot import _engines, costs, distances
from snsot.bench.distances import mnist_histograms


def thread_ticks():
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = open(f"/proc/self/task/{tid}/stat").read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[tid] = int(fields[11]) + int(fields[12])  # utime + stime, clock ticks
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--digits", type=int, default=12)
    args = parser.parse_args()
    X, C = mnist_histograms(args.digits), costs.grid((28, 28))
    distances(X[:2], C=C, reg=1 / 1200, n_jobs=1)  # load the kernels
    capped = _engines.one_blas_thread
    for label in ("capped", "uncapped", "capped"):
        _engines.one_blas_thread = capped if label == "capped" else contextlib.nullcontext
        before, t, c = thread_ticks(), time.perf_counter(), time.process_time()
        distances(X, C=C, reg=1 / 1200, tol=1e-9, n_jobs=1)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        busy = sorted((v - before.get(k, 0) for k, v in thread_ticks().items()), reverse=True)
        hz = os.sysconf("SC_CLK_TCK")
        print(f"{label:9s} wall {wall:6.2f} s  CPU/wall {cpu / wall:.2f}  CPU s per OS thread "
              f"{[round(b / hz, 2) for b in busy if b]}  OpenBLAS threads now {_engines.blas_threads()}")
    _engines.one_blas_thread = capped


if __name__ == "__main__":
    main()
