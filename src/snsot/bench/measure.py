"""Timing one method on one problem, and the grids of problems x regs x methods built from it."""

from __future__ import annotations

import math
import time
import tracemalloc
from dataclasses import dataclass

import numpy as np

from .. import datasets
from .config import PEER_SWEEP_MAX_ENTRIES, SINKHORN_TYPE
from .methods import SOLVERS, _peer, exact_cost, l1_marginal_error
from .report import _reg_label


@dataclass
class Problem:
    """One benchmark problem with what every method needs, prepared once."""

    name: str
    C: np.ndarray
    a: np.ndarray
    b: np.ndarray
    read_time: float = math.nan  # median seconds of one plain pass over C
    exact_cost: float = math.nan  # ot.emd's <C, P>; nan without POT
    emd_time: float = math.nan
    _fortran: np.ndarray | None = None

    @property
    def shape(self):
        return self.C.shape

    def fortran(self) -> np.ndarray:
        # RegOT wants a column-major cost; the copy is made once, outside the timings.
        if self._fortran is None:
            self._fortran = np.asfortranarray(self.C)
        return self._fortran


def read_time(C, repeats: int = 7) -> float:
    """Median seconds of ``C.sum()``: a floor for any method that reads C once per iteration."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        C.sum()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure(method, problem: Problem, reg, tol, repeats, cap, options=None):
    """Warm up, then time ``method`` on ``problem``; returns (row, trace)."""
    row = dict(problem=problem.name, shape=f"{problem.shape[0]} x {problem.shape[1]}", reg=reg, method=method)
    solver = SOLVERS[method]
    if _peer(solver.module) is None:
        return {**row, "status": "absent"}, None
    state: dict = {}
    opts = dict(options or {}) if solver.module == "snsot" else {}
    try:
        last = solver(problem, reg, tol, cap, state, opts)  # warm-up (and calibration)
        if last.capped and solver.module == "snsot" and _paused(last.trace, last.time):
            # snsot's first call in a fresh install also compiles its kernels (tens of
            # seconds, once): a warm-up cut off by the cap says nothing about the solver.
            # Only then: a second capped run costs a whole cap and says nothing new.
            last = solver(problem, reg, tol, cap, state, opts)
        runs = []
        if not last.capped:
            for _ in range(_repeat_count(repeats, last.time, cap)):
                last = solver(problem, reg, tol, cap, state, opts)
                runs.append(last.time)
                if last.capped:
                    break
    except Exception as exc:  # a peer failing is a result to report, not a crash
        return {**row, "status": f"error: {type(exc).__name__}: {exc}"}, None
    P = last.plan
    if not np.all(np.isfinite(P)):
        return {**row, "status": "error: non-finite plan"}, None
    err = l1_marginal_error(P, problem.a, problem.b)
    cost = float(np.vdot(problem.C, P))
    if last.capped:
        status, t, count = "capped", last.time, 1
    else:
        status = "ok" if err < tol else "not converged"
        t, count = float(np.median(runs)), len(runs)
    spread = dict(time_min=min(runs), time_max=max(runs)) if runs and not last.capped else {}
    return {**row, "status": status, "time": t, "runs": count, **spread, "n_iter": last.n_iter,
            "n_sinkhorn": last.n_sinkhorn, "n_newton": last.n_newton, "l1_error": err, "cost": cost,
            "gap": cost - problem.exact_cost, "setting": last.setting}, last.trace


#: Solves faster than this many seconds in all are timed more often than
#: ``repeats``, up to ``_MAX_RUNS`` runs: the median of three millisecond runs
#: on a busy machine moves by tens of percent, enough to flip a ratio verdict.
_FAST_BUDGET = 0.5
_MAX_RUNS = 21


#: Robustness cells (SNS vs Sinkhorn) where Sinkhorn's median is below this
#: many seconds are timed again with the two solvers' runs interleaved ...
_PAIRED_MAX = 1.0
#: ... for about this many seconds in all (5 to ``_MAX_RUNS`` runs each).
_PAIRED_BUDGET = 3.0


def measure_paired(method_a, method_b, problem: Problem, reg, tol, cap, options=None) -> dict:
    """Time two snsot methods in turn; their medians and the median of their paired ratios.

    A shared machine has fast and slow spells lasting seconds: block medians
    of one 0.07 s solve, 30 runs each, ranged from 0.065 to 0.114 s on the
    reference machine, so two methods timed in separate blocks can differ by
    1.5x with equal work. Here the runs alternate (A B, then B A, so neither
    always follows the other), and each A run is compared with the B run
    beside it: the median of those ratios is what a spell cannot bias
    (three repeats of 21 pairs of equal work on a 1600 x 1600 problem gave
    1.01, 1.02, 1.02, where the ratio of the two medians gave 1.00, 1.26,
    1.12). Returns ``dict(time_a, time_b, ratio, runs)``, times in seconds.
    """
    solvers = (SOLVERS[method_a], SOLVERS[method_b])
    states = ({}, {})
    opts = dict(options or {})
    first = sum(solver(problem, reg, tol, cap, state, opts).time for solver, state in zip(solvers, states))
    count = max(5, min(_MAX_RUNS, int(_PAIRED_BUDGET // max(first, 1e-9))))
    times = np.empty((2, count))
    for k in range(count):
        for i in ((0, 1) if k % 2 == 0 else (1, 0)):
            times[i, k] = solvers[i](problem, reg, tol, cap, states[i], opts).time
    return dict(time_a=float(np.median(times[0])), time_b=float(np.median(times[1])),
                ratio=float(np.median(times[0] / times[1])), runs=count)


def _pair_sns_with_sinkhorn(cache, problem, name, reg, cfg, log):
    """Add interleaved timings (``paired_*``) to a cell's SNS row where both solvers converged quickly."""
    sns, sinkhorn = (cache["rows"].get((name, reg, m), (None,))[0] for m in ("snsot-sns", "snsot-sinkhorn"))
    if sns is None or sinkhorn is None or "paired_runs" in sns:
        return
    if sns.get("status") != "ok" or sinkhorn.get("status") != "ok" or sinkhorn["time"] >= _PAIRED_MAX:
        return
    log(f"  {name} reg={_reg_label(reg)} snsot-sns and snsot-sinkhorn interleaved ...")
    pair = measure_paired("snsot-sns", "snsot-sinkhorn", problem, reg, cfg["tol"], cfg["time_cap"], cfg["options"])
    sns.update(paired_sns_time=pair["time_a"], paired_sinkhorn_time=pair["time_b"], paired_ratio=pair["ratio"],
               paired_runs=pair["runs"])


def _repeat_count(repeats, first_time, cap):
    """``repeats`` timed runs (more for fast solves), fewer when they would together exceed ``cap``."""
    first_time = max(first_time, 1e-9)
    count = min(repeats, int(cap // first_time))
    return max(1, count, min(_MAX_RUNS, int(min(_FAST_BUDGET, cap) // first_time)))


def _paused(trace, elapsed):
    """True if one gap between recorded iterations took over a third of the run (and over a second).

    A solve that stopped at the cap after such a pause probably spent it
    compiling kernels (the first call in a fresh install takes tens of
    seconds), not iterating; single Newton steps on the benchmark problems
    take well under a second, though a tenth of a 15 s cap was seen.
    """
    times = np.asarray(trace.get("time", ()), dtype=float)
    if not len(times):
        return True
    return float(np.max(np.diff(times, prepend=0.0))) > max(1.0, elapsed / 3)


def measure_memory(problem: Problem, reg, tol, cap, options=None):
    """Peak memory of one SNS solve: tracemalloc peak and resident-set growth.

    tracemalloc sees every numpy allocation (the plan, sparse Hessian,
    vectors) but not memory numba allocates inside compiled kernels; the
    resident-set growth (Linux ``VmHWM`` after resetting it through
    ``/proc/self/clear_refs``) sees everything, including pages of freed
    memory the allocator keeps. Either is reported as None where unavailable.
    """
    import snsot

    rss_before = _reset_peak_rss()
    tracemalloc.start()
    try:
        snsot.solve(problem.C, problem.a, problem.b, reg=reg, tol=tol, warn=False,
                    callback=_deadline(cap), **(options or {}))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_peak = _status_kb("VmHWM")
    rss = None if rss_before is None or rss_peak is None else (rss_peak - rss_before) * 1024
    return dict(tracemalloc_peak=peak, rss_growth=rss, cost_matrix_bytes=problem.C.nbytes)


def _deadline(cap):
    start = time.perf_counter()
    return lambda *_: time.perf_counter() - start > cap


def _status_kb(key):
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss():
    """Reset the kernel's resident-set high-water mark; returns the current RSS in kB."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return None
    return _status_kb("VmRSS")


def build_problem(name, seed=0) -> Problem:
    if name not in datasets.PROBLEMS:
        raise ValueError(f"problem: unknown {name!r}; available: {', '.join(datasets.PROBLEMS)}")
    C, a, b = datasets.PROBLEMS[name](seed=seed)
    return Problem(name, C, a, b)


def run_grid(problem_names, regs, methods, cfg, cache, log=print):
    """Every problem x reg x method (cached by key); returns rows and traces.

    Regularisations are run largest first; a Sinkhorn-type method
    (:data:`~snsot.bench.config.SINKHORN_TYPE`) that hit the time cap at one
    reg is not run at a smaller one, since it needs more iterations as reg
    shrinks, and is reported as skipped, with the capped time and iterations
    at the larger reg as a bound (``time_bound``, ``n_iter_bound``,
    ``bound_reg``) that rests on that assumption, not on a measurement.
    Newton-type methods (SNS, RegOT SSNS and SPLR) run at every reg: a smaller
    reg can take them fewer seconds.
    ``methods`` is a list, or a function of the problem name giving one.
    """
    rows, traces = [], {}
    for name in problem_names:
        problem = cache["problems"].get(name)
        if problem is None:
            problem = _prepare(name, cfg, log)
            cache["problems"][name] = problem
        capped_at = {}
        for reg in sorted(regs, reverse=True):
            for method in (methods(name) if callable(methods) else methods):
                key = (name, reg, method)
                if key not in cache["rows"]:
                    if method == "pot-emd":
                        cache["rows"][key] = (_emd_row(problem, reg), None)
                    elif method in capped_at:
                        cache["rows"][key] = (_skipped_row(problem, reg, method, capped_at[method]), None)
                    else:
                        log(f"  {name} reg={_reg_label(reg)} {method} ...")
                        start = time.perf_counter()
                        row, trace = measure(method, problem, reg, cfg["tol"], cfg["repeats"], cfg["time_cap"],
                                             cfg["options"])
                        # The cost of measuring (warm-up, calibration, timed runs): what the run's length is made of.
                        row["measure_seconds"] = time.perf_counter() - start
                        cache["rows"][key] = (row, trace)
                row, trace = cache["rows"][key]
                if row.get("status") == "capped" and method in SINKHORN_TYPE:
                    capped_at[method] = row
                elif "time_bound" in row:  # skipped: pass the original bound on
                    capped_at[method] = cache["rows"][(name, row["bound_reg"], method)][0]
                rows.append(row)
                if trace is not None:
                    traces[key] = trace
            _pair_sns_with_sinkhorn(cache, problem, name, reg, cfg, log)
    _add_ratios(rows)
    return rows, traces


def _skipped_row(problem, reg, method, capped):
    """A method not run at ``reg`` because it hit the cap (row ``capped``) at a larger reg."""
    return {"problem": problem.name, "reg": reg, "method": method,
            "shape": f"{problem.shape[0]} x {problem.shape[1]}",
            "status": f"skipped (> cap at reg {_reg_label(capped['reg'])})",
            "time_bound": capped["time"], "n_iter_bound": capped.get("n_iter"), "bound_reg": capped["reg"]}


def run_sweep(problem_names, regs, methods, cfg, cache, log=print):
    """:func:`run_grid` over ``regs`` with the snsot solvers everywhere and peers where affordable.

    Peers (RegOT, POT) run only on problems with at most
    :data:`~snsot.bench.config.PEER_SWEEP_MAX_ENTRIES` cost entries: capped
    peers cost a whole time cap per reg, and larger problems would double the
    length of the benchmark. ``methods`` are the methods chosen for the run.
    """
    def chosen(name):
        problem = cache["problems"][name]
        affordable = problem.C.size <= PEER_SWEEP_MAX_ENTRIES
        return [m for m in methods if m.startswith("snsot-") or affordable]

    for name in problem_names:  # built first: chosen() needs the problem's size
        if name not in cache["problems"]:
            cache["problems"][name] = _prepare(name, cfg, log)
    return run_grid(problem_names, regs, chosen, cfg, cache, log)


def _prepare(name, cfg, log):
    log(f"{name}: building")
    problem = build_problem(name, cfg["seed"])
    problem.read_time = read_time(problem.C)
    exact = exact_cost(problem) if "pot-emd" in cfg["methods"] else None
    if exact is not None:
        problem.exact_cost, problem.emd_time = exact
    return problem


def _emd_row(problem, reg):
    row = dict(problem=problem.name, shape=f"{problem.shape[0]} x {problem.shape[1]}", reg=reg, method="pot-emd")
    if _peer("ot") is None:
        return {**row, "status": "absent"}
    if math.isnan(problem.exact_cost):
        return {**row, "status": "error: ot.emd did not finish"}
    return {**row, "status": "exact", "time": problem.emd_time, "runs": 1, "cost": problem.exact_cost,
            "gap": 0.0, "setting": "numItermax=1e8"}


def _add_ratios(rows):
    """Time ratio to RegOT SSNS and to POT Sinkhorn on the same problem and reg."""
    refs = {}
    for row in rows:
        if row["method"] in ("regot-ssns", "pot-sinkhorn") and "time" in row:
            refs[(row["problem"], row["reg"], row["method"])] = row
    for row in rows:
        for ref_method, col in (("regot-ssns", "vs_ssns"), ("pot-sinkhorn", "vs_pot")):
            ref = refs.get((row["problem"], row["reg"], ref_method))
            if ref is None or "time" not in row or row["method"] in (ref_method, "pot-emd"):
                continue
            ratio = row["time"] / ref["time"]
            # A capped time is a lower bound on the time to converge.
            mine, theirs = row["status"] != "ok", ref["status"] != "ok"
            row[col] = None if (mine and theirs) else ratio
            row[col + "_bound"] = ">" if mine and not theirs else "<" if theirs and not mine else ""


def run_scaling(sizes, reg, cfg, cache, log=print, newton_reg=None):
    """SNS time and iterations on random assignment of growing size, with peak memory.

    With ``newton_reg``, the largest size is also solved at that reg: at
    ``reg`` the larger problems can finish in the Sinkhorn stage, and the
    Newton stage's buffers (sparse Hessian candidates, CG vectors) only show
    in the peak memory of a solve that takes Newton steps.
    """
    out = []
    runs = [(n, reg) for n in sizes] + ([(max(sizes), newton_reg)] if newton_reg is not None else [])
    for n, reg in runs:
        name = f"random{n}"
        log(f"scaling: n={n}, reg={_reg_label(reg)}")
        problem = cache["problems"].get(name)
        if problem is None:
            C, a, b = datasets.random_assignment(n, seed=cfg["seed"])
            problem = Problem(name, C, a, b, read_time=read_time(C))
            cache["problems"][name] = problem
        key = (name, reg, "snsot-sns")
        if key not in cache["rows"]:
            cache["rows"][key] = measure("snsot-sns", problem, reg, cfg["tol"], cfg["repeats"],
                                         cfg["time_cap"], cfg["options"])
        row = dict(cache["rows"][key][0])
        row.update(measure_memory(problem, reg, cfg["tol"], cfg["time_cap"], cfg["options"]))
        row["read_time"] = problem.read_time
        out.append(row)
    return out



#: What a user's first solve in a new process runs: import, build a problem, solve with SNS.
_COLD_SCRIPT = (
    "import time; t0 = time.perf_counter(); import numpy as np, snsot; t1 = time.perf_counter(); "
    "C = np.random.default_rng(0).random((300, 300)); "
    "snsot.solve(C, reg=1e-3, warn=False); t2 = time.perf_counter(); "
    "snsot.solve(C, reg=1e-3, warn=False); t3 = time.perf_counter(); "
    "print(t1 - t0, t2 - t1, t3 - t2)"
)


def measure_cold_start(log=print) -> list[dict]:
    """Time ``import snsot`` and a first ``snsot.solve`` in fresh processes.

    Two settings: an empty numba cache (the first call after installing,
    which compiles every kernel the solve uses) and the cache that run left
    behind (every later process: kernels are loaded, not compiled). Each row
    gives the import time, the first solve and a second solve in the same
    process (the warm time, for reference); times are measured inside the
    child, so interpreter start-up is left out and reported apart as ``wall``.
    """
    import os
    import subprocess
    import sys
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as cache_dir:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
        for setting in ("empty numba cache (first call after install)", "cached kernels (every later process)"):
            log(f"cold start: {setting} ...")
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", _COLD_SCRIPT], env=env, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                rows.append(dict(setting=setting, status=f"error: {proc.stderr.strip().splitlines()[-1:]}"))
                continue
            t_import, t_first, t_second = map(float, proc.stdout.split()[-3:])
            rows.append(dict(setting=setting, status="ok", import_time=t_import, first_solve=t_first,
                             second_solve=t_second, wall=wall))
    return rows
