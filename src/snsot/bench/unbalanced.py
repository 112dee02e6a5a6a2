"""``snsot bench --unbalanced``: unbalanced SNS against unbalanced Sinkhorn, ours and POT's.

Every method solves ``snsot.solve(C, a, b, reg=reg, reg_m=rho)``'s problem,
POT's ``sinkhorn_unbalanced(..., reg_type="entropy")`` objective, to one
stopping rule: the L1 norm of the unbalanced dual's gradient,
``||P 1 - a exp(-f/rho)||_1 + ||P^T 1 - b exp(-g/rho)||_1 < tol`` (the balanced
marginal error when ``rho = inf``; see :mod:`snsot.solvers._kl_marginals`),
re-measured here from each method's returned plan and potentials.

* ``snsot-sns``, ``snsot-sinkhorn``: ``snsot.solve(..., reg_m=rho, method=...)``,
  stopped by their callback at the time cap.
* ``pot-sinkhorn``, ``pot-ti``: ``ot.unbalanced.sinkhorn_unbalanced(a, b, C,
  reg, rho, reg_type="entropy")`` with ``method="sinkhorn"`` (the damped
  scaling iterations, POT's default) and ``"sinkhorn_translation_invariant"``
  (Séjourné et al. 2022: fewer iterations when rho is large against reg).
  Potentials ``f = reg * log["logu"]``, ``g = reg * log["logv"]`` reproduce
  its plan exactly. POT stops on the relative change of its scalings: its
  ``stopThr`` starts at ``tol`` and is divided by 10 (up to three times, in
  the warm-up) until the returned plan meets ``tol``; its iteration cap is
  fitted to the time cap from a probe. Both work in the scaling domain
  (``exp(-C/reg)``): where that underflows they stop on "numerical errors"
  and are reported as stopped, with the error reached. POT's
  ``"sinkhorn_stabilized"`` was left out: on the 2-D clouds at reg 1e-3 it
  stopped after 33 iterations at an error of 0.99 (its stopping test met by
  an absorption step).

Timing: one warm-up run, then the median of up to ``repeats`` runs (fewer
when they would exceed the cap). A method stopped by the cap is reported as
``> t``, the seconds it ran, with the error it reached, never with a made-up
time (the peers' iteration caps are fitted to the time cap from a probe, so
``t`` is near the cap but not exactly it).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path

import numpy as np

from .. import costs, datasets
from ..problem import OTProblem
from ..solvers._kl_marginals import KLMarginals

METHODS = ("snsot-sns", "snsot-sinkhorn", "pot-sinkhorn", "pot-ti")
REGS = (1e-3, 1e-4)
RHO = 1.0
TOL = 1e-9
_PROBE_ITERS = 10


def problems(quick: bool = False, seed: int = 0) -> dict:
    """``{name: (C, a, b)}``: masses of ``a`` and ``b`` differ in each.

    ``clouds``: two 2-D point clouds (uniform on ``[0, 1]^2`` and on a shifted,
    smaller square), squared Euclidean cost in ``[0, 2]``, random weights of
    totals 1 and 1.5. ``mnist``: an MNIST digit pair on the pixel grid
    (``mnist-l2`` of the main benchmark), the target's mass scaled by 1.3.
    """
    rng = np.random.default_rng(seed)
    n = 200 if quick else 1000
    x = rng.random((n, 2))
    y = 0.2 + 0.7 * rng.random((n, 2))
    a = rng.random(n) + 0.1
    b = rng.random(n) + 0.1
    out = {"clouds": (costs.pairwise(x, y, "sqeuclidean"), a / a.sum(), 1.5 * b / b.sum())}
    if not quick:
        C, a, b = datasets.mnist_pair(*datasets.mnist_pairs(1, seed)[0])
        out["mnist"] = (C, a, 1.3 * b)
    return out


def gradient_norm(C, a, b, reg, rho, P, f, g) -> float:
    """The stopping measure, from a method's plan (sums) and potentials (targets)."""
    return KLMarginals(OTProblem(C, a, b, reg, rho)).error(f, g, P.sum(axis=1), P.sum(axis=0))


def _snsot(method):
    def solve(C, a, b, reg, rho, tol, cap, state):
        import snsot

        start = time.perf_counter()
        res = snsot.solve(C, a, b, reg=reg, reg_m=rho, method=method, tol=tol,
                          max_iter=10**8 if method == "sinkhorn" else None, warn=False,
                          callback=lambda *_: time.perf_counter() - start > cap)
        elapsed = time.perf_counter() - start
        f, g = res.potentials
        return dict(plan=res.plan, f=f, g=g, time=elapsed, n_iter=res.n_iter,
                    iterations=f"{res.n_sinkhorn} + {res.n_newton}" if method == "sns" else f"{res.n_iter:,}",
                    capped=not res.converged and elapsed > cap, setting=f"tol={tol:g}")

    return solve


def _pot(method):
    def solve(C, a, b, reg, rho, tol, cap, state):
        return _pot_solve(method, C, a, b, reg, rho, tol, cap, state)

    return solve


def _pot_solve(method, C, a, b, reg, rho, tol, cap, state):
    import ot

    def call(stop_thr, max_iter):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "reg_type = entropy overwrites c", numerical-error notices
            P, log = ot.unbalanced.sinkhorn_unbalanced(a, b, C, reg, rho, method=method,
                                                       reg_type="entropy", stopThr=stop_thr,
                                                       numItermax=max_iter, log=True)
        elapsed = time.perf_counter() - start
        n_iter = len(log["err"])  # one entry per iteration
        f, g = reg * log["logu"], reg * log["logv"]
        err = gradient_norm(C, a, b, reg, rho, P, f, g)
        return dict(plan=P, f=f, g=g, time=elapsed, n_iter=n_iter, iterations=f"{n_iter:,}",
                    capped=n_iter >= max_iter and not err < tol, setting=f"stopThr={stop_thr:.3g}, numItermax={max_iter}")

    if "stop" in state:
        return call(state["stop"], state["max_iter"])
    one, ten = call(tol, 1), call(tol, _PROBE_ITERS)
    per_iter = max(ten["time"] - one["time"], 1e-9) / (_PROBE_ITERS - 1)
    state["max_iter"] = max(_PROBE_ITERS, int(0.9 * cap / per_iter))
    state["stop"] = tol
    spent = 0.0
    for _ in range(3):
        run = call(state["stop"], state["max_iter"])
        spent += run["time"]
        if run["capped"] and run["time"] < 0.5 * cap:
            # the probe misjudged the pace (a shared machine): refit the cap once, at most 1.5x
            state["max_iter"] = max(state["max_iter"], int(min(1.5, 0.9 * cap / run["time"]) * run["n_iter"]))
            run = call(state["stop"], state["max_iter"])
            spent += run["time"]
        if gradient_norm(C, a, b, reg, rho, run["plan"], run["f"], run["g"]) < tol or run["capped"] or spent > cap:
            break
        state["stop"] /= 10
    return run


SOLVERS = {"snsot-sns": _snsot("sns"), "snsot-sinkhorn": _snsot("sinkhorn"), "pot-sinkhorn": _pot("sinkhorn"),
           "pot-ti": _pot("sinkhorn_translation_invariant")}


def measure(method, C, a, b, reg, rho, tol, repeats, cap) -> dict:
    """Warm up, then the median time of up to ``repeats`` runs; the error re-measured from the last run."""
    solver, state = SOLVERS[method], {}
    try:
        last = solver(C, a, b, reg, rho, tol, cap, state)
        times = []
        if not last["capped"]:
            for _ in range(max(1, min(repeats, int(cap // max(last["time"], 1e-9))))):
                last = solver(C, a, b, reg, rho, tol, cap, state)
                times.append(last["time"])
                if last["capped"]:
                    break
    except ImportError:
        return dict(status="absent")
    except Exception as exc:  # a peer failing is a result to report
        return dict(status=f"error: {type(exc).__name__}: {exc}")
    P = last["plan"]
    if not (np.isfinite(P).all() and np.isfinite(last["f"]).all() and np.isfinite(last["g"]).all()):
        return dict(status="error: non-finite plan or potentials")
    err = gradient_norm(C, a, b, reg, rho, P, last["f"], last["g"])
    ok = err < tol and not last["capped"]
    return dict(status="ok" if ok else ("capped" if last["capped"] else "stopped"),
                time=float(np.median(times)) if times and ok else last["time"], runs=len(times),
                error=err, iterations=last["iterations"], setting=last["setting"],
                cost=float(np.vdot(C, P)), mass=float(P.sum()))


def run(out_dir: Path, quick=False, regs=None, rho=RHO, tol=TOL, repeats=3, cap=30.0, seed=0, log=print) -> list:
    """Every method on every problem and reg; writes ``unbalanced.md`` and ``unbalanced.json``; returns the rows."""
    from ..solvers import _warm_up

    _warm_up()
    regs = list(regs or REGS)
    started = time.perf_counter()
    rows = []
    for name, (C, a, b) in problems(quick, seed).items():
        for reg in regs:
            for method in METHODS:
                log(f"unbalanced: {name} reg={reg:g} rho={rho:g} {method} ...")
                row = dict(problem=name, shape=f"{C.shape[0]} x {C.shape[1]}", reg=reg, rho=rho, method=method,
                           **measure(method, C, a, b, reg, rho, tol, repeats, cap))
                rows.append(row)
                log(f"  {_cell(row, cap)}")
    elapsed = time.perf_counter() - started
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "unbalanced.md").write_text(report(rows, tol, cap, elapsed))
    (out_dir / "unbalanced.json").write_text(json.dumps(dict(tol=tol, cap=cap, elapsed=elapsed, rows=rows), indent=1))
    return rows


def _cell(row, cap) -> str:
    if row["status"] in ("absent",) or row["status"].startswith("error"):
        return row["status"]
    if row["status"] == "ok":
        t = f"{row['time']:.3g} s"
    elif row["status"] == "capped":  # the time it ran before the cap stopped it
        t = f"> {row['time']:.3g} s (error {row['error']:.1e})"
    else:  # stopped by itself (numerical errors) before tol
        t = f"stopped at {row['time']:.3g} s (error {row['error']:.1e})"
    return f"{t} ({row['iterations']} it.)"


def report(rows, tol, cap, elapsed) -> str:
    """The markdown report: one table, one row per problem and reg, with time ratios to SNS."""
    from .report import machine_info

    info = machine_info()
    lines = [
        "# Unbalanced OT: SNS vs Sinkhorn",
        "",
        f"Every method to an L1 dual-gradient norm below {tol:g} (re-measured from its plan and potentials),"
        f" rho = {rows[0]['rho']:g} on both sides, median seconds, time cap {cap:g} s;"
        f" {info.get('cpu', '')}, {info.get('cores', '')} cores; total {elapsed:.0f} s.",
        "",
        "| problem | reg | snsot SNS (Sinkhorn + Newton it.) | snsot Sinkhorn | POT `sinkhorn` | POT translation-invariant |"
        " time / SNS time (Sinkhorn, POT, POT TI) |",
        "|---|---|---|---|---|---|---|",
    ]
    keyed = {(r["problem"], r["reg"], r["method"]): r for r in rows}
    for problem, reg in dict.fromkeys((r["problem"], r["reg"]) for r in rows):
        cells = [keyed.get((problem, reg, m)) for m in METHODS]
        sns = cells[0]
        ratios = []
        for other in cells[1:]:
            if sns is None or other is None or sns["status"] != "ok" or other["status"] not in ("ok", "capped"):
                ratios.append("-")
            else:
                ratios.append(("> " if other["status"] == "capped" else "") + f"{other['time'] / sns['time']:.0f}x")
        lines.append(f"| {problem} ({cells[0]['shape'] if cells[0] else ''}) | {reg:g} | "
                     + " | ".join(_cell(c, cap) if c else "" for c in cells) + " | " + ", ".join(ratios) + " |")
    return "\n".join(lines) + "\n"
