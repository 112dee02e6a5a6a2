"""The markdown report, its tables, and the CSV/JSON files."""

from __future__ import annotations

import csv
import math
import os
import platform

import numpy as np

from . import robustness
from .config import PAPER, SINKHORN_TYPE
from .methods import _peer


def _reg_label(reg):
    inverse = 1 / reg
    # 1/1200 reads better as a fraction; powers of ten read better as 0.01, 1e-04.
    whole = round(inverse)
    if abs(inverse - whole) < 1e-9 * inverse and whole > 1 and math.log10(whole) % 1:
        return f"1/{whole}"
    return f"{reg:g}"


def _fmt_time(row):
    if "time" not in row:
        if "time_bound" in row:  # skipped: the cap at a larger reg bounds it, by assumption (see the notes)
            return f"> {row['time_bound']:.3g} (not run: capped at reg {_reg_label(row['bound_reg'])})"
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
    lines = ["| n | reg | time (s) | iterations (S + N) | L1 error | s/iter / read of C | tracemalloc peak (MB) "
             "| RSS growth (MB) | C (MB) | C + peak, in copies of C |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        per = r["time"] / r["n_iter"] / r["read_time"] if r.get("n_iter") and r["status"] == "ok" else None
        mb = lambda x: _fmt(x and x / 2**20, ".1f")  # noqa: E731
        peak = max(x for x in (r["tracemalloc_peak"], r["rss_growth"], 0) if x is not None)
        copies = 1 + peak / r["cost_matrix_bytes"]
        lines.append(f"| {r['shape'].split()[0]} | {_reg_label(r['reg'])} | {_fmt_time(r)} | {_fmt_iters(r)} "
                     f"| {_fmt(r.get('l1_error'), '.2e')} | {_fmt(per, '.1f')} | {mb(r['tracemalloc_peak'])} "
                     f"| {mb(r['rss_growth'])} | {mb(r['cost_matrix_bytes'])} | {copies:.2f} |")
    return "\n".join(lines)


def _robustness_cell(r):
    """One (problem, reg) cell of the robustness table, one fact per line."""
    err = _fmt(r["sns_l1_error"], ".1e")
    if r["sns_status"] == "ok":
        lines = [f"yes, {err}", f"SNS {r['sns_time']:.3g} s ({r['sns_n_sinkhorn']} + {r['sns_n_newton']} it.)"]
    else:
        capped = "> " if r["sns_status"] == "capped" else ""
        lines = [f"no ({r['sns_status']}){', ' + err if err else ''}",
                 f"SNS {capped}{r['sns_time']:.3g} s" if r["sns_time"] is not None else "SNS: no time"]
    if r["sinkhorn_time"] is None:
        lines.append(f"Sinkhorn: {r['sinkhorn_status']}")
    else:
        b = r["sinkhorn_bound"]
        sinkhorn = f"Sinkhorn {b} {r['sinkhorn_time']:.3g} s, {b} {r['sinkhorn_n_iter']:,} it.".replace("  ", " ")
        if r["sinkhorn_bound_reg"] is not None:
            sinkhorn += f" (bound from reg {_reg_label(r['sinkhorn_bound_reg'])})"
        lines.append(sinkhorn)
    if r["ratio"] is not None:
        ratio = f"SNS/Sinkhorn {r['ratio_bound']} {r['ratio']:.2g}".replace("  ", " ")
        if r.get("paired"):
            ratio += (f" (interleaved, {r['paired_runs']} pairs; medians {r['paired_sns_time']:.3g} / "
                      f"{r['paired_sinkhorn_time']:.3g} s)")
        lines.append(ratio)
    lines.append(f"**{r['verdict']}**")
    return "<br>".join(lines)


def robustness_section(records, tol):
    """The robustness section: a one-line count, the criteria, the failing cells, and the problems x regs table."""
    stats = robustness.summary(records)
    regs = sorted({r["reg"] for r in records}, reverse=True)
    problems = list(dict.fromkeys(r["problem"] for r in records))
    by_cell = {(r["problem"], r["reg"]): r for r in records}
    lines = [
        "## Robustness: SNS vs Sinkhorn per problem and reg", "",
        f"**{stats['passed']}/{stats['cells']} cells pass** ({stats['tied']} tie, {stats['failed']} FAIL, "
        f"{stats['undecided']} undecided); SNS with default options reached the L1 error < {tol:g} in {stats['sns_converged']}/"
        f"{stats['cells']} cells.", "",
        "A cell passes when SNS converged and, where snsot's Sinkhorn is easy (it converged in fewer than "
        f"{stats['easy_iterations']} iterations), SNS took at most {stats['easy_ratio']:g}x Sinkhorn's time; "
        "everywhere else (hard) SNS was faster than Sinkhorn. `>`: Sinkhorn stopped at the time cap (or without "
        "reaching the tolerance), so its time and iterations are lower bounds and the ratio is an upper bound; "
        "such a cell passes only if SNS was faster for certain. `interleaved`: where both converged and Sinkhorn "
        "took under a second, the ratio is from a second measurement that ran the two solvers in turn "
        "(SNS, Sinkhorn, then Sinkhorn, SNS, ...): the ratio is the median of the ratios of neighbouring runs, and the two solvers' medians are shown, so the shared machine's slow spells, which move a block "
        "median by up to 1.5x, fall on both alike; the times above it are the main table's block medians. `tie`: a hard cell where SNS's switch kept it in "
        "Sinkhorn to the end (no Newton step, Sinkhorn's own iteration count), so both did the same work and the "
        f"ratio, within {stats['easy_ratio']:g}, is timing noise; counted apart, neither pass nor FAIL. `bound from reg x`: Sinkhorn was not run here "
        "because it hit the cap at the larger reg x; that bound assumes Sinkhorn is no faster at a smaller reg. "
        "`undecided`: the numbers settle neither way. Every verdict is computed from the measured rows "
        "(`snsot.bench.robustness`); the cells are also in `robustness.csv` and `results.json`.", "",
    ]
    for outcome, title in (("fail", "Cells that FAIL"), ("undecided", "Undecided cells"), ("tie", "Ties")):
        chosen = [r for r in records if r["outcome"] == outcome]
        if chosen:
            lines += [f"{title}: " + "; ".join(
                f"{r['problem']} at reg {_reg_label(r['reg'])}" + (f" ({r['verdict']})" if outcome != "tie" else "")
                for r in chosen) + ".", ""]
    lines += ["| problem | " + " | ".join(f"reg = {_reg_label(reg)}" for reg in regs) + " |",
              "|---|" + "---|" * len(regs)]
    for problem in problems:
        shape = next(r["shape"] for r in records if r["problem"] == problem)
        cells = [_robustness_cell(by_cell[problem, reg]) if (problem, reg) in by_cell else "" for reg in regs]
        lines.append(f"| {problem} ({shape}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(cfg, info, rows, sweep_rows, scaling_rows, problems):
    """The report's notes: the harness's general caveats, with this run's numbers filled in from the rows.

    ``problems`` maps every problem name used by the run to its :class:`~snsot.bench.measure.Problem`.
    """
    tol, cap = cfg["tol"], cfg["time_cap"]
    # Scaling rows are copies of grid rows: one row per (problem, reg, method).
    every = list({(r["problem"], r["reg"], r["method"]): r for r in scaling_rows + sweep_rows + rows}.values())
    out = []

    sns = [r for r in every if r["method"] == "snsot-sns" and r.get("status") != "absent"]
    missed = [r for r in sns if r.get("status") != "ok"]
    out.append(f"SNS met tol = {tol:g} (L1, re-measured from its plan) in {len(sns) - len(missed)} of {len(sns)} "
               "rows of this run (main table, sweep and scaling)"
               + (": not in " + ", ".join(_where(r) + f" ({r['status']})" for r in missed) if missed else "") + ".")

    out.append("Peers stop on their own norms (RegOT: the L2 norm of both marginal errors together; POT: the L2 "
               "norm of the column error, checked every 10 iterations). Each is first given our tol in its own "
               "norm, the loosest setting that can pass, and its tolerance is tightened tenfold only when the "
               "returned plan misses tol in L1; the setting each one ran with is listed under the main table.")

    threads = cfg["options"].get("n_threads")
    if threads is not None:
        out.append(f"snsot ran its kernels on n_threads = {threads} (`--threads`).")
    else:
        try:
            from .._kernels import PARALLEL_MIN_SIZE
            import numba

            big = [p.name for p in problems.values() if p.C.size >= PARALLEL_MIN_SIZE]
            out.append(f"snsot runs its kernels on one thread for costs of fewer than {PARALLEL_MIN_SIZE:,} entries "
                       f"and on all {numba.get_num_threads()} of numba's threads ({info['cores']} cores) from there "
                       f"on: in this run {', '.join(big) if big else 'no problem'}.")
        except ImportError:  # an snsot without the threshold: nothing to say
            pass

    spread = [(r["time_max"] / r["time_min"], r) for r in every if r.get("runs", 0) >= 2 and r.get("time_min")]
    if spread:
        ratios = sorted(x for x, _ in spread)
        worst, where = max(spread, key=lambda x: x[0])
        out.append(f"Timing noise: over the {len(spread)} rows timed at least twice, the slowest timed run took "
                   f"{np.median(ratios):.2g}x the fastest in the median row and {worst:.2g}x at worst "
                   f"({_where(where)}); time ratios closer to 1 than that are ties.")

    out.append("`> t`: stopped at the time cap. snsot stops itself through its callback; peers cannot be "
               "interrupted, so their iteration cap is fitted to the time cap from a short probe run, and a peer "
               "that slows down as it goes (RegOT SPLR) can overrun the cap. `not run: capped at reg x`: a "
               f"Sinkhorn-type method ({', '.join(SINKHORN_TYPE)}) that hit the cap at a larger reg is not run at "
               "smaller ones, as it needs more iterations as reg shrinks; the time shown is that assumption's "
               "bound, not a measurement. Newton-type methods run at every reg.")
    over = [r for r in every if r.get("status") == "capped" and r["time"] > 1.1 * cap]
    if over:
        out.append(f"Rows that overran the {cap:g} s cap by more than 10%: "
                   + ", ".join(f"{_where(r)} ({r['time']:.3g} s)" for r in over) + ".")
    peers = [r for r in every if not r["method"].startswith("snsot-") and r["method"] != "pot-emd"
             and r.get("status") not in ("absent", None) and not r["status"].startswith("skipped")]
    for method in dict.fromkeys(r["method"] for r in peers):
        mine = [r for r in peers if r["method"] == method]
        failed = [r for r in mine if r["status"] != "ok"]
        if failed:
            out.append(f"{method} did not reach tol in {len(failed)} of its {len(mine)} measured rows: "
                       + ", ".join(f"{_where(r, method=False)} ({r['status'].split(' (')[0]})" for r in failed) + ".")

    # A plan within tol of the marginals cannot cost less than the exact OT by more than tol * max|C|.
    below = [r for r in every if r.get("gap") is not None and math.isfinite(r["gap"]) and r["problem"] in problems
             and r["gap"] < -tol * float(np.abs(problems[r["problem"]].C).max())]
    if below:
        converged = [r for r in below if r["status"] == "ok"]
        out.append(f"{len(below)} rows cost less than the exact OT by more than tol x max|C|, which only a plan "
                   "that misses the marginals can do; "
                   + ("all of them are capped or unconverged rows." if not converged else
                      "among them, rows reported as converged: " + ", ".join(map(_where, converged))
                      + " (a harness or solver bug)."))

    switch = [r["n_sinkhorn"] for r in sns if r.get("status") == "ok" and r.get("n_sinkhorn") is not None]
    scaled = [r for r in sns if "epsilon-scaling" in r.get("setting", "")]
    text = ("The `paper` column comes from the paper's machine and its fixed schedule (a set number of Sinkhorn "
            "steps before Newton, Algorithm 1). snsot's SNS switches to Newton adaptively")
    if switch:
        text += f" (in this run after {min(switch)} to {max(switch)} Sinkhorn steps)"
    text += " and starts with epsilon-scaling (iterations at a larger reg first) where the cost's spread is large " \
            "relative to reg"
    if scaled:
        text += ": in this run on " + ", ".join(map(_where, scaled))
    out.append(text + ".")
    return ["## Notes", "", *[f"- {line}" for line in out], ""]


def _where(row, method=True):
    text = f"{row['problem']} at reg {_reg_label(row['reg'])}"
    return f"{row['method']} on {text}" if method else text


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


def cold_start_table(rows):
    """The first-call section: import and first solve in a fresh process, with and without cached kernels."""
    lines = ["## First call in a new process", "",
             "`import snsot` and a first `snsot.solve` (SNS, 300 x 300 random costs, reg 1e-3) timed inside a "
             "fresh Python process, then a second solve in the same process for reference. numba compiles the "
             "kernels once and caches them on disk (`cache=True`); the first row starts from an empty cache "
             "(`NUMBA_CACHE_DIR` pointed at a new folder), the second reuses the cache the first one wrote. "
             "`process` is the child's whole wall time, interpreter start-up included.", "",
             "| setting | import (s) | first solve (s) | second solve (s) | process (s) |", "|---|---|---|---|---|"]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['setting']} | {r.get('status')} | | | |")
            continue
        lines.append(f"| {r['setting']} | {r['import_time']:.2f} | {r['first_solve']:.2f} | "
                     f"{r['second_solve']:.3f} | {r['wall']:.1f} |")
    return "\n".join(lines)


def _report(command, info, cfg, rows, sweep_rows, scaling_rows, problems, figures, elapsed, records=(),
            all_problems=None, cold_rows=()):
    """The markdown report; ``records`` are the robustness cells, ``all_problems`` every problem by name."""
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
    ]
    if records:
        parts += [robustness_section(records, cfg["tol"]), ""]
    parts += [
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
                  "growth of the process's resident set over the solve (`VmHWM`, everything); the last column "
                  "adds the larger of the two to C itself, in units of C's size (n x n float64). The last row "
                  "solves the largest problem again at a smaller reg, where SNS takes Newton steps and so "
                  "allocates its sparse Hessian buffers.", "",
                  scaling_table(scaling_rows), ""]
    if cold_rows:
        parts += [cold_start_table(cold_rows), ""]
    parts += notes(cfg, info, rows, sweep_rows, scaling_rows,
                   all_problems or {p.name: p for p in problems})
    if figures:
        parts += ["## Figures", "", "SNS and snsot Sinkhorn plot the L1 error; RegOT and POT plot their own "
                  "norms (labelled), POT only every 10 iterations with times interpolated linearly. The dotted "
                  "line marks SNS's switch to Newton; the dashed line is the tolerance.", ""]
        parts += [f"![{name}]({name})" for name in figures] + [""]
    return "\n".join(parts)

