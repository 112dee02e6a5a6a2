"""What the benchmark runs by default: methods, problems, regularisations, and the paper's numbers."""

from __future__ import annotations

#: Method names, in table order. ``pot-emd`` is the exact reference.
METHODS = ("snsot-sns", "snsot-sinkhorn", "regot-ssns", "regot-splr", "regot-bcd", "pot-sinkhorn", "pot-emd")
#: The paper's headline problems (Tang et al. 2024, Table 1).
HEADLINE_PROBLEMS = ("random500", "mnist-l2", "mnist-l1")
#: ``--problems all``: the headline problems and the Gaussian mixtures
#: (random assignment at n = 1000..4000 is the ``--scaling`` section).
ALL_PROBLEMS = HEADLINE_PROBLEMS + ("gauss1d-w2", "gauss1d-w1", "gauss2d-w2", "gauss2d-w1")
#: Regularisations of ``--sweep``, largest first.
SWEEP_REGS = (1e-2, 1e-3, 1 / 1200, 1e-4)
#: Methods of the sweep: the two snsot solvers and the strongest peers.
SWEEP_METHODS = ("snsot-sns", "snsot-sinkhorn", "regot-ssns", "pot-sinkhorn")
SCALING_SIZES = (500, 1000, 2000, 4000)
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
              sweep_problems=("random200",), sweep_regs=(1e-2, 1 / 1200), scaling_sizes=(100, 200, 400))

