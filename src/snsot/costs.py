"""Cost matrices between point clouds and between the bins of regular grids."""

from __future__ import annotations

import numbers

import numpy as np
from scipy.spatial.distance import cdist

from ._validate import real_array

__all__ = ["pairwise", "grid", "grid_points"]

_METRICS = ("sqeuclidean", "euclidean", "cityblock")


def _check_metric(metric):
    if isinstance(metric, numbers.Real) and not isinstance(metric, bool):
        if not (np.isfinite(metric) and metric > 0):
            raise ValueError(f"metric: a power of the Euclidean distance must be positive; got {metric!r}")
        return float(metric)
    if isinstance(metric, str):
        try:
            return _check_metric(float(metric))
        except ValueError:
            pass
        if metric in _METRICS:
            return metric
    raise ValueError(f"metric: expected one of {', '.join(_METRICS)} or a positive number p; got {metric!r}")


def _points(x, name):
    x = real_array(x, name, what="points", reject_nan=False)  # strings, complex, objects: TypeError naming x/y
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name}: points must be a non-empty (n, d) array; got shape {x.shape}")
    bad = ~np.isfinite(x)
    if bad.any():
        i, k = (int(v) for v in np.argwhere(bad)[0])
        raise ValueError(f"{name}: points must be finite; found {x[i, k].item()!r} at index ({i}, {k})")
    return x


def _check_overflow(D, x, y):
    """A finite cost from finite points, or a ValueError saying the coordinates are too large."""
    if not np.isfinite(D.max()):
        scale = max(float(np.abs(x).max()), float(np.abs(y).max()))
        raise ValueError(
            f"x, y: the costs overflow to inf in float64 (coordinates up to {scale:.3g}); "
            "rescale the points, e.g. divide them by their largest coordinate"
        )
    return D


def pairwise(x, y=None, metric="sqeuclidean") -> np.ndarray:
    """Cost matrix between two point clouds.

    Parameters
    ----------
    x : array_like, shape (n, d) or (n,)
        Source points (a 1-D array is n points on a line).
    y : array_like, shape (m, d) or (m,), optional
        Target points; ``x`` when omitted.
    metric : {"sqeuclidean", "euclidean", "cityblock"} or float
        ``"sqeuclidean"``: ``|x_i - y_j|^2``; ``"euclidean"``: ``|x_i - y_j|``;
        ``"cityblock"``: the L1 distance; a number ``p > 0``: ``|x_i - y_j|^p``.

    Returns
    -------
    ndarray, shape (n, m)
        Non-negative float64 costs.

    Raises
    ------
    TypeError
        If ``x`` or ``y`` is not real numbers (strings, complex, objects);
        the message names the argument.
    ValueError
        On an unknown metric, mismatched dimensions, non-finite points, or
        points so large that their costs overflow to ``inf``.
    """
    metric = _check_metric(metric)
    x = _points(x, "x")
    y = x if y is None else _points(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"y: points have dimension {y.shape[1]} but x has {x.shape[1]}")
    if isinstance(metric, float):
        D = cdist(x, y, "euclidean")
        with np.errstate(over="ignore"):  # an overflow is reported by _check_overflow, naming x and y
            D = D**metric if metric != 1.0 else D
        return _check_overflow(D, x, y)
    D = cdist(x, y, metric)
    return _check_overflow(np.maximum(D, 0.0), x, y)  # sqeuclidean can round to -0.0


def grid_points(shape) -> np.ndarray:
    """Bin centres of a regular grid of ``shape``, each axis scaled to [0, 1], in C order.

    An axis of length 1 sits at 0.
    """
    shape = tuple(int(s) for s in np.atleast_1d(shape))
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"shape: grid shape must be positive integers; got {shape}")
    axes = [np.linspace(0.0, 1.0, s) if s > 1 else np.zeros(1) for s in shape]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


def grid(shape, metric="sqeuclidean", shape_b=None) -> np.ndarray:
    """Cost between the bins of histograms on a regular grid (e.g. image pixels).

    Parameters
    ----------
    shape : int or tuple of int
        Grid shape of the source histogram, e.g. ``(28, 28)``; positions are
        scaled so each axis spans [0, 1].
    metric : str or float
        As in :func:`pairwise`.
    shape_b : tuple of int, optional
        Grid shape of the target; ``shape`` when omitted.

    Returns
    -------
    ndarray, shape (prod(shape), prod(shape_b))
        Costs between bins flattened in C (row-major) order, matching
        ``image.ravel()``.
    """
    xa = grid_points(shape)
    xb = xa if shape_b is None else grid_points(shape_b)
    if xa.shape[1] != xb.shape[1]:
        raise ValueError(f"shape_b: grid has {xb.shape[1]} axes but shape has {xa.shape[1]}")
    return pairwise(xa, xb, metric)
