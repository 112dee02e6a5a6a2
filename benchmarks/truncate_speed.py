"""Support truncation now against an earlier revision's, on the very calls a solve makes.

Runs one point-cloud solve (``snsot.bench.pointcloud.clouds(n)``, |x-y|^2)
and records the arguments of every ``truncate`` call (cloud, potentials,
reg, target); then times, interleaved, this tree's ``snsot.support.truncate``
and the one in ``--baseline`` (a git revision; its ``src/snsot/support.py`` is
loaded beside the current package), each on a fresh ``PointCloud`` so that
building the k-d tree is counted. Prints per call both times, the support
sizes and the certified outside mass against its target.

    PYTHONPATH=$PWD/src python benchmarks/truncate_speed.py --n 10000 --reg 1e-4 --baseline c0cd432

(about a minute on a quiet 2-core machine at n = 10,000.)
"""

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time

import numpy as np

import snsot
from snsot.bench.pointcloud import clouds
from snsot.geometry import PointCloud
from snsot.solvers import pointcloud as PC
from snsot.support import truncate


def baseline_truncate(rev):
    """``truncate`` from ``src/snsot/support.py`` at git revision ``rev`` (relative imports resolve to the current package)."""
    text = subprocess.run(["git", "show", f"{rev}:src/snsot/support.py"], check=True, capture_output=True,
                          text=True).stdout
    path = tempfile.NamedTemporaryFile("w", suffix=".py", delete=False)
    path.write(text)
    path.close()
    spec = importlib.util.spec_from_file_location("snsot._support_baseline", path.name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.truncate


def recorded_calls(n, reg, tol):
    calls = []
    inner = PC.truncate

    def record(cloud, f, g, r, target, **kwargs):
        calls.append((cloud.x, cloud.y, cloud.p, f.copy(), g.copy(), r, target))
        return inner(cloud, f, g, r, target, **kwargs)

    PC.truncate = record
    x, y = clouds(n)[:2]
    try:
        snsot.solve(snsot.PointCloud(x, y), reg=reg, tol=tol)
    finally:
        PC.truncate = inner
    return calls


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--reg", type=float, default=1e-4)
    parser.add_argument("--tol", type=float, default=1e-10)
    parser.add_argument("--baseline", default="c0cd432")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    old = baseline_truncate(args.baseline)
    calls = recorded_calls(args.n, args.reg, args.tol)
    total_old = total_new = 0.0
    print("| reg | n x m | baseline s | this s | baseline / this | pairs baseline | pairs this | outside this / target |")
    print("|---|---|---|---|---|---|---|---|")
    for x, y, p, f, g, reg, target in calls:
        old(PointCloud(x, y, p), f, g, reg, target)  # compile / warm both
        truncate(PointCloud(x, y, p), f, g, reg, target)
        t_old, t_new = [], []
        for _ in range(args.repeat):
            cloud = PointCloud(x, y, p)
            t = time.perf_counter()
            a = old(cloud, f, g, reg, target)
            t_old.append(time.perf_counter() - t)
            cloud = PointCloud(x, y, p)
            t = time.perf_counter()
            b = truncate(cloud, f, g, reg, target)
            t_new.append(time.perf_counter() - t)
        mo, mn = float(np.median(t_old)), float(np.median(t_new))
        total_old += mo
        total_new += mn
        print(f"| {reg:.3g} | {len(x)} x {len(y)} | {mo:.3f} | {mn:.3f} | {mo / mn:.1f} | {a.nnz} | {b.nnz} | "
              f"{b.outside_mass(f, g) / target:.3f} |")
    print(f"all {len(calls)} calls: baseline {total_old:.2f} s, this {total_new:.2f} s, "
          f"baseline / this {total_old / total_new:.1f}")


if __name__ == "__main__":
    main()
