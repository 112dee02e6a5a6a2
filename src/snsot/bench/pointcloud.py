"""``snsot bench --pointcloud``: point clouds on a truncated support against dense SNS and peers.

Problem (issue 13): 2-D, ``x`` uniform on [0, 2]^2, ``y`` a Gaussian
(centre (1, 1), sd 0.3) clipped to [0, 2]^2, uniform weights, cost
``|x - y|^2``. Every measurement runs in a fresh subprocess, so its peak
resident memory (``ru_maxrss``) is its own; the time is that of the solve
alone, after a warm-up that loads the compiled kernels. All methods of one
size run in the same invocation, one after the other, so their ratios come
from one run on one machine.

Methods: ``sns-sparse`` (``snsot.solve(PointCloud(...))``), ``sns-dense``
(``snsot.solve`` on the dense cost; its plan is compared with the sparse
one), and where POT is installed ``pot-lazy-emd``
(``ot.solve_sample(x, y, lazy=True)``, exact OT, O(n) memory) and
``pot-lazy-sinkhorn`` (``ot.bregman.empirical_sinkhorn(..., isLazy=True)``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["run", "measure", "clouds"]

METHODS = ("sns-sparse", "sns-dense", "pot-lazy-emd", "pot-lazy-sinkhorn",
           "geomloss-tensorized", "geomloss-online", "geomloss-multiscale")
#: Largest n for which each method is run by default (memory and minutes on 2 cores).
DEFAULT_LIMITS = {"sns-sparse": 10**6, "sns-dense": 10_000, "pot-lazy-emd": 10_000, "pot-lazy-sinkhorn": 10_000,
                  "geomloss-tensorized": 10_000, "geomloss-online": 10_000, "geomloss-multiscale": 100_000}
#: The issue's sizes and regularisations; 10^6 only with ``huge=True`` (``--pointcloud-huge``).
DEFAULT_SIZES = (10_000, 100_000)
HUGE = (1_000_000, 1e-6)
#: Iteration cap of POT's lazy Sinkhorn (each iteration recomputes the n x n kernel in batches): it reports the accuracy reached.
POT_SINKHORN_ITER = 200
#: GeomLoss's epsilon-scaling ratio (its default 0.5 stops far from the entropic optimum; 0.9 is its "accurate" setting).
GEOMLOSS_SCALING = 0.9
#: Marginal errors of peers are recomputed blockwise from their potentials up to this n (O(n^2) work).
BLOCKWISE_MAX_N = 20_000


def default_reg(n: int) -> float:
    """The issue's reg for a size: 1e-4 up to 10^4 points, 1e-5 up to 10^5, 1e-6 beyond."""
    return 1e-4 if n <= 10_000 else (1e-5 if n <= 100_000 else 1e-6)


def clouds(n: int, seed: int = 0, dim: int = 2):
    """The benchmark's two clouds of ``n`` points each: uniform on [0,2]^d against a clipped Gaussian."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, dim)) * 2.0
    y = np.clip(rng.normal(1.0, 0.3, (n, dim)), 0.0, 2.0)
    return x, y


def _marginal_error(P, a, b) -> float:
    return float(np.abs(np.asarray(P.sum(axis=1)).ravel() - a).sum() + np.abs(np.asarray(P.sum(axis=0)).ravel() - b).sum())


def _blockwise(x, y, log_plan, a, b, block=1000):
    """Marginal error and transport cost of the plan ``exp(log_plan(rows, C_block))``, a block of rows at a time."""
    n, m = len(x), len(y)
    rs, cs, cost = np.zeros(n), np.zeros(m), 0.0
    for s in range(0, n, block):
        C = ((x[s:s + block, None, :] - y[None, :, :]) ** 2).sum(-1)
        P = np.exp(log_plan(slice(s, s + block), C))
        rs[s:s + block] = P.sum(1)
        cs += P.sum(0)
        cost += float((P * C).sum())
    return float(np.abs(rs - a).sum() + np.abs(cs - b).sum()), cost


def kl_value(plan, cost, a, b, reg) -> float:
    """``<C, P> + reg KL(P | a b^T)``: the entropic OT value GeomLoss reports (``debias=False``), for a sparse or dense plan."""
    import scipy.sparse as sp

    P = sp.coo_matrix(plan)
    keep = P.data > 0
    r, c, v = P.row[keep], P.col[keep], P.data[keep]
    return float(cost + reg * np.sum(v * (np.log(v) - np.log(a[r]) - np.log(b[c]))) - reg * (v.sum() - 1.0))


def _geomloss(backend, x, y, a, b, reg):
    """GeomLoss ``SamplesLoss("sinkhorn", p=2, debias=False)`` on our problem, float64 on CPU.

    GeomLoss's p = 2 cost is ``|x - y|^2 / 2`` with ``eps = blur^2``: the problem
    ``(C / 2, reg / 2)`` has half our value, so ``blur = sqrt(reg / 2)`` and the
    value is doubled. Returns ``(value, f, g)`` in our convention
    ``P_ij = a_i b_j exp((f_i + g_j - C_ij) / reg)``.
    """
    import contextlib
    import io

    import torch

    with contextlib.redirect_stdout(io.StringIO()):  # pykeops prints a CUDA notice on import
        from geomloss import SamplesLoss

    loss = SamplesLoss("sinkhorn", p=2, blur=float(np.sqrt(reg / 2)), scaling=GEOMLOSS_SCALING, debias=False,
                       potentials=True, backend=backend)
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    A, B = torch.from_numpy(a), torch.from_numpy(b)
    f, g = loss(A, X, B, Y)
    f, g = 2.0 * f.numpy().ravel(), 2.0 * g.numpy().ravel()
    return float(a @ f + b @ g), f, g


def measure(method: str, n: int, reg: float, tol: float, seed: int, plan_out: str | None = None, dim: int = 2,
            max_tree_dim: int | None = None) -> dict:
    """One measurement in this process: time, accuracy and peak memory of ``method`` at size ``n``."""
    import resource

    import snsot

    x, y = clouds(n, seed, dim)
    a = np.full(n, 1.0 / n)
    row = {"method": method, "n": n, "reg": reg, "tol": tol, "dim": dim}
    extra = {} if max_tree_dim is None else {"max_tree_dim": max_tree_dim}
    if method.startswith("sns"):
        # warm-up: load the compiled kernels (not timed)
        xs, ys = clouds(300, seed + 1, dim)
        snsot.solve(snsot.PointCloud(xs, ys), reg=1e-3, tol=tol, warn=False, **extra)
        snsot.solve(snsot.costs.pairwise(xs, ys), reg=1e-3, tol=tol, warn=False)
    elif method.startswith("geomloss"):
        _geomloss(method.split("-")[1], *clouds(200, seed + 1, dim), np.full(200, 1 / 200), np.full(200, 1 / 200), 1e-2)
    t0 = time.perf_counter()
    plan = None
    if method == "sns-sparse":
        res = snsot.solve(snsot.PointCloud(x, y), a, a, reg=reg, tol=tol, warn=False, **extra)
        row.update(time=time.perf_counter() - t0, marginal_error=res.marginal_error, converged=res.converged,
                   cost=res.cost, support_per_point=res.support_size / n, outside_mass=res.outside_mass,
                   n_sinkhorn=res.n_sinkhorn, n_newton=res.n_newton)
        if res.scales is not None:
            row["max_pairs_per_point"] = max(s["max_pairs_per_point"] for s in res.scales[1:] or res.scales)
            row["scales"] = res.scales
        plan = res.plan
        if snsot.PointCloud(x, y).dim <= 3 or max_tree_dim:
            row["value"] = kl_value(plan, res.cost, a, a, reg)
    elif method == "sns-dense":
        C = snsot.PointCloud(x, y).dense_cost(max_bytes=64e9)
        res = snsot.solve(C, a, a, reg=reg, tol=tol, warn=False)
        row.update(time=time.perf_counter() - t0, marginal_error=res.marginal_error, converged=res.converged,
                   cost=res.cost, n_sinkhorn=res.n_sinkhorn, n_newton=res.n_newton,
                   value=kl_value(res.plan, res.cost, a, a, reg))
        plan = res.plan
    elif method == "pot-lazy-emd":
        import ot

        res = ot.solve_sample(x, y, a, a, lazy=True)
        P = res.plan
        status = str(getattr(res, "status", ""))
        row.update(time=time.perf_counter() - t0, cost=float(res.value), marginal_error=_marginal_error(P, a, a),
                   converged=status == "Converged", note=f"exact OT (no entropy); status {status!r}")
    elif method == "pot-lazy-sinkhorn":
        import ot

        with np.errstate(all="ignore"):
            f, g = ot.bregman.empirical_sinkhorn(x, y, reg, a, a, isLazy=True, batchSize=1000, stopThr=tol,
                                                 numIterMax=POT_SINKHORN_ITER, log=False, warn=False)
            row.update(time=time.perf_counter() - t0)
            if n <= BLOCKWISE_MAX_N:
                # POT's lazy potentials are log-scalings: P_ij = exp(f_i + g_j - C_ij / reg)
                err, cost = _blockwise(x, y, lambda sl, C: f[sl, None] + g[None, :] - C / reg, a, a)
                row.update(marginal_error=err, cost=cost, converged=bool(np.isfinite(err) and err < tol),
                           note=f"{POT_SINKHORN_ITER}-iteration cap, not log-domain")
    elif method.startswith("geomloss"):
        value, f, g = _geomloss(method.split("-")[1], x, y, a, a, reg)
        row.update(time=time.perf_counter() - t0, value=value, note=f"scaling {GEOMLOSS_SCALING}")
        if n <= BLOCKWISE_MAX_N:
            la = np.log(a)
            err, cost = _blockwise(x, y, lambda sl, C: la[sl, None] + la[None, :] + (f[sl, None] + g[None, :] - C) / reg,
                                   a, a)
            row.update(marginal_error=err, cost=cost, converged=bool(np.isfinite(err) and err < tol))
    else:
        raise ValueError(f"method: unknown {method!r}; choose from {', '.join(METHODS)}")
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if plan_out is not None and plan is not None:
        import scipy.sparse as sp

        sp.save_npz(plan_out, sp.csr_matrix(plan))
    return row


def _run_child(method, n, reg, tol, seed, plan_out, timeout, dim=2, max_tree_dim=None):
    code = ("import json,sys; from snsot.bench.pointcloud import measure; "
            f"print('RESULT', json.dumps(measure({method!r}, {n}, {reg!r}, {tol!r}, {seed}, {plan_out!r}, "
            f"{dim}, {max_tree_dim!r}), default=float))")
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"method": method, "n": n, "reg": reg, "dim": dim, "error": f"timed out after {timeout:g} s"}
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"method": method, "n": n, "reg": reg, "dim": dim,
            "error": (out.stderr.strip().splitlines() or ["failed"])[-1][:300]}


def _available(method) -> bool:
    import importlib.util

    module = {"pot": "ot", "geomloss": "geomloss"}.get(method.split("-")[0])
    if module is None:
        return True
    needed = [module] + (["pykeops"] if method in ("geomloss-online", "geomloss-multiscale") else [])
    return all(importlib.util.find_spec(name) is not None for name in needed)


def run(sizes, regs, tol, out_dir: Path, methods=METHODS, seed=0, timeout=1800.0, peer_timeout=60.0, plots=True,
        dims=(), dims_n=4000, dims_reg=1e-3, log=print) -> list:
    """Measure every method at every size; write ``POINTCLOUD.md``, ``pointcloud.json`` and a figure.

    ``dims``: also time the truncated path (forced, ``max_tree_dim``) against
    dense SNS on ``dims_n`` points at ``dims_reg`` in each dimension listed.
    Peers run under ``peer_timeout`` seconds each, SNS under ``timeout``.
    """
    import tempfile

    import scipy.sparse as sp

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    jobs = [(n, reg, 2, m) for n, reg in zip(sizes, regs) for m in methods if n <= DEFAULT_LIMITS[m]]
    jobs += [(dims_n, dims_reg, d, m) for d in dims for m in ("sns-sparse", "sns-dense")]
    missing = sorted({m for *_, m in jobs if not _available(m)})
    for m in missing:
        log(f"pointcloud: {m} not installed; its rows say so")
    plans = {}
    for n, reg, dim, method in jobs:
        if method in missing:
            need = "pykeops" if method in ("geomloss-online", "geomloss-multiscale") else method.split("-")[0]
            rows.append({"method": method, "n": n, "reg": reg, "dim": dim,
                         "error": f"not run: needs {need} (pip install {need})"})
            continue
        tmp = tempfile.NamedTemporaryFile(suffix=".npz", delete=False).name if method.startswith("sns") else None
        log(f"pointcloud: {method} n={n} reg={reg:g} dim={dim} ...")
        cap = timeout if method.startswith("sns") else peer_timeout
        row = _run_child(method, n, reg, tol, seed, tmp, cap, dim, 8 if dim > 3 else None)
        if tmp is not None and os.path.exists(tmp) and os.path.getsize(tmp) > 0:
            plans[(n, dim, method)] = sp.load_npz(tmp)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        rows.append(row)
        log(f"  { {k: v for k, v in row.items() if k != 'scales'} }")
        sparse, dense = plans.get((n, dim, "sns-sparse")), plans.get((n, dim, "sns-dense"))
        if sparse is not None and dense is not None:
            pair = {r["method"]: r for r in rows if r.get("n") == n and r.get("dim", 2) == dim}
            pair["sns-sparse"]["max_plan_diff_vs_dense"] = float(abs(sparse - dense).max())
            if "time" in pair["sns-dense"] and "time" in pair["sns-sparse"]:
                pair["sns-sparse"]["speedup_vs_dense"] = pair["sns-dense"]["time"] / pair["sns-sparse"]["time"]
            plans.pop((n, dim, "sns-dense"))
    # Rows of other sizes from an earlier run in the same folder are kept (the 10^6 row is a run of
    # its own), marked as such; rows of the sizes measured now replace theirs.
    previous = out_dir / "pointcloud.json"
    if previous.exists():
        measured = {(r["n"], r.get("dim", 2)) for r in rows}
        try:
            old = json.loads(previous.read_text())
        except ValueError:
            old = []
        kept = [dict(r, note=(r.get("note", "") + " (earlier run)").strip()) if "(earlier run)" not in r.get("note", "")
                else r for r in old if (r.get("n"), r.get("dim", 2)) not in measured]
        rows = kept + rows
    for row in rows:  # accuracy of every value against the converged SNS one of the same problem
        ref = next((r for r in rows if r["method"] == "sns-sparse" and r["n"] == row["n"]
                    and r.get("dim", 2) == row.get("dim", 2) and r.get("converged") and "value" in r), None)
        if ref is not None and "value" in row:
            row["value_gap"] = abs(row["value"] - ref["value"]) / abs(ref["value"])
    (out_dir / "pointcloud.json").write_text(json.dumps(rows, indent=1, default=float))
    (out_dir / "POINTCLOUD.md").write_text(_markdown(rows, tol))
    if plots:
        _figure([r for r in rows if r.get("dim", 2) == 2], out_dir / "pointcloud_scaling.png")
    return rows


def _fmt(v, spec):
    return "" if v is None else format(v, spec)


_COLUMNS = ("n", "reg", "method", "time (s)", "marginal error", "converged", "value gap", "cost", "pairs/point",
            "max pairs/point (any scale)", "outside mass", "max plan diff vs dense", "speed-up vs dense",
            "peak RSS (MB)", "note")


def _line(r) -> str:
    if "error" in r:
        return f"| {r['n']} | {r['reg']:g} | {r['method']} | failed: {r['error']} |" + "|" * (len(_COLUMNS) - 4)
    return (
        f"| {r['n']} | {r['reg']:g} | {r['method']} | {_fmt(r.get('time'), '.3g')} | {_fmt(r.get('marginal_error'), '.2e')} "
        f"| {r.get('converged', '')} | {_fmt(r.get('value_gap'), '.1e')} | {_fmt(r.get('cost'), '.10g')} "
        f"| {_fmt(r.get('support_per_point'), '.1f')} | {_fmt(r.get('max_pairs_per_point'), 'd')} "
        f"| {_fmt(r.get('outside_mass'), '.1e')} | {_fmt(r.get('max_plan_diff_vs_dense'), '.1e')} "
        f"| {_fmt(r.get('speedup_vs_dense'), '.2f')} | {_fmt(r.get('peak_rss_mb'), '.0f')} | {r.get('note', '')} |"
    )


def _markdown(rows, tol) -> str:
    head = "| " + " | ".join(_COLUMNS) + " |\n|" + "---|" * len(_COLUMNS)
    lines = [
        "# Point clouds: truncated-support SNS against dense SNS and peers",
        "",
        "2-D, x uniform on [0,2]^2, y Gaussian (1,1), sd 0.3, clipped to [0,2]^2; uniform weights; cost |x-y|^2; "
        f"tol {tol:g} (L1 marginal error relative to the mass). One subprocess per row (peak RSS is its own); "
        "times exclude kernel loading and compilation. *value gap*: |value - SNS value| / SNS value, with value = "
        "<C,P> + reg KL(P | a b^T) (GeomLoss's `debias=False` loss); *max pairs/point*: the largest row or column "
        "of any support at any scale after the first (dense, clustered) one.",
        "Regenerate: `snsot bench --pointcloud` (sizes with `--pointcloud-sizes`, 10^6 with `--pointcloud-huge`).",
        "",
        head,
    ]
    lines += [_line(r) for r in rows if r.get("dim", 2) == 2]
    high = [r for r in rows if r.get("dim", 2) != 2]
    if high:
        lines += ["", "## Higher dimensions (truncated path forced with `max_tree_dim=8`)", "",
                  "| dim " + head[1:].split("\n")[0] + "\n|---" + "|---" * len(_COLUMNS) + "|"]
        lines += [f"| {r.get('dim')} " + _line(r) for r in high]
    lines.append("")
    lines.append("POT's exact lazy network simplex solves unregularised OT: its cost is not the entropic one, and a "
                 "status other than 'Converged' means it stopped at numItermax without optimality.")
    return "\n".join(lines) + "\n"


def _figure(rows, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for method in METHODS:
        pts = sorted((r["n"], r["time"], r["peak_rss_mb"]) for r in rows if r.get("method") == method and "time" in r)
        if not pts:
            continue
        n, t, mem = zip(*pts)
        axes[0].loglog(n, t, "o-", label=method)
        axes[1].loglog(n, mem, "o-", label=method)
    axes[0].set(xlabel="n", ylabel="seconds", title="time")
    axes[1].set(xlabel="n", ylabel="peak RSS (MB)", title="memory")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
