"""Backward of ``snsot.torch.ot_plan``: sparse CSR CG against the dense CG, interleaved in one run.

    PYTHONPATH=$PWD/src python benchmarks/plan_backward.py [--sizes 500 1000 2000] [--regs 1e-3 1e-4] [--repeat 5]

For each problem (2-D uniform clouds, squared Euclidean cost in [0, 2], uniform
weights, balanced and ``reg_m=1``) it solves once, then times the backward of
``<W, P>`` (W Gaussian) with ``backward="dense"`` and ``"sparse"`` alternately
and prints the median times, their ratio, the kept fraction of the plan and the
largest difference between the two gradients.
"""

import argparse
import statistics
import time

import numpy as np
import torch

import snsot
import snsot.torch as st
from snsot.torch._autograd import _sparse_block


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000])
    parser.add_argument("--regs", type=float, nargs="+", default=[1e-3, 1e-4])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tol", type=float, default=1e-9)
    args = parser.parse_args(argv)
    print("| n | reg | reg_m | kept | dense backward (s) | sparse backward (s) | dense / sparse | max grad diff |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        rng = np.random.default_rng(n)
        x, y = rng.random((n, 2)), rng.random((n, 2))
        C = snsot.costs.pairwise(x, y)
        W = torch.tensor(rng.standard_normal((n, n)))
        for reg in args.regs:
            for reg_m in (None, 1.0):
                Ct = torch.tensor(C, requires_grad=True)
                P = st.ot_plan(Ct, reg=reg, reg_m=reg_m, tol=args.tol)
                S = _sparse_block(P.detach().numpy(), 1e-10, force=True)
                times, grads = {"dense": [], "sparse": []}, {}
                for _ in range(args.repeat):
                    for mode in ("dense", "sparse"):
                        Ct.grad = None
                        P = st.ot_plan(Ct, reg=reg, reg_m=reg_m, tol=args.tol, backward=mode)
                        loss = (P * W).sum()
                        t0 = time.perf_counter()
                        loss.backward()
                        times[mode].append(time.perf_counter() - t0)
                        grads[mode] = Ct.grad.numpy().copy()
                td, ts = statistics.median(times["dense"]), statistics.median(times["sparse"])
                diff = float(np.abs(grads["dense"] - grads["sparse"]).max())
                print(f"| {n} | {reg:g} | {reg_m} | {len(S.data) / n / n:.3f} | {td:.3f} | {ts:.3f} | "
                      f"{td / ts:.2f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
