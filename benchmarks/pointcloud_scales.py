"""Where a truncated point-cloud solve spends its time: per scale, and the truncation's share.

One ``snsot.solve(PointCloud(x, y), reg=..., tol=...)`` on the benchmark's 2-D
clouds (``snsot.bench.pointcloud.clouds``: uniform on [0, 2]^2 against a
clipped Gaussian), after a small warm-up solve that compiles the kernels.
Prints the total, the time inside ``snsot.support.truncate`` (all calls) and
its share, the peak resident memory, and the per-scale table
(``result.scales``); ``--profile`` adds cProfile's top functions;
``--schedules`` instead compares schedule options (``stage_tol``,
``eps_factor``, ...) on one thread by CPU time, interleaved, with the largest
plan difference to the first.

    PYTHONPATH=$PWD/src python benchmarks/pointcloud_scales.py --n 10000 --reg 1e-4
    PYTHONPATH=$PWD/src python benchmarks/pointcloud_scales.py --n 30000 --reg 3.3e-5
    PYTHONPATH=$PWD/src python benchmarks/pointcloud_scales.py --n 100000 --reg 1e-5 --time-limit 540
    PYTHONPATH=$PWD/src python benchmarks/pointcloud_scales.py --n 10000 --reg 1e-4 --schedules

Expected on a quiet 2-core machine: n = 10k a few seconds, 30k under a
minute (both dominated by the last scale's Newton CG), 1e5 a few minutes.
"""

import argparse
import resource
import time

import numpy as np

import snsot
from snsot.bench.pointcloud import clouds
from snsot.solvers import pointcloud as PC

SCHEDULES = {
    "default": {},
    "stage_tol=1e-2": {"stage_tol": 1e-2},
    "stage_tol=1e-5": {"stage_tol": 1e-5},
    "eps_factor=8": {"eps_factor": 8.0},
    "eps_factor=2": {"eps_factor": 2.0},
}


def timed_truncate(start):
    """Wrap the truncation the solver calls; returns the list of seconds it fills as it runs
    (and prints one line per call, so a run stopped by a timeout still shows how far it got)."""
    spent = []
    inner = PC.truncate

    def truncate(cloud, f, g, reg, *args, **kwargs):
        t = time.perf_counter()
        out = inner(cloud, f, g, reg, *args, **kwargs)
        spent.append(time.perf_counter() - t)
        print(f"  [{t - start:7.1f} s] truncate reg={reg:.3g} {cloud.shape[0]}x{cloud.shape[1]}: "
              f"{out.nnz} pairs ({out.nnz / cloud.shape[0]:.1f}/point) in {spent[-1]:.2f} s", flush=True)
        return out

    PC.truncate = truncate
    return spent


def one_solve(x, y, reg, tol, profile, time_limit):
    start = time.perf_counter()
    spent = timed_truncate(start)

    def callback(iteration, stage, error, objective):
        """Print each Newton step; stop (status "callback", the scales so far kept) past the limit."""
        now = time.perf_counter() - start
        if stage == 1:
            print(f"  [{now:7.1f} s] Newton step, marginal error {error:.3g}", flush=True)
        return time_limit is not None and now > time_limit

    if profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
    t = time.perf_counter()
    res = snsot.solve(snsot.PointCloud(x, y), reg=reg, tol=tol, callback=callback, warn=False)
    total = time.perf_counter() - t
    if profile:
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"n={len(x)} reg={reg:g} tol={tol:g}: total {total:.2f} s, converged={res.converged}, "
          f"marginal_error={res.marginal_error:.3g}, outside_mass={res.outside_mass:.3g}, "
          f"support {res.support_size} ({res.support_size / len(x):.1f}/point), "
          f"Sinkhorn {res.n_sinkhorn}, Newton {res.n_newton}, status {res.status}, peak RSS {rss:.0f} MB")
    print(f"truncation: {len(spent)} calls, {sum(spent):.2f} s = {100 * sum(spent) / total:.0f}% of the solve")
    keys = ["reg", "points", "n_x", "n_y", "support_size", "pairs_per_point", "max_pairs_per_point",
            "n_sinkhorn", "n_newton", "refreshes", "marginal_error", "time"]
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for s in res.scales:
        cells = [f"{s[k]:.3g}" if isinstance(s[k], float) else str(s[k]) for k in keys]
        print("| " + " | ".join(cells) + " |")


def schedules(x, y, reg, tol, rounds):
    cpu = {name: [] for name in SCHEDULES}
    first = None
    for r in range(rounds):
        for name, opts in SCHEDULES.items():
            t = time.process_time()
            res = snsot.solve(snsot.PointCloud(x, y), reg=reg, tol=tol, n_threads=1, **opts)
            cpu[name].append(time.process_time() - t)
            first = res.plan if first is None else first
            if r == 0:
                per_scale = [(f"{s['reg']:.2g}", s["n_sinkhorn"], s["n_newton"]) for s in res.scales]
                print(f"{name}: converged={res.converged}, plan difference to the first "
                      f"{abs(res.plan - first).max():.1e}, (reg, Sinkhorn, Newton) per scale {per_scale}")
    base = np.median(cpu["default"])
    for name, values in cpu.items():
        print(f"{name}: median CPU {np.median(values):.2f} s, / default {np.median(values) / base:.2f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--reg", type=float, default=1e-4)
    parser.add_argument("--tol", type=float, default=1e-10)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--schedules", action="store_true")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--time-limit", type=float, default=None,
                        help="stop the solve after this many seconds and print what it reached")
    args = parser.parse_args(argv)
    x, y = clouds(args.n)[:2]
    xs, ys = clouds(2000)[:2]
    snsot.solve(snsot.PointCloud(xs, ys), reg=1e-3, tol=args.tol)  # compile the kernels
    if args.schedules:
        schedules(x, y, args.reg, args.tol, args.rounds)
    else:
        one_solve(x, y, args.reg, args.tol, args.profile, args.time_limit)


if __name__ == "__main__":
    main()
