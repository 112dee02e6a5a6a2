"""Why Dask workers solved slower than threads: one worker per engine, the same pairs, CPU and page faults per solve.

    PYTHONPATH=$PWD/src python benchmarks/dask_malloc_check.py [--pairs 20] [--repeats 3] [--matrix 30]

Each engine runs with ONE worker (no two of our solves compete for a core),
interleaved over ``--repeats`` rounds; the figures are measured inside the
worker thread (``time.thread_time`` and ``getrusage`` minor faults), so other
jobs on the machine change them little. Engines:

* ``thread``: the thread engine with one thread, in this process;
* ``process``: the process engine with one (forked) worker;
* ``dask, nanny's malloc``: a Dask worker as its nanny starts it
  (``MALLOC_TRIM_THRESHOLD_=65536``), running the chunks as the engine did
  before :func:`snsot._engines.reuse_freed_memory` (one BLAS thread only);
* ``dask``: a Dask worker running the engine's task wrapper as it is now.

With ``--matrix K`` it then times the whole matrix of K digits with
:func:`snsot.distances` on 2 threads, 2 Dask workers as before the fix and
2 Dask workers now, in the order threads, before, now, now, before, threads,
and prints the wall-clock ratios to threads (each pair of runs from one
run of this script).

Linux with glibc (elsewhere the malloc settings do not apply).
"""

import argparse
import os

import numpy as np


def main():
    import distributed

    from snsot import costs
    from snsot.batch import solve_batch
    from snsot.bench.distances import (_ProbedDask, _ProbedDaskAsBefore, _ProbedProcesses, _ProbedThreads,
                                       mnist_histograms, sample_pairs)

    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--digits", type=int, default=40)
    parser.add_argument("--matrix", type=int, default=0, help="digits of the whole-matrix comparison (0: none)")
    args = parser.parse_args()
    reg, tol = 1 / 1200, 1e-9
    X, C = mnist_histograms(args.digits), costs.grid((28, 28))
    pairs = sample_pairs(args.digits, args.pairs, seed=3)
    A, B = X[pairs[:, 0]], X[pairs[:, 1]]

    def cluster():
        c = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                                     silence_logs=50)
        return c, distributed.Client(c)

    (c_before, client_before), (c_now, client_now) = cluster(), cluster()
    engines = {"thread": lambda: _ProbedThreads(1), "process": lambda: _ProbedProcesses(1),
               "dask, nanny's malloc": lambda: _ProbedDaskAsBefore(client_before),
               "dask": lambda: _ProbedDask(client_now)}
    try:
        for make in engines.values():  # load the kernels everywhere
            solve_batch(C, A[:2], B[:2], reg=reg, tol=tol, engine=make())
        seen = {name: [] for name in engines}
        costs_of = {}
        for rep in range(args.repeats):
            for name in (list(engines) if rep % 2 == 0 else list(engines)[::-1]):
                eng = engines[name]()
                out = solve_batch(C, A, B, reg=reg, tol=tol, engine=eng)
                costs_of[name] = out.costs
                per = eng.per_solve()
                seen[name].append((per["cpu_ms"], per.get("faults", np.nan), 1e3 * out.times.mean()))
                print(f"round {rep}  {name:22s} CPU {per['cpu_ms']:6.1f} ms/solve  page faults "
                      f"{per.get('faults', float('nan')):7.0f}/solve  solve wall {1e3 * out.times.mean():6.1f} ms  "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
        print(f"\nmedians over {args.repeats} rounds of {len(pairs)} MNIST pairs (reg 1/1200, tol 1e-9):")
        base = np.median([s[0] for s in seen["thread"]])
        for name, s in seen.items():
            s = np.array(s)
            print(f"  {name:22s} CPU {np.median(s[:, 0]):6.1f} ms/solve ({np.median(s[:, 0]) / base:.2f} of thread)  "
                  f"page faults {np.median(s[:, 1]):6.0f}/solve  solve wall {np.median(s[:, 2]):6.1f} ms")
        print("  largest cost difference to the thread engine:",
              max(float(np.abs(c - costs_of["thread"]).max()) for c in costs_of.values()))
        if args.matrix:
            matrix(args.matrix, C, reg, tol)
    finally:
        for client, c in ((client_before, c_before), (client_now, c_now)):
            client.close()
            c.close()


def matrix(k, C, reg, tol):
    import time

    import distributed

    from snsot import distances
    from snsot.bench.distances import _ProbedDask, _ProbedDaskAsBefore, _ProbedThreads, mnist_histograms

    X = mnist_histograms(k)
    clusters = [distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                         silence_logs=50) for _ in range(2)]
    before, now = (distributed.Client(c) for c in clusters)
    try:
        engines = {"threads x2": lambda: _ProbedThreads(2),
                   "Dask x2, nanny's malloc": lambda: _ProbedDaskAsBefore(before),
                   "Dask x2": lambda: _ProbedDask(now)}
        for make in list(engines.values())[1:]:
            distances(X[:3], C=C, reg=reg, tol=tol, engine=make())  # workers load the kernels
        walls, matrices = {name: [] for name in engines}, []
        order = list(engines) + list(engines)[::-1]
        for name in order:
            eng = engines[name]()
            t = time.perf_counter()
            matrices.append(distances(X, C=C, reg=reg, tol=tol, engine=eng))
            walls[name].append(time.perf_counter() - t)
            per = eng.per_solve()
            print(f"whole matrix of {k} digits, {name:24s} {walls[name][-1]:6.1f} s  CPU {per['cpu_ms']:5.1f} "
                  f"ms/solve  faults {per.get('faults', float('nan')):6.0f}/solve  load {os.getloadavg()[0]:.1f}",
                  flush=True)
        print("  largest difference between the matrices:", max(float(np.abs(D - matrices[0]).max())
                                                                for D in matrices))
        t = sum(walls["threads x2"])
        for name in list(engines)[1:]:
            print(f"  {name} / threads x2, solves per second (both runs summed): {t / sum(walls[name]):.2f}")
    finally:
        for client, c in zip((before, now), clusters):
            client.close()
            c.close()


if __name__ == "__main__":
    main()
