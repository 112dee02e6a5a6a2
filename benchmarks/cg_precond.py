"""CG iterations and seconds per Newton step of truncated-support SNS: Jacobi vs the two-level aggregation preconditioner.

Usage (from the repository root)::

    PYTHONPATH=$PWD/src python benchmarks/cg_precond.py --sizes 10000 30000 --regs 1e-4 3.3e-5

Each size runs once per preconditioner, interleaved (Jacobi, then aggregation,
at one size before the next), on 2-D clouds of
:func:`snsot.bench.pointcloud.clouds` with tol 1e-10. Every Schur-complement
solve at the final (points) level is logged: asked relative residual,
iterations, seconds. Jacobi is forced by raising
``linalg.AGGREGATION_MIN_SIZE`` above the problem size. A first small solve
compiles the kernels before anything is timed.
Quiet machine: about 2.5 minutes for the default sizes (10k and 30k: the
Jacobi runs alone take about 10 s and 65 s there).
"""

import argparse
import sys
import time

import numpy as np

import snsot
from snsot.bench.pointcloud import clouds
from snsot.solvers import linalg


def run(n, reg, precond, tol):
    log = []
    orig = linalg._CsrSchur.solve

    def solve(self, rhs, rtol, max_iter, y0=None):
        t = time.perf_counter()
        y, it, res = orig(self, rhs, rtol, max_iter, y0)
        log.append((self.S.shape, self.S.data.size, rtol, it, res, time.perf_counter() - t))
        return y, it, res

    saved = linalg.AGGREGATION_MIN_SIZE
    linalg._CsrSchur.solve = solve
    if precond == "jacobi":
        linalg.AGGREGATION_MIN_SIZE = 1 << 62
    try:
        x, y = clouds(n)[:2]
        t = time.perf_counter()
        res = snsot.solve(snsot.PointCloud(x, y), reg=reg, tol=tol)
        total = time.perf_counter() - t
    finally:
        linalg._CsrSchur.solve = orig
        linalg.AGGREGATION_MIN_SIZE = saved
    return res, total, log


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10000, 30000])
    p.add_argument("--regs", type=float, nargs="+", default=[1e-4, 3.3e-5])
    p.add_argument("--tol", type=float, default=1e-10)
    p.add_argument("--verbose", action="store_true", help="print every CG call")
    args = p.parse_args(argv)
    if len(args.regs) != len(args.sizes):
        p.error("--regs: give one reg per size")
    run(500, 1e-3, "aggregation", args.tol)  # compile
    rows = []
    for n, reg in zip(args.sizes, args.regs):
        plans = {}
        for precond in ("jacobi", "aggregation"):
            res, total, log = run(n, reg, precond, args.tol)
            plans[precond] = res.plan
            final = [l for l in log if l[0][0] == n]
            its = [l[3] for l in final]
            cg = sum(l[5] for l in log)
            cg_final = sum(l[5] for l in final)
            rows.append((n, reg, precond, total, cg, cg_final, len(final), its, res.converged, res.marginal_error))
            print(f"n={n} reg={reg:g} {precond:11s} total {total:7.2f} s  CG all scales {cg:6.2f} s  final level "
                  f"{cg_final:6.2f} s over {len(final)} Newton steps, {np.mean(its) if its else 0:.0f} its/step "
                  f"(max {max(its) if its else 0})  converged={res.converged} error={res.marginal_error:.2e}", flush=True)
            if args.verbose:
                for shape, nnz, rtol, it, r, sec in log:
                    print(f"    {shape[0]}x{shape[1]} nnz={nnz} rtol={rtol:.2g} it={it} res={r:.2g} t={sec:.3f}")
            print("    iterations per Newton step (final level):", its, flush=True)
        a, b = plans["jacobi"], plans["aggregation"]
        diff = abs(a - b).max() if a.shape == b.shape else "plans of different shapes"
        print(f"    max |plan_jacobi - plan_aggregation| = {diff}", flush=True)
    return rows


if __name__ == "__main__":
    sys.exit(main() and 0)
