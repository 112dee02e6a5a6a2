"""Share of a one-thread MNIST solve spent outside the numba kernels (the part that holds the GIL).

    PYTHONPATH=$PWD/src python benchmarks/gil_share.py [N_SOLVES] [--json]

Every compiled kernel of snsot._kernels is wrapped in a timer; the rest of
each solve's time is Python and NumPy work between kernels, which holds the
GIL (except inside NumPy's own loops over large arrays, e.g. the checks of
the 784 x 784 cost that every ``solve`` call makes), so two threads can only
overlap the kernels. Shares are given both in wall time and in the thread's
CPU time; the CPU-time share does not move with other jobs on the machine.
The kernels' dispatch (argument checks, the serial/parallel choice) counts as
kernel time here though it holds the GIL too: about 1 us a call.

Two more load-independent figures (thread CPU time, best of 7) isolate the
Python per iteration and per solve: the Sinkhorn loop on a 16 x 16 problem
(its kernel work is negligible there) and a whole ``solve`` of it.

``snsot bench --distances`` reports the consequence directly: the share of
the thread workers' time blocked (schedstat).
"""
import json
import sys
import time
import types

import numba
import numpy as np

from snsot import _kernels as K, costs, solve
from snsot._engines import one_blas_thread
from snsot.bench.distances import mnist_histograms


def kernel_share(n_solves: int) -> dict:
    spent = [0.0, 0.0, 0]

    def timed(kernel):
        def run(*args, **kwargs):
            t, c = time.perf_counter(), time.thread_time()
            try:
                return kernel(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - t
                spent[1] += time.thread_time() - c
                spent[2] += 1
        return run

    X, C = mnist_histograms(12), costs.grid((28, 28))
    pairs = [(i, j) for i in range(12) for j in range(i, 12)][:n_solves]
    with one_blas_thread():
        solve(C, X[0], X[1], reg=1 / 1200, tol=1e-9, n_threads=1, warn=False)  # load the kernels
        # The solvers call K.<name> at run time: give each snsot module that holds
        # the kernels module a stand-in whose kernels are timed. (Patching the
        # module itself would also change the globals the kernels resolve their
        # callees from, fast_exp or _chunk_sum, when one compiles later.)
        stand_in = types.SimpleNamespace(**{
            name: timed(obj) if hasattr(obj, "serial") or isinstance(obj, numba.core.registry.CPUDispatcher) else obj
            for name, obj in vars(K).items()})
        patched = []
        for module in list(sys.modules.values()):
            if getattr(module, "__name__", "").startswith("snsot."):
                for attr, value in list(vars(module).items()):
                    if value is K:
                        setattr(module, attr, stand_in)
                        patched.append((module, attr))
        try:
            spent[:] = [0.0, 0.0, 0]
            t, c = time.perf_counter(), time.thread_time()
            for i, j in pairs:
                solve(C, X[i], X[j], reg=1 / 1200, tol=1e-9, n_threads=1, warn=False)
            wall, cpu = time.perf_counter() - t, time.thread_time() - c
        finally:
            for module, attr in patched:
                setattr(module, attr, K)
    n = len(pairs)
    return dict(solves=n, ms_per_solve=1e3 * wall / n, cpu_ms_per_solve=1e3 * cpu / n,
                kernel_calls_per_solve=spent[2] / n,
                outside_share_wall=1 - spent[0] / wall, outside_share_cpu=1 - spent[1] / cpu,
                outside_cpu_ms_per_solve=1e3 * (cpu - spent[1]) / n)


def small_problem_overheads() -> dict:
    from snsot import OTProblem
    from snsot.solvers._common import Recorder
    from snsot.solvers._dense import DensePlan
    from snsot.solvers._marginals import marginals_for
    from snsot.solvers.sinkhorn import SinkhornStepper, run_sinkhorn

    rng = np.random.default_rng(0)
    C = costs.grid((4, 4))
    a, b = rng.random(16) + 0.1, rng.random(16) + 0.1
    b *= a.sum() / b.sum()
    p = OTProblem(C, a, b, 1.0)
    per_step = per_solve = np.inf
    with K.thread_limit(1, 1):
        for _ in range(7):
            st = SinkhornStepper(DensePlan(p), marginals_for(p))
            t = time.thread_time()
            run_sinkhorn(st, Recorder(), 0.0, 2000)  # tol 0: every step runs
            per_step = min(per_step, (time.thread_time() - t) / st.count)
    solve(C, a, b, reg=0.5, tol=1e-9, n_threads=1)
    for _ in range(7):
        t = time.thread_time()
        for _ in range(200):
            res = solve(C, a, b, reg=0.5, tol=1e-9, n_threads=1)
        per_solve = min(per_solve, (time.thread_time() - t) / 200)
    return dict(python_us_per_sinkhorn_step=1e6 * per_step, us_per_small_solve=1e6 * per_solve,
                small_solve_iterations=int(res.n_iter))


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--json"]
    out = kernel_share(int(args[0]) if args else 40)
    out.update(small_problem_overheads())
    if "--json" in sys.argv:
        print(json.dumps(out))
        return
    print(f"{out['solves']} MNIST solves (reg 1/1200, tol 1e-9, one thread): {out['ms_per_solve']:.1f} ms/solve "
          f"({out['cpu_ms_per_solve']:.1f} ms CPU); kernels {out['kernel_calls_per_solve']:.0f} calls per solve; "
          f"outside the kernels (GIL held) {100 * out['outside_share_wall']:.1f}% of wall, "
          f"{100 * out['outside_share_cpu']:.1f}% of CPU = {out['outside_cpu_ms_per_solve']:.2f} ms CPU/solve")
    print(f"16 x 16 problem: Python per Sinkhorn step {out['python_us_per_sinkhorn_step']:.1f} us; a whole solve "
          f"({out['small_solve_iterations']} iterations) {out['us_per_small_solve']:.0f} us (thread CPU, best of 7)")


if __name__ == "__main__":
    main()
