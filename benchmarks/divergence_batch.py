"""Batched ``snsot.torch.sinkhorn_divergence`` (3B solves on a thread pool) against a Python loop, interleaved.

    PYTHONPATH=$PWD/src python benchmarks/divergence_batch.py [--batch 8] [--sizes 300 1000] [--regs 1e-2 1e-3]
                                                              [--reg-m none 1] [--repeat 5] [--n-jobs N]

2-D uniform clouds (squared Euclidean cost), uniform weights. For each row it
times forward + backward of the batch call and of the loop over items
alternately, and prints median times, their ratio and the largest difference
between the two (values and point gradients).
"""

import argparse
import statistics
import time

import numpy as np
import torch

import snsot.torch as st


def _run(fn, x, y):
    xg = x.clone().requires_grad_()
    t0 = time.perf_counter()
    values = fn(xg, y)
    values.sum().backward()
    return time.perf_counter() - t0, values.detach(), xg.grad


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 1000])
    parser.add_argument("--regs", type=float, nargs="+", default=[1e-2, 1e-3])
    parser.add_argument("--reg-m", nargs="+", default=["none", "1"])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--n-jobs", type=int, default=None)
    args = parser.parse_args(argv)
    print("| B | n | reg | reg_m | batch (s) | loop (s) | loop / batch | max diff |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        rng = np.random.default_rng(n)
        x = torch.tensor(rng.random((args.batch, n, 2)))
        y = torch.tensor(rng.random((args.batch, n, 2)))
        for reg in args.regs:
            for text in args.reg_m:
                reg_m = None if text == "none" else float(text)
                batch = lambda x, y: st.sinkhorn_divergence(x, y, reg=reg, reg_m=reg_m, n_jobs=args.n_jobs)
                loop = lambda x, y: torch.stack([st.sinkhorn_divergence(x[k], y[k], reg=reg, reg_m=reg_m)
                                                 for k in range(x.shape[0])])
                _run(loop, x[:1], y[:1])  # kernels loaded before timing
                times = {"batch": [], "loop": []}
                for _ in range(args.repeat):
                    for name, fn in (("batch", batch), ("loop", loop)):
                        dt, values, grad = _run(fn, x, y)
                        times[name].append(dt)
                        if name == "batch":
                            ref = (values, grad)
                        else:
                            diff = max(float((values - ref[0]).abs().max()), float((grad - ref[1]).abs().max()))
                tb, tl = statistics.median(times["batch"]), statistics.median(times["loop"])
                print(f"| {args.batch} | {n} | {reg:g} | {text} | {tb:.3f} | {tl:.3f} | {tl / tb:.2f} | {diff:.1e} |",
                      flush=True)


if __name__ == "__main__":
    main()
