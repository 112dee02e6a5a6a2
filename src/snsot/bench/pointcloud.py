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

__all__ = ["run", "measure"]

METHODS = ("sns-sparse", "sns-dense", "pot-lazy-emd", "pot-lazy-sinkhorn")
#: Largest n for which each method is run by default (memory and minutes on 2 cores).
DEFAULT_LIMITS = {"sns-sparse": 10**6, "sns-dense": 10_000, "pot-lazy-emd": 4_000, "pot-lazy-sinkhorn": 4_000}
#: Iteration cap of POT's lazy Sinkhorn (each iteration recomputes the n x n kernel in batches): it reports the accuracy reached.
POT_SINKHORN_ITER = 200


def clouds(n: int, seed: int = 0):
    """The benchmark's two clouds of ``n`` points each."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 2)) * 2.0
    y = np.clip(rng.normal(1.0, 0.3, (n, 2)), 0.0, 2.0)
    return x, y


def _marginal_error(P, a, b) -> float:
    return float(np.abs(np.asarray(P.sum(axis=1)).ravel() - a).sum() + np.abs(np.asarray(P.sum(axis=0)).ravel() - b).sum())


def measure(method: str, n: int, reg: float, tol: float, seed: int, plan_out: str | None = None) -> dict:
    """One measurement in this process: time, accuracy and peak memory of ``method`` at size ``n``."""
    import resource

    import snsot

    x, y = clouds(n, seed)
    a = np.full(n, 1.0 / n)
    row = {"method": method, "n": n, "reg": reg, "tol": tol}
    if method.startswith("sns"):
        # warm-up: load the compiled kernels (not timed)
        xs, ys = clouds(300, seed + 1)
        snsot.solve(snsot.PointCloud(xs, ys), reg=1e-3, tol=tol, warn=False)
        snsot.solve(snsot.costs.pairwise(xs, ys), reg=1e-3, tol=tol, warn=False)
    t0 = time.perf_counter()
    if method == "sns-sparse":
        res = snsot.solve(snsot.PointCloud(x, y), a, a, reg=reg, tol=tol, warn=False)
        row.update(time=time.perf_counter() - t0, marginal_error=res.marginal_error, converged=res.converged,
                   cost=res.cost, support_per_point=res.support_size / n, outside_mass=res.outside_mass,
                   n_sinkhorn=res.n_sinkhorn, n_newton=res.n_newton)
        plan = res.plan
    elif method == "sns-dense":
        C = snsot.PointCloud(x, y).dense_cost(max_bytes=64e9)
        res = snsot.solve(C, a, a, reg=reg, tol=tol, warn=False)
        row.update(time=time.perf_counter() - t0, marginal_error=res.marginal_error, converged=res.converged,
                   cost=res.cost, n_sinkhorn=res.n_sinkhorn, n_newton=res.n_newton)
        plan = res.plan
    elif method == "pot-lazy-emd":
        import ot

        res = ot.solve_sample(x, y, a, a, lazy=True)
        P = res.plan
        row.update(time=time.perf_counter() - t0, cost=float(res.value), marginal_error=_marginal_error(P, a, a),
                   converged=str(getattr(res, "status", "")) == "Converged")
        plan = None
    elif method == "pot-lazy-sinkhorn":
        import ot

        f, g = ot.bregman.empirical_sinkhorn(x, y, reg, a, a, isLazy=True, batchSize=1000, stopThr=tol,
                                             numIterMax=POT_SINKHORN_ITER, log=False, warn=False)
        row.update(time=time.perf_counter() - t0)
        # POT's lazy potentials are log-scalings: P_ij = exp(f_i + g_j - C_ij / reg)
        rs = np.zeros(n)
        cs = np.zeros(n)
        cost = 0.0
        for s in range(0, n, 1000):
            C = ((x[s:s + 1000, None, :] - y[None, :, :]) ** 2).sum(-1)
            P = np.exp(f[s:s + 1000, None] + g[None, :] - C / reg)
            rs[s:s + 1000] = P.sum(1)
            cs += P.sum(0)
            cost += float((P * C).sum())
        row.update(marginal_error=float(np.abs(rs - a).sum() + np.abs(cs - a).sum()), cost=cost, converged=None)
        plan = None
    else:
        raise ValueError(f"method: unknown {method!r}; choose from {', '.join(METHODS)}")
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if plan_out is not None and plan is not None:
        import scipy.sparse as sp

        sp.save_npz(plan_out, sp.csr_matrix(plan))
    return row


def _run_child(method, n, reg, tol, seed, plan_out, timeout):
    code = ("import json,sys; from snsot.bench.pointcloud import measure; "
            f"print('RESULT', json.dumps(measure({method!r}, {n}, {reg!r}, {tol!r}, {seed}, {plan_out!r})))")
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"method": method, "n": n, "reg": reg, "error": f"timed out after {timeout:g} s"}
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"method": method, "n": n, "reg": reg, "error": (out.stderr.strip().splitlines() or ["failed"])[-1]}


def run(sizes, regs, tol, out_dir: Path, methods=METHODS, seed=0, timeout=900.0, plots=True, log=print) -> list:
    """Measure every method at every size; write ``POINTCLOUD.md``, ``pointcloud.json`` and a figure."""
    import tempfile

    import scipy.sparse as sp

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, reg in zip(sizes, regs):
        plans = {}
        for method in methods:
            if n > DEFAULT_LIMITS[method]:
                continue
            if method.startswith("pot"):
                try:
                    import ot  # noqa: F401
                except ImportError:
                    continue
            tmp = tempfile.NamedTemporaryFile(suffix=".npz", delete=False).name if method.startswith("sns") else None
            log(f"pointcloud: {method} n={n} reg={reg:g} ...")
            row = _run_child(method, n, reg, tol, seed, tmp, timeout)
            if tmp is not None and os.path.exists(tmp) and os.path.getsize(tmp) > 0:
                plans[method] = sp.load_npz(tmp)
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
            rows.append(row)
            log(f"  {row}")
        if "sns-sparse" in plans and "sns-dense" in plans:
            diff = abs(plans["sns-sparse"] - plans["sns-dense"]).max()
            for row in rows:
                if row.get("n") == n and row.get("method") == "sns-sparse":
                    row["max_plan_diff_vs_dense"] = float(diff)
                    dense = next(r for r in rows if r.get("n") == n and r.get("method") == "sns-dense")
                    if "time" in dense and "time" in row:
                        row["speedup_vs_dense"] = dense["time"] / row["time"]
    (out_dir / "pointcloud.json").write_text(json.dumps(rows, indent=1))
    (out_dir / "POINTCLOUD.md").write_text(_markdown(rows, tol))
    if plots:
        _figure(rows, out_dir / "pointcloud_scaling.png")
    return rows


def _fmt(v, spec):
    return "" if v is None else format(v, spec)


def _markdown(rows, tol) -> str:
    lines = [
        "# Point clouds: truncated-support SNS against dense SNS and POT",
        "",
        "2-D, x uniform on [0,2]^2, y Gaussian (1,1), sd 0.3, clipped to [0,2]^2; uniform weights; cost |x-y|^2; "
        f"tol {tol:g} (L1 marginal error). One subprocess per row (peak RSS is its own); times exclude kernel loading.",
        "Regenerate: `snsot bench --pointcloud` (sizes with `--pointcloud-sizes`).",
        "",
        "| n | reg | method | time (s) | marginal error | converged | cost | pairs/point | outside mass | max plan diff vs dense | speed-up vs dense | peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['n']} | {r['reg']:g} | {r['method']} | failed: {r['error']} |||||||||")
            continue
        lines.append(
            f"| {r['n']} | {r['reg']:g} | {r['method']} | {_fmt(r.get('time'), '.3g')} | {_fmt(r.get('marginal_error'), '.2e')} "
            f"| {r.get('converged', '')} | {_fmt(r.get('cost'), '.10g')} | {_fmt(r.get('support_per_point'), '.1f')} "
            f"| {_fmt(r.get('outside_mass'), '.1e')} | {_fmt(r.get('max_plan_diff_vs_dense'), '.1e')} "
            f"| {_fmt(r.get('speedup_vs_dense'), '.2f')} | {_fmt(r.get('peak_rss_mb'), '.0f')} |"
        )
    lines.append("")
    lines.append("POT's exact lazy network simplex solves unregularised OT: its cost is not the entropic one.")
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
        pts = [(r["n"], r["time"], r["peak_rss_mb"]) for r in rows if r.get("method") == method and "time" in r]
        if not pts:
            continue
        n, t, mem = zip(*pts)
        axes[0].loglog(n, t, "o-", label=method)
        axes[1].loglog(n, mem, "o-", label=method)
    axes[0].set(xlabel="n", ylabel="seconds", title="time")
    axes[1].set(xlabel="n", ylabel="peak RSS (MB)", title="memory")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
