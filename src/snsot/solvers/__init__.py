"""Solver registry and the :func:`solve` entry point.

A solver is a function ``solver(problem, *, tol, max_iter, init, callback,
**options) -> OTResult`` working on a problem whose weights are all positive;
:func:`solve` validates the input once, removes zero-mass bins, dispatches by
name and puts the bins back into the result.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Callable

import numpy as np

import scipy.sparse as sp

from .._kernels import thread_limit
from ..geometry import PointCloud
from .._validate import check, check_options
from ..problem import OTProblem, positive_float
from ..result import ConvergenceWarning, OTResult
from ._scale import solve_scaled
from .sinkhorn import solve_sinkhorn
from .sns import solve_sns
from .pointcloud import finite_support_pays, solve_on_finite_support, solve_without_dense_cost

__all__ = ["solve", "register", "available_methods", "DEFAULT_MAX_ITER"]

_REGISTRY: dict[str, Callable[..., OTResult]] = {}

#: Default iteration caps per method (Sinkhorn is linearly convergent and needs many more).
DEFAULT_MAX_ITER = {"sns": 10_000, "sinkhorn": 100_000}


def register(name: str, solver: Callable[..., OTResult], max_iter: int = 10_000) -> None:
    """Register ``solver`` under ``name`` so that ``solve(..., method=name)`` calls it."""
    _REGISTRY[name] = solver
    DEFAULT_MAX_ITER.setdefault(name, max_iter)


def available_methods() -> list[str]:
    """Names accepted by ``solve(method=...)``."""
    return sorted(_REGISTRY)


register("sns", solve_sns)
register("sinkhorn", solve_sinkhorn)


def solve(C, a=None, b=None, *, reg=None, reg_m=None, method: str = "sns", tol: float = 1e-9, max_iter: int | None = None,
          init=None, callback=None, warn: bool = True, n_threads: int | None = None, stop_at_floor: bool = True,
          **options) -> OTResult:
    r"""Solve an entropic optimal transport problem.

    Parameters
    ----------
    C : array_like, shape (n, m), OTProblem, PointCloud or scipy.sparse matrix
        Cost matrix; float32 is kept as float32. Negative entries are fine
        (the solvers work on ``C - min C``; everything reported is for
        ``C``); ``+inf`` forbids a pair (the plan is exactly 0 there). An
        :class:`~snsot.OTProblem` carries its own weights and ``reg``. A
        :class:`~snsot.PointCloud` is solved on an adaptively truncated
        support (dimensions 1 to 3; see :mod:`snsot.solvers.pointcloud`), a
        ``scipy.sparse`` cost on its stored entries (absent entries are
        forbidden pairs); both return the plan as ``scipy.sparse`` CSR, with
        ``support_size`` and ``outside_mass`` on the result.
    a, b : array_like, shape (n,) and (m,), optional
        Weights (non-negative, equal totals); uniform when omitted.
    reg : float
        Entropic regularisation :math:`\varepsilon > 0` (required unless
        ``C`` is an :class:`~snsot.OTProblem`).
    reg_m : float or pair of float, optional
        Unbalanced OT (POT's name and objective, that of
        ``ot.unbalanced.sinkhorn_unbalanced(..., reg_type="entropy")``): the
        marginal constraints become penalties ``rho_1 KL(P 1 | a) + rho_2
        KL(P^T 1 | b)``, ``(rho_1, rho_2) = reg_m`` (one number for both
        sides; ``inf`` keeps a side's constraint). The totals of ``a`` and
        ``b`` may then differ. Both methods solve it: Sinkhorn with the damped
        updates, SNS by Newton on the unbalanced dual; ``tol`` then bounds the
        L1 norm of the dual's gradient (see ``marginal_error`` in
        :class:`OTResult`). ``None`` (default): balanced. Negative costs are
        solved exactly (adding a constant to ``C`` changes an unbalanced
        problem; :meth:`OTProblem.potential_shifts` maps it to a reweighting).
        ``+inf`` costs forbid pairs as in the balanced case; a bin with mass
        and no allowed pair towards the other side's mass sends nothing, pays
        ``rho w_i`` and gets potential ``+inf`` on a relaxed side, and is
        refused (``ValueError`` naming ``C``) on a hard side.
    method : str
        A name from :func:`available_methods`: ``"sns"`` (Sinkhorn-Newton-Sparse,
        default) or ``"sinkhorn"`` (log-domain Sinkhorn).
    tol : float
        Relative tolerance: stop when the L1 marginal error
        ``||P 1 - a||_1 + ||P^T 1 - b||_1 < tol * sum(a)``. The error itself
        is reported absolute (:attr:`OTResult.marginal_error`). Weights of
        any total mass (1e-300 to 1e300) are solved at unit mass internally
        (an exact power-of-two rescaling) and the result mapped back.
    max_iter : int, optional
        Cap on iterations (Sinkhorn and Newton steps together).
    init : tuple (f, g), optional
        Warm-start potentials, e.g. from a previous :class:`OTResult` on a
        nearby problem (``-inf`` entries on zero-mass bins are ignored).
    callback : callable, optional
        Called after every iteration as ``callback(iteration, stage,
        marginal_error, objective)``; returning True stops the solve.
    warn : bool
        Emit a :class:`ConvergenceWarning` when ``tol`` is not met.
    n_threads : int, optional
        Threads for the kernels. Default: all of numba's threads for costs of
        at least :data:`snsot._kernels.PARALLEL_MIN_SIZE` (2**20) entries, one
        below that, where a pass is too short to repay thread hand-offs. On
        one thread the kernels run a serial build that releases the GIL, so
        independent solves in a thread pool run in parallel. In a process
        forked after import (a ``multiprocessing`` fork pool), and off the
        main thread under numba's ``workqueue`` layer, kernels always run
        serially (there a parallel kernel would abort the process).
    stop_at_floor : bool
        Stop, with ``converged=False`` and a message saying so, when the
        marginal error has stalled at its round-off floor above ``tol``
        (no new low for 100 Sinkhorn iterations, or 4 Newton steps, while already
        below ``eps * sum(a) * sqrt(n m)``). False runs to ``max_iter``
        (e.g. to run exactly ``max_iter`` iterations).
    **options
        Solver-specific options (see :func:`snsot.solvers.sns.solve_sns`).

    Returns
    -------
    OTResult
        Plan, potentials, cost, dual objective, marginal error, iteration
        counts, an honest ``converged`` flag and the per-iteration history.

    Raises
    ------
    ValueError
        On invalid input (the message names the argument), an unknown
        method or an unknown option, or forbidden pairs that leave no
        feasible plan (the message names ``C`` and the first offending row
        or column). Every argument is checked before any solving, from the
        rules in :data:`snsot._validate.RULES`.
    TypeError
        On an argument of the wrong type (also a ``ValueError``: see
        :class:`snsot._validate.ArgumentTypeError`).

    Examples
    --------
    >>> import numpy as np, snsot
    >>> x = np.random.default_rng(0).random((50, 2))
    >>> res = snsot.solve(snsot.costs.pairwise(x, x[::-1] + 0.1), reg=1e-2)
    >>> res.converged
    True
    """
    if isinstance(C, PointCloud) or sp.issparse(C):
        # no dense cost: a truncated (point clouds) or given (scipy.sparse) support, memory O(nnz)
        return solve_without_dense_cost(C, a, b, reg=reg, method=method, tol=tol, max_iter=max_iter, init=init,
                                        callback=callback, warn=warn, n_threads=n_threads,
                                        stop_at_floor=stop_at_floor, **options)
    # every argument checked once, here, from the one table of rules (snsot._validate.RULES)
    tol, max_iter, callback = check("tol", tol), check("max_iter", max_iter), check("callback", callback)
    warn, n_threads, options = check("warn", warn), check("n_threads", n_threads), check_options(options)
    stop_at_floor = check("stop_at_floor", stop_at_floor)
    if not isinstance(method, str) or method not in _REGISTRY:
        raise ValueError(f"method: unknown method {method!r}; available: {', '.join(available_methods())}")
    solver = _REGISTRY[method]
    accepted = set(inspect.signature(solver).parameters) - {"problem", "tol", "max_iter", "init", "callback"}
    unknown = sorted(k for k in options if k not in accepted)
    if unknown:
        raise ValueError(
            f"{unknown[0]}: not an option of method {method!r}; options: {', '.join(sorted(a for a in accepted if not a.startswith('_')))}"
        )
    if isinstance(C, OTProblem):
        if a is not None or b is not None:
            raise ValueError("a, b: give weights inside the OTProblem, not beside it")
        if reg_m is not None:
            raise ValueError("reg_m: give it inside the OTProblem, not beside it")
        problem = C if reg is None else C.with_reg(positive_float(reg, "reg"))
    else:
        problem = OTProblem(C, a, b, reg, reg_m)
    if max_iter is None:
        max_iter = DEFAULT_MAX_ITER[method]

    n, m = problem.shape
    rows, cols = problem.support()
    full = len(rows) == n and len(cols) == m
    offset = problem.cost_offset  # negative costs: solvers see C - offset >= 0
    shifts = problem.potential_shifts()
    sub = problem.shifted() if full else problem.shifted().restrict(rows, cols)
    if init is not None:
        init = _check_init(init, n, m, rows, cols)
        init = (init[0] - shifts[0], init[1] - shifts[1]) if offset else init

    if finite_support_pays(sub, method):  # mostly +inf: the CSR kernels on the finite entries
        res = solve_on_finite_support(sub, method=method, tol=tol, max_iter=max_iter, init=init,
                                      callback=callback, n_threads=n_threads, stop_at_floor=stop_at_floor,
                                      **options)
    else:
        with thread_limit(sub.C.size, n_threads):
            res = solve_scaled(solver, sub, tol=tol, stop_at_floor=stop_at_floor, max_iter=max_iter, init=init,
                               callback=callback, **options)
    if not full:
        res = _embed(res, problem, rows, cols)
        _dead(res, problem)
    if offset:
        _unshift(res, offset, shifts, problem.objective_offset())
    if warn and not res.converged:
        warnings.warn(
            f"{method}: stopped after {res.n_iter} iterations with marginal error "
            f"{res.marginal_error:.3g} >= tol {tol:g} x mass {problem.mass:.3g} ({res.message})",
            ConvergenceWarning,
            stacklevel=2,
        )
    return res


def _warm_up() -> None:
    """Load (on the first call after installing: compile) every kernel a solve uses.

    A small random problem, solved by Sinkhorn and by SNS at a reg where SNS
    takes Newton steps, with each kind of Hessian, so timed solves that
    follow are not charged for it.
    """
    n = 50
    C = np.random.default_rng(1).random((n, n))
    w = np.full(n, 1.0 / n)
    solve(C, w, w, reg=0.1, method="sinkhorn", warn=False)
    for hessian in ("sparse", "dense"):
        solve(C, w, w, reg=1e-3, method="sns", hessian=hessian, warn=False)


def _check_init(init, n, m, rows, cols):
    try:
        f, g = init
    except (TypeError, ValueError):
        raise ValueError("init: must be a pair of potentials (f, g)") from None
    try:
        f = np.asarray(f, dtype=np.float64)
        g = np.asarray(g, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"init: potentials must be numeric arrays ({exc})") from None
    if f.shape != (n,) or g.shape != (m,):
        raise ValueError(f"init: potentials must have shapes ({n},) and ({m},); got {f.shape} and {g.shape}")
    f, g = f[rows], g[cols]
    if not (np.isfinite(f).all() and np.isfinite(g).all()):
        raise ValueError("init: potentials must be finite on bins that carry mass")
    return f, g


def _unshift(res: OTResult, offset: float, shifts, objective_offset: float) -> None:
    """Report a solve on ``C - offset`` for the original ``C``.

    The plan is unchanged; ``(f, g)`` move by ``shifts`` (balanced: ``f`` by
    ``offset``; unbalanced: :meth:`OTProblem.potential_shifts`), the dual
    value (every iterate's, too) by ``objective_offset`` (balanced: ``offset
    * mass``), and the cost ``<C, P>`` by ``offset * sum(P)``.
    """
    f, g = res.potentials
    res.potentials = (f + shifts[0], g + shifts[1])
    res.cost += offset * float(res.plan.sum())
    res.objective += objective_offset
    res.history.objective = res.history.objective + objective_offset


def _dead(res: OTResult, problem: OTProblem) -> None:
    """Unbalanced: bins that cannot move mass (:attr:`OTProblem.dead_bins`) get potential ``+inf``.

    The penalty charges them ``rho w_i`` (``KL(0 | w_i) = w_i``), which the
    dual of the solved sub-problem lacks: added to the objective.
    """
    extra = 0.0
    for k, (idx, w, rho) in enumerate(zip(problem.dead_bins, (problem.a, problem.b), problem.reg_m)):
        if len(idx):
            res.potentials[k][idx] = np.inf
            extra += rho * float(w[idx].sum())
    if extra:
        res.objective += extra
        res.history.objective = res.history.objective + extra


def _embed(res: OTResult, problem: OTProblem, rows, cols) -> OTResult:
    """Put zero-mass bins back: zero rows/columns in the plan (dense or CSR), -inf potentials."""
    import scipy.sparse as sp  # only a sparse plan needs it

    n, m = problem.shape
    if sp.issparse(res.plan):
        Q = res.plan.tocoo()
        P = sp.csr_matrix((Q.data, (rows[Q.row], cols[Q.col])), shape=(n, m))
    else:
        P = np.zeros((n, m))
        P[np.ix_(rows, cols)] = res.plan
    f = np.full(n, -np.inf)
    g = np.full(m, -np.inf)
    f[rows], g[cols] = res.potentials
    res.plan, res.potentials = P, (f, g)
    return res
