"""Per-Newton-step diagnostics of a point-cloud solve: why a scale takes the steps and seconds it does.

One ``snsot.solve(PointCloud(x, y), reg=..., tol=...)`` on the benchmark's 2-D
clouds (``snsot.bench.pointcloud.clouds``), after a small warm-up solve that
compiles the kernels. Prints, as the solve runs (so a run stopped by
``--time-limit`` still shows how far it got):

- every truncation (shape, pairs, seconds);
- every preconditioner build (coarse unknowns, the V-cycle's levels, the
  factorised size and its factor entries, seconds);
- every Newton direction (CG iterations, residual reached and asked, the
  largest log-plan change in units of reg, seconds, and the time spent in
  CG's products with ``K`` and in the preconditioner since the last one);
- every line search (first step tried, step taken, errors before and after);

then the per-scale table (``result.scales``) and the peak memory.
``--dump F`` saves the potentials at the last scale's final truncation
(after the settle), and ``--init F`` starts the last scale from them: the
last scale alone, for experiments that need its start only. ``--opt k=v``
passes SNS / point-cloud options (``--opt extrapolate=1``).

    PYTHONPATH=$PWD/src python benchmarks/pointcloud_steps.py --n 100000 --reg 1e-5
    PYTHONPATH=$PWD/src python benchmarks/pointcloud_steps.py --n 1000000 --reg 1e-6 --dump last.npz --time-limit 300
    PYTHONPATH=$PWD/src python benchmarks/pointcloud_steps.py --n 1000000 --reg 1e-6 --init last.npz --opt n_warmup=3

The instrumentation wraps private functions (``pointcloud.truncate``,
``linalg.TwoLevelPreconditioner``, ``linalg._CsrSchur.matvec``,
``sns._Stage.line_search``); it measures, it does not change the iterates.
"""

import argparse
import ast
import resource
import time

import numpy as np

import snsot
from snsot.bench.pointcloud import clouds
from snsot.solvers import linalg as LA
from snsot.solvers import pointcloud as PC
from snsot.solvers import sns as SNS


def instrument(args, now):
    """Wrap the solver's private steps with printing timers; returns the accumulators."""
    acc = {"matvec": [0.0, 0], "precond": [0.0, 0]}
    truncations = [0]

    def timed(store):
        def wrap(func):
            def inner(*a, **k):
                t = time.perf_counter()
                out = func(*a, **k)
                store[0] += time.perf_counter() - t
                store[1] += 1
                return out
            return inner
        return wrap

    LA._CsrSchur.matvec = timed(acc["matvec"])(LA._CsrSchur.matvec)
    LA.TwoLevelPreconditioner.__call__ = timed(acc["precond"])(LA.TwoLevelPreconditioner.__call__)

    inner_truncate = PC.truncate

    def truncate(cloud, f, g, reg, *a, **k):
        t = time.perf_counter()
        out = inner_truncate(cloud, f, g, reg, *a, **k)
        print(f"[{now():7.1f} s] truncate reg={reg:.3g} {cloud.shape[0]}x{cloud.shape[1]}: {out.nnz} pairs "
              f"in {time.perf_counter() - t:.2f} s", flush=True)
        if args.dump and abs(reg - args.reg) <= 1e-12 * args.reg and cloud.shape[0] == args.n:
            truncations[0] += 1
            if truncations[0] == 2:  # the settle's truncation, then the final one: dump at the final one
                np.savez(args.dump, f=f, g=g)
                print(f"  potentials saved to {args.dump} (solver's point order: k-d tree leaf order)", flush=True)
        return out

    PC.truncate = truncate

    inner_build = LA.TwoLevelPreconditioner.__init__

    def build(self, S, *a, **k):
        t = time.perf_counter()
        inner_build(self, S, *a, **k)
        levels = [h[0].shape[0] for h in self.hierarchy]
        print(f"    preconditioner {S.shape}: coarse {self.n_coarse}, V-cycle levels {levels}, factorised "
              f"{self.coarse.shape[0]} ({self.coarse.L.nnz + self.coarse.U.nnz} factor entries) in "
              f"{time.perf_counter() - t:.2f} s", flush=True)

    LA.TwoLevelPreconditioner.__init__ = build

    inner_search = SNS._Stage.line_search

    def line_search(self, cur, trial, d, slope, t, **k):
        out = inner_search(self, cur, trial, d, slope, t, **k)
        print(f"    line search from t={t:.3g}{' (clipped)' if k.get('t_min', 0) > 0 else ''}: {out}, "
              f"error {cur.error:.3g} -> {trial.error:.3g}", flush=True)
        return out

    SNS._Stage.line_search = line_search

    def direction(S, d_row, d_col, gr, gc, reg, rtol, max_cg, guess=None):
        t = time.perf_counter()
        d = LA.newton_direction(S, d_row, d_col, gr, gc, reg, rtol, max_cg, guess)
        spent = {k: f"{v[0]:.2f} s / {v[1]}" for k, v in acc.items()}
        print(f"    direction {S.shape}: CG {d.cg_iter} iterations, residual {d.residual:.2g} (asked {rtol:.2g}), "
              f"largest change {SNS._log_change(d, reg):.3g} reg, {time.perf_counter() - t:.2f} s; "
              f"since the last: products, preconditioner {spent}", flush=True)
        for v in acc.values():
            v[0], v[1] = 0.0, 0
        return d

    return direction


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100000)
    parser.add_argument("--reg", type=float, default=1e-5)
    parser.add_argument("--tol", type=float, default=1e-10)
    parser.add_argument("--time-limit", type=float, default=None)
    parser.add_argument("--dump", default=None)
    parser.add_argument("--init", default=None)
    parser.add_argument("--opt", action="append", default=[], help="k=v, v a Python literal")
    args = parser.parse_args(argv)
    options = {}
    for item in args.opt:
        key, value = item.split("=", 1)
        options[key] = ast.literal_eval(value)
    x, y = clouds(args.n)[:2]
    xs, ys = clouds(2000)[:2]
    snsot.solve(snsot.PointCloud(xs, ys), reg=1e-3, tol=args.tol)  # compile the kernels
    init = None
    if args.init:
        from snsot._tree import spatial_order

        saved = np.load(args.init)
        f, g = np.empty(args.n), np.empty(args.n)  # back from the solver's order to the clouds'
        f[spatial_order(x)], g[spatial_order(y)] = saved["f"], saved["g"]
        init = (f, g)
    start = [time.perf_counter()]

    def now():
        return time.perf_counter() - start[0]

    direction = instrument(args, now)

    def callback(iteration, stage, error, objective):
        if stage == 1:
            print(f"[{now():7.1f} s] Newton step, marginal error {error:.3g}", flush=True)
        return args.time_limit is not None and now() > args.time_limit

    start[0] = time.perf_counter()
    res = snsot.solve(snsot.PointCloud(x, y), reg=args.reg, tol=args.tol, callback=callback, warn=False,
                      init=init, direction=direction, **options)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"total {now():.1f} s, converged={res.converged}, marginal_error={res.marginal_error:.3g}, "
          f"Sinkhorn {res.n_sinkhorn}, Newton {res.n_newton}, status {res.status}, peak RSS {rss:.0f} MB")
    for s in res.scales:
        print({k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in s.items()})


if __name__ == "__main__":
    main()
