"""The plan interface: the few verbs the Sinkhorn and SNS loops ask of a transport plan.

The loops never touch the plan's storage or call a kernel by name: they ask
a :class:`Plan` for its sums at ``(f, g)``, one Sinkhorn iteration, the
Hessian's off-diagonal block above a threshold ``tau`` and the final plan.
The convention is that of the whole package,
``P(f, g)_ij = exp((f_i + g_j - C_ij) / reg)`` on the plan's support (every
``(i, j)`` for a dense plan; a sparse plan holds a subset and reports a
bound on the mass outside it).

A new kind of plan (a sparse support, a batch) implements this class; the
loops in :mod:`~snsot.solvers.sinkhorn` and :mod:`~snsot.solvers.sns` need
no change. :class:`~snsot.solvers._dense.DensePlan` is the first
implementation; ``tests/test_plan.py`` drives the same loops with a second,
pure-numpy one.

What the loops ask of the marginal penalty (balanced or relaxed) is a
separate seam: :mod:`~snsot.solvers._marginals`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import _kernels as K

__all__ = ["Plan", "PlanPoint", "SinkhornStep", "FinalPlan", "StoredBase", "WHOLE_PLAN", "base_scalings"]

#: Quota of :meth:`Plan.new_point` asking for no candidates but a count of the
#: entries above ``tau``: the Newton matrix will be the whole plan
#: (:meth:`Plan.hessian_block` with this quota).
WHOLE_PLAN = -1


@dataclass
class SinkhornStep:
    """One Sinkhorn iteration measured at ``(f, g)`` and ready to be taken.

    Attributes
    ----------
    error : float
        Row error of the iterate it starts from (its columns are exact), as
        the marginals measure it (``marginals.row_error``; for exact
        marginals ``||P(f, g) 1 - a||_1``).
    advance : callable
        ``advance() -> (f_new, g_new)``: the next iterate (row update, then
        exact column update). Valid until the plan is next asked to move.
    """

    error: float
    advance: Callable[[], tuple]


class PlanPoint:
    """Potentials ``(f, g)`` with the plan's sums there, filled by :meth:`Plan.evaluate`.

    Attributes
    ----------
    f, g : ndarray or None
        The point (None until evaluated).
    row, col : ndarray
        ``P 1`` and ``P^T 1`` at the point (``inf`` where the plan there is not finite).
    total : float
        ``sum(P)``.
    count : int
        Entries ``>= tau`` (only for the quota :data:`WHOLE_PLAN`; -1 when not counted).
    quota : int
        Per-row candidate quota of the sparse Hessian (0: none; :data:`WHOLE_PLAN`).
    dual, error : float
        Dual value and marginal error, set by the loop from its marginals.

    A plan may hang its own candidate storage on a point (see
    :meth:`Plan.hessian_block`); the loop reads only the fields above and
    :attr:`fullest_row`.
    """

    def __init__(self, n: int, m: int, quota: int):
        self.quota = quota
        self.row = np.empty(n)
        self.col = np.empty(m)
        self.count = -1
        self.f = self.g = None
        self.total = self.dual = self.error = np.nan

    @property
    def fullest_row(self) -> int:
        """Most Hessian candidates kept in one row at this point (0 without candidates)."""
        return 0

    def swap(self, other: "PlanPoint") -> None:
        """Exchange everything held with ``other``, a point of the same plan and kind (O(1): no copy)."""
        if type(other) is not type(self):
            raise TypeError(f"other: a {type(self).__name__} swaps only with its own kind; got {type(other).__name__}")
        self.__dict__, other.__dict__ = other.__dict__, self.__dict__


@dataclass
class FinalPlan:
    """The plan at the final potentials, measured afresh.

    Attributes
    ----------
    plan : ndarray or scipy.sparse.csr_matrix
        ``P(f, g)`` (a sparse plan is returned in CSR form).
    row_sum, col_sum : ndarray
        Its row and column sums.
    cost : float
        ``<C, P>`` over the support.
    outside_mass : float
        A bound on the mass ``P(f, g)`` would put outside the stored support
        (0 for a dense plan).
    """

    plan: object
    row_sum: np.ndarray
    col_sum: np.ndarray
    cost: float
    outside_mass: float = 0.0


class Plan(ABC):
    """A transport plan ``P(f, g)`` of one problem, as the solver loops see it.

    A plan serves one problem at a time (:meth:`attach`); it may keep state
    between calls (e.g. a stored plan at a base point), which is why the
    verbs are methods and not functions of ``(f, g)``.
    """

    @property
    @abstractmethod
    def shape(self) -> tuple[int, int]:
        """``(n, m)``."""

    @property
    @abstractmethod
    def support_size(self) -> int:
        """Entries the plan holds (``n * m`` for a dense plan)."""

    @property
    @abstractmethod
    def max_row_length(self) -> int:
        """Most entries in one row (``m`` for a dense plan): the largest useful row quota."""

    @abstractmethod
    def attach(self, problem) -> None:
        """Serve ``problem`` (same cost and shape, e.g. another reg of epsilon-scaling)."""

    # -- Sinkhorn ------------------------------------------------------------
    @abstractmethod
    def sinkhorn_cols(self, f, marginals) -> np.ndarray:
        """``g`` maximising the dual given ``f``: the column half-step (columns exact).

        ``g = col_exponent * (reg log b - softmin_i(C_ij - f_i))`` with the
        exponent of ``marginals`` (1 for exact marginals).
        """

    @abstractmethod
    def sinkhorn_step(self, f, g, marginals) -> SinkhornStep:
        """Measure the iterate ``(f, g)`` (columns exact) and prepare the next iteration.

        The row half-step is ``f <- row_exponent * (reg log a - softmin_j(C_ij - g_j))``.
        """

    # -- Newton --------------------------------------------------------------
    def new_point(self, quota: int) -> PlanPoint:
        """An empty :class:`PlanPoint` whose evaluation keeps up to ``quota`` Hessian candidates per row.

        ``quota`` may be :data:`WHOLE_PLAN` (no candidates, a count of the
        entries above ``tau``) or 0 (sums only).
        """
        n, m = self.shape
        return PlanPoint(n, m, quota)

    @abstractmethod
    def evaluate(self, point: PlanPoint, f, g, tau: float, pinned: bool = False) -> PlanPoint | None:
        """Fill ``point`` with the sums at ``(f, g)`` and, by its quota, candidates or a count above ``tau``.

        A point whose plan is not finite gets ``inf`` sums (a rejected trial).
        With ``pinned=True`` the plan's state must not change (a Sinkhorn step
        is pending on it); None when ``(f, g)`` cannot be evaluated so.
        """

    @abstractmethod
    def hessian_block(self, point: PlanPoint, tau: float):
        """The Newton matrix's off-diagonal block at ``point``: an :class:`~snsot.solvers.linalg.OffDiagonal`.

        With a quota of candidates: the kept entries ``>= tau``. With
        :data:`WHOLE_PLAN`: the whole plan. None when it cannot be formed
        (the plan there is not finite).
        """

    # -- Result --------------------------------------------------------------
    @abstractmethod
    def final(self, f, g) -> FinalPlan:
        """The plan at ``(f, g)``, measured afresh; the plan's own state may be given up to hold it."""


class StoredBase:
    """The scalings of a plan kept as its values ``B = P(f0, g0)`` at a base point.

    Shared by :class:`~snsot.solvers._dense.DensePlan` and
    :class:`~snsot.solvers._sparse_plan.SparsePlan`, which provide
    ``problem``, ``f0``/``g0`` (None when no base is held) and :meth:`rebase`.
    """

    #: The constant of the last :meth:`scalings` (units of reg): its ``u`` is
    #: ``exp((f - f0)/reg - shift)`` and its ``v`` is ``exp((g - g0)/reg + shift)``.
    shift = 0.0

    def scalings(self, f, g):
        """``(u, v)`` with ``P(f, g) = diag(u) B diag(v)``, or None when ``(f, g)`` is too far from the base.

        The rule of :func:`base_scalings`: ``u`` and ``v`` carry opposite
        constant factors ``exp(-+shift)`` (see :attr:`shift`), which keep both
        in range and cancel in the plan; the drift must stay within
        :data:`snsot._kernels.BASE_DRIFT`.
        """
        if self.f0 is None:
            return None
        sc = base_scalings(f, g, self.f0, self.g0, self.problem.reg, K.BASE_DRIFT)
        if sc is None:
            return None
        u, v, self.shift = sc
        return u, v

    def scalings_at(self, f, g):
        """:meth:`scalings` at ``(f, g)``, first moving the base there (:meth:`rebase`) if it is too far.

        None only when the plan at ``(f, g)`` itself is not finite.
        """
        sc = self.scalings(f, g)
        if sc is None:
            self.rebase(f, g)
            sc = self.scalings(f, g)
        return sc


def base_scalings(f, g, f0, g0, reg: float, max_drift: float):
    """``(u, v, shift)`` with ``P(f, g) = diag(u) P(f0, g0) diag(v)``, or None beyond ``max_drift``.

    The absorption rule both stored-base plans (dense and CSR) use. The plan
    depends on ``f`` and ``g`` only through ``f_i + g_j``: moving a constant
    ``shift`` from ``x = (f - f0) / reg`` to ``y = (g - g0) / reg`` changes no
    product ``u_i v_j``. Centring ``x``'s range minimises the drift (Newton
    steps move along ``(1, -1)`` freely, which would otherwise force a rebase,
    an exponential pass, at nearly every step). None also for empty sides and
    NaN.
    """
    n, m = len(f), len(g)
    x, y = np.empty(n), np.empty(m)
    # One nogil kernel instead of a dozen small NumPy calls holding the GIL
    # (numpy twin: snsot._reference.centred_scalings); the exponentials stay
    # NumPy's, whose last bits Newton steps near the round-off floor notice.
    c = K.centred_exponents(f, g, f0, g0, reg, max_drift, x, y)
    if c != c:  # beyond max_drift, an empty side, or NaN
        return None
    return np.exp(x, out=x), np.exp(y, out=y), c
