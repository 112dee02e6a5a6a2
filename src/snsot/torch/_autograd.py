"""Autograd functions around :func:`snsot.solve`: the OT value and the OT plan.

Both solve in float64 NumPy on the CPU (the forward pass) and differentiate
the exact optimality conditions (the backward pass), never the iterations:

* the value ``OT(C, a, b)`` by the envelope theorem, ``dC = P``, ``da = f``,
  ``db = g``;
* the plan ``P(C, a, b)`` implicitly, through the Newton system of the dual
  (a Schur complement solved by conjugate gradients).

The potentials ``(f, g)`` are defined up to a shared constant ``(f + t, g -
t)``, which leaves ``P`` and the value unchanged whenever ``sum a = sum b``.
The gradients with respect to ``a`` and ``b`` inherit this freedom: only
their sums along directions that keep the two masses equal are determined.
We fix it by centring: ``t`` is chosen so that ``sum_i f_i = sum_j g_j``
(for ``a = b`` on the same support this gives ``f = g``).

Zero-mass bins: the derivative of the value with respect to a weight that is
0 is ``-inf`` (the entropy's ``reg * a_i log a_i``). The gradient returned
there is its finite part, the c-transform of the other potential
``-reg * log sum_j exp((g_j - C_ij) / reg)``, which is the potential of the
same problem written with the entropy relative to ``a b^T``. The divergent
parts cancel in the Sinkhorn divergence, whose gradient is therefore exact
on empty bins too; the plan's derivative there is finite and exact.
"""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import numpy as np
import torch
from scipy.special import logsumexp

from .. import solve
from .._kernels import thread_limit
from ..problem import OTProblem, parse_reg_m
from ..solvers._kl_marginals import KLMarginals, _relaxed
from ..result import ConvergenceWarning
from .. import _kernels as K
from ..solvers import linalg
from ..solvers.symmetric import solve_symmetric

__all__ = ["ot_loss", "ot_plan"]


def _to_numpy(t, name):
    """float64 NumPy copy of a tensor (or array-like); ``None`` stays ``None``."""
    if t is None:
        return None
    if isinstance(t, torch.Tensor):
        if t.is_complex():
            raise TypeError(f"{name}: complex tensors are not supported")
        return t.detach().to(device="cpu", dtype=torch.float64).numpy()
    return np.asarray(t, dtype=np.float64)


def _check_reg_m(reg_m):
    """``reg_m`` as :func:`snsot.solve` takes it (``None``: balanced), checked before any solving."""
    if reg_m is None:
        return None
    parse_reg_m(reg_m)  # a ValueError naming reg_m
    return reg_m


def _solve(C, a, b, reg, method, tol, options):
    return solve(C, a, b, reg=reg, method=method, tol=tol, **options)


def _solve_self(C, a, reg, method, tol, options):
    """``OT(a, a)`` on a symmetric cost by the symmetric Newton solver, else by :func:`snsot.solve`.

    The general solvers are slow on self-transport at small ``reg`` (see
    :mod:`snsot.solvers.symmetric`); the fallback keeps the answer honest if
    the symmetric solver misses ``tol``.
    """
    problem = OTProblem(C, a, a, reg)  # C is symmetric: _self_loss made it so
    rows, _ = problem.support()
    n = problem.shape[0]
    sub = problem if len(rows) == n else problem.restrict(rows, rows)
    with thread_limit(sub.C.size, options.get("n_threads")):
        res = solve_symmetric(sub, tol=tol)
    if not res.converged:
        return _solve(C, a, a, reg, method, tol, options)
    if len(rows) < n:
        P = np.zeros((n, n))
        P[np.ix_(rows, rows)] = res.plan
        f = np.full(n, -np.inf)
        f[rows] = res.potentials[0]
        res.plan, res.potentials = P, (f, f.copy())
    return res


def _full_potentials(C, f, g, reg):
    """Potentials with finite values on zero-mass bins: the c-transform of the other side.

    ``solve`` leaves ``-inf`` there; the one-sided derivative of the value
    with respect to such a weight is the c-transform (the potential the bin
    would get with an infinitesimal mass).
    """
    f, g = f.copy(), g.copy()
    rows, cols = np.isfinite(f), np.isfinite(g)
    if not rows.all():
        f[~rows] = -reg * logsumexp((g[cols][None, :] - C[np.ix_(~rows, cols)]) / reg, axis=1)
    if not cols.all():
        g[~cols] = -reg * logsumexp((f[rows][:, None] - C[np.ix_(rows, ~cols)]) / reg, axis=0)
    return f, g


def _centre(f, g):
    """Shift ``(f + t, g - t)`` so that ``sum f = sum g`` (the documented convention)."""
    t = (g.sum() - f.sum()) / (len(f) + len(g))
    return f + t, g - t


def _value_solve(Cn, an, bn, reg, method, tol, options, symmetric=False, reg_m=None):
    """The forward solve of :class:`_OTValue` on NumPy inputs (what a batch runs on its threads)."""
    if reg_m is not None:
        return solve(Cn, an, bn, reg=reg, reg_m=reg_m, method=method, tol=tol, **options)
    if symmetric:  # b is a: the self-term of a divergence
        return _solve_self(Cn, an, reg, method, tol, options)
    return _solve(Cn, an, bn, reg, method, tol, options)


class _OTValue(torch.autograd.Function):
    @staticmethod
    def forward(ctx, C, a, b, reg, method, tol, options, symmetric=False, reg_m=None, result=None):
        Cn = _to_numpy(C, "C")
        res = result if result is not None else _value_solve(
            Cn, _to_numpy(a, "a"), _to_numpy(b, "b"), reg, method, tol, options, symmetric, reg_m)
        if reg_m is not None:  # unbalanced: the potentials are unique, no constant to fix
            rho = parse_reg_m(reg_m)
            f, g = (_relaxed(h, r) for h, r in zip(res.potentials, rho))  # d value / d a, d value / d b
        else:
            f, g = _centre(*_full_potentials(Cn, *res.potentials, res.reg))
        ctx.plan, ctx.f, ctx.g = res.plan, f, g
        ctx.result = res
        return torch.tensor(res.objective, dtype=C.dtype, device=C.device)

    @staticmethod
    def backward(ctx, grad_out):
        go = float(grad_out)
        out = [torch.as_tensor(go * x).to(dtype=grad_out.dtype, device=grad_out.device) if need else None
               for x, need in zip((ctx.plan, ctx.f, ctx.g), ctx.needs_input_grad[:3])]
        return (*out, None, None, None, None, None, None, None)


def _ot_losses(terms, reg, method, tol, options, n_jobs=None, one_thread=True):
    """Many OT values at once: ``terms`` are ``(C, a, b, symmetric, reg_m)``; their solves run on a thread pool.

    Each solve is the one :func:`ot_loss` (or the self-term) would run, so
    the values and gradients are those of a loop over the terms; only the
    order of the solves changes. ``n_jobs`` threads (default: one per core;
    1: in this thread, in order), each solve on one core when ``one_thread``
    (``n_threads=1`` unless the options say otherwise). Returns one 0-d
    tensor per term, in order.
    """
    from .._engines import ThreadEngine, _check_jobs

    inputs = [(_to_numpy(C, "C"), _to_numpy(a, "a"), _to_numpy(b, "b"), sym, reg_m)
              for C, a, b, sym, reg_m in terms]
    opts = dict(options)
    if one_thread:
        opts.setdefault("n_threads", 1)
    n_jobs = _check_jobs(n_jobs)

    def task(data, k):
        Cn, an, bn, sym, reg_m = data[k]
        return _value_solve(Cn, an, bn, reg, method, tol, opts, sym, reg_m)

    engine = ThreadEngine(n_jobs=min(len(terms), n_jobs))
    results = dict(engine.run(task, inputs, range(len(terms))))
    return [_OTValue.apply(C, a, b, reg, method, tol, opts, sym, reg_m, results[k])
            for k, (C, a, b, sym, reg_m) in enumerate(terms)]


def _check_inputs(C, a, b):
    if not isinstance(C, torch.Tensor):
        raise TypeError(f"C: expected a torch.Tensor; got {type(C).__name__}")
    if C.ndim != 2:
        raise ValueError(f"C: cost must be a 2-D tensor (n, m); got shape {tuple(C.shape)}")
    if not C.is_floating_point():
        raise TypeError(f"C: expected a floating-point tensor; got dtype {C.dtype}")
    for w, name, size in ((a, "a", C.shape[0]), (b, "b", C.shape[1])):
        if w is None:
            continue
        if not isinstance(w, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor or None; got {type(w).__name__}")
        if w.shape != (size,):
            raise ValueError(f"{name}: expected shape ({size},) to match C {tuple(C.shape)}; got {tuple(w.shape)}")


def ot_loss(C, a=None, b=None, *, reg, reg_m=None, method="sns", tol=1e-9, **options):
    r"""Entropic OT value as a differentiable 0-d tensor.

    The value is the solver's ``objective``, the optimum of

    .. math::
        \min_{P \ge 0,\, P 1 = a,\, P^T 1 = b} \langle C, P\rangle
        + \varepsilon \sum_{ij} P_{ij} (\log P_{ij} - 1),

    and its gradients come from the envelope theorem: ``dC = P``, ``da = f``,
    ``db = g`` with the potentials of the solve, no unrolled iterations. The
    shared constant of ``f`` and ``g`` is fixed so that ``sum f = sum g``
    (module docstring of :mod:`snsot.torch._autograd`); it does not affect
    any derivative along weights that keep ``sum a = sum b``. On a
    zero-mass bin the true derivative is ``-inf``; its finite part is
    returned (see the module docstring), exact for the Sinkhorn divergence.

    Parameters
    ----------
    C : torch.Tensor, shape (n, m)
        Cost (finite, non-negative). It may be built inside the graph, e.g.
        ``torch.cdist(x, y) ** 2``, so gradients reach the points.
    a, b : torch.Tensor, shape (n,) and (m,), optional
        Weights of equal total mass; uniform (``1/n``, ``1/m``) when omitted.
    reg : float
        Entropic regularisation :math:`\varepsilon`.
    reg_m : float or pair, optional
        KL marginal relaxation (unbalanced OT, POT's ``reg_m``): the value is
        then :func:`snsot.solve`'s ``objective`` with ``reg_m`` (the optimum
        of the KL-relaxed problem, whose weights may differ in mass), with
        ``dC = P``, ``da = rho_1 (1 - exp(-f / rho_1))`` and ``db = rho_2 (1 -
        exp(-g / rho_2))`` (``f``, ``g`` on a side whose ``rho`` is ``inf``).
        The potentials are unique, so nothing is centred. On a zero-mass bin
        the derivative is ``-inf`` (the entropy), returned as such.
    method, tol, **options
        Passed to :func:`snsot.solve` (``tol``: L1 marginal error relative to
        the mass; unbalanced: the dual gradient's L1 norm).

    Returns
    -------
    torch.Tensor
        0-d tensor of ``C``'s dtype and device. The solve runs in float64 on
        the CPU (no GPU backend yet); CUDA inputs get their value and
        gradients back on their device.

    Raises
    ------
    TypeError, ValueError
        On invalid input (the message names the argument).
    """
    _check_inputs(C, a, b)
    reg_m = _check_reg_m(reg_m)
    return _OTValue.apply(C, a, b, reg, method, tol, options, False, reg_m)


def _self_cost(C):
    """``(cost, symmetric)`` for a self-transport cost: symmetrised in the graph when it is symmetric to round-off.

    A cost formed as ``|x|^2 + |x|^2 - 2 x x^T`` may differ from its
    transpose in the last bit; the symmetric dual needs it exact. A cost that
    is not symmetric to round-off is returned as it is, for the general solver.
    """
    sym = 0.5 * (C + C.T)
    scale = float(C.detach().abs().max())
    if float((C.detach() - sym.detach()).abs().max()) > 1e-12 * scale:
        return C, False
    return sym, True


def _self_loss(C, a, *, reg, method, tol, **options):
    """``ot_loss(C, a, a)`` for a self-transport cost, solved on the symmetric dual (same gradients)."""
    _check_inputs(C, a, a)
    C, symmetric = _self_cost(C)
    return _OTValue.apply(C, a, a, reg, method, tol, options, symmetric)


# --------------------------------------------------------------------- plan ---

def _adjoint(P, r, c, rhs_r, rhs_c, rtol, max_iter, singular=True):
    """Solve ``[[diag(r), P], [P^T, diag(c)]] [lam; mu] = [rhs_r; rhs_c]`` by CG on a Schur complement.

    Eliminates the larger block and runs Jacobi-preconditioned CG on the
    Schur complement ``diag(c) - P^T diag(1/r) P`` of the smaller one, as the
    Newton step of SNS does.

    Balanced (``singular``): ``r``, ``c`` are the plan's sums, so the
    complement is positive semi-definite with null vector ``1`` (``P 1 =
    r``); adding ``s 1 1^T`` makes it definite without changing the solution
    of a right-hand side orthogonal to ``1`` (which it is: both blocks of the
    right-hand side have the same sum), and picks the solution with ``sum mu
    = 0``. Unbalanced: ``r``, ``c`` carry the KL terms ``reg / rho * target``
    on a relaxed side, the matrix is definite and nothing is fixed.
    """
    swap = P.shape[1] > P.shape[0]
    if swap:
        P, r, c, rhs_r, rhs_c = P.T, c, r, rhs_c, rhs_r
    m = len(c)
    s = float(c.mean()) / m if singular else 0.0
    rhs = rhs_c - P.T @ (rhs_r / r)
    if singular:
        rhs = rhs - rhs.mean()  # remove the round-off component along the null vector

    def matvec(y):
        return c * y - P.T @ ((P @ y) / r) + s * y.sum()

    diag = c - np.einsum("ij,ij->j", P, P / r[:, None]) + s
    inv_diag = 1.0 / np.where(diag > 0, diag, c + s)
    mu, it, res = linalg.pcg(matvec, rhs, inv_diag, rtol, max_iter)
    if not res <= rtol:
        warnings.warn(f"ot_plan backward: CG stopped at relative residual {res:.3g} > {rtol:g} after {it} "
                      "iterations; the gradient is inexact", ConvergenceWarning, stacklevel=4)
    lam = (rhs_r - P @ mu) / r
    return (mu, lam) if swap else (lam, mu)


# The sparse backward drops the plan entries P_ij <= cg_rtol * min(r_i / m, c_j / n): each row and
# column loses at most cg_rtol of its own mass (the accuracy asked of CG anyway), so even rows of tiny
# mass keep their largest entries and the adjoint stays accurate for them. It is taken when at most
# this fraction of the entries is kept (above it a dense BLAS pass beats the CSR kernels).
_SPARSE_DENSITY = 0.2


def _sparse_block(P, rtol, force=False):
    """The plan's entries above the threshold of the comment above, in CSR; None when too many remain.

    ``force``: the CSR block whatever its density.
    """
    n, m = P.shape
    keep = P > np.minimum((rtol / m) * P.sum(1)[:, None], (rtol / n) * P.sum(0)[None, :])
    if not force and np.count_nonzero(keep) > _SPARSE_DENSITY * P.size:
        return None
    rows, cols = np.nonzero(keep)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return linalg.CsrOffDiagonal(indptr, cols.astype(np.int32), P[rows, cols], P.shape)


def _adjoint_sparse(S, diagonal, rhs_r, rhs_c, rtol, max_iter):
    """The adjoint system of :func:`_adjoint` on the CSR block ``S``, by the compiled CG of SNS's Newton step.

    ``diagonal(r, c)`` gives the diagonal blocks from ``S``'s own sums (so
    ``H`` is exactly the Newton matrix of the sparsified plan, and balanced
    it keeps its null vector ``1``; the right-hand side is orthogonal to it
    and CG from 0 stays consistent). Returns ``(lam, mu)`` or None if CG
    missed ``rtol`` (the caller then solves densely).
    """
    ones = np.ones
    r = K.csr_matvec(S.indptr, S.indices, S.data, ones(S.shape[1]))
    c = S.rmatvec(ones(S.shape[0]))
    if not (r.min() > 0 and c.min() > 0):  # a row or column whose plan underflowed to 0: the dense CG copes
        return None
    d_row, d_col = diagonal(r, c)
    d = linalg.newton_direction(S, d_row, d_col, rhs_r, rhs_c, 1.0, rtol, max_iter)
    if not d.residual <= rtol:
        return None
    return d.x, d.y


def _kl_marginals(a, b, reg, rho):
    """:class:`~snsot.solvers._kl_marginals.KLMarginals` for weights ``a``, ``b`` (positive): the one definition
    of the unbalanced Hessian's diagonal and of the relaxed targets."""
    problem = SimpleNamespace(a=a, b=b, reg=reg, reg_m=rho, mass=float(np.sqrt(a.sum() * b.sum())))
    return KLMarginals(problem)


def _zero_bin_gradient(exponent, G, other, reg, relaxed):
    """Derivative of ``<G, P>`` with respect to the weight of empty bins (one row of ``q`` each).

    Giving an empty bin a mass ``t`` adds a row ``t q`` to the plan (``q`` the
    conditional ``exp(exponent) = exp((g_j - C_ij) / reg)``, normalised) and moves the other
    side's sums by ``t q``, whose effect is ``-reg <mu, q>`` through the
    adjoint: the derivative is ``sum_j q_ij (G_ij - reg mu_j)``. On a relaxed
    side the row's mass grows like ``t ** (rho / (rho + reg))``, so the
    derivative is infinite, with that sign.
    """
    top = exponent.max(1, keepdims=True)
    with np.errstate(invalid="ignore"):
        q = np.exp(exponent - np.where(np.isfinite(top), top, 0.0))
    total = q.sum(1, keepdims=True)
    q = np.divide(q, total, out=np.zeros_like(q), where=total > 0)  # a row of +inf costs: no derivative
    d = (q * (G - reg * other[None, :])).sum(1)
    if relaxed:
        return np.where(d == 0, 0.0, np.copysign(np.inf, d))
    return d


class _OTPlan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, C, a, b, reg, method, tol, cg_rtol, options, reg_m=None, backward="auto"):
        Cn = _to_numpy(C, "C")
        an, bn = _to_numpy(a, "a"), _to_numpy(b, "b")
        if reg_m is None:
            res = _solve(Cn, an, bn, reg, method, tol, options)
        else:
            res = solve(Cn, an, bn, reg=reg, reg_m=reg_m, method=method, tol=tol, **options)
        ctx.C, ctx.result, ctx.cg_rtol, ctx.backward = Cn, res, cg_rtol, backward
        n, m = Cn.shape
        ctx.a = np.full(n, 1.0 / n) if an is None else an
        ctx.b = np.full(m, 1.0 / m) if bn is None else bn
        ctx.rho = (math.inf, math.inf) if reg_m is None else parse_reg_m(reg_m)
        return torch.as_tensor(res.plan).to(dtype=C.dtype, device=C.device)

    @staticmethod
    def backward(ctx, grad_plan):
        res, Cn, rho = ctx.result, ctx.C, ctx.rho
        balanced = math.isinf(rho[0]) and math.isinf(rho[1])
        reg, P = res.reg, res.plan
        G = grad_plan.detach().to(device="cpu", dtype=torch.float64).numpy()
        f, g = res.potentials
        rows, cols = np.flatnonzero(np.isfinite(f)), np.flatnonzero(np.isfinite(g))
        Ps, Gs = P[np.ix_(rows, cols)], G[np.ix_(rows, cols)]
        GP = Gs * Ps
        # dL = <G, dP>, dP = P (df_i + dg_j - dC_ij) / reg. Differentiating the optimality
        # conditions P 1 = a exp(-f / rho_1), P^T 1 = b exp(-g / rho_2) (rho = inf: balanced) gives
        # H (df, dg) = reg (e_a da, e_b db) + ((P dC) 1, (P dC)^T 1), e_a = exp(-f / rho_1), with
        # H = [[diag(P 1 + reg / rho_1 a~), P], [P^T, diag(P^T 1 + reg / rho_2 b~)]], a~ = a exp(-f / rho_1)
        # (KLMarginals.hessian_diagonal, solvers/_kl_marginals.py).
        # With the adjoint H (lam, mu) = ((GP) 1, (GP)^T 1) / reg:
        # dL/dC = P (lam_i + mu_j) - G P / reg, dL/da = reg e_a lam, dL/db = reg e_b mu.
        fs, gs = f[rows], g[cols]
        if balanced:
            def diagonal(r, c):
                return r, c
            scale_a, scale_b = np.ones(len(rows)), np.ones(len(cols))
        else:
            marginals = _kl_marginals(ctx.a[rows], ctx.b[cols], reg, rho)

            def diagonal(r, c):  # KLMarginals' Hessian diagonal without the Newton step's shift
                return marginals.hessian_diagonal(fs, gs, r, c, 0.0)
            targets = marginals.targets(fs, gs)
            scale_a, scale_b = targets[0] / ctx.a[rows], targets[1] / ctx.b[cols]
        d_row, d_col = diagonal(Ps.sum(1), Ps.sum(0))
        rhs_r, rhs_c = GP.sum(1) / reg, GP.sum(0) / reg
        max_iter = max(1000, 10 * min(Ps.shape))
        adjoint = None
        S = None if ctx.backward == "dense" else _sparse_block(Ps, ctx.cg_rtol, force=ctx.backward == "sparse")
        if S is not None:
            adjoint = _adjoint_sparse(S, diagonal, rhs_r, rhs_c, ctx.cg_rtol, max_iter)
        lam_s, mu_s = adjoint if adjoint is not None else _adjoint(
            Ps, d_row, d_col, rhs_r, rhs_c, ctx.cg_rtol, max_iter=max_iter, singular=balanced)
        n, m = P.shape
        lam, mu = np.zeros(n), np.zeros(m)
        lam[rows], mu[cols] = lam_s, mu_s
        ga, gb = np.zeros(n), np.zeros(m)
        ga[rows], gb[cols] = reg * scale_a * lam_s, reg * scale_b * mu_s
        # Zero-mass bins (potential -inf) get their one-sided derivative. Unbalanced bins that can
        # send nothing (every cost +inf; potential +inf) keep 0: the plan does not depend on them.
        zr, zc = np.flatnonzero(f == -np.inf), np.flatnonzero(g == -np.inf)
        if len(zr):
            ga[zr] = _zero_bin_gradient(((g[cols][None, :] - Cn[np.ix_(zr, cols)]) / reg),
                                        G[np.ix_(zr, cols)], mu_s, reg, not math.isinf(rho[0]))
        if len(zc):
            gb[zc] = _zero_bin_gradient(((f[rows][None, :] - Cn[np.ix_(rows, zc)].T) / reg),
                                        G[np.ix_(rows, zc)].T, lam_s, reg, not math.isinf(rho[1]))
        gC = P * (lam[:, None] + mu[None, :]) - G * P / reg
        if balanced:
            ga, gb = _centre(ga, gb)
        ref = grad_plan
        out = [torch.as_tensor(x).to(dtype=ref.dtype, device=ref.device) if need else None
               for x, need in zip((gC, ga, gb), ctx.needs_input_grad[:3])]
        return (*out, None, None, None, None, None, None, None)


def ot_plan(C, a=None, b=None, *, reg, reg_m=None, method="sns", tol=1e-9, cg_rtol=1e-10, backward="auto",
            **options):
    r"""Entropic OT plan as a tensor, differentiable by implicit differentiation.

    The plan :math:`P_{ij} = \exp((f_i + g_j - C_{ij})/\varepsilon)` is
    defined by its marginal conditions ``P 1 = a``, ``P^T 1 = b``
    (unbalanced, ``reg_m = (rho_1, rho_2)``: ``P 1 = a exp(-f / rho_1)``,
    ``P^T 1 = b exp(-g / rho_2)``). Differentiating them gives the Newton
    system of the dual, ``H = [[diag(P 1 + reg / rho_1 a~), P], [P^T,
    diag(P^T 1 + reg / rho_2 b~)]]`` with the relaxed targets ``a~ = a
    exp(-f / rho_1)``, ``b~ = b exp(-g / rho_2)`` (``reg / rho = 0`` on a
    hard side; the KL Hessian of :mod:`snsot.solvers._kl_marginals`), which
    the backward pass solves once (for the adjoint) by conjugate gradients on
    its Schur complement, the linear algebra of SNS's Newton step. For a loss
    ``L(P)`` with ``G = dL/dP`` and the adjoint ``(lam, mu)`` of ``((G P) 1,
    (G P)^T 1) / reg``:

    ``dL/dC = P (lam_i + mu_j) - G P / reg``, ``dL/da = reg lam exp(-f /
    rho_1)``, ``dL/db = reg mu exp(-g / rho_2)``. Balanced (both ``rho``
    infinite), ``H`` is singular along ``(1, -1)`` and the weight gradients
    are centred so that their sums agree, as in :func:`ot_loss`; with a
    finite ``rho`` the system is definite and they are unique.

    Zero-mass bins: the derivative with respect to their weight is the
    one-sided one (module docstring); on a relaxed side (finite ``rho``) the
    row's mass grows like ``t ** (rho / (rho + reg))``, so that derivative
    is ``+inf`` or ``-inf`` (0 if the loss does not see the row).

    Parameters
    ----------
    C, a, b, reg, reg_m, method, tol, **options
        As in :func:`ot_loss`.
    cg_rtol : float
        Relative residual of the backward CG solve (a
        :class:`~snsot.ConvergenceWarning` is emitted if it is not reached).
    backward : {"auto", "sparse", "dense"}
        Operator of the backward CG. ``"sparse"``: the plan's entries above
        ``cg_rtol * min(r_i / m, c_j / n)`` (``r``, ``c`` its row and column
        sums, so each row and column drops at most ``cg_rtol`` of its mass) in CSR, with the diagonal made of their own
        sums, solved by the compiled CG of SNS's sparse Newton step
        (:func:`snsot._kernels.schur_cg`); ``"dense"``: the whole plan (two
        BLAS passes per CG iteration); ``"auto"``: sparse when at most 20 % of
        the entries are kept, as at small ``reg``. A sparse CG that misses
        ``cg_rtol`` falls back to the dense one.

    Returns
    -------
    torch.Tensor, shape (n, m)
        The plan, in ``C``'s dtype and on its device (solved in float64 on
        the CPU).

    Notes
    -----
    The backward pass saves the dense plan (``O(n m)`` memory) and forms the
    dense gradient ``dL/dC``; only the CG iterations run on the sparse block.
    """
    _check_inputs(C, a, b)
    reg_m = _check_reg_m(reg_m)
    if reg_m is not None and all(math.isinf(r) for r in parse_reg_m(reg_m)):
        reg_m = None  # both sides hard: the balanced problem (solve() does the same)
    if backward not in ("auto", "sparse", "dense"):
        raise ValueError(f"backward: expected 'auto', 'sparse' or 'dense'; got {backward!r}")
    if not (isinstance(cg_rtol, (int, float)) and 0 < cg_rtol < 1):
        raise ValueError(f"cg_rtol: must be a number in (0, 1); got {cg_rtol!r}")
    return _OTPlan.apply(C, a, b, reg, method, tol, float(cg_rtol), options, reg_m, backward)
