"""POT drop-in: ``snsot.sinkhorn`` / ``sinkhorn2`` against ``ot.sinkhorn`` / ``ot.sinkhorn2``, default calls.

Run from a clone:  PYTHONPATH=$PWD/src python benchmarks/pot_dropin.py [--repeat 5]

Prints a markdown table: median seconds of each call (one process, calls
interleaved), the ratio POT / snsot, and the L1 marginal error of each plan
measured here, so a fast call that did not converge shows as such.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import ot

import snsot


def _l1_error(P, a, b):
    return float(np.abs(P.sum(1) - a).sum() + np.abs(P.sum(0) - b).sum())


def _median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    snsot.solvers._warm_up()  # compile once, outside the timings
    rows = []
    for n, reg in ((100, 1.0), (400, 1e-1), (400, 1e-2), (400, 1e-3)):
        x, y = rng.random((n, 2)), rng.random((n, 2))
        M = ot.dist(x, y)
        M /= M.max()
        a = rng.random(n) + 0.1
        a /= a.sum()
        b = np.full(n, 1.0 / n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t_pot, P_pot = _median_time(lambda: ot.sinkhorn(a, b, M, reg), args.repeat)
            t_ours, P_ours = _median_time(lambda: snsot.sinkhorn(a, b, M, reg), args.repeat)
            t_solve, _ = _median_time(lambda: snsot.solve(M, a, b, reg=reg, warn=False), args.repeat)
        rows.append((f"ot.sinkhorn(a, b, M, reg), n={n}, reg={reg:g}", t_pot, t_ours,
                     _l1_error(P_pot, a, b), _l1_error(P_ours, a, b), t_ours / t_solve))
    # k histograms at once: POT vectorises the Sinkhorn loop over columns, snsot solves each
    n, k, reg = 200, 8, 1e-2
    x = rng.random((n, 2))
    M = ot.dist(x, x)
    M /= M.max()
    a = np.full(n, 1.0 / n)
    B = rng.random((n, k)) + 0.1
    B /= B.sum(0, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_pot, c_pot = _median_time(lambda: ot.sinkhorn2(a, B, M, reg), args.repeat)
        t_ours, c_ours = _median_time(lambda: snsot.sinkhorn2(a, B, M, reg), args.repeat)
    exact = np.array([float(np.vdot(M, ot.sinkhorn(a, B[:, j], M, reg, method="sinkhorn_log", stopThr=1e-14,
                                                   numItermax=100_000, warn=False))) for j in range(k)])
    rows.append((f"ot.sinkhorn2(a, B, M, reg), B: {n}x{k}, reg={reg:g} (cost error)", t_pot, t_ours,
                 float(np.abs(c_pot - exact).max()), float(np.abs(c_ours - exact).max()), float("nan")))

    print("| call | POT s | snsot s | POT / snsot | POT error | snsot error | drop-in / solve() |")
    print("|---|---|---|---|---|---|---|")
    for name, tp, to, ep, eo, overhead in rows:
        print(f"| {name} | {tp:.4f} | {to:.4f} | {tp / to:.2f} | {ep:.2g} | {eo:.2g} | {overhead:.2f} |")


if __name__ == "__main__":
    main()
