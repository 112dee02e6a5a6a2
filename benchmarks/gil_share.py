"""Share of a one-thread MNIST solve spent outside the numba kernels (the part that holds the GIL).

    PYTHONPATH=$PWD/src python benchmarks/gil_share.py [N_SOLVES]

Every compiled kernel of snsot._kernels is wrapped in a timer; the rest of
each solve's wall time is Python and small-NumPy work between kernels, which
holds the GIL, so two threads can only overlap the kernels. The benchmark
(`snsot bench --distances`) reports the consequence directly: the share of
thread workers' time blocked (schedstat).
"""
import sys
import time
import types

import numba

from snsot import _kernels as K, costs, solve
from snsot._engines import one_blas_thread
from snsot.bench.distances import mnist_histograms



def main(n_solves: int) -> None:
    spent = [0.0, 0]

    def timed(kernel):
        def run(*args, **kwargs):
            t = time.perf_counter()
            try:
                return kernel(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - t
                spent[1] += 1
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
        for module in list(sys.modules.values()):
            if getattr(module, "__name__", "").startswith("snsot."):
                for attr, value in list(vars(module).items()):
                    if value is K:
                        setattr(module, attr, stand_in)
        spent[:] = [0.0, 0]
        t = time.perf_counter()
        for i, j in pairs:
            solve(C, X[i], X[j], reg=1 / 1200, tol=1e-9, n_threads=1, warn=False)
        wall = time.perf_counter() - t
    print(f"{len(pairs)} solves: {1e3 * wall / len(pairs):.1f} ms/solve; kernels {spent[1] / len(pairs):.0f} calls "
          f"per solve; outside the kernels (GIL held) {100 * (1 - spent[0] / wall):.1f}% = "
          f"{1e3 * (wall - spent[0]) / len(pairs):.1f} ms/solve")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 40)
