"""Check that two source trees solve MNIST pairs and unbalanced problems with the same iterates, bit for bit.

    python benchmarks/same_iterates.py /tmp/base/src src

Each tree runs in a subprocess (its ``src`` on PYTHONPATH): 28 MNIST pairs
(reg 1/1200, tol 1e-9, one thread) and 12 random unbalanced problems (KL
marginals). Prints whether potentials, marginal-error histories, iteration
counts and objectives are identical, and the largest relative difference of
the costs ``<C, P>`` (which the fused final pass sums in another order).
About 10 s per tree on a quiet machine.
"""
import json
import os
import subprocess
import sys

import numpy as np

CHILD = r"""
import json, sys, warnings
import numpy as np
import snsot
from snsot import costs
from snsot.bench.distances import mnist_histograms
warnings.simplefilter("ignore")
out = []
X, C = mnist_histograms(8), costs.grid((28, 28))
for i in range(8):
    for j in range(i + 1, 8):
        out.append(snsot.solve(C, X[i], X[j], reg=1 / 1200, tol=1e-9, n_threads=1, warn=False))
for seed in range(4):
    rng = np.random.default_rng(seed)
    Cu, a, b = rng.random((60, 50)), rng.random(60) + 0.05, 2 * (rng.random(50) + 0.05)
    for rho in (0.5, (0.3, float("inf")), 5.0):
        out.append(snsot.solve(Cu, a, b, reg=0.02, reg_m=rho, tol=1e-10, warn=False))
print(json.dumps([dict(f=r.potentials[0].tolist(), g=r.potentials[1].tolist(), n=r.n_iter, obj=r.objective,
                       hist=r.history.marginal_error.tolist(), cost=r.cost) for r in out]))
"""


def run(src):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(src))
    return json.loads(subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                                     check=True).stdout.splitlines()[-1])


def main():
    first, second = run(sys.argv[1]), run(sys.argv[2])
    same = {key: all(x[key] == y[key] for x, y in zip(first, second)) for key in ("f", "g", "n", "obj", "hist")}
    cost = max(abs(x["cost"] - y["cost"]) / abs(y["cost"]) for x, y in zip(first, second))
    print(f"{len(first)} solves; identical: " + ", ".join(f"{k} {v}" for k, v in same.items())
          + f"; costs differ by at most {cost:.2g} (relative)")


if __name__ == "__main__":
    main()
