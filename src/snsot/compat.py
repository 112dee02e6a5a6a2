"""Drop-in replacements for POT functions."""

from __future__ import annotations

import numpy as np

from .solvers import solve

__all__ = ["sinkhorn", "sinkhorn2"]


def sinkhorn(a, b, M, reg, method="sns", numItermax=None, stopThr=1e-9, verbose=False, log=False,
             warn=True, **kwargs):
    """POT-compatible ``ot.sinkhorn``: the entropic plan between ``a`` and ``b``.

    Parameters
    ----------
    a, b : array_like, shape (n,) and (m,)
        Weights; an empty list means uniform (as in POT).
    M : array_like, shape (n, m)
        Cost matrix.
    reg : float
        Entropic regularisation (POT's ``reg``, the same as ours).
    method : str
        A snsot method name (``"sns"`` or ``"sinkhorn"``); POT's names
        ``"sinkhorn"``, ``"sinkhorn_log"`` and ``"sinkhorn_stabilized"`` map
        to snsot's log-domain Sinkhorn.
    numItermax : int, optional
        Iteration cap (snsot's ``max_iter``).
    stopThr : float
        Tolerance on the L1 marginal error (snsot's ``tol``).
    verbose : bool
        Ignored (kept for signature compatibility).
    log : bool
        Also return a dict with ``u``, ``v`` (log-domain potentials divided by
        ``reg``), ``log_u``, ``log_v``, ``niter``, ``err`` and the full ``result``.
    warn : bool
        Warn when ``stopThr`` is not reached.
    **kwargs
        Passed to :func:`snsot.solve` as solver options.

    Returns
    -------
    plan : ndarray, shape (n, m)
    log : dict, only if ``log=True``
    """
    # np.size, not len: a scalar a (sinkhorn(1.0, b, M, reg)) must reach the check that names it
    a = None if a is None or np.size(a) == 0 else a
    b = None if b is None or np.size(b) == 0 else b
    if method in ("sinkhorn_log", "sinkhorn_stabilized", "sinkhorn_knopp"):
        method = "sinkhorn"
    res = solve(M, a, b, reg=reg, method=method, tol=stopThr, max_iter=numItermax, warn=warn, **kwargs)
    if not log:
        return res.plan
    f, g = res.potentials
    return res.plan, {
        "log_u": f / reg,
        "log_v": g / reg,
        "u": np.exp(f / reg),
        "v": np.exp(g / reg),
        "niter": res.n_iter,
        "err": list(res.history.marginal_error),
        "result": res,
    }


def sinkhorn2(a, b, M, reg, method="sns", numItermax=None, stopThr=1e-9, log=False, **kwargs):
    """POT-compatible ``ot.sinkhorn2``: the transport cost ``<M, P>`` of the entropic plan.

    Returns the cost, or ``(cost, log)`` with ``log=True`` (the dict of :func:`sinkhorn`).
    """
    out = sinkhorn(a, b, M, reg, method=method, numItermax=numItermax, stopThr=stopThr, log=True, **kwargs)
    plan, log_dict = out
    cost = log_dict["result"].cost
    return (cost, log_dict) if log else cost
