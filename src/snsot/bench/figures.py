"""The convergence and scaling figures (matplotlib is imported only here, only when asked)."""

from __future__ import annotations

import math

import numpy as np


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

