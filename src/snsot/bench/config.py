"""What the benchmark runs by default: methods, problems, regularisations, and the paper's numbers."""

from __future__ import annotations

from .. import datasets

#: Method names, in table order. ``pot-emd`` is the exact reference.
METHODS = ("snsot-sns", "snsot-sinkhorn", "regot-ssns", "regot-splr", "regot-bcd", "pot-sinkhorn", "pot-emd")
#: The paper's headline problems (Tang et al. 2024, Table 1).
HEADLINE_PROBLEMS = ("random500", "mnist-l2", "mnist-l1")
#: ``--problems all``: every registered problem, the headline ones first.
ALL_PROBLEMS = HEADLINE_PROBLEMS + tuple(p for p in datasets.PROBLEMS if p not in HEADLINE_PROBLEMS)
#: Regularisations of ``--sweep``, largest first.
SWEEP_REGS = (1e-1, 1e-2, 1e-3, 1 / 1200, 1e-4)
#: Methods of the sweep: the two snsot solvers and the strongest peers.
SWEEP_METHODS = ("snsot-sns", "snsot-sinkhorn", "regot-ssns", "pot-sinkhorn")
#: Methods that need more iterations, and so more time, as reg shrinks: once
#: capped at one reg, they are not run at smaller ones (see ``run_grid``).
SINKHORN_TYPE = ("snsot-sinkhorn", "pot-sinkhorn", "regot-bcd")
#: The sweep runs peers only on problems up to the size of the MNIST pairs
#: (784 x 784): capped peers cost a whole time cap at every reg, and on the
#: larger problems they would double the length of the benchmark.
PEER_SWEEP_MAX_ENTRIES = 784 * 784
SCALING_SIZES = (500, 1000, 2000, 4000)
#: The largest scaling size is solved again at this reg, where SNS takes Newton steps.
SCALING_NEWTON_REG = 1e-4
DEFAULT_REG = 1 / 1200
DEFAULT_TOL = 1e-10

# The paper's Table 1 at eta = 1/reg = 1200 (their hardware and setup):
# "iterations (Sinkhorn + Newton), time" for SNS and for plain Sinkhorn.
PAPER = {
    "random500": {"snsot-sns": "29 (20 + 9), 0.34 s", "snsot-sinkhorn": "56,199, 233 s"},
    "mnist-l2": {"snsot-sns": "53 (20 + 33), 2.33 s", "snsot-sinkhorn": "2,041, 18.8 s"},
    "mnist-l1": {"snsot-sns": "777 (700 + 77), 12.2 s", "snsot-sinkhorn": "5,748, 45.8 s"},
}

_QUICK = dict(problems=("random200", "mnist-l2"), regs=(1e-2,), repeats=1, time_cap=3.0,
              sweep_problems=("random200",), sweep_regs=(1e-1, 1e-2, 1 / 1200), scaling_sizes=(100, 200, 400))

