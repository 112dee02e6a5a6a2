"""Hypothesis strategies for entropic OT problems, and plain seeded generators.

Hypothesis draws the *structure* of a problem (shape, cost family, weight
family, which bins carry no mass, total mass, regularisation) and a seed;
numpy fills in the numbers from that seed. Shrinking therefore simplifies
the structure, and every example is reproducible from what hypothesis prints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: Settings for property tests: modest example counts so the suite stays fast on 2 cores.
PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

COST_KINDS = ("uniform", "sqeuclidean", "euclidean", "cityblock_grid", "integer")
WEIGHT_KINDS = ("uniform", "random", "dirichlet_sparse", "lognormal")


@dataclass
class Problem:
    C: np.ndarray
    a: np.ndarray
    b: np.ndarray
    reg: float

    def __repr__(self):  # short, for hypothesis failure reports
        return (f"Problem(shape={self.C.shape}, reg={self.reg:.3g}, mass={self.a.sum():.6g}, "
                f"zero_a={int((self.a == 0).sum())}, zero_b={int((self.b == 0).sum())}, "
                f"C in [{self.C.min():.3g}, {self.C.max():.3g}])")


def make_cost(rng: np.random.Generator, n: int, m: int, kind: str = "uniform") -> np.ndarray:
    """A non-negative (n, m) cost with max about 1."""
    if kind == "uniform":
        return rng.random((n, m))
    if kind in ("sqeuclidean", "euclidean"):
        x, y = rng.random((n, 2)), rng.random((m, 2))
        D = np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))
        return D**2 / 2 if kind == "sqeuclidean" else D / np.sqrt(2)
    if kind == "cityblock_grid":
        # points on an integer grid: many exactly tied costs
        x, y = rng.integers(0, 5, (n, 2)), rng.integers(0, 5, (m, 2))
        return np.abs(x[:, None, :] - y[None, :, :]).sum(-1) / 8.0
    if kind == "integer":
        return rng.integers(0, 4, (n, m)).astype(np.float64) / 3.0
    raise ValueError(kind)


def make_weights(rng: np.random.Generator, size: int, kind: str = "random", n_zero: int = 0) -> np.ndarray:
    """Positive weights summing to 1, with ``n_zero`` bins (never all) set to zero mass."""
    if kind == "uniform":
        w = np.ones(size)
    elif kind == "random":
        w = rng.random(size) + 0.05
    elif kind == "dirichlet_sparse":
        w = rng.dirichlet(np.full(size, 0.3)) + 1e-6
    elif kind == "lognormal":
        w = rng.lognormal(0.0, 2.0, size)
    else:
        raise ValueError(kind)
    n_zero = min(n_zero, size - 1)
    if n_zero:
        w[rng.choice(size, n_zero, replace=False)] = 0.0
    return w / w.sum()


def make_problem(seed: int, n: int, m: int, reg: float, cost: str = "uniform", weights: str = "random",
                 zero_a: int = 0, zero_b: int = 0, mass: float = 1.0) -> Problem:
    """A reproducible random problem; ``a`` and ``b`` both total ``mass``."""
    rng = np.random.default_rng(seed)
    C = make_cost(rng, n, m, cost)
    a = make_weights(rng, n, weights, zero_a) * mass
    b = make_weights(rng, m, weights, zero_b) * mass
    b *= a.sum() / b.sum()
    return Problem(C, a, b, reg)


@st.composite
def problems(draw, min_size=1, max_size=40, min_reg=1e-2, max_reg=1.0, zero_mass=True, square=False,
             cost_kinds=COST_KINDS, weight_kinds=WEIGHT_KINDS, regs=None):
    """Random problems: rectangular shapes, several cost and weight families,
    sometimes zero-mass bins, sometimes a total mass other than 1, and a
    log-uniform ``reg`` in ``[min_reg, max_reg]`` (or one of ``regs``)."""
    n = draw(st.integers(min_size, max_size))
    m = n if square else draw(st.integers(min_size, max_size))
    cost = draw(st.sampled_from(cost_kinds))
    weights = draw(st.sampled_from(weight_kinds))
    zero_a = draw(st.integers(0, n - 1)) if zero_mass and draw(st.booleans()) else 0
    zero_b = draw(st.integers(0, m - 1)) if zero_mass and draw(st.booleans()) else 0
    mass = draw(st.sampled_from([1.0, 1.0, 0.25, 7.5]))
    reg = draw(st.sampled_from(regs)) if regs else float(10.0 ** draw(st.floats(np.log10(min_reg), np.log10(max_reg))))
    seed = draw(st.integers(0, 2**32 - 1))
    return make_problem(seed, n, m, reg, cost, weights, zero_a, zero_b, mass)
