"""Problems given without a dense cost matrix: two point clouds.

A :class:`PointCloud` holds the points and the ground cost ``c(x, y) = |x - y|^p``
and computes costs only for the pairs asked for, so a solver that works on a
truncated support (:mod:`snsot.support`) needs memory proportional to that
support, never to ``n * m``.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["PointCloud"]

_COST_NAMES = {"sqeuclidean": 2.0, "euclidean": 1.0}

#: Dimensions for which the truncated (spatial-tree) path is meant; above this
#: a k-d tree prunes poorly and the dense cost is the better choice when it fits.
MAX_TREE_DIM = 3


def _cost_power(cost) -> float:
    if isinstance(cost, str):
        if cost in _COST_NAMES:
            return _COST_NAMES[cost]
        raise ValueError(
            f"cost: unknown cost {cost!r}; expected 'sqeuclidean', 'euclidean' or a positive power p"
        )
    if isinstance(cost, numbers.Real) and not isinstance(cost, bool):
        p = float(cost)
        if np.isfinite(p) and p > 0:
            return p
        raise ValueError(f"cost: a power p of the distance must be positive and finite; got {cost!r}")
    raise ValueError(f"cost: expected 'sqeuclidean', 'euclidean' or a positive number p; got {cost!r}")


def _points(x, name: str) -> np.ndarray:
    try:
        x = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: points must be a numeric (n, d) array ({exc})") from None
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name}: points must be an (n, d) array; got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name}: point cloud must be non-empty; got shape {x.shape}")
    bad = ~np.isfinite(x)
    if bad.any():
        i, k = np.argwhere(bad)[0]
        raise ValueError(f"{name}: coordinates must be finite; found {x[i, k]!r} at point {i}, axis {k}")
    return np.ascontiguousarray(x)


class PointCloud:
    r"""Two point clouds and the cost ``C_ij = |x_i - y_j|^p`` between them.

    Parameters
    ----------
    x : array_like, shape (n, d) or (n,)
        Source points (a 1-D array is n points on a line).
    y : array_like, shape (m, d) or (m,)
        Target points, same dimension ``d`` as ``x``.
    cost : {"sqeuclidean", "euclidean"} or float, default "sqeuclidean"
        ``"sqeuclidean"`` is ``p = 2``, ``"euclidean"`` is ``p = 1``; a number
        ``p > 0`` gives ``|x - y|^p`` (Euclidean norm).

    Attributes
    ----------
    x, y : ndarray
        The points as contiguous float64 ``(n, d)`` and ``(m, d)`` arrays.
    p : float
        The power of the Euclidean distance.
    shape : tuple
        ``(n, m)``, the shape the dense cost would have.

    Raises
    ------
    ValueError
        On non-finite coordinates, empty clouds, mismatched dimensions or an
        unknown ``cost``; the message names the argument.
    """

    def __init__(self, x, y, cost="sqeuclidean"):
        self.p = _cost_power(cost)
        self.x = _points(x, "x")
        self.y = _points(y, "y")
        if self.x.shape[1] != self.y.shape[1]:
            raise ValueError(
                f"y: points have dimension {self.y.shape[1]} but x has dimension {self.x.shape[1]}"
            )

    @property
    def shape(self) -> tuple[int, int]:
        return self.x.shape[0], self.y.shape[0]

    @property
    def dim(self) -> int:
        return self.x.shape[1]

    @property
    def cost_name(self) -> str:
        for name, p in _COST_NAMES.items():
            if p == self.p:
                return name
        return repr(self.p)

    def __repr__(self) -> str:
        n, m = self.shape
        return f"PointCloud(n={n}, m={m}, dim={self.dim}, cost={self.cost_name})"

    def _from_distance_sq(self, d2: np.ndarray) -> np.ndarray:
        d2 = np.maximum(d2, 0.0)
        if self.p == 2.0:
            return d2
        if self.p == 1.0:
            return np.sqrt(d2)
        return d2 ** (0.5 * self.p)

    def column_tree(self):
        """A :class:`snsot._tree.ColumnTree` over ``y``, built on first use and kept (the points never change)."""
        tree = getattr(self, "_column_tree", None)
        if tree is None:
            from ._tree import ColumnTree

            tree = self._column_tree = ColumnTree(self.y)
        return tree

    def row_order(self):
        """The rows (``x``) in the leaf order of a k-d tree over them, computed on first use and kept.

        The support search visits rows in this order: neighbouring rows walk
        the same nodes of the column tree, which then stay in cache.
        """
        order = getattr(self, "_row_order", None)
        if order is None:
            from ._tree import spatial_order

            order = self._row_order = spatial_order(self.x)
        return order

    def pair_costs(self, rows, cols) -> np.ndarray:
        """Costs ``C[rows[k], cols[k]]`` of the listed pairs (float64), without forming ``C``."""
        rows = np.asarray(rows, dtype=np.intp)
        cols = np.asarray(cols, dtype=np.intp)
        diff = self.x[rows] - self.y[cols]
        return self._from_distance_sq(np.einsum("kd,kd->k", diff, diff))

    def dense_cost(self, max_bytes: float = 4e9) -> np.ndarray:
        """The full ``(n, m)`` cost matrix; a ValueError when it would exceed ``max_bytes``."""
        n, m = self.shape
        size = 8.0 * n * m
        if size > max_bytes:
            raise ValueError(
                f"x, y: the dense cost of {n} x {m} points needs {size / 1e9:.3g} GB "
                f"(limit {max_bytes / 1e9:.3g} GB); use the truncated solver or fewer points"
            )
        from scipy.spatial.distance import cdist

        # cdist's direct form is exact for coincident points (the expanded
        # |x|^2 + |y|^2 - 2 x.y form is not).
        return self._from_distance_sq(cdist(self.x, self.y, "sqeuclidean"))
