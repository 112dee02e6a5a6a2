"""The one result type returned by every solver."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["OTResult", "History", "ConvergenceWarning", "STAGE_SINKHORN", "STAGE_NEWTON", "STATUS_MESSAGES"]

#: Stage codes used in :attr:`History.stage`.
STAGE_SINKHORN = 0
STAGE_NEWTON = 1


#: Why a solver stopped: the keys of :attr:`OTResult.status` and their messages (one table, as scipy.optimize keeps).
STATUS_MESSAGES = {
    "success": "marginal error below tol",
    "max_iter": "maximum number of iterations reached before tol",
    "stalled": "no further progress possible in floating point before tol",
    "nonfinite": "non-finite values met; returning the last finite iterate",
    "callback": "stopped by the callback",
    "floor": "marginal error stalled at its round-off floor above tol",
    "underflow": "the plan met tol at unit mass, but its entries underflow or overflow float64 at this total mass",
    "support": "stopped to refresh the truncated support (internal to the point-cloud solver; never final)",
}


class ConvergenceWarning(UserWarning):
    """A solver stopped before its tolerance was met (``converged=False``)."""


@dataclass
class History:
    """Per-iteration record of a solve; entry ``k`` describes the iterate after step ``k``.

    Attributes
    ----------
    marginal_error : ndarray
        L1 marginal error ``||P 1 - a||_1 + ||P^T 1 - b||_1``.
    objective : ndarray
        Dual value ``D(f, g)`` (non-decreasing over Newton steps, up to round-off).
    time : ndarray
        Seconds elapsed since the solve started.
    stage : ndarray of int
        :data:`STAGE_SINKHORN` (0) or :data:`STAGE_NEWTON` (1) for the step that produced the iterate.
    reg : ndarray
        Regularisation of the iterate: with epsilon-scaling, earlier iterates
        belong to larger ``reg`` (their objective is that problem's dual).
    """

    marginal_error: np.ndarray = field(default_factory=lambda: np.empty(0))
    objective: np.ndarray = field(default_factory=lambda: np.empty(0))
    time: np.ndarray = field(default_factory=lambda: np.empty(0))
    stage: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int8))
    reg: np.ndarray = field(default_factory=lambda: np.empty(0))

    def __len__(self) -> int:
        return len(self.marginal_error)


@dataclass
class OTResult:
    r"""Solution of an entropic optimal transport problem.

    Attributes
    ----------
    plan : ndarray or scipy.sparse.csr_matrix, shape (n, m)
        Transport plan :math:`P_{ij} = \exp((f_i + g_j - C_{ij})/\varepsilon)`.
        Rows and columns of zero-mass bins are exactly zero. A solver working
        on a sparse support returns the plan on that support in CSR form
        (POT's ``OTResult`` keeps ``plan`` and ``sparse_plan``; here one field
        holds either, and ``scipy.sparse.issparse(res.plan)`` tells which).
    potentials : tuple of ndarray
        Dual potentials ``(f, g)`` in the convention above; ``-inf`` on
        zero-mass bins.
    cost : float
        Transport cost :math:`\langle C, P\rangle`.
    objective : float
        Dual value :math:`D(f, g)` (see :class:`~snsot.OTProblem`), which
        equals the primal entropic objective at the optimum.
    marginal_error : float
        :math:`\|P 1 - a\|_1 + \|P^T 1 - b\|_1`, measured on :attr:`plan`.
        Unbalanced problems (``reg_m``): the same with the targets the KL
        penalty settles on, ``a exp(-f / rho_1)`` and ``b exp(-g / rho_2)``:
        the L1 norm of the dual's gradient (see :mod:`snsot.solvers._kl_marginals`).
    n_iter, n_sinkhorn, n_newton : int
        Iterations in total, Sinkhorn steps, and Newton steps.
    converged : bool
        True only if ``marginal_error < tol * mass`` (``mass`` = the total of
        ``a``; :func:`snsot.solve`'s ``tol`` is relative).
    method : str
        Name of the registered solver.
    reg : float
        The regularisation :math:`\varepsilon`.
    tol : float
        The tolerance asked for (relative to the total mass).
    message : str
        Why the solver stopped, in words (from the table keyed by :attr:`status`).
    time : float
        Wall-clock seconds of the solve.
    history : History
        Per-iteration marginal error, dual value, time and stage.
    status : str
        Why the solver stopped, as a key to compare against (as scipy's
        ``OptimizeResult.status`` sits beside ``message``): ``"success"``,
        ``"max_iter"``, ``"stalled"``, ``"nonfinite"``, ``"callback"``,
        ``"floor"`` (a ``tol`` below round-off; the message gives the floor)
        or ``"underflow"`` (weights so small or large that the plan has no
        float64 representation) (see :data:`STATUS_MESSAGES`; a message may
        add details after the table's text).
    support_size : int or None
        Pairs the solver's plan was held on: None for a dense cost (all
        ``n * m``); for a sparse cost or point clouds, the number of stored
        entries of :attr:`plan` (a ``scipy.sparse`` CSR matrix).
    outside_mass : float
        Certified upper bound on the plan mass outside that support (0 for
        dense and user-given sparse costs); :attr:`marginal_error` includes
        twice this bound.
    scales : list of dict or None
        Point clouds only (None otherwise): one record per regularisation of
        the multiscale schedule, coarse to fine, with keys ``reg``,
        ``points`` (False while the level is grid clusters), ``n_x``, ``n_y``
        (clusters or points per side), ``width`` (cluster width, None at the
        points), ``support_size``, ``pairs_per_point`` (mean per row),
        ``max_pairs_per_point`` (largest row or column of any support used
        at that scale), ``n_sinkhorn``, ``n_newton``, ``marginal_error``
        (of that level's problem), ``refreshes`` and ``time`` (seconds).
    """

    plan: np.ndarray
    potentials: tuple[np.ndarray, np.ndarray]
    cost: float
    objective: float
    marginal_error: float
    n_iter: int
    n_sinkhorn: int
    n_newton: int
    converged: bool
    method: str
    reg: float
    tol: float
    message: str
    time: float
    history: History = field(default_factory=History, repr=False)
    status: str = "success"
    support_size: int | None = None
    outside_mass: float = 0.0
    scales: list | None = None

    def __repr__(self) -> str:
        return (
            f"OTResult(method={self.method!r}, converged={self.converged}, cost={self.cost:.10g}, "
            f"marginal_error={self.marginal_error:.3g}, n_iter={self.n_iter} "
            f"({self.n_sinkhorn} Sinkhorn + {self.n_newton} Newton), time={self.time:.3g}s, "
            f"shape={self.plan.shape})"
        )

    def summary(self) -> dict:
        """The scalar fields as a JSON-ready dict (no arrays)."""
        return {
            "method": self.method,
            "reg": self.reg,
            "tol": self.tol,
            "cost": self.cost,
            "objective": self.objective,
            "marginal_error": self.marginal_error,
            "n_iter": self.n_iter,
            "n_sinkhorn": self.n_sinkhorn,
            "n_newton": self.n_newton,
            "converged": bool(self.converged),
            "status": self.status,
            "message": self.message,
            "time": self.time,
            "shape": list(self.plan.shape),
            **({} if self.support_size is None else
               {"support_size": int(self.support_size), "outside_mass": float(self.outside_mass)}),
        }
