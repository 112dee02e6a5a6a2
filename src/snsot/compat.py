r"""Drop-in replacements for POT's ``ot.sinkhorn`` and ``ot.sinkhorn2``.

``snsot.sinkhorn(a, b, M, reg, ...)`` takes POT's arguments in POT's order and
returns what POT returns, for each of POT's method names, so that

>>> import snsot as ot                                   # doctest: +SKIP
>>> P = ot.sinkhorn(a, b, M, reg)                        # doctest: +SKIP

is a one-line change. Every POT method name is solved by snsot's own solver
(all of them solve the same problem, so they give the same plan); what the
name selects is POT's output convention for that method: the keys of the
``log`` dict, and how ``warmstart`` is read.

Conventions (POT's):

* ``K = exp(-M / reg)``, ``P = diag(u) K diag(v)``; in snsot's potentials
  ``u = exp(f / reg)``, ``v = exp(g / reg)`` exactly (no hidden factor).
* ``warmstart=(log u, log v)`` for ``"sinkhorn"``, ``"sinkhorn_log"`` and
  ``"greenkhorn"``; ``warmstart=(alpha, beta) = (f, g)`` (POT's dual
  potentials) for ``"sinkhorn_stabilized"`` and ``"sinkhorn_epsilon_scaling"``,
  as POT's solvers read them.
* ``b`` of shape ``(m, k)``: ``k`` problems sharing ``a`` and ``M``; both
  functions return the ``k`` transport costs (POT returns no plans here).

What differs on purpose is listed in the README ("POT drop-in").
"""

from __future__ import annotations

import inspect
import numbers
import warnings

import numpy as np

from .result import ConvergenceWarning, OTResult
from .solvers import _REGISTRY, available_methods, solve

__all__ = ["sinkhorn", "sinkhorn2", "POT_METHODS", "SINKHORN2_METHODS"]

#: POT's method names accepted by :func:`sinkhorn` (case-insensitive).
POT_METHODS = ("sinkhorn", "sinkhorn_log", "greenkhorn", "sinkhorn_stabilized", "sinkhorn_epsilon_scaling")
#: POT's ``sinkhorn2`` accepts only these; it raises ``ValueError`` for the others, and so do we.
SINKHORN2_METHODS = ("sinkhorn", "sinkhorn_log", "sinkhorn_stabilized")

#: Keywords of POT's solvers that have no meaning for snsot's (accepted and ignored, as POT's
#: ``sinkhorn_knopp`` and ``sinkhorn_log`` ignore what they do not know).
_POT_KEYWORDS = frozenset({"tau", "print_period", "epsilon0", "numInnerItermax"})
#: Keywords of :func:`snsot.solve` itself that the drop-in passes on.
_SOLVE_KEYWORDS = frozenset({"callback", "n_threads"})
#: Warm starts in POT's potential units (alpha, beta) rather than (log u, log v).
_WARMSTART_IS_POTENTIAL = ("sinkhorn_stabilized", "sinkhorn_epsilon_scaling")
#: snsot's tol must be positive: the smallest positive double makes ``err < tol`` false unless
#: err is exactly 0, which is what POT's ``stopThr=0`` means ("run numItermax iterations").
_ZERO_TOL = 5e-324
#: Array libraries that snsot.sinkhorn does not take (their tensors need snsot.torch or .numpy()).
_FOREIGN = {"torch": "PyTorch", "jax": "JAX", "jaxlib": "JAX", "tensorflow": "TensorFlow", "cupy": "CuPy"}


def sinkhorn(a, b, M, reg, method="sinkhorn", numItermax=1000, stopThr=1e-9, verbose=False, log=False,
             warn=True, warmstart=None, **kwargs):
    r"""POT-compatible ``ot.sinkhorn``: the entropic transport plan between ``a`` and ``b``.

    Same arguments, order, defaults and returns as POT 0.9.7's ``ot.sinkhorn``
    for numpy inputs; the solve is snsot's (Sinkhorn-Newton-Sparse by default).

    Parameters
    ----------
    a : array_like, shape (n,)
        Source weights; an empty list means uniform (as in POT).
    b : array_like, shape (m,) or (m, k)
        Target weights, or ``k`` target histograms (then ``k`` problems are
        solved and their costs returned, as POT does); empty means uniform.
    M : array_like, shape (n, m)
        Cost matrix.
    reg : float
        Entropic regularisation (POT's ``reg``, snsot's ``reg``); must be > 0.
    method : str
        One of POT's names, case-insensitive: ``"sinkhorn"``, ``"sinkhorn_log"``,
        ``"greenkhorn"``, ``"sinkhorn_stabilized"``, ``"sinkhorn_epsilon_scaling"``;
        or a snsot method (``"sns"``). The name chooses the ``log`` keys and the
        reading of ``warmstart``; the plan is the same for all.
    numItermax : int
        Iteration cap (snsot's ``max_iter``: Sinkhorn and Newton steps together).
    stopThr : float
        Tolerance on the L1 error of both marginals: snsot's ``tol``, with the
        meaning :func:`snsot.solve` gives it (POT's ``stopThr`` is the L2 error of
        one marginal). ``0`` runs exactly ``numItermax`` Sinkhorn iterations, as POT does.
    verbose : bool
        Print POT's iteration table (iteration, error) after the solve.
    log : bool
        Also return POT's log dict for ``method`` (see Returns).
    warn : bool
        Warn (:class:`~snsot.ConvergenceWarning`, a ``UserWarning``) when
        ``stopThr`` is not met.
    warmstart : tuple of arrays, optional
        ``(log u, log v)`` for ``"sinkhorn"``, ``"sinkhorn_log"``, ``"greenkhorn"``
        and ``"sns"``; ``(alpha, beta)`` for ``"sinkhorn_stabilized"`` and
        ``"sinkhorn_epsilon_scaling"``. With ``k`` histograms: arrays of shape
        ``(n, k)``/``(m, k)``, shared ``(n,)``/``(m,)`` ones, or (as POT's
        ``sinkhorn_log``) a list of ``k`` pairs.
    **kwargs
        POT's solver keywords (``tau``, ``print_period``, ``epsilon0``,
        ``numInnerItermax``) are accepted and ignored; options of the snsot
        solver (e.g. ``variant``, ``eps_scaling``) and ``callback``,
        ``n_threads`` are passed to :func:`snsot.solve`. Anything else is
        ignored with a warning.

    Returns
    -------
    plan : ndarray, shape (n, m), or costs : ndarray, shape (k,)
        The plan, in the floating dtype of the inputs (float32 stays float32);
        with ``k`` histograms, the ``k`` costs ``<M, P_k>``.
    log : dict, only if ``log=True``
        POT's keys for ``method``: ``"sinkhorn"``: ``err``, ``niter``, ``u``, ``v``;
        ``"sinkhorn_log"``: those and ``log_u``, ``log_v``; ``"greenkhorn"``:
        ``n_iter``, ``u``, ``v``; ``"sinkhorn_stabilized"``: ``err``, ``n_iter``,
        ``logu``, ``logv``, ``alpha``, ``beta``, ``warmstart``;
        ``"sinkhorn_epsilon_scaling"``: ``err``, ``niter``, ``alpha``, ``beta``,
        ``warmstart``; ``"sns"``: the union. Plus ``result``, the
        :class:`~snsot.OTResult` (a list of them with ``k`` histograms).
        ``u = exp(log_u)``, ``alpha = reg * logu`` and
        ``P = diag(u) exp(-M/reg) diag(v)``; ``err`` is snsot's per-iteration
        L1 marginal error (a list per problem with ``k`` histograms) and
        ``niter`` the number of iterations done (the largest over problems).

    Raises
    ------
    ValueError
        Unknown method, ``reg <= 0``, ``stopThr < 0``, a bad ``numItermax`` or
        ``warmstart``, or any invalid input (the message names the argument).
    TypeError
        Tensors of another array library (use ``snsot.torch`` or ``.numpy()``).
    """
    name = _method_name(method, POT_METHODS)
    return _drop_in(a, b, M, reg, name, numItermax, stopThr, verbose, log, warn, warmstart, kwargs, costs_only=False)


def sinkhorn2(a, b, M, reg, method="sinkhorn", numItermax=1000, stopThr=1e-9, verbose=False, log=False,
              warn=False, warmstart=None, **kwargs):
    r"""POT-compatible ``ot.sinkhorn2``: the transport cost ``<M, P>`` of the entropic plan.

    Same arguments as :func:`sinkhorn` (note POT's default ``warn=False``
    here), with POT's ``sinkhorn2`` methods only: ``"sinkhorn"``,
    ``"sinkhorn_log"``, ``"sinkhorn_stabilized"`` (POT raises ``ValueError``
    for the others, and so does this), or a snsot method (``"sns"``).

    Returns
    -------
    cost : numpy scalar, or ndarray of shape (k,) for ``k`` histograms
        ``<M, P>`` without the entropic term, in the inputs' floating dtype.
    log : dict, only if ``log=True``
        As for :func:`sinkhorn`.
    """
    name = _method_name(method, SINKHORN2_METHODS)
    return _drop_in(a, b, M, reg, name, numItermax, stopThr, verbose, log, warn, warmstart, kwargs, costs_only=True)


# --- the one code path ------------------------------------------------------------------------

def _drop_in(a, b, M, reg, name, numItermax, stopThr, verbose, log, warn, warmstart, kwargs, *, costs_only):
    if any(_library(x) == "PyTorch" for x in (a, b, M)):
        return _torch_drop_in(a, b, M, reg, name, numItermax, stopThr, log, warn, warmstart, kwargs,
                              costs_only=costs_only)
    M, a, b, dtype = _arrays(a, b, M)
    n, m = M.shape
    options = _solver_options(kwargs)
    max_iter = _positive_int(numItermax, "numItermax")
    exact = _check_stop(stopThr) == 0.0
    tol = _ZERO_TOL if exact else float(stopThr)
    # stopThr=0 asks for N plain Sinkhorn iterations (POT's fixed-iteration use); otherwise SNS.
    method = name if name in available_methods() and name not in POT_METHODS else ("sinkhorn" if exact else "sns")

    many = b is not None and b.ndim == 2
    columns = [b[:, j] for j in range(b.shape[1])] if many else [b]
    inits = _warm_starts(warmstart, name, reg, n, m, len(columns) if many else None)
    if exact:  # POT runs every iteration asked for: no stop on an error stalled at round-off
        options = {**options, "stop_at_floor": False}
    # SNS converges quadratically, so going a thousand times below stopThr costs about one more Newton
    # step; it makes solves of costs that differ by round-off or a constant give the same plan to about
    # 1e-12, as POT's deterministic iteration does (POT's own tests compare such solves, e.g. ot.optim.gcg
    # against ot.sinkhorn). Success is still judged at stopThr. A warm start that already meets stopThr
    # returns at once, as in POT.
    cold = all(init is None for init in inits)
    inner_tol = tol * 1e-3 if method == "sns" and not exact and cold else tol
    results = _solve_columns(M, a, columns, inits, reg=reg, method=method, tol=inner_tol, max_iter=max_iter,
                             exact=exact, options=options)

    failed = [j for j, res in enumerate(results)
              if not (res.converged or res.marginal_error < tol * (1.0 if a is None else float(np.sum(a))))]
    if warn and failed:
        res = results[failed[0]]
        which = f"{len(failed)} of {len(results)} problems" if many else "Sinkhorn"
        warnings.warn(
            f"{which} did not converge: marginal error {res.marginal_error:.3g} >= stopThr {stopThr:g} after "
            f"{res.n_iter} iterations ({res.message}). You might want to increase the number of "
            "iterations `numItermax` or the regularization parameter `reg`.",
            ConvergenceWarning,
            stacklevel=3,
        )
    if verbose:
        _print_table(results)

    if many or costs_only:
        costs = np.array([res.cost for res in results], dtype=dtype)
        value = costs if many else costs[0]  # a numpy scalar, as POT's nx.sum
    else:
        value = results[0].plan.astype(dtype, copy=False)
    if not log:
        return value
    return value, _log_dict(name, results, reg, dtype, many)


#: Per-problem size (n * m) from which several histograms go to ``solve_batch`` (one thread per
#: problem, problems in parallel) rather than a loop of solves: measured on 2 shared cores, 8
#: histograms at n = 200 (4e4 entries) took 0.36 s batched vs 0.44-0.50 s looped; at n = 50 the
#: pool's overhead made it a wash.
_BATCH_MIN_SIZE = 10_000


def _solve_columns(M, a, columns, inits, *, reg, method, tol, max_iter, exact, options) -> list[OTResult]:
    """One snsot solve per target histogram: batched when several, large, cold and cap-free."""
    batched = (len(columns) > 1 and M.size >= _BATCH_MIN_SIZE and not exact and all(i is None for i in inits)
               and not set(options) & _SOLVE_KEYWORDS)
    if batched:
        try:
            from .batch import solve_batch  # issue 14's batch layer, where installed
        except ImportError:
            pass
        else:
            try:
                return list(solve_batch(M, a, np.stack(columns), reg=reg, method=method, tol=tol, max_iter=max_iter,
                                        return_results=True, **options).results)
            except ValueError:
                pass  # let the loop below name the offending argument the caller's way
    results = []
    for j, (b, init) in enumerate(zip(columns, inits)):
        try:
            res = solve(M, a, b, reg=reg, method=method, tol=tol, max_iter=max_iter, init=init, warn=False,
                        **options)
        except ValueError as exc:  # name the arguments as the caller gave them
            message = str(exc)
            if message.startswith("init:"):  # solve() calls the warm start init
                raise ValueError("warmstart:" + message[len("init:"):]) from None
            if message.startswith("b:") and len(columns) > 1:
                raise ValueError(f"b[:, {j}]:" + message[len("b:"):]) from None
            raise
        if exact:
            res = _run_to(res, M, a, b, reg=reg, method=method, max_iter=max_iter, options=options)
        results.append(res)
    return results


def _run_to(res, M, a, b, *, reg, method, max_iter, options) -> OTResult:
    """Go on from ``res`` until ``max_iter`` iterations in all (POT's ``stopThr=0``).

    A solver may stop early before its cap (e.g. on an error stalled at the
    round-off floor); POT does not, so restart from the potentials reached.
    A Sinkhorn restart from ``f`` is the same iteration that continuing would do.
    """
    errors = [res.history.marginal_error]
    total = res.n_iter
    while total < max_iter and not res.converged:
        more = solve(M, a, b, reg=reg, method=method, tol=_ZERO_TOL, max_iter=max_iter - total,
                     init=res.potentials, warn=False, **options)
        if more.n_iter == 0:
            break
        res, total = more, total + more.n_iter
        errors.append(res.history.marginal_error)
    if total != res.n_iter:
        res.n_iter = total
        res.n_sinkhorn = total - res.n_newton
        res.history.marginal_error = np.concatenate(errors)
    return res


def _torch_drop_in(a, b, M, reg, name, numItermax, stopThr, log, warn, warmstart, kwargs, *, costs_only):
    """Tensors in, tensors out, differentiable: through snsot.torch's ``ot_plan`` (one autograd function).

    ``sinkhorn2`` is ``<M, P>`` with ``P = ot_plan(M, a, b)``, so its gradients
    are those of POT's cost (through ``M`` and the plan), computed by implicit
    differentiation instead of unrolled iterations.
    """
    try:
        from .torch import ot_plan
    except ImportError:
        raise TypeError(
            "M: got PyTorch tensors, and snsot.torch (which differentiates the drop-in) is not available "
            "here; install snsot[torch], or pass numpy arrays (tensor.numpy())"
        ) from None
    for arg, unsupported in (("log", bool(log)), ("warmstart", warmstart is not None),
                             ("b", getattr(b, "ndim", 1) == 2)):
        if unsupported:
            what = "several histograms" if arg == "b" else f"{arg}={'True' if arg == 'log' else 'given'}"
            raise TypeError(f"{arg}: {what} is not supported with PyTorch tensors yet; use numpy arrays, "
                            "or snsot.torch directly")
    max_iter = _positive_int(numItermax, "numItermax")
    if _check_stop(stopThr) == 0.0:
        raise TypeError("stopThr: 0 (a fixed number of iterations) is not supported with PyTorch tensors; "
                        "snsot differentiates the converged plan, not the iterations")
    a = None if a is None or (not hasattr(a, "shape") and np.size(a) == 0) else a
    b = None if b is None or (not hasattr(b, "shape") and np.size(b) == 0) else b
    options = _solver_options(kwargs)
    method = name if name in available_methods() and name not in POT_METHODS else "sns"
    P = ot_plan(M, a, b, reg=reg, method=method, tol=float(stopThr), max_iter=max_iter, warn=warn, **options)
    return (M * P).sum() if costs_only else P


# --- POT's log dicts -------------------------------------------------------------------------

def _log_dict(name, results, reg, dtype, many) -> dict:
    def column(res, key):
        f, g = res.potentials
        with np.errstate(over="ignore", divide="ignore"):
            return {
                "log_u": f / reg, "log_v": g / reg, "logu": f / reg, "logv": g / reg,
                "u": np.exp(f / reg), "v": np.exp(g / reg), "alpha": f, "beta": g,
            }[key]

    def array(key):
        if many:
            return np.stack([column(res, key) for res in results], axis=1).astype(dtype, copy=False)
        return column(results[0], key).astype(dtype, copy=False)

    keys = {
        "sinkhorn": ("err", "niter", "u", "v"),
        "sinkhorn_log": ("err", "niter", "log_u", "log_v", "u", "v"),
        "greenkhorn": ("n_iter", "u", "v"),
        "sinkhorn_stabilized": ("err", "n_iter", "logu", "logv", "alpha", "beta", "warmstart"),
        "sinkhorn_epsilon_scaling": ("err", "niter", "alpha", "beta", "warmstart"),
    }.get(name, ("err", "niter", "log_u", "log_v", "u", "v", "alpha", "beta", "warmstart"))
    out = {}
    for key in keys:
        if key == "err":
            errs = [[float(e) for e in res.history.marginal_error] for res in results]
            out[key] = errs if many else errs[0]
        elif key in ("niter", "n_iter"):
            out[key] = max(int(res.n_iter) for res in results)
        elif key == "warmstart":
            out[key] = (out["alpha"] if "alpha" in out else array("alpha"),
                        out["beta"] if "beta" in out else array("beta"))
        else:
            out[key] = array(key)
    out["result"] = results if many else results[0]
    return out


def _print_table(results, period: int = 10) -> None:
    """POT's verbose table: iteration and error, every ``period`` iterations."""
    for j, res in enumerate(results):
        if len(results) > 1:
            print(f"problem {j}")
        print("{:5s}|{:12s}".format("It.", "Err") + "\n" + "-" * 19)
        errs = res.history.marginal_error
        for it in range(0, len(errs), period):
            print("{:5d}|{:8e}|".format(it, errs[it]))


# --- argument handling -----------------------------------------------------------------------

def _method_name(method, names) -> str:
    if not isinstance(method, str):
        raise TypeError(f"method: must be a string such as 'sinkhorn'; got {type(method).__name__}")
    name = method.lower()
    if name in names or (name in available_methods() and name not in POT_METHODS):
        return name
    raise ValueError(
        f"method: unknown method {method!r}; POT's names accepted here: {', '.join(names)}; "
        f"snsot's: {', '.join(n for n in available_methods() if n not in POT_METHODS)}"
    )


def _arrays(a, b, M):
    """numpy versions of the inputs (empty weights -> None, i.e. uniform) and the output dtype."""
    for x, arg in ((a, "a"), (b, "b"), (M, "M")):
        library = _library(x)
        if library is not None:
            raise TypeError(
                f"{arg}: got a {library} array ({type(x).__module__}.{type(x).__name__}); snsot.sinkhorn takes "
                "numpy arrays or lists. For tensors with gradients use the snsot.torch module; otherwise "
                "convert with .numpy() (or numpy.asarray)."
            )
    M = np.asarray(M)
    given = [M]
    weights = []
    for w, arg in ((a, "a"), (b, "b")):
        if w is None or (not isinstance(w, numbers.Number) and np.size(w) == 0):
            weights.append(None)
            continue
        w = np.asarray(w)
        if arg == "b" and w.ndim == 2:
            if w.shape[1] == 0:
                raise ValueError(f"b: a (m, k) array of histograms needs k >= 1; got shape {w.shape}")
        weights.append(w)
        given.append(w)
    if M.ndim != 2:
        raise ValueError(f"M: cost must be a 2-D array (n, m); got shape {M.shape}")
    floats = [x.dtype for x in given if x.dtype.kind == "f"]
    dtype = np.result_type(*floats) if floats else np.dtype(np.float64)
    if dtype != np.float32:
        dtype = np.dtype(np.float64)
    return M, weights[0], weights[1], dtype


def _library(x):
    """The array library of ``x`` when it is one snsot.sinkhorn does not take as numpy, else None."""
    return _FOREIGN.get(type(x).__module__.split(".")[0])


def _solver_options(kwargs) -> dict:
    known = set(_SOLVE_KEYWORDS)
    for solver in _REGISTRY.values():
        known |= set(inspect.signature(solver).parameters) - {"problem", "tol", "max_iter", "init", "callback"}
    options, unknown = {}, []
    for key, value in kwargs.items():
        if key in _POT_KEYWORDS:
            continue
        if key in known and not key.startswith("_"):
            options[key] = value
        else:
            unknown.append(key)
    if unknown:
        warnings.warn(f"snsot.sinkhorn: ignoring keyword(s) {', '.join(map(repr, unknown))}, known neither to "
                      "POT's sinkhorn solvers nor to snsot's", UserWarning, stacklevel=4)
    return options


def _positive_int(x, name) -> int:
    if isinstance(x, (bool, np.bool_)) or not (
        isinstance(x, (int, np.integer)) or (isinstance(x, float) and x.is_integer())
    ) or x < 1:
        raise ValueError(f"{name}: must be a positive integer; got {x!r}")
    return int(x)


def _check_stop(stopThr) -> float:
    try:
        value = float(stopThr)
    except (TypeError, ValueError):
        raise ValueError(f"stopThr: must be a number >= 0; got {stopThr!r}") from None
    if not (value >= 0 and np.isfinite(value)):
        raise ValueError(f"stopThr: must be a finite number >= 0 (0 runs numItermax iterations); got {stopThr!r}")
    return value


def _warm_starts(warmstart, name, reg, n, m, k):
    """Per-problem ``init=(f, g)`` for :func:`snsot.solve` from POT's ``warmstart``."""
    count = 1 if k is None else k
    if warmstart is None:
        return [None] * count
    scale = 1.0 if name in _WARMSTART_IS_POTENTIAL else float(reg)
    if k is not None and _is_list_of_pairs(warmstart, n, m, k):  # POT's sinkhorn_log: one pair per histogram
        return [None if w is None else _warm_starts(w, name, reg, n, m, None)[0] for w in warmstart]
    try:
        first, second = warmstart
        first = np.asarray(first, dtype=np.float64)
        second = np.asarray(second, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("warmstart: must be a pair of numeric arrays (log u, log v) or (alpha, beta)") from None
    inits = []
    for j in range(count):
        pair = []
        for x, size, side in ((first, n, "first"), (second, m, "second")):
            if x.shape == (size,):
                pair.append(scale * x)
            elif k is not None and x.shape == (size, k):
                pair.append(scale * x[:, j])
            else:
                want = f"({size},)" + ("" if k is None else f" or ({size}, {k})")
                raise ValueError(f"warmstart: the {side} array must have shape {want}; got {x.shape}")
        inits.append(tuple(pair))
    return inits


def _is_list_of_pairs(warmstart, n, m, k) -> bool:
    if not isinstance(warmstart, (list, tuple)) or len(warmstart) != k:
        return False
    if len(warmstart) == 2 and np.shape(warmstart[0])[:1] == (n,) and np.shape(warmstart[1])[:1] == (m,):
        return False  # a (first, second) pair of arrays
    return all(w is None or (isinstance(w, (list, tuple)) and len(w) == 2) for w in warmstart)
