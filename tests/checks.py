"""Reusable checks of an :class:`snsot.OTResult` against independent computations.

Nothing here trusts snsot to compute an expected value: marginals, plan,
cost and dual value are re-measured with plain numpy from the returned plan
and potentials, and the reference solutions come from POT (``ot.sinkhorn``
in the log domain, ``ot.emd2`` for the unregularised optimum).
"""

from __future__ import annotations

import numpy as np
import ot
import scipy.sparse as sp

from snsot.result import STAGE_NEWTON, STAGE_SINKHORN, STATUS_MESSAGES

#: Relative rounding allowed on a dual value (the solver itself accepts a
#: step when the dual drops by at most 64 eps times the size of its terms).
DUAL_RTOL = 1e-12


def uniform_if_none(w, size):
    return np.full(size, 1.0 / size) if w is None else np.asarray(w, dtype=np.float64)


def marginal_error(P, a, b) -> float:
    """L1 marginal error ``||P 1 - a||_1 + ||P^T 1 - b||_1``, measured with numpy."""
    return float(np.abs(P.sum(axis=1) - a).sum() + np.abs(P.sum(axis=0) - b).sum())


def entropy(w) -> float:
    """Shannon entropy of the normalisation of a non-negative vector or matrix."""
    w = np.asarray(w, dtype=np.float64).ravel()
    w = w[w > 0] / w.sum()
    return float(-(w * np.log(w)).sum())


def dual_scale(a, b, f, g, reg, total) -> float:
    """Size of the terms of ``D(f, g)``: the scale of its floating-point noise."""
    rows, cols = a > 0, b > 0
    return float(abs(a[rows] @ f[rows]) + abs(b[cols] @ g[cols]) + reg * total)


def check_history(res, scale: float) -> None:
    """Iteration counts agree with the history, which is well-formed."""
    h = res.history
    assert isinstance(res.n_iter, int) and isinstance(res.n_sinkhorn, int) and isinstance(res.n_newton, int)
    assert res.n_sinkhorn >= 0 and res.n_newton >= 0
    assert res.n_iter == res.n_sinkhorn + res.n_newton
    assert len(h) == res.n_iter
    assert len(h.objective) == len(h.time) == len(h.stage) == len(h.marginal_error) == res.n_iter
    assert set(np.unique(h.stage).tolist()) <= {STAGE_SINKHORN, STAGE_NEWTON}
    assert int((h.stage == STAGE_NEWTON).sum()) == res.n_newton
    assert int((h.stage == STAGE_SINKHORN).sum()) == res.n_sinkhorn
    assert np.all(h.time >= 0) and np.all(np.diff(h.time) >= 0)
    assert res.time >= 0
    assert np.all(np.isfinite(h.objective))
    # Newton steps are accepted only if they do not decrease the dual (Armijo,
    # or a rounding-level change that lowers the error).
    newton = h.objective[h.stage == STAGE_NEWTON]
    assert np.all(np.diff(newton) >= -DUAL_RTOL * scale), np.diff(newton).min()


def check_result(res, C, a=None, b=None, tol=None, *, reg=None, method=None, plan_rtol=1e-10) -> float:
    """Assert every documented property of ``res`` for the problem ``(C, a, b)``.

    Checks shapes and types, non-negativity, zero rows/columns and ``-inf``
    potentials on zero-mass bins, ``P = exp((f + g - C)/reg)`` on the support,
    ``cost = <C, P>``, ``objective = <a, f> + <b, g> - reg sum(P)``, the
    primal-dual identity, the marginal error re-measured from the plan, an
    honest ``converged`` flag and the history. Returns the re-measured
    marginal error.
    """
    C = np.asarray(C)
    C64 = C.astype(np.float64)
    n, m = C.shape
    a = uniform_if_none(a, n)
    b = uniform_if_none(b, m)
    # OTProblem rescales b to the total of a when the totals differ by <= 1e-8 relative.
    b = b * (a.sum() / b.sum())
    reg = res.reg if reg is None else reg
    tol = res.tol if tol is None else tol
    assert res.reg == reg
    assert res.tol == tol
    if method is not None:
        assert res.method == method
    assert isinstance(res.converged, bool)
    assert res.status in STATUS_MESSAGES and res.message.startswith(STATUS_MESSAGES[res.status])
    assert res.converged == (res.status == "success")

    P = res.plan.toarray() if sp.issparse(res.plan) else res.plan
    assert isinstance(P, np.ndarray) and P.shape == (n, m) and P.dtype == np.float64
    assert np.all(np.isfinite(P)), "plan has non-finite entries"
    assert np.all(P >= 0), "plan has negative entries"

    f, g = res.potentials
    assert f.shape == (n,) and g.shape == (m,)
    rows, cols = a > 0, b > 0
    # Zero-mass bins: exactly zero rows/columns and -inf potentials.
    assert np.all(P[~rows, :] == 0) and np.all(P[:, ~cols] == 0)
    assert np.all(f[~rows] == -np.inf) and np.all(g[~cols] == -np.inf)
    assert np.all(np.isfinite(f[rows])) and np.all(np.isfinite(g[cols]))

    # The plan is the Gibbs kernel of the potentials (fast_exp flushes exponents
    # below -708 to 0, where np.exp gives at most 3.3e-308: hence atol).
    fs, gs = f[rows], g[cols]
    expected = np.exp((fs[:, None] + gs[None, :] - C64[np.ix_(rows, cols)]) / reg)
    np.testing.assert_allclose(P[np.ix_(rows, cols)], expected, rtol=plan_rtol, atol=1e-300)

    # Marginal error, re-measured, and the honest converged flag.
    err = marginal_error(P, a, b)
    mass = a.sum()
    assert abs(err - res.marginal_error) <= 1e-9 * err + 1e-14 * mass, (err, res.marginal_error)
    # tol is relative to the total mass
    assert res.converged == bool(res.marginal_error < tol * mass)
    if res.converged:
        assert err < tol * mass * (1 + 1e-9) + 1e-14 * mass

    # Cost and dual value by their formulas.
    cost = float((C64 * P).sum())
    assert np.isclose(res.cost, cost, rtol=1e-12, atol=1e-300), (res.cost, cost)
    total = P.sum()
    scale = dual_scale(a, b, f, g, reg, total)
    dual = fs @ a[rows] + gs @ b[cols] - reg * total
    assert abs(res.objective - dual) <= DUAL_RTOL * scale, (res.objective, dual)

    # Primal-dual identity: for P = exp((f+g-C)/reg),
    #   <C,P> + reg sum P (log P - 1) - D(f, g) = <P1 - a, f> + <P^T 1 - b, g>,
    # so at a feasible point the primal and dual values coincide.
    Ps = P[np.ix_(rows, cols)]
    pos = Ps > 0
    logP = np.zeros_like(Ps)
    logP[pos] = np.log(Ps[pos])
    primal = cost + reg * float((Ps * (logP - 1.0)).sum())
    gap = (Ps.sum(axis=1) - a[rows]) @ fs + (Ps.sum(axis=0) - b[cols]) @ gs
    primal_scale = scale + reg * float(np.abs(Ps * logP).sum()) + abs(cost)
    assert abs((primal - dual) - gap) <= 1e-9 * primal_scale, (primal - dual, gap)

    check_history(res, scale)
    return err


def _newton_polish(C, a, b, reg, log_u, log_v, max_iter=100) -> np.ndarray:
    """Plan of the entropic dual maximised by Newton's method from ``(log_u, log_v)`` (numpy only).

    The dual in scaling units, ``a.x + b.y - sum_ij exp(x_i + y_j - C_ij / reg)``,
    is concave; its Hessian is minus ``[[diag(P 1), P], [P^T, diag(P^T 1)]]``,
    singular along ``(1, -1)``, so the last column's ``y`` is held fixed. Steps are
    damped by backtracking on the dual. Meant for the small problems of the tests.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rows, cols = np.flatnonzero(a > 0), np.flatnonzero(b > 0)
    K = -C[np.ix_(rows, cols)] / reg
    ar, bc = a[rows], b[cols]
    x = np.asarray(log_u, dtype=np.float64)[rows].copy()
    y = np.asarray(log_v, dtype=np.float64)[cols].copy()
    n, m = rows.size, cols.size

    def plan(x, y):
        with np.errstate(under="ignore"):
            return np.exp(x[:, None] + y[None, :] + K)

    def dual(x, y):
        return ar @ x + bc @ y - plan(x, y).sum()

    for _ in range(max_iter):
        P = plan(x, y)
        gr, gc = ar - P.sum(axis=1), bc - P.sum(axis=0)
        if np.abs(gr).sum() + np.abs(gc).sum() < 1e-13 * ar.sum():
            break
        H = np.block([[np.diag(P.sum(axis=1)), P], [P.T, np.diag(P.sum(axis=0))]])[: n + m - 1, : n + m - 1]
        step = np.linalg.solve(H, np.concatenate([gr, gc])[: n + m - 1])
        dx, dy = step[:n], np.append(step[n:], 0.0)
        t, d0 = 1.0, dual(x, y)
        while t > 1e-12 and not dual(x + t * dx, y + t * dy) >= d0:
            t *= 0.5
        x, y = x + t * dx, y + t * dy
    out = np.zeros((a.size, b.size))
    out[np.ix_(rows, cols)] = plan(x, y)
    return out


def pot_plan(C, a, b, reg) -> np.ndarray:
    """Entropic plan from POT's log-domain Sinkhorn, converged to round-off.

    The oracle is checked: its own L1 marginal error must be below 1e-11,
    otherwise the comparison would prove nothing.
    """
    C = np.asarray(C, dtype=np.float64)
    P, log = ot.sinkhorn(a, b, C, reg, method="sinkhorn_log", stopThr=1e-14, numItermax=50_000, warn=False,
                         log=True)
    err = marginal_error(P, a, b)
    if not err < 1e-11 * a.sum():
        # Sinkhorn's contraction can be too slow for 50,000 iterations (a rate of 1 - 1e-7 on
        # a 7x7 at reg 0.012): finish POT's iterate with a plain dense Newton method instead.
        P = _newton_polish(C, a, b, reg, log["log_u"], log["log_v"])
        err = marginal_error(P, a, b)
    assert err < 1e-11 * a.sum(), f"POT oracle not converged: marginal error {err:.3g}"
    return P


def emd_value(C, a, b) -> float:
    """Unregularised optimal transport cost from POT's network simplex."""
    mass = float(np.sum(a))
    value, log = ot.emd2(a / mass, np.asarray(b) / np.sum(b), np.asarray(C, dtype=np.float64),
                         numItermax=10_000_000, log=True)
    assert log["warning"] is None, log["warning"]
    return float(value) * mass


def check_entropic_bound(res, C, a, b, ot_value=None) -> float:
    """Assert ``0 <= <C, P_reg> - OT <= reg * min(H(a), H(b))`` (times the mass).

    Derivation. With ``H(P) = -sum P log P`` and unit mass, the entropic plan
    minimises ``<C, P> - reg H(P)`` over couplings of ``a`` and ``b``; comparing
    with an optimal unregularised plan ``P*``,
    ``<C, P_reg> - OT <= reg (H(P_reg) - H(P*))``. Every coupling has
    ``max(H(a), H(b)) <= H(P) <= H(a) + H(b)`` (joint entropy is at least
    each marginal's and at most their sum), hence
    ``<C, P_reg> - OT <= reg (H(a) + H(b) - max(H(a), H(b))) = reg min(H(a), H(b))``.
    The lower bound 0 holds because ``P_reg`` is feasible. For mass ``M`` the
    plan is ``M`` times the unit-mass one, so both sides scale by ``M``.

    A returned plan is only feasible to ``marginal_error``; it is nevertheless
    the exact entropic plan for its own marginals ``(P 1, P^T 1)``, so the bound
    holds with their entropies, and moving those marginals to ``(a, b)`` changes
    OT by at most ``max(C) * marginal_error`` (doubled for slack).

    Returns the gap ``<C, P> - OT``.
    """
    C64 = np.asarray(C, dtype=np.float64)
    if ot_value is None:
        ot_value = emd_value(C64, a, b)
    P = res.plan
    total = P.sum()
    bound = res.reg * total * min(entropy(P.sum(axis=1)), entropy(P.sum(axis=0)))
    slack = 2 * C64.max() * res.marginal_error + 1e-12 * max(1.0, abs(ot_value))
    gap = res.cost - ot_value
    assert -slack <= gap <= bound + slack, (gap, bound, slack)
    return gap
