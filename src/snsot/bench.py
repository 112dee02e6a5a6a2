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

from __future__ import annotations

import argparse
import csv
import importlib
import json
import math
import os
import platform
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from . import datasets

__all__ = ["add_arguments", "run", "main", "METHODS", "HEADLINE_PROBLEMS", "SWEEP_REGS"]

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

_PROBE_ITERS = 10
_CALIBRATION_TRIES = 3
_QUICK = dict(problems=("random200", "mnist-l2"), regs=(1e-2,), repeats=1, time_cap=3.0,
              sweep_problems=("random200",), sweep_regs=(1e-2, 1 / 1200), scaling_sizes=(100, 200, 400))


# --------------------------------------------------------------------------- data

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


@dataclass
class Run:
    """What one solve returned, re-measured here."""

    plan: np.ndarray
    time: float
    n_iter: int | None
    n_sinkhorn: int | None = None
    n_newton: int | None = None
    capped: bool = False
    setting: str = ""
    per_iter: float | None = None  # seconds per iteration, where the method records it
    trace: dict = field(default_factory=dict)  # iteration, time, error arrays and the error's norm


def l1_marginal_error(P, a, b) -> float:
    """``||P 1 - a||_1 + ||P^T 1 - b||_1``: the one stopping measure of the benchmark."""
    return float(np.abs(P.sum(axis=1) - a).sum() + np.abs(P.sum(axis=0) - b).sum())


def read_time(C, repeats: int = 7) -> float:
    """Median seconds of ``C.sum()``: a floor for any method that reads C once per iteration."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        C.sum()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _peer(name):
    """Import an optional peer package, or None if it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


# --------------------------------------------------------------------------- methods

def _snsot(method):
    def solve(problem, reg, tol, cap, state, options):
        import snsot

        start = time.perf_counter()

        def stop_at_cap(*_):
            return time.perf_counter() - start > cap

        # Sinkhorn needs many iterations at small reg; the time cap, not max_iter, bounds it.
        max_iter = 10**8 if method == "sinkhorn" else None
        res = snsot.solve(problem.C, problem.a, problem.b, reg=reg, method=method, tol=tol,
                          max_iter=max_iter, callback=stop_at_cap, warn=False, **options)
        elapsed = time.perf_counter() - start
        h = res.history
        trace = dict(iteration=np.arange(1, len(h) + 1), time=np.asarray(h.time),
                     error=np.asarray(h.marginal_error), norm="L1")
        if method == "sns":
            trace["stage"] = np.asarray(h.stage)
        return Run(res.plan, elapsed, res.n_iter, res.n_sinkhorn, res.n_newton,
                   capped=not res.converged and elapsed > cap, setting=f"tol={tol:.3g}", trace=trace)

    solve.module = "snsot"
    return solve


def _calibrated(call, problem, tol, first_tol, cap, state):
    """Run a peer with a time-fitted iteration cap and a tolerance that reaches ``tol`` in L1.

    The first call for a problem (the warm-up) measures the time per
    iteration (``state["per_iter"]``, from a 10-iteration probe unless the
    caller measured it), sets ``state["max_iter"]`` to fit ``cap`` and
    tightens ``state["tol"]`` by 10 until the returned plan meets ``tol`` in
    L1; later calls reuse both.
    """
    if "tol" in state:
        return call(state["tol"], state["max_iter"])
    spent = 0.0
    if "per_iter" not in state:
        probe = call(first_tol, _PROBE_ITERS)
        state["per_iter"] = probe.per_iter or probe.time / max(probe.n_iter or 1, 1)
        spent = probe.time
    state["max_iter"] = max(_PROBE_ITERS, int(0.9 * cap / state["per_iter"]))
    state["tol"] = first_tol
    for _ in range(_CALIBRATION_TRIES):
        run = call(state["tol"], state["max_iter"])
        spent += run.time
        if run.capped and run.time < 0.5 * cap and run.n_iter:
            # The probe's early iterations misjudged the pace: refit the cap once
            # from this longer run, so the peer gets closer to its full time. At
            # most 1.5x more iterations: some peers (RegOT SPLR) slow down as
            # they go, and a full refit let them run three times over the cap.
            factor = min(1.5, 0.9 * cap / run.time)
            state["max_iter"] = max(state["max_iter"], int(factor * run.n_iter))
            run = call(state["tol"], state["max_iter"])
            spent += run.time
        if l1_marginal_error(run.plan, problem.a, problem.b) < tol or run.capped or spent > cap:
            break
        state["tol"] /= 10
    return run


def _regot(name):
    def solve(problem, reg, tol, cap, state, options):
        regot = _peer("regot")
        solver = getattr(regot, name)
        n, m = problem.shape

        def call(peer_tol, max_iter):
            start = time.perf_counter()
            res = solver(problem.fortran(), problem.a, problem.b, reg, tol=peer_tol, max_iter=max_iter)
            elapsed = time.perf_counter() - start
            errs = np.asarray(res.mar_errs)
            trace = dict(iteration=np.arange(len(errs)), error=errs,
                         time=np.asarray(res.run_times) / 1e3,  # RegOT records milliseconds
                         norm="L2 (RegOT's own)")
            err = l1_marginal_error(res.plan, problem.a, problem.b)
            # From RegOT's own clock, so a one-off setup cost does not shrink the iteration cap.
            per_iter = (trace["time"][-1] - trace["time"][0]) / (len(errs) - 1) if len(errs) > 1 else None
            return Run(np.asarray(res.plan), elapsed, int(res.niter), per_iter=per_iter,
                       capped=res.niter >= max_iter and not err < tol,
                       setting=f"tol={peer_tol:.3g}, max_iter={max_iter}", trace=trace)

        # RegOT's mar_errs is an L2 norm, never above our L1: start from tol itself
        # (the loosest candidate, fairest to the peer) and tighten only if the L1 check fails.
        return _calibrated(call, problem, tol, tol, cap, state)

    solve.module = "regot"
    return solve


def _pot_sinkhorn(problem, reg, tol, cap, state, options):
    ot = _peer("ot")
    m = problem.shape[1]

    def call(stop_thr, max_iter):
        start = time.perf_counter()
        P, log = ot.sinkhorn(problem.a, problem.b, problem.C, reg, method="sinkhorn_log",
                             stopThr=stop_thr, numItermax=max_iter, log=True, warn=False)
        elapsed = time.perf_counter() - start
        n_iter = int(log["niter"]) + 1  # POT logs the 0-based index of the last iteration
        errs = np.asarray(log["err"], dtype=float)
        # POT checks after iterations 1, 11, 21, ...; times assume equal-cost iterations.
        iters = 1 + 10 * np.arange(len(errs))
        err = l1_marginal_error(P, problem.a, problem.b)
        return Run(P, elapsed, n_iter, per_iter=state.get("per_iter"), capped=n_iter >= max_iter and not err < tol,
                   setting=f"stopThr={stop_thr:.3g}, numItermax={max_iter}",
                   trace=dict(iteration=iters, error=errs, time=elapsed * iters / n_iter,
                              norm="L2 of column error (POT's own)"))

    if not state:
        # POT keeps no clock: time 1 and 10 iterations so its setup (-C/reg, the
        # final plan) is not counted as iteration time when fitting the cap.
        one, ten = call(tol, 1), call(tol, _PROBE_ITERS)
        state["per_iter"] = max(ten.time - one.time, 1e-9) / (_PROBE_ITERS - 1)
    # POT's stopThr is the L2 norm of the column error: start from tol (loosest) as for RegOT.
    return _calibrated(call, problem, tol, tol, cap, state)


_pot_sinkhorn.module = "ot"

_SOLVERS = {
    "snsot-sns": _snsot("sns"),
    "snsot-sinkhorn": _snsot("sinkhorn"),
    "regot-ssns": _regot("sinkhorn_ssns"),
    "regot-splr": _regot("sinkhorn_splr"),
    "regot-bcd": _regot("sinkhorn_bcd"),
    "pot-sinkhorn": _pot_sinkhorn,
}


def exact_cost(problem: Problem):
    """``(cost, seconds)`` of the unregularised OT problem by ``ot.emd``, or None without POT."""
    ot = _peer("ot")
    if ot is None:
        return None
    start = time.perf_counter()
    # numItermax: the default 1e5 stops early on problems with ~1e6 variables.
    P, log = ot.emd(problem.a, problem.b, problem.C, numItermax=10**8, log=True)
    elapsed = time.perf_counter() - start
    if log.get("warning"):
        return None
    return float(log["cost"]), elapsed


# --------------------------------------------------------------------------- measuring

def measure(method, problem: Problem, reg, tol, repeats, cap, options=None):
    """Warm up, then time ``method`` on ``problem``; returns (row, trace)."""
    row = dict(problem=problem.name, shape=f"{problem.shape[0]} x {problem.shape[1]}", reg=reg, method=method)
    solver = _SOLVERS[method]
    if _peer(solver.module) is None:
        return {**row, "status": "absent"}, None
    state: dict = {}
    opts = dict(options or {}) if solver.module == "snsot" else {}
    try:
        last = solver(problem, reg, tol, cap, state, opts)  # warm-up (and calibration)
        if last.capped and solver.module == "snsot":
            # snsot's first call in a fresh install also compiles its kernels (tens of
            # seconds, once): a warm-up cut off by the cap says nothing about the solver.
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
    return {**row, "status": status, "time": t, "runs": count, "n_iter": last.n_iter,
            "n_sinkhorn": last.n_sinkhorn, "n_newton": last.n_newton, "l1_error": err, "cost": cost,
            "gap": cost - problem.exact_cost, "setting": last.setting}, last.trace


def _repeat_count(repeats, first_time, cap):
    """At most ``repeats`` timed runs, fewer when they would together exceed ``cap``."""
    return max(1, min(repeats, int(cap // max(first_time, 1e-9))))


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


# --------------------------------------------------------------------------- the runs

def build_problem(name, seed=0) -> Problem:
    if name not in datasets.PROBLEMS:
        raise ValueError(f"problem: unknown {name!r}; available: {', '.join(datasets.PROBLEMS)}")
    C, a, b = datasets.PROBLEMS[name](seed=seed)
    return Problem(name, C, a, b)


def run_grid(problem_names, regs, methods, cfg, cache, log=print):
    """Every problem x reg x method (cached by key); returns rows and traces.

    Regularisations are run largest first; a method that hit the time cap at
    one reg is not run at a smaller one (Sinkhorn-type methods only slow down
    as reg shrinks) and is reported as skipped.
    """
    rows, traces = [], {}
    for name in problem_names:
        problem = cache["problems"].get(name)
        if problem is None:
            problem = _prepare(name, cfg, log)
            cache["problems"][name] = problem
        capped_at = {}
        for reg in sorted(regs, reverse=True):
            for method in methods:
                key = (name, reg, method)
                if key not in cache["rows"]:
                    if method == "pot-emd":
                        cache["rows"][key] = (_emd_row(problem, reg), None)
                    elif method in capped_at:
                        cache["rows"][key] = ({"problem": name, "reg": reg, "method": method,
                                               "shape": f"{problem.shape[0]} x {problem.shape[1]}",
                                               "status": f"skipped (> cap at reg {_reg_label(capped_at[method])})"},
                                              None)
                    else:
                        log(f"  {name} reg={_reg_label(reg)} {method} ...")
                        cache["rows"][key] = measure(method, problem, reg, cfg["tol"], cfg["repeats"],
                                                     cfg["time_cap"], cfg["options"])
                row, trace = cache["rows"][key]
                if row.get("status") == "capped":
                    capped_at[method] = reg
                rows.append(row)
                if trace is not None:
                    traces[key] = trace
    _add_ratios(rows)
    return rows, traces


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


def run_scaling(sizes, reg, cfg, cache, log=print):
    """SNS time and iterations on random assignment of growing size, with peak memory."""
    out = []
    for n in sizes:
        name = f"random{n}"
        log(f"scaling: n={n}")
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


# --------------------------------------------------------------------------- formatting

def _reg_label(reg):
    inverse = 1 / reg
    # 1/1200 reads better as a fraction; powers of ten read better as 0.01, 1e-04.
    whole = round(inverse)
    if abs(inverse - whole) < 1e-9 * inverse and whole > 1 and math.log10(whole) % 1:
        return f"1/{whole}"
    return f"{reg:g}"


def _fmt_time(row):
    if "time" not in row:
        return row["status"]
    t = f"{row['time']:.3g}"
    return {"ok": t, "exact": t, "capped": f"> {t}"}.get(row["status"], f"{t} ({row['status']})")


def _fmt_iters(row):
    if row.get("n_iter") is None:
        return ""
    if row.get("n_newton") is not None and row["method"] == "snsot-sns":
        return f"{row['n_sinkhorn']} + {row['n_newton']}"
    return f"{row['n_iter']:,}"


def _fmt_ratio(row, col):
    if row.get(col) is None:
        return ""
    return f"{row.get(col + '_bound', '')}{row[col]:.2g}x"


def _fmt(x, spec=".3g"):
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


_TABLE = (
    ("problem", lambda r: r["problem"]), ("n x m", lambda r: r["shape"]), ("reg", lambda r: _reg_label(r["reg"])),
    ("method", lambda r: r["method"]), ("time (s)", _fmt_time), ("runs", lambda r: _fmt(r.get("runs"), "d")),
    ("iterations", _fmt_iters), ("L1 error", lambda r: _fmt(r.get("l1_error"), ".2e")),
    ("<C,P>", lambda r: _fmt(r.get("cost"), ".6g")), ("gap to OT", lambda r: _fmt(r.get("gap"), ".2e")),
    ("vs RegOT SSNS", lambda r: _fmt_ratio(r, "vs_ssns")), ("vs POT", lambda r: _fmt_ratio(r, "vs_pot")),
    ("paper (Table 1)", lambda r: PAPER.get(r["problem"], {}).get(r["method"], "")
     if abs(r["reg"] - 1 / 1200) < 1e-12 else ""),
)


def markdown_table(rows, columns=_TABLE):
    lines = ["| " + " | ".join(name for name, _ in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(fn(row)) for _, fn in columns) + " |")
    return "\n".join(lines)


def floor_table(problems, rows):
    """Per problem: one plain read of C, and SNS seconds per iteration in units of it."""
    lines = ["| problem | C size (MB) | read of C (ms) | SNS s/iter (ms) | SNS iter / read |",
             "|---|---|---|---|---|"]
    sns = {r["problem"]: r for r in rows if r["method"] == "snsot-sns" and r.get("n_iter")}
    for p in problems:
        r = sns.get(p.name)
        per_iter = r["time"] / r["n_iter"] if r and r["status"] == "ok" else None
        lines.append(f"| {p.name} | {p.C.nbytes / 2**20:.1f} | {p.read_time * 1e3:.3g} | "
                     f"{_fmt(per_iter and per_iter * 1e3)} | {_fmt(per_iter and per_iter / p.read_time, '.1f')} |")
    return "\n".join(lines)


def scaling_table(rows):
    lines = ["| n | time (s) | iterations (S + N) | L1 error | s/iter / read of C | tracemalloc peak (MB) "
             "| RSS growth (MB) | C (MB) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        per = r["time"] / r["n_iter"] / r["read_time"] if r.get("n_iter") and r["status"] == "ok" else None
        mb = lambda x: _fmt(x and x / 2**20, ".1f")  # noqa: E731
        lines.append(f"| {r['shape'].split()[0]} | {_fmt_time(r)} | {_fmt_iters(r)} | {_fmt(r.get('l1_error'), '.2e')} "
                     f"| {_fmt(per, '.1f')} | {mb(r['tracemalloc_peak'])} | {mb(r['rss_growth'])} "
                     f"| {mb(r['cost_matrix_bytes'])} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- machine and files

def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = dict(cpu=cpu, cores=os.cpu_count(), platform=platform.platform(), python=platform.python_version())
    for module in ("numpy", "scipy", "numba", "snsot", "ot", "regot"):
        mod = _peer(module)
        info[module] = getattr(mod, "__version__", "installed") if mod else "absent"
    if info["regot"] == "installed":
        try:
            from importlib.metadata import version
            info["regot"] = version("regot")
        except Exception:
            pass
    return info


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def write_csv(path, rows):
    keys = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


def plot_convergence(path, title, traces, tol):
    """Paper Figure 1 style: log10 marginal error against iterations and against seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for method, tr in traces.items():
        err = np.asarray(tr["error"], dtype=float)
        keep = err > 0
        if not keep.any():
            continue
        label = method if tr["norm"] == "L1" else f"{method} [{tr['norm']}]"
        y = np.log10(err[keep])
        line, = axes[0].plot(np.asarray(tr["iteration"])[keep], y, label=label)
        axes[1].plot(np.asarray(tr["time"])[keep], y, color=line.get_color())
        if "stage" in tr:  # mark where SNS hands over to Newton
            newton = np.flatnonzero(np.asarray(tr["stage"]) == 1)
            if len(newton):
                k = newton[0]
                axes[0].axvline(tr["iteration"][k], color=line.get_color(), ls=":", lw=0.8)
    for ax, xlabel in zip(axes, ("iteration", "seconds")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("log10 marginal error")
        ax.grid(alpha=0.3)
    for ax in axes:
        ax.axhline(math.log10(tol), color="grey", lw=0.8, ls="--")
    axes[0].set_xscale("symlog", linthresh=10)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_scaling(path, rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return
    n = [int(r["shape"].split()[0]) for r in ok]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.loglog(n, [r["time"] for r in ok], "o-", label="SNS time")
    ax.loglog(n, [r["read_time"] * r["n_iter"] for r in ok], "s--", label="iterations x one read of C")
    ax.set_xlabel("n (random assignment, n x n)")
    ax.set_ylabel("seconds")
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _safe(s):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)


# --------------------------------------------------------------------------- CLI

def _parse_reg(text):
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"reg: expected a positive number such as 1e-3 or 1/1200; got {text!r}")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"reg: must be positive; got {text!r}")
    return value


def _parse_list(choices):
    def parse(text):
        items = [s.strip() for s in text.split(",") if s.strip()]
        if items == ["all"] and choices is METHODS:
            return list(METHODS)
        if items == ["all"]:
            return list(ALL_PROBLEMS)
        bad = [s for s in items if s not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad[0]!r}; choose from {', '.join(choices)} or 'all'")
        return items
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``snsot bench`` options to ``parser``."""
    parser.add_argument("--problems", type=_parse_list(tuple(datasets.PROBLEMS)), default=None,
                        help="comma-separated problem names or 'all' (default: %s)" % ",".join(HEADLINE_PROBLEMS))
    parser.add_argument("--methods", type=_parse_list(METHODS), default=None,
                        help="comma-separated methods or 'all' (default: all): %s" % ", ".join(METHODS))
    parser.add_argument("--reg", type=_parse_reg, nargs="+", default=None,
                        help="regularisation(s), e.g. 1e-3 or 1/1200 (default: 1/1200)")
    parser.add_argument("--tol", type=float, default=DEFAULT_TOL,
                        help="L1 marginal error every method must reach (default: %(default)g)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs after the warm-up (default: 3)")
    parser.add_argument("--time-cap", type=float, default=None,
                        help="seconds per method and problem before it is stopped (default: 60)")
    parser.add_argument("--sweep", action="store_true",
                        help="also sweep reg over %s on the chosen headline problems (%s), with %s"
                        % (", ".join(_reg_label(r) for r in SWEEP_REGS), ", ".join(HEADLINE_PROBLEMS),
                           ", ".join(SWEEP_METHODS)))
    parser.add_argument("--scaling", action="store_true",
                        help="also time SNS on random assignment with n in %s" % ", ".join(map(str, SCALING_SIZES)))
    parser.add_argument("--quick", action="store_true",
                        help="small problems, 1 repeat, 3 s cap, small sweep and scaling: under a minute")
    parser.add_argument("--seed", type=int, default=0, help="problem seed (MNIST: index of the digit pair)")
    parser.add_argument("--threads", type=int, default=None, help="n_threads for snsot (default: its own choice)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks"),
                        help="where RESULTS.md, results.csv, results.json and the PNGs go (default: %(default)s)")


def run(args: argparse.Namespace, log=None) -> int:
    """Run the benchmark described by parsed ``args``; returns the exit code."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    quick = bool(getattr(args, "quick", False))
    cfg = dict(
        problems=args.problems or list(_QUICK["problems"] if quick else HEADLINE_PROBLEMS),
        methods=args.methods or list(METHODS),
        regs=args.reg or list(_QUICK["regs"] if quick else (DEFAULT_REG,)),
        tol=args.tol,
        repeats=args.repeats if args.repeats is not None else (_QUICK["repeats"] if quick else 3),
        time_cap=args.time_cap if args.time_cap is not None else (_QUICK["time_cap"] if quick else 60.0),
        seed=args.seed,
        options={} if args.threads is None else {"n_threads": args.threads},
    )
    if not (cfg["tol"] > 0 and cfg["repeats"] >= 1 and cfg["time_cap"] > 0):
        log("bench: --tol and --time-cap must be positive and --repeats at least 1")
        return 2
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = {"problems": {}, "rows": {}}
    started = time.perf_counter()

    # Warm the numba kernels once on a tiny problem so the first timed problem
    # does not pay for loading them (each problem still has its own warm-up).
    import snsot
    C, a, b = datasets.random_assignment(20)
    snsot.solve(C, a, b, reg=0.1, warn=False)

    rows, traces = run_grid(cfg["problems"], cfg["regs"], cfg["methods"], cfg, cache, log)
    sweep_rows = []
    if args.sweep or quick:
        # The sweep repeats the costly part of the benchmark four times, so it
        # covers the paper's headline problems among those chosen.
        headline = [p for p in cfg["problems"] if p in HEADLINE_PROBLEMS] or cfg["problems"]
        sweep_problems = _QUICK["sweep_problems"] if quick else headline
        sweep_methods = [m for m in SWEEP_METHODS if m in cfg["methods"]]
        regs = sorted(set(_QUICK["sweep_regs"] if quick else SWEEP_REGS), reverse=True)
        sweep_rows, _ = run_grid(sweep_problems, regs, sweep_methods, cfg, cache, log)
    scaling_rows = []
    if args.scaling or quick:
        scaling_rows = run_scaling(_QUICK["scaling_sizes"] if quick else SCALING_SIZES, cfg["regs"][0], cfg, cache, log)

    figures = []
    if not args.no_plots:
        for problem in cfg["problems"]:
            for reg in cfg["regs"]:
                group = {m: traces[(problem, reg, m)] for m in cfg["methods"] if (problem, reg, m) in traces}
                if group:
                    path = out_dir / _safe(f"convergence-{problem}-reg{_reg_label(reg).replace('/', '_')}.png")
                    plot_convergence(path, f"{problem}, reg = {_reg_label(reg)}, tol = {cfg['tol']:g}", group,
                                     cfg["tol"])
                    figures.append(path.name)
        if scaling_rows:
            plot_scaling(out_dir / "scaling.png", scaling_rows)
            figures.append("scaling.png")

    elapsed = time.perf_counter() - started
    command = getattr(args, "command_line", None) or "python -m snsot.bench " + " ".join(sys.argv[1:])
    info = machine_info()
    problems = [cache["problems"][p] for p in cfg["problems"]]
    report = _report(command, info, cfg, rows, sweep_rows, scaling_rows, problems, figures, elapsed)
    (out_dir / "RESULTS.md").write_text(report)
    write_csv(out_dir / "results.csv", rows + sweep_rows + scaling_rows)
    payload = dict(command=command, machine=info, config={k: v for k, v in cfg.items()}, elapsed=elapsed,
                   rows=rows, sweep=sweep_rows, scaling=scaling_rows, figures=figures,
                   memory_floor={p.name: dict(read_time=p.read_time, bytes=p.C.nbytes) for p in problems})
    (out_dir / "results.json").write_text(json.dumps(_jsonable(payload), indent=1))
    print(markdown_table(rows))
    return 0


def _report(command, info, cfg, rows, sweep_rows, scaling_rows, problems, figures, elapsed):
    machine = (f"{info['cpu']}, {info['cores']} cores; Python {info['python']}, numpy {info['numpy']}, "
               f"numba {info['numba']}, snsot {info['snsot']}, POT {info['ot']}, RegOT {info['regot']}")
    parts = [
        "# snsot benchmark results", "",
        f"Regenerate with:\n\n```\n{command}\n```", "",
        f"Machine: {machine}. Whole run: {elapsed:.0f} s.", "",
        f"Every method must reach an L1 marginal error `||P1 - a||_1 + ||P^T 1 - b||_1 < {cfg['tol']:g}`, "
        "re-measured from the plan it returned. Time: median wall-clock seconds of `runs` timed runs after one "
        f"warm-up run. Time cap {cfg['time_cap']:g} s per method and problem: `> t` means stopped at the cap, "
        "with the error it had reached. Ratios are this method's time divided by RegOT SSNS's and by POT "
        "Sinkhorn's on the same problem (`>`/`<`: bound, because one of the two was capped). `gap to OT` is "
        "`<C,P>` minus the exact OT cost from `ot.emd`; it measures the entropic bias of `reg`, not solver error. "
        "`paper` lists Tang et al. (ICLR 2024) Table 1 at eta = 1200 (their machine and setup).", "",
        "## Main table", "", markdown_table(rows), "",
        "What each peer was given (its own stopping norm differs from ours; see `snsot.bench`):", "",
        "| problem | reg | method | setting |", "|---|---|---|---|",
        *[f"| {r['problem']} | {_reg_label(r['reg'])} | {r['method']} | {r.get('setting', '')} |"
          for r in rows if r.get("setting")], "",
        "## Memory floor", "",
        "One plain read of C (median of `C.sum()`) bounds from below the time of any iteration that touches "
        "every entry once; SNS iterations are given in units of it.", "",
        floor_table(problems, rows), "",
    ]
    if sweep_rows:
        parts += ["## Regularisation sweep", "", markdown_table(sweep_rows), ""]
    if scaling_rows:
        parts += ["## Scaling: random assignment", "",
                  f"SNS at reg = {_reg_label(cfg['regs'][0])}. Peak memory of one extra, untimed solve: "
                  "tracemalloc peak (numpy allocations, not memory allocated inside numba kernels) and the "
                  "growth of the process's resident set over the solve (`VmHWM`, everything).", "",
                  scaling_table(scaling_rows), ""]
    if figures:
        parts += ["## Figures", "", "SNS and snsot Sinkhorn plot the L1 error; RegOT and POT plot their own "
                  "norms (labelled), POT only every 10 iterations with times interpolated linearly. The dotted "
                  "line marks SNS's switch to Newton; the dashed line is the tolerance.", ""]
        parts += [f"![{name}]({name})" for name in figures] + [""]
    return "\n".join(parts)


def main(argv=None) -> int:
    """``python -m snsot.bench``: the same as ``snsot bench``."""
    parser = argparse.ArgumentParser(prog="python -m snsot.bench", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    args.command_line = "python -m snsot.bench " + " ".join(sys.argv[1:] if argv is None else argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
