"""Truncated-support SNS against dense SNS on the issue-13 point clouds: time ratios from one run.

Problem: 2-D, x uniform on [0, 2]^2, y Gaussian (1, 1) sd 0.3 clipped to
[0, 2]^2 (``snsot.bench.pointcloud.clouds``), uniform weights, |x - y|^2,
reg 1e-4, tol 1e-8 (relative to the mass). Each measurement is one solve in
a fresh child process (after warm-up solves that load the compiled kernels,
serial and parallel builds, so no timed solve pays for loading them), and the children run interleaved, rep by rep: dense, sparse
[, sparse on a baseline source tree], so machine load hits every method
alike and the ratios come from one run. Reported per size: median seconds,
the median of the per-rep ratios dense / sparse (and baseline / sparse),
the largest plan difference sparse vs dense, the marginal errors and the
iteration counts. ``--profile`` adds a cProfile of one sparse solve.

Run (from the repository root)::

    PYTHONPATH=$PWD/src python benchmarks/sparse_speed.py --sizes 4000 10000 --reps 3
    # against another tree, e.g. a worktree of main:
    PYTHONPATH=$PWD/src python benchmarks/sparse_speed.py --sizes 4000 --baseline /path/to/main/src
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"

_CHILD = r"""
import json, sys, time
import numpy as np
import scipy.sparse as sp
import snsot
from snsot.bench.pointcloud import clouds
method, n, reg, tol, plan_out, profile = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6] == "1"
# Load the compiled kernels (serial and parallel builds) before timing: small problems for the serial
# builds, ~1.2e6 entries (above snsot._kernels.PARALLEL_MIN_SIZE) for the parallel ones.
for k, r in ((300, 1e-3), (1100, 0.5)):
    xs, ys = clouds(k, 1)
    w = np.full(k, 1 / k)
    snsot.solve(snsot.PointCloud(xs, ys), w, w, reg=r, tol=tol, warn=False)
    snsot.solve(snsot.costs.pairwise(xs, ys), w, w, reg=r, tol=tol, warn=False)
x, y = clouds(n, 0)
a = np.full(n, 1.0 / n)
C = snsot.PointCloud(x, y).dense_cost(max_bytes=64e9) if method == "dense" else snsot.PointCloud(x, y)
if profile:
    import cProfile, io, pstats
    prof = cProfile.Profile()
    prof.enable()
t0 = time.perf_counter()
res = snsot.solve(C, a, a, reg=reg, tol=tol, warn=False)
t = time.perf_counter() - t0
out = dict(time=t, marginal_error=res.marginal_error, converged=res.converged, n_sinkhorn=res.n_sinkhorn,
           n_newton=res.n_newton, support_size=res.support_size)
if profile:
    prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(15)
    out["profile"] = s.getvalue()
if plan_out != "-":
    sp.save_npz(plan_out, sp.csr_matrix(res.plan))
print("RESULT", json.dumps(out))
"""


def _child(src, method, n, reg, tol, plan_out="-", profile=False):
    env = dict(os.environ, PYTHONPATH=str(src))
    out = subprocess.run([sys.executable, "-c", _CHILD, method, str(n), repr(reg), repr(tol), plan_out,
                          "1" if profile else "0"], capture_output=True, text=True, env=env)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{method} n={n} failed:\n{out.stderr[-2000:]}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4000])
    ap.add_argument("--reg", type=float, default=1e-4)
    ap.add_argument("--tol", type=float, default=1e-8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--baseline", type=Path, default=None, help="another tree's src/ to time the sparse solve of")
    ap.add_argument("--no-dense", action="store_true", help="sparse (and baseline) only")
    ap.add_argument("--profile", action="store_true", help="cProfile one extra sparse solve per size")
    args = ap.parse_args(argv)
    import scipy.sparse as sp

    lines = [f"reg {args.reg:g}, tol {args.tol:g}, {args.reps} reps, interleaved child processes; "
             f"command: python benchmarks/sparse_speed.py {' '.join(argv if argv is not None else sys.argv[1:])}", ""]
    for n in args.sizes:
        rows = {"dense": [], "sparse": [], "baseline": []}
        diff = None
        for rep in range(args.reps):
            plans = {}
            for method in ("dense", "sparse", "baseline"):
                if (method == "dense" and args.no_dense) or (method == "baseline" and args.baseline is None):
                    continue
                src = args.baseline if method == "baseline" else SRC
                tmp = tempfile.NamedTemporaryFile(suffix=".npz", delete=False).name if rep == 0 else "-"
                r = _child(src, "dense" if method == "dense" else "sparse", n, args.reg, args.tol, tmp)
                rows[method].append(r)
                print(f"n={n} rep={rep} {method}: {r['time']:.3f} s, error {r['marginal_error']:.2e}, "
                      f"{r['n_sinkhorn']} Sinkhorn + {r['n_newton']} Newton", flush=True)
                if tmp != "-":
                    plans[method] = sp.load_npz(tmp)
                    os.unlink(tmp)
            if "dense" in plans and "sparse" in plans:
                diff = float(abs(plans["sparse"] - plans["dense"]).max())
        med = {k: float(np.median([r["time"] for r in v])) for k, v in rows.items() if v}
        lines.append(f"n = {n}:")
        for k, v in rows.items():
            if v:
                times = ", ".join(format(r["time"], ".2f") for r in v)
                lines.append(f"  {k:8s} median {med[k]:.3f} s  (times {times}; "
                             f"error {v[-1]['marginal_error']:.2e}, converged {v[-1]['converged']}, "
                             f"{v[-1]['n_sinkhorn']} Sinkhorn + {v[-1]['n_newton']} Newton)")
        for k in ("dense", "baseline"):
            if rows[k]:
                ratios = [d["time"] / s["time"] for d, s in zip(rows[k], rows["sparse"])]
                lines.append(f"  {k} / sparse: median of per-rep ratios {np.median(ratios):.2f} "
                             f"({', '.join(f'{q:.2f}' for q in ratios)})")
        if diff is not None:
            lines.append(f"  max |P_sparse - P_dense| = {diff:.2e}")
        if args.profile:
            r = _child(SRC, "sparse", n, args.reg, args.tol, profile=True)
            lines.append(f"  profile of one sparse solve ({r['time']:.2f} s under cProfile):")
            lines.extend("    " + ln for ln in r["profile"].splitlines() if ln.strip())
    print("\n".join(lines))


if __name__ == "__main__":
    main()
