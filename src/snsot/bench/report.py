"""The markdown report, its tables, and the CSV/JSON files."""

from __future__ import annotations

import csv
import math
import os
import platform

import numpy as np

from .config import PAPER
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

