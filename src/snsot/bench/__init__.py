"""Benchmark harness behind ``snsot bench``: snsot against its peers, honestly.

Every method solves the same problem to the same stopping rule, an L1
marginal error ``||P 1 - a||_1 + ||P^T 1 - b||_1 < tol``, and every reported
error is re-measured here from the plan the method returned, never taken from
the method's own log. Peers stop on their own norms, so their tolerance is
translated (and verified):

* RegOT (``sinkhorn_ssns``, ``sinkhorn_splr``, ``sinkhorn_bcd``) stops when
  the Euclidean norm of both marginal errors together is below its ``tol``.
  That norm never exceeds our L1 norm, so RegOT first gets ``tol`` itself,
  the loosest setting that can pass (the worst-case ``tol / sqrt(n + m)``
  made it run several times longer than needed); if the returned plan misses
  ``tol`` in L1, the warm-up run divides RegOT's ``tol`` by 10 and tries
  again (at most three times).
* POT ``ot.sinkhorn(method="sinkhorn_log")`` ends each iteration with exact
  row sums and stops when the Euclidean norm of the column error is below
  ``stopThr`` (checked every 10 iterations); it likewise starts at ``tol``,
  with the same verification.
* POT ``ot.emd`` (network simplex) gives the exact, unregularised OT cost;
  each method's ``<C, P>`` is reported with its gap to it.

Timing: per problem and method, one warm-up run (numba compilation, caches,
and the peers' tolerance calibration), then the median wall-clock time of up
to ``--repeats`` runs, all in this process. A method whose single run takes
more than ``time_cap / repeats`` is timed fewer times (the ``runs`` column
says how many), so the whole benchmark has a predictable length.

Time cap: snsot solvers stop through their ``callback`` once ``--time-cap``
seconds have passed. Peers have no callback: a short probe run measures their
time per iteration and their iteration cap is set to fit the time cap. A
method stopped this way is reported as ``> t`` seconds with the error it
reached; it is never given a made-up time. A peer that is not installed is
reported as ``absent``.

Run ``python -m snsot.bench --help`` (or ``snsot bench --help``).
"""

from .command import add_arguments, main, run
from .config import (ALL_PROBLEMS, DEFAULT_REG, DEFAULT_TOL, HEADLINE_PROBLEMS, METHODS, SCALING_SIZES,
                     SWEEP_METHODS, SWEEP_REGS)
from .measure import Problem, build_problem, measure, measure_memory, read_time, run_grid, run_scaling
from .methods import Run, exact_cost, l1_marginal_error

__all__ = ["add_arguments", "run", "main", "METHODS", "HEADLINE_PROBLEMS", "ALL_PROBLEMS", "SWEEP_REGS",
           "SWEEP_METHODS", "SCALING_SIZES", "DEFAULT_REG", "DEFAULT_TOL", "Problem", "Run", "build_problem",
           "measure", "measure_memory", "read_time", "run_grid", "run_scaling", "exact_cost", "l1_marginal_error"]
