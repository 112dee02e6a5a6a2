"""Pictures of solves: convergence curves, transport plans, matches and displacements.

Needs matplotlib (the ``plot`` extra: ``pip install "snsot[plot]"``), which is
imported only when a function here is called. Every function returns a
:class:`matplotlib.figure.Figure` built without pyplot, so nothing here
changes matplotlib's global state or backend; save it with :func:`save`
(or ``fig.savefig``), or let a notebook display it.

Positions follow :func:`snsot.costs.grid_points`: a histogram bin ``(r, c)``
of an ``(H, W)`` grid sits at ``(r / (H - 1), c / (W - 1))``, and images are
drawn with ``c`` across and ``r`` down, as they are displayed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .costs import grid_points
from .result import STAGE_NEWTON

__all__ = ["plot_convergence", "plot_plan", "plot_matches", "plot_images", "save", "INSTALL_HINT"]

INSTALL_HINT = 'pip install "snsot[plot]"'

# log10 of a marginal error of exactly zero is -inf; draw it at this floor.
_ERROR_FLOOR = 1e-17


def _figure(**kwargs):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(f"pictures need matplotlib; install the plot extra: {INSTALL_HINT}") from None
    return Figure(**kwargs)


def save(fig, path, dpi: int = 120) -> None:
    """Write ``fig`` to ``path`` (the format follows the suffix, e.g. ``.png``)."""
    fig.savefig(path, dpi=dpi, bbox_inches="tight")


def _label(name, res) -> str:
    if res.converged:
        state = f"{res.n_iter} it, {res.time:.2g} s"
    else:
        state = f"not converged: {res.marginal_error:.1e} after {res.n_iter} it"
    return f"{name} ({state})"


def plot_convergence(results, *, tol=None, title=None):
    """Marginal error (log scale) against iteration and against seconds.

    Parameters
    ----------
    results : mapping
        ``{label: OTResult}`` for one problem, or ``{problem: {label: OTResult}}``
        for one row of panels per problem.
    tol : float, optional
        Drawn as a dashed line; by default the ``tol`` of the first result.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        Two panels per problem. Newton steps are marked with dots, so the
        switch from the Sinkhorn stage is visible; iterates of
        epsilon-scaling stages (solved at a larger reg, their error measured
        for that reg) are dotted, the solve at the target reg solid.
    """
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results: expected a non-empty mapping of labels to OTResult")
    first = next(iter(results.values()))
    problems = results if isinstance(first, Mapping) else {None: results}
    fig = _figure(figsize=(10, 3.6 * len(problems)), layout="constrained")
    axes = fig.subplots(len(problems), 2, squeeze=False)
    for row, (problem, runs) in zip(axes, problems.items()):
        staged = False
        line_tol = tol if tol is not None else next(iter(runs.values())).tol
        for name, res in runs.items():
            h = res.history
            err = np.maximum(np.asarray(h.marginal_error, dtype=float), _ERROR_FLOOR)
            it = np.arange(1, len(err) + 1)
            newton = np.asarray(h.stage) == STAGE_NEWTON
            regs = np.asarray(getattr(h, "reg", ()), dtype=float)
            # iterates of epsilon-scaling stages (a larger reg) end before index `final`
            earlier = np.flatnonzero(regs > res.reg * (1 + 1e-9)) if len(regs) == len(err) else np.empty(0, int)
            final = earlier[-1] + 1 if len(earlier) else 0
            for ax, x in ((row[0], it), (row[1], np.asarray(h.time, dtype=float))):
                (line,) = ax.semilogy(x[final:], err[final:], label=_label(name, res), lw=1.6)
                if final:
                    ax.semilogy(x[:final], err[:final], ls=":", lw=1.4, color=line.get_color())
                    staged = True
                if newton.any():
                    ax.semilogy(x[newton], err[newton], "o", ms=3.5, color=line.get_color())
        spans = [(len(r.history), r.history.time[-1] if len(r.history) else 0.0) for r in runs.values()]
        for k, ax in enumerate(row):
            ends = [span[k] for span in spans if span[k] > 0]
            if ends and max(ends) > 20 * min(ends):  # a fast run would be squeezed against the axis
                ax.set_xscale("log")
        for ax, xlabel in ((row[0], "iteration"), (row[1], "seconds")):
            ax.axhline(line_tol, color="0.4", ls="--", lw=1, label=f"tol {line_tol:g}")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("marginal error (L1, log scale)")
            ax.grid(True, which="major", alpha=0.3)
        if problem is not None:
            row[0].set_title(str(problem), loc="left")
        if staged:
            row[0].plot([], [], ls=":", color="0.3", label="at a larger reg (epsilon-scaling)")
        row[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def plot_plan(plan, *, support_only: bool = True, title=None, dynamic_range: float = 1e8):
    """The transport plan as a heatmap (log colour scale).

    Parameters
    ----------
    plan : ndarray, shape (n, m)
    support_only : bool
        Leave out rows and columns with no mass (e.g. black pixels), so the
        part of the plan that carries mass fills the picture.
    title : str, optional
    dynamic_range : float
        Entries below ``max / dynamic_range`` are drawn as background.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.colors import LogNorm

    P = np.asarray(plan, dtype=float)
    if P.ndim != 2:
        raise ValueError(f"plan: expected a 2-D array; got shape {P.shape}")
    n, m = P.shape
    rows, cols = np.arange(n), np.arange(m)
    if support_only:
        rows, cols = np.flatnonzero(P.sum(axis=1) > 0), np.flatnonzero(P.sum(axis=0) > 0)
        P = P[np.ix_(rows, cols)]
    top = P.max() if P.size else 0.0
    fig = _figure(figsize=(6.4, 5.4), layout="constrained")
    ax = fig.subplots()
    if top > 0:
        shown = np.ma.masked_less(P, top / dynamic_range)
        im = ax.imshow(shown, norm=LogNorm(vmin=top / dynamic_range, vmax=top), cmap="magma_r",
                       interpolation="nearest", aspect="auto")
        fig.colorbar(im, ax=ax, label="plan entry $P_{ij}$")
    ax.set_facecolor("white")
    what = " with mass" if support_only else ""
    ax.set_xlabel(f"target bin j ({len(cols)} of {m}{what})")
    ax.set_ylabel(f"source bin i ({len(rows)} of {n}{what})")
    ax.set_title(title or "transport plan")
    return fig


def _strongest(P, k):
    flat = P.ravel()
    k = min(k, int(np.count_nonzero(flat)))
    if k == 0:
        return np.empty(0, int), np.empty(0, int), np.empty(0)
    idx = np.argpartition(flat, -k)[-k:]
    idx = idx[np.argsort(flat[idx])]
    i, j = np.unravel_index(idx, P.shape)
    return i, j, flat[idx]


def plot_matches(x, y, plan, *, a=None, b=None, n_matches=None, title=None):
    """Two 2-D point clouds with their strongest matches drawn as segments.

    Parameters
    ----------
    x, y : ndarray, shapes (n, 2) and (m, 2)
        Source and target points.
    plan : ndarray, shape (n, m)
    a, b : ndarray, optional
        Weights, shown as marker areas.
    n_matches : int, optional
        How many of the largest plan entries to draw (default ``n + m``, the
        size of an optimal assignment's support); opacity follows the mass.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.collections import LineCollection

    x, y, P = np.asarray(x, float), np.asarray(y, float), np.asarray(plan, float)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != 2 or y.shape[1] != 2:
        raise ValueError(f"x, y: matches are drawn for 2-D points only; got shapes {x.shape} and {y.shape}")
    if P.shape != (len(x), len(y)):
        raise ValueError(f"plan: shape {P.shape} does not match {len(x)} source and {len(y)} target points")
    k = len(x) + len(y) if n_matches is None else int(n_matches)
    i, j, mass = _strongest(P, k)
    fig = _figure(figsize=(6.4, 6.0), layout="constrained")
    ax = fig.subplots()
    if mass.size:
        colours = np.zeros((mass.size, 4))
        colours[:, 3] = 0.15 + 0.85 * mass / mass.max()
        ax.add_collection(LineCollection(np.stack([x[i], y[j]], axis=1), colors=colours, linewidths=1.0,
                                         zorder=1))

    def sizes(w, count):
        if w is None:
            return 18.0
        w = np.asarray(w, float)
        return 18.0 * w * count / max(w.sum(), 1e-300)

    ax.scatter(x[:, 0], x[:, 1], s=sizes(a, len(x)), c="tab:blue", label=f"source ({len(x)})", zorder=2)
    ax.scatter(y[:, 0], y[:, 1], s=sizes(b, len(y)), c="tab:orange", label=f"target ({len(y)})", zorder=2)
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title or f"strongest {mass.size} matches of the plan")
    return fig


def _extent(shape):
    """imshow extent that puts pixel centres at their grid_points positions."""
    half = [0.5 / (s - 1) if s > 1 else 0.5 for s in shape]
    return (-half[1], 1 + half[1], 1 + half[0], -half[0])


def _barycentric_positions(P, shape_a, shape_b):
    xa, xb = grid_points(shape_a), grid_points(shape_b)
    rows = P.sum(axis=1)
    has = rows > 0
    target = np.zeros_like(xa)
    target[has] = (P[has] @ xb) / rows[has, None]
    return xa, xb, target, has


def _halfway(P, xa, xb, shape, dynamic_range=1e10):
    """The displacement interpolation at t = 1/2 on a grid of ``shape``.

    Each plan entry's mass goes to the midpoint of its two bins, spread
    bilinearly over the four nearest pixels: rounding to one pixel instead
    draws stripes wherever the displacement is an odd number of pixels.
    """
    i, j = np.nonzero(P > P.max() / dynamic_range)
    mass = P[i, j]
    mid = 0.5 * (xa[i] + xb[j])
    hist = np.zeros(shape)
    corners = []
    for axis, s in enumerate(shape):
        u = mid[:, axis] * (s - 1)  # position in pixel units
        lo = np.clip(np.floor(u).astype(int), 0, max(s - 2, 0))
        frac = np.clip(u - lo, 0.0, 1.0) if s > 1 else np.zeros_like(u)
        corners.append(((lo, 1.0 - frac), (np.minimum(lo + 1, s - 1), frac)))
    for r, wr in corners[0]:
        for c, wc in corners[1]:
            np.add.at(hist, (r, c), mass * wr * wc)
    return hist


def plot_images(image_a, image_b, plan, *, max_arrows: int = 400, min_mass: float = 0.01, title=None):
    """Two images, the halfway image of the plan, and the plan's displacement.

    Panels: the source, the target, the displacement interpolation at
    ``t = 1/2`` (the mass of each plan entry placed at the midpoint of its
    two pixels), and arrows from source pixels to their barycentric targets
    :math:`T(x_i) = \\sum_j P_{ij} y_j / \\sum_j P_{ij}`.

    Parameters
    ----------
    image_a, image_b : ndarray, 2-D
        Source and target histograms as images (any positive scale).
    plan : ndarray, shape (image_a.size, image_b.size)
    max_arrows : int
        Arrows are drawn from at most this many of the heaviest source pixels.
    min_mass : float
        In the displacement panel, pixels lighter than this fraction of the
        heaviest are left out (so a faint background floor draws no arrows).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    A, B, P = np.asarray(image_a, float), np.asarray(image_b, float), np.asarray(plan, float)
    if A.ndim != 2 or B.ndim != 2:
        raise ValueError(f"image_a, image_b: expected 2-D images; got shapes {A.shape} and {B.shape}")
    if P.shape != (A.size, B.size):
        raise ValueError(f"plan: shape {P.shape} does not match images of {A.size} and {B.size} pixels")
    xa, xb, target, has = _barycentric_positions(P, A.shape, B.shape)
    half_shape = max(A.shape, B.shape, key=lambda s: s[0] * s[1])
    half = _halfway(P, xa, xb, half_shape)

    fig = _figure(figsize=(13, 3.6), layout="constrained")
    axes = fig.subplots(1, 4)
    panels = ((A, A.shape, "source"), (B, B.shape, "target"), (half, half_shape, "halfway (t = 1/2)"))
    for ax, (img, shape, name) in zip(axes, panels):
        ax.imshow(img, cmap="Greys", extent=_extent(shape), interpolation="nearest")
        ax.set_title(name)
    ax = axes[3]
    for img, cmap in ((A, "Blues"), (B, "Oranges")):
        ax.imshow(np.ma.masked_less(img, min_mass * img.max()), cmap=cmap, alpha=0.5, vmin=0,
                  vmax=img.max() * 1.2, extent=_extent(img.shape), interpolation="nearest")
    row_mass = P.sum(axis=1)
    heavy = np.flatnonzero(has & (row_mass >= min_mass * row_mass.max()))
    heavy = heavy[np.argsort(row_mass[heavy])[::-1][:max_arrows]]
    d = target[heavy] - xa[heavy]
    # positions are (row, col); the picture's x is the column and its y the row (pointing down)
    ax.quiver(xa[heavy, 1], xa[heavy, 0], d[:, 1], d[:, 0], angles="xy", scale_units="xy", scale=1,
              width=0.003, color="k", alpha=0.8)
    ax.set_xlim(_extent(A.shape)[:2])
    ax.set_ylim(_extent(A.shape)[2:])
    ax.set_title("displacement (source → target)")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return fig
