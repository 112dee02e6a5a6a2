"""When does a dense cost with many +inf (forbidden) entries pay to solve on its finite entries?

Runs ``snsot.solve`` on the same cost twice per row, forced dense and forced
sparse (by moving ``snsot.solvers.pointcloud.SPARSE_INF_FRACTION``), and prints
the time ratio; the threshold 0.9 in ``finite_support_pays`` comes from this.

    PYTHONPATH=$PWD/src python benchmarks/forbidden_pairs.py --n 2000

(about 2 minutes on a quiet 2-core machine at n = 2000).
"""

import argparse
import time

import numpy as np
from scipy.spatial.distance import cdist

import snsot
from snsot.solvers import pointcloud as PC


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.5, 0.7, 0.8, 0.9, 0.95, 0.98])
    parser.add_argument("--regs", type=float, nargs="+", default=[1e-2, 1e-3])
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    x, y = rng.random((args.n, 2)), rng.random((args.n, 2))
    C0 = cdist(x, y, "sqeuclidean")
    small = np.full((60, 60), 1.0)
    small[::2, 1::2] = np.inf
    saved = PC.SPARSE_INF_FRACTION
    try:
        for threshold in (0.0, 1.1):  # load the kernels of both paths before timing
            PC.SPARSE_INF_FRACTION, PC.SPARSE_MIN_ENTRIES = threshold, 0
            snsot.solve(small, reg=1e-2, warn=False)
        PC.SPARSE_MIN_ENTRIES = 100_000
        print("inf fraction | reg | dense s | sparse s | dense/sparse | same iterations")
        for frac in args.fractions:
            C = np.where(C0 <= np.quantile(C0, 1 - frac), C0, np.inf)  # near pairs allowed: feasible
            for reg in args.regs:
                out = {}
                for mode, threshold in (("dense", 1.1), ("sparse", 0.0)):
                    PC.SPARSE_INF_FRACTION = threshold
                    t = time.perf_counter()
                    res = snsot.solve(C, reg=reg, tol=1e-9, warn=False)
                    out[mode] = (time.perf_counter() - t, res.n_iter)
                print(f"{frac} | {reg:g} | {out['dense'][0]:.3g} | {out['sparse'][0]:.3g} | "
                      f"{out['dense'][0] / out['sparse'][0]:.2f} | {out['dense'][1]} vs {out['sparse'][1]}", flush=True)
    finally:
        PC.SPARSE_INF_FRACTION, PC.SPARSE_MIN_ENTRIES = saved, 100_000


if __name__ == "__main__":
    main()
