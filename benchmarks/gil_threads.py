"""Thread scaling of solve_batch on MNIST pairs, and the GIL-held share of a one-thread solve, in one run.

    PYTHONPATH=$PWD/src python benchmarks/gil_threads.py [--digits 40] [--pairs 200] [--rounds 2]

The same seeded sample of pairs (grid cost |x - y|^2, reg 1/1200, tol 1e-9)
is solved by ``solve_batch(engine="threads")`` on 1 and 2 threads,
interleaved 1, 2, 2, 1, ... so that a change in the machine's load hits both
alike; the ratio is of the summed walls of each. The two-thread runs also
report, from /proc/thread-self/schedstat, the share of the workers' time
spent blocked (waiting for the GIL), which depends far less on other jobs
than the ratio does. ``snsot bench --distances``
measures the same ratio at full size with Dask and peers; this is the quick
check for changes to the solver's per-iteration Python (issue 14). On a
machine shared with other jobs the ratio is a lower bound: two threads need
two free cores.
"""
import argparse
import json
import os
import time

import numpy as np

from snsot import costs, solve_batch
from snsot.bench.distances import _ProbedThreads, mnist_histograms, sample_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits", type=int, default=40)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2, help="repetitions of the 1, 2, 2, 1 pattern")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    args = parser.parse_args()
    X, C = mnist_histograms(args.digits), costs.grid((28, 28))
    pairs = sample_pairs(args.digits, args.pairs)
    A, B = X[pairs[:, 0]], X[pairs[:, 1]]
    reg, tol = 1 / 1200, 1e-9
    solve_batch(C, A[:4], B[:4], reg=reg, tol=tol, n_jobs=2)  # load the kernels on both threads
    wall = {1: 0.0, 2: 0.0}
    costs_seen = {}
    load = os.getloadavg()
    probed = _ProbedThreads(2)  # schedstat shares of the two-thread runs
    for _ in range(args.rounds):
        for n_jobs in (1, 2, 2, 1):
            t = time.perf_counter()
            out = solve_batch(C, A, B, reg=reg, tol=tol, n_jobs=n_jobs, engine=probed if n_jobs == 2 else "threads")
            wall[n_jobs] += time.perf_counter() - t
            assert out.converged.all()
            costs_seen.setdefault(n_jobs, out.costs)
    n = 2 * args.rounds * len(pairs)
    shares = probed.shares()
    result = dict(pairs=len(pairs), digits=args.digits, rounds=args.rounds, x1_per_second=n / wall[1],
                  x2_per_second=n / wall[2], ratio=wall[1] / wall[2], load_before=load[0], load_after=os.getloadavg()[0],
                  costs_differ=float(np.abs(costs_seen[1] - costs_seen[2]).max()),
                  **{f"share_{k}": v for k, v in shares.items()})
    if args.json:
        print(json.dumps(result))
        return
    print(f"{len(pairs)} pairs of {args.digits} digits x {2 * args.rounds} runs per thread count; load average "
          f"{load[0]:.2f} before, {result['load_after']:.2f} after")
    print(f"threads x1 {result['x1_per_second']:.1f} solves/s, x2 {result['x2_per_second']:.1f} solves/s, ratio x2/x1 "
          f"{result['ratio']:.3f}; costs x1 vs x2 differ by {result['costs_differ']:.3g}")
    if shares:
        print("threads x2, shares of the workers' time: " + ", ".join(
            f"{name} {100 * value:.1f}%" for name, value in shares.items())
            + " (blocked: waiting for the GIL; waiting: for a core, i.e. other jobs)")

if __name__ == "__main__":
    main()
