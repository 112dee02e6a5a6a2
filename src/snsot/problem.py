"""The entropic optimal transport problem: the one place inputs are validated.

Every solver receives an :class:`OTProblem` and may trust it: the cost is an
``(n, m)`` float array whose entries are non-negative or ``+inf`` (a
forbidden pair), the weights are finite, non-negative and of equal total
mass (balanced problems), the allowed pairs can carry them, ``reg`` is a
positive float and ``reg_m`` a pair of positive floats (``inf``: a hard
constraint; both ``inf`` is balanced OT).
Negative costs are accepted from users and shifted before a solver sees
them (:meth:`OTProblem.shifted`).
"""

from __future__ import annotations

import functools

from dataclasses import dataclass

import numpy as np

from ._feasibility import check_feasible
from ._validate import RULES, check, real_array

__all__ = ["OTProblem", "MASS_RTOL", "parse_reg_m"]

#: Largest relative difference allowed between the totals of ``a`` and ``b``.
MASS_RTOL = 1e-8


def _first_bad(x: np.ndarray, bad: np.ndarray) -> str:
    """Describe the first entry of ``x`` flagged in ``bad`` for an error message."""
    index = np.unravel_index(int(np.flatnonzero(bad.ravel())[0]), x.shape)
    index = int(index[0]) if len(index) == 1 else tuple(int(i) for i in index)
    return f"found {x[index].item()!r} at index {index}"


def _require_finite_nonnegative(x: np.ndarray, what: str) -> tuple[float, float]:
    """``(min, max)`` of ``x``; raise ``ValueError("<what> must be finite; found ...")``
    (or non-negative) naming the first offender.

    Two reductions check a valid array (NaN propagates through both, an
    infinity is the minimum or the maximum); the masks that find the
    offender are built only when there is one.
    """
    lo, hi = float(x.min()), float(x.max())
    if np.isfinite(lo) and np.isfinite(hi) and lo >= 0:
        return lo, hi
    for bad, must in ((~np.isfinite(x), "finite"), (x < 0, "non-negative")):
        if bad.any():
            raise ValueError(f"{what} must be {must}; {_first_bad(x, bad)}")
    raise AssertionError("unreachable: min/max flagged an entry that the masks did not")


def positive_float(x, name: str) -> float:
    """``float(x)``, or an error naming ``name`` unless it is a positive finite number."""
    return check(name, x, RULES["reg"])


def parse_reg_m(reg_m) -> tuple[float, float]:
    """``reg_m`` as a pair ``(rho_1, rho_2)`` of positive floats (``inf`` allowed).

    Raises
    ------
    ValueError
        Naming ``reg_m`` when it is not a positive number or a pair of them.
    """
    if isinstance(reg_m, (str, bytes)):
        raise ValueError(f"reg_m: must be a positive number or a pair of them; got {reg_m!r}")
    try:
        values = [reg_m] if np.ndim(reg_m) == 0 else list(reg_m)
    except TypeError:
        raise ValueError(f"reg_m: must be a positive number or a pair of them; got {reg_m!r}") from None
    if len(values) not in (1, 2):
        raise ValueError(f"reg_m: must be a number or a pair (rho_a, rho_b); got {len(values)} values")
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)):
            raise ValueError(f"reg_m: must be a positive number or a pair of them; got {reg_m!r}")
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"reg_m: must be a positive number or a pair of them; got {reg_m!r}") from None
        if not x > 0:  # also NaN
            raise ValueError(f"reg_m: marginal penalties must be positive (inf for a hard constraint); got {v!r}")
        out.append(x)
    return (out[0], out[-1])


def _as_weights(w, name: str, size: int) -> np.ndarray:
    if w is None:
        return np.full(size, 1.0 / size)
    w = real_array(w, name, what="weights", reject_nan=False)  # the finite check below names NaN
    if w.ndim != 1:
        raise ValueError(f"{name}: weights must be a 1-D array; got shape {w.shape}")
    if w.size != size:
        raise ValueError(
            f"{name}: has {w.size} weights but the cost has {size} "
            f"{'rows' if name == 'a' else 'columns'}"
        )
    _require_finite_nonnegative(w, f"{name}: weights")
    if not w.sum() > 0:
        raise ValueError(f"{name}: weights must have a positive total; all are zero")
    return w


def _check_cost(C: np.ndarray) -> tuple[float, float, bool]:
    """``(min, max)`` of the finite entries of ``C`` and whether a pair is forbidden;
    an error naming ``C`` for NaN or ``-inf``.

    ``+inf`` marks a forbidden pair; negative costs are allowed (the solve
    shifts them, see :attr:`OTProblem.cost_offset`).
    """
    lo, hi = float(C.min()), float(C.max())  # the only two passes over a valid C
    if np.isfinite(lo) and np.isfinite(hi):
        return lo, hi, False
    bad = np.isnan(C) | (C == -np.inf)
    if bad.any():
        raise ValueError(f"C: cost must be finite or +inf (a forbidden pair); {_first_bad(C, bad)}")
    finite = C[np.isfinite(C)]
    if finite.size == 0:
        raise ValueError("C: every cost is +inf, so every pair is forbidden and nothing can be transported")
    return float(finite.min()), float(finite.max()), True


def _dead_bins(C, a, b, reg_m):
    """:attr:`OTProblem.dead_bins`; a ``ValueError`` naming ``C`` if such a bin is on a hard side.

    With KL-relaxed marginals any pattern of forbidden pairs is feasible
    except a bin of a hard side (``rho = inf``) with mass and no allowed pair
    towards the other side's mass; a hard row that has one can put its mass
    there, and the relaxed columns take any amount.
    """
    allowed = np.isfinite(C) & (a[:, None] > 0) & (b[None, :] > 0)
    dead = []
    for side, (w, reach, rho) in enumerate(((a, allowed.any(1), reg_m[0]), (b, allowed.any(0), reg_m[1]))):
        idx = np.flatnonzero((w > 0) & ~reach)
        if len(idx) and np.isinf(rho):
            what = ("row", "a", "columns", "b") if side == 0 else ("column", "b", "rows", "a")
            raise ValueError(f"C: {what[0]} {int(idx[0])} has mass in {what[1]} (a hard side, reg_m inf) but every "
                             f"cost towards the {what[2]} with mass in {what[3]} is +inf; nothing can carry it")
        dead.append(idx)
    return dead[0], dead[1]


@dataclass(frozen=True, eq=False)
class OTProblem:
    r"""An entropic optimal transport problem between weights ``a`` and ``b``.

    The problem is

    .. math::
        \min_{P \ge 0,\; P 1 = a,\; P^T 1 = b}
        \langle C, P\rangle + \varepsilon \sum_{ij} P_{ij} (\log P_{ij} - 1),

    with :math:`\varepsilon` = ``reg``. Its concave dual in the potentials
    ``f`` (length n) and ``g`` (length m) is

    .. math::
        D(f, g) = \langle a, f\rangle + \langle b, g\rangle
        - \varepsilon \sum_{ij} \exp((f_i + g_j - C_{ij}) / \varepsilon),

    and the plan is :math:`P_{ij} = \exp((f_i + g_j - C_{ij})/\varepsilon)`.
    This convention is shared by every solver and by :class:`~snsot.OTResult`.

    Parameters
    ----------
    C : array_like, shape (n, m)
        Cost matrix. Entries may be negative (entropic OT is invariant to
        adding a constant to the cost; solvers work on ``C - min C``) or
        ``+inf``: a forbidden pair, where the plan is exactly 0. NaN and
        ``-inf`` are refused, and so is a pattern of forbidden pairs that
        cannot carry the weights (a row or column with mass and no finite
        cost to the other side's mass, or no feasible plan at all: the
        message names the first offending row or column; unbalanced, see
        :attr:`dead_bins` and :meth:`potential_shifts`). float32 input
        stays float32 (kernels compute in float64); anything else becomes
        float64.
    a, b : array_like, shape (n,) and (m,), optional
        Source and target weights, finite and non-negative. ``None`` means
        uniform with total mass 1. Weights need not be normalised, but their
        totals must agree to a relative ``1e-8``; ``b`` is then rescaled to
        the total of ``a`` exactly, so marginal errors can reach round-off.
    reg : float
        Entropic regularisation :math:`\varepsilon > 0` (the paper's
        :math:`1/\eta`).
    reg_m : float or pair of float, optional
        Unbalanced OT: the marginal constraints become penalties
        ``rho_1 KL(P 1 | a) + rho_2 KL(P^T 1 | b)`` with ``(rho_1, rho_2) =
        reg_m`` (one number for both sides; POT's name and objective, see
        :mod:`snsot.solvers._kl_marginals` for the dual). ``inf`` on a side keeps
        its constraint; ``None`` (default) or ``inf`` on both is balanced OT.
        With a finite side the totals of ``a`` and ``b`` may differ and are
        kept as given. Unbalanced OT is not invariant to a constant added to
        the cost, and a forbidden pair may leave a bin nothing to move to:
        negative costs are solved exactly (:meth:`potential_shifts`) and such
        bins are set aside (:attr:`dead_bins`).

    Raises
    ------
    ValueError
        On any invalid input; the message names the argument and the problem.
    """

    C: np.ndarray
    a: np.ndarray
    b: np.ndarray
    reg: float
    reg_m: tuple[float, float] = (np.inf, np.inf)

    def __init__(self, C, a=None, b=None, reg=None, reg_m=None):
        if isinstance(C, OTProblem):
            raise TypeError("C: expected a cost matrix, got an OTProblem")
        C = real_array(C, "C", what="cost", dtype=None, reject_nan=False)  # _check_cost names NaN
        if C.ndim != 2:
            raise ValueError(f"C: cost must be a 2-D array (n, m); got {C.ndim}-D shape {C.shape}")
        if C.shape[0] == 0 or C.shape[1] == 0:
            raise ValueError(f"C: cost must be non-empty; got shape {C.shape}")
        C = np.ascontiguousarray(C, dtype=np.float32 if C.dtype == np.float32 else np.float64)
        *cost_range, forbidden = _check_cost(C)

        n, m = C.shape
        a = _as_weights(a, "a", n)
        b = _as_weights(b, "b", m)
        reg_m = (np.inf, np.inf) if reg_m is None else parse_reg_m(reg_m)
        ta, tb = a.sum(), b.sum()
        # Unbalanced problems keep their totals as given: the penalty decides how much mass moves.
        if np.isinf(reg_m).all():
            if abs(ta - tb) > MASS_RTOL * max(ta, tb):
                raise ValueError(
                    f"b: total mass {tb!r} differs from the total of a {ta!r} "
                    f"(relative difference {abs(ta - tb) / max(ta, tb):.3g} > {MASS_RTOL:g}); "
                    "normalise a and b to the same total, or relax the marginals with reg_m"
                )
            if tb != ta:
                b = b * (ta / tb)
        elif forbidden:
            self.__dict__["dead_bins"] = _dead_bins(C, a, b, reg_m)

        if reg is None:
            raise ValueError("reg: the entropic regularisation is required")
        reg = positive_float(reg, "reg")

        object.__setattr__(self, "C", C)
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "reg", reg)
        object.__setattr__(self, "reg_m", reg_m)
        self.__dict__["cost_range"] = tuple(cost_range)
        if forbidden and np.isinf(reg_m).all():
            check_feasible(C, a, b)

    @functools.cached_property
    def cost_range(self) -> tuple[float, float]:
        """``(min C, max C)`` over the finite entries (``+inf`` marks a forbidden pair), computed once."""
        lo, hi = float(self.C.min()), float(self.C.max())
        if not np.isfinite(hi):
            finite = self.C[np.isfinite(self.C)]
            lo, hi = float(finite.min()), float(finite.max())
        return lo, hi

    @property
    def cost_offset(self) -> float:
        """The constant the solvers subtract from ``C``: its minimum when negative, else 0.

        Entropic OT is invariant to adding a constant ``s`` to the cost: the
        plan is unchanged, ``f`` shifts by ``s`` and the objective by ``s``
        times the mass. Solvers work on ``C - s >= 0`` (see :meth:`shifted`);
        :func:`snsot.solve` reports the plan, potentials, cost and objective
        of the original ``C``.
        """
        return min(self.cost_range[0], 0.0)

    def potential_shifts(self) -> tuple[float, float]:
        """``(s_1, s_2)``, ``s_1 + s_2 = cost_offset``: how the potentials of :meth:`shifted` map back.

        Balanced, ``f`` takes the whole offset. Unbalanced, adding ``s`` to
        the cost is no longer an invariance, but ``s sum(P)`` splits into
        ``s_1 sum(P 1) + s_2 sum(P^T 1)`` and ``rho KL(r | a) + s_1 sum(r) =
        rho KL(r | a exp(-s_1 / rho)) + rho (m(a) - m(a exp(-s_1 / rho)))``:
        the problem on ``C - s`` with weights ``a exp(-s_1 / rho_1)``, ``b
        exp(-s_2 / rho_2)`` has the same plan, potentials ``f - s_1``, ``g -
        s_2``, and its objective differs by :meth:`objective_offset`. A hard
        side takes the whole offset (there ``sum(r)`` is fixed); two relaxed
        sides share it in proportion to their ``rho`` (the same factor on
        both weights).
        """
        s = self.cost_offset
        rho_1, rho_2 = self.reg_m
        if s == 0:
            return 0.0, 0.0
        if np.isinf(rho_1):
            return s, 0.0
        if np.isinf(rho_2):
            return 0.0, s
        return s * rho_1 / (rho_1 + rho_2), s * rho_2 / (rho_1 + rho_2)

    def objective_offset(self) -> float:
        """The original objective minus that of :meth:`shifted` (see :meth:`potential_shifts`)."""
        if self.balanced:
            return self.cost_offset * self.mass
        total = 0.0
        rows, cols = self.support()  # the bins the solvers see (dead bins are charged apart)
        for s_k, rho_k, w in zip(self.potential_shifts(), self.reg_m, (self.a[rows], self.b[cols])):
            if s_k == 0:
                continue
            m_k = float(w.sum())
            total += s_k * m_k if np.isinf(rho_k) else -rho_k * m_k * float(np.expm1(-s_k / rho_k))
        return total

    def shifted(self) -> "OTProblem":
        """The problem on ``C - cost_offset``, whose finite costs are non-negative (``self`` if no shift).

        The shifted cost is float64 even for a float32 ``C``, so that the shift is exact.
        Unbalanced, the weights are rescaled as :meth:`potential_shifts` says.
        """
        offset = self.cost_offset
        if offset == 0:
            return self
        lo, hi = self.cost_range
        a, b = self.a, self.b
        if not self.balanced:
            with np.errstate(over="ignore"):
                a, b = (w if np.isinf(r) else w * np.exp(-s / r)
                        for w, s, r in zip((a, b), self.potential_shifts(), self.reg_m))
            if not (np.isfinite(a.sum()) and np.isfinite(b.sum())):
                raise ValueError(f"C: negative costs (min {lo!r}) against reg_m {self.reg_m} make the optimal "
                                 "plan's mass overflow float64 (it grows like exp(-min C / rho)); "
                                 "shift C or raise reg_m")
        # in float64: float32 - float32 rounds (to 6e-8 relative, i.e. a different
        # problem), while two float32 values differ exactly in float64
        p = _trusted(self.C.astype(np.float64) - offset, a, b, self.reg, self.reg_m)
        p.__dict__["cost_range"] = (0.0, hi - lo)
        return p

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, m)``, the shape of the cost and of the plan."""
        return self.C.shape

    @property
    def balanced(self) -> bool:
        """Whether both marginals are hard constraints (``reg_m`` infinite on both sides)."""
        return bool(np.isinf(self.reg_m).all())

    @property
    def mass(self) -> float:
        """Total mass of ``a`` (equal to that of ``b``); unbalanced: the geometric mean of the two totals.

        A scale for tolerances and shifts, not a constraint.
        """
        if self.balanced:
            return float(self.a.sum())
        return float(np.sqrt(self.a.sum() * self.b.sum()))

    @property
    def dead_bins(self) -> tuple[np.ndarray, np.ndarray]:
        """Unbalanced: bins with mass whose every cost towards the other side's mass is ``+inf``.

        Such a row can send nothing: its plan row is 0, the penalty charges
        ``rho_1 KL(0 | a_i) = rho_1 a_i``, and its potential is ``+inf``
        (the dual's maximiser: ``rho_1 (1 - exp(-f / rho_1)) -> rho_1``).
        Empty when nothing is forbidden, and always empty balanced (there
        such a bin is infeasible and refused).
        """
        return self.__dict__.get("dead_bins", (np.empty(0, np.intp), np.empty(0, np.intp)))

    def support(self) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the bins of ``a`` and ``b`` that carry mass (and, unbalanced, can move some)."""
        rows, cols = np.flatnonzero(self.a > 0), np.flatnonzero(self.b > 0)
        dead_rows, dead_cols = self.dead_bins
        if len(dead_rows) or len(dead_cols):
            rows, cols = np.setdiff1d(rows, dead_rows), np.setdiff1d(cols, dead_cols)
        return rows, cols

    def restrict(self, rows: np.ndarray, cols: np.ndarray) -> "OTProblem":
        """The same problem on a sub-grid of bins (used to drop zero-mass bins)."""
        return _trusted(self.C[np.ix_(rows, cols)], self.a[rows], self.b[cols], self.reg, self.reg_m)

    def with_reg(self, reg: float) -> "OTProblem":
        """The same cost and weights with another regularisation."""
        p = _trusted(self.C, self.a, self.b, float(reg), self.reg_m)
        for key in ("cost_range", "dead_bins"):
            if key in self.__dict__:
                p.__dict__[key] = self.__dict__[key]
        return p


def _trusted(C, a, b, reg, reg_m=(np.inf, np.inf)) -> OTProblem:
    """Build a problem from already-validated parts, skipping the checks."""
    p = object.__new__(OTProblem)
    object.__setattr__(p, "C", np.ascontiguousarray(C))
    object.__setattr__(p, "a", a)
    object.__setattr__(p, "b", b)
    object.__setattr__(p, "reg", reg)
    object.__setattr__(p, "reg_m", reg_m)
    return p
