"""Costs between point clouds, the Sinkhorn divergence, and its ``nn.Module``."""

from __future__ import annotations

import math
import numbers

import torch

from ..problem import parse_reg_m
from .._engines import _check_jobs
from ._autograd import _check_inputs, _ot_losses, _self_cost

__all__ = ["pairwise_cost", "sinkhorn_divergence", "SinkhornLoss"]

_COSTS = ("sqeuclidean", "euclidean")


def _check_cost(cost):
    if callable(cost):
        return cost
    if isinstance(cost, numbers.Real) and not isinstance(cost, bool):
        if not (float(cost) > 0 and float(cost) < float("inf")):
            raise ValueError(f"cost: a power of the distance must be positive and finite; got {cost!r}")
        return 2.0 if float(cost) == 2.0 else 1.0 if float(cost) == 1.0 else float(cost)
    if cost == "sqeuclidean":
        return 2.0
    if cost == "euclidean":
        return 1.0
    raise ValueError(f"cost: expected one of {', '.join(_COSTS)}, a positive number p or a callable; got {cost!r}")


def pairwise_cost(x, y, cost="sqeuclidean"):
    r"""Cost matrix between two point clouds, differentiable in both.

    Parameters
    ----------
    x : torch.Tensor, shape (n, d) or (B, n, d)
    y : torch.Tensor, shape (m, d) or (B, m, d)
    cost : {"sqeuclidean", "euclidean"}, float or callable
        ``"sqeuclidean"``: :math:`|x_i - y_j|^2`; ``"euclidean"``:
        :math:`|x_i - y_j|`; a number ``p``: :math:`|x_i - y_j|^p`; a callable
        ``cost(x, y)`` returning the ``(n, m)`` (or ``(B, n, m)``) tensor.

    Returns
    -------
    torch.Tensor, shape (n, m) or (B, n, m)
        Non-negative costs in the dtype of ``x``. The gradient of a power
        ``p`` of a zero distance is taken as 0 (its one-sided value for
        ``p > 1``; the self-costs of a cloud, whose diagonal is identically 0,
        need exactly this).
    """
    power = _check_cost(cost)
    if callable(power):
        return power(x, y)
    # |x|^2 + |y|^2 - 2 <x, y> costs one matmul and keeps memory at n*m (the broadcast
    # difference would hold n*m*d); it may round below 0, hence the clamp.
    d2 = (x * x).sum(-1)[..., :, None] + (y * y).sum(-1)[..., None, :] - 2.0 * (x @ y.transpose(-1, -2))
    d2 = d2.clamp_min(0.0)
    if power == 2.0:
        return d2
    positive = d2 > 0
    safe = torch.where(positive, d2, torch.ones_like(d2))
    return torch.where(positive, safe ** (0.5 * power), torch.zeros_like(d2))


def _weights(w, size, name, batch, like):
    if w is None:
        shape = (size,) if batch is None else (batch, size)
        return torch.full(shape, 1.0 / size, dtype=torch.float64, device=like.device)
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or None; got {type(w).__name__}")
    expected = (size,) if batch is None else (batch, size)
    if tuple(w.shape) != expected:
        raise ValueError(f"{name}: expected shape {expected}; got {tuple(w.shape)}")
    return w.to(torch.float64)


def _points(x, name):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor; got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected floating-point points; got dtype {x.dtype}")
    if x.ndim not in (2, 3) or x.shape[-2] == 0 or x.shape[-1] == 0:
        raise ValueError(f"{name}: points must be a non-empty (n, d) or (B, n, d) tensor; got shape {tuple(x.shape)}")
    if not torch.isfinite(x.detach()).all():
        raise ValueError(f"{name}: points must be finite")
    return x


def _divergence_reg_m(reg_m):
    """One finite ``rho`` for the unbalanced divergence, ``None`` for the balanced one (``inf``)."""
    if reg_m is None:
        return None
    rho = parse_reg_m(reg_m)
    if rho[0] != rho[1]:
        raise ValueError(f"reg_m: the unbalanced divergence needs the same penalty on both sides; got {reg_m!r}")
    return None if math.isinf(rho[0]) else rho[0]


def _kl_term(p, q, u, v, *, reg, reg_m, cost):
    r"""The term of unbalanced OT with the entropy relative to ``u (x) v``, as ``(C, u, v, False, reg_m)``.

    ``reg KL(P | u v^T) = reg sum P (log P - 1) - reg <P, log u_i + log v_j> +
    reg m(u) m(v)``: the problem of :func:`ot_loss` on the cost ``C - reg
    log u_i - reg log v_j``; its value is that of :func:`ot_loss` plus the
    constant ``reg m(u) m(v)``, left out (it cancels in the divergence).
    Points of zero weight are dropped.
    """
    pu, qv = u > 0, v > 0
    p, u, q, v = p[pu], u[pu], q[qv], v[qv]
    C = pairwise_cost(p, q, cost) - reg * torch.log(u)[:, None] - reg * torch.log(v)[None, :]
    return C, u, v, False, reg_m


def _terms(x, y, a, b, *, reg, rho, cost, debias):
    """The OT problems of one divergence, as :func:`_ot_losses` takes them: one, or three (cross, then self).

    ``(C, a, b, symmetric, reg_m)`` each; the balanced self-terms go to the
    symmetric solver (:func:`~snsot.torch._autograd._self_cost`).
    """
    if rho is not None and debias:
        kw = dict(reg=reg, reg_m=rho, cost=cost)
        return [_kl_term(x, y, a, b, **kw), _kl_term(x, x, a, a, **kw), _kl_term(y, y, b, b, **kw)]
    cross = (pairwise_cost(x, y, cost), a, b, False, rho)
    if not debias:
        return [cross]
    return [cross] + [(C_self, w, w, symmetric, None)
                      for C_self, symmetric, w in ((*_self_cost(pairwise_cost(p, p, cost)), w) for p, w in ((x, a), (y, b)))]


def _combine(values):
    """``OT(a, b) - OT(a, a) / 2 - OT(b, b) / 2`` from the values of :func:`_terms` (or the one value)."""
    return values[0] if len(values) == 1 else values[0] - 0.5 * (values[1] + values[2])


def sinkhorn_divergence(x, y, a=None, b=None, *, reg, reg_m=None, cost="sqeuclidean", debias=True, method="sns",
                        tol=1e-9, n_jobs=None, **options):
    r"""Sinkhorn divergence between two weighted point clouds, with exact gradients.

    .. math::
        S_\varepsilon(a, b) = \mathrm{OT}_\varepsilon(a, b)
        - \tfrac12 \mathrm{OT}_\varepsilon(a, a) - \tfrac12 \mathrm{OT}_\varepsilon(b, b),

    each term the entropic OT value of :func:`~snsot.torch.ot_loss` on the
    cost between the clouds, solved to ``tol`` by :func:`snsot.solve` and
    differentiated by the envelope theorem. It is non-negative and zero when
    the two weighted clouds are equal (for the costs here, whose Gibbs kernels
    are positive definite), and differentiable in ``x``, ``y``, ``a``, ``b``.

    Parameters
    ----------
    x : torch.Tensor, shape (n, d) or (B, n, d)
        Source points; a leading batch dimension gives one divergence per item.
    y : torch.Tensor, shape (m, d) or (B, m, d)
        Target points (same batch size and dimension as ``x``).
    a, b : torch.Tensor, shape (n,) / (m,) or (B, n) / (B, m), optional
        Weights, equal totals per item (any totals with ``reg_m``); uniform
        when omitted.
    reg : float
        Entropic regularisation :math:`\varepsilon`, in the units of the cost.
    reg_m : float, optional
        Unbalanced divergence (Séjourné et al. 2019, GeomLoss's ``reach``):
        the marginals are relaxed by ``rho KL`` (one ``rho`` for both sides;
        ``inf`` or ``None`` is balanced) and the weights may differ in mass.
        See Notes for the definition.
    cost : {"sqeuclidean", "euclidean"}, float or callable
        See :func:`pairwise_cost`.
    debias : bool
        ``False`` returns the plain entropic OT value :math:`\mathrm{OT}_\varepsilon(a, b)`
        (:func:`ot_loss`, with ``reg_m`` if given).
    method, tol, **options
        Passed to :func:`snsot.solve`.
    n_jobs : int, optional
        Batch input: threads that solve the ``3 B`` problems (default: one
        per core), each solve on one core (as :func:`snsot.solve_batch`).

    Returns
    -------
    torch.Tensor, shape () or (B,)
        In the dtype and on the device of ``x``. All solves run in float64
        on the CPU (the costs are formed in float64 on the input's device);
        CUDA inputs get their values and gradients back on their device.

    Notes
    -----
    Unbalanced (``reg_m = rho``): with :math:`\mathrm{OT}^{KL}` the
    optimum of :math:`\langle C, P\rangle + \varepsilon \mathrm{KL}(P | a
    \otimes b) + \rho \mathrm{KL}(P 1 | a) + \rho \mathrm{KL}(P^T 1 | b)`,

    .. math::
        S = \mathrm{OT}^{KL}(a, b) - \tfrac12 \mathrm{OT}^{KL}(a, a)
        - \tfrac12 \mathrm{OT}^{KL}(b, b) + \tfrac{\varepsilon}{2} (m(a) - m(b))^2,

    Séjourné et al. (2019), Prop. 12, and GeomLoss's value for ``reach =
    rho ** (1 / p)`` (its dual form ``(rho + eps / 2) <a, exp(-f_aa / rho) -
    exp(-f_ab / rho)> + ...``). The entropy is taken relative to the product
    of the weights, not as in :func:`ot_loss`: with unequal marginals the two
    conventions are different problems. Each term is solved by
    :func:`snsot.solve` on the cost ``C - eps log a_i - eps log b_j``, where
    it equals :func:`ot_loss` with ``reg_m`` up to ``eps m(a) m(b)``, which
    cancels against the mass term. Points of zero weight are dropped (their
    weight's gradient is 0). The self-terms use the general solver.

    A batch's ``3 B`` problems (``B`` without ``debias``) are solved on a
    thread pool, each exactly as the unbatched call solves it (the values
    equal a Python loop over the items up to the solvers' round-off).
    The self-terms :math:`\mathrm{OT}_\varepsilon(a, a)` are solved on the
    symmetric dual (potentials ``f = g``, :mod:`snsot.solvers.symmetric`),
    where the general solvers are slowest; if that misses ``tol`` they fall
    back to :func:`snsot.solve`.
    """
    x, y = _points(x, "x"), _points(y, "y")
    if x.ndim != y.ndim:
        raise ValueError(f"y: expected {x.ndim}-D points like x; got shape {tuple(y.shape)}")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"y: points have dimension {y.shape[-1]} but x has {x.shape[-1]}")
    batch = x.shape[0] if x.ndim == 3 else None
    if batch is not None and y.shape[0] != batch:
        raise ValueError(f"y: batch size {y.shape[0]} differs from that of x ({batch})")
    _check_cost(cost)
    rho = _divergence_reg_m(reg_m)
    if n_jobs is not None:
        _check_jobs(n_jobs)
    a = _weights(a, x.shape[-2], "a", batch, x)
    b = _weights(b, y.shape[-2], "b", batch, x)
    x64, y64 = x.to(torch.float64), y.to(torch.float64)

    kw = dict(reg=reg, rho=rho, cost=cost, debias=debias)
    items = [(x64, y64, a, b)] if batch is None else [(x64[k], y64[k], a[k], b[k]) for k in range(batch)]
    terms = []
    for item in items:
        for C, u, v, *rest in _terms(*item, **kw):
            _check_inputs(C, u, v)
            terms.append((C, u, v, *rest))
    per_item = len(terms) // len(items)
    # One item: its solves run one after the other in this thread, each on all cores. A batch: its
    # 3B solves run on a thread pool, one core each (snsot.solve_batch's layout).
    values = _ot_losses(terms, reg, method, tol, options, n_jobs=1 if batch is None else n_jobs,
                        one_thread=batch is not None)
    out = [_combine(values[k * per_item:(k + 1) * per_item]) for k in range(len(items))]
    out = out[0] if batch is None else torch.stack(out)
    return out.to(x.dtype)


class SinkhornLoss(torch.nn.Module):
    r"""Sinkhorn divergence as a loss module (a drop-in for GeomLoss's ``SamplesLoss("sinkhorn")``).

    ``loss(x, y)`` or ``loss(a, x, b, y)`` returns
    :func:`sinkhorn_divergence` ``(x, y, a, b, reg=reg, cost=cost, debias=debias)``.

    Parameters
    ----------
    reg : float
        Entropic regularisation :math:`\varepsilon`.
    cost : {"sqeuclidean", "euclidean"}, float or callable
        See :func:`pairwise_cost`.
    debias : bool
        Subtract the self-terms (the Sinkhorn divergence) or not.
    reg_m : float, optional
        Unbalanced divergence (:func:`sinkhorn_divergence`); GeomLoss's
        ``reach=r`` with ``p`` is ``reg_m=r**p``.
    method, tol, **options
        Passed to :func:`snsot.solve`.

    Notes
    -----
    GeomLoss's ``SamplesLoss("sinkhorn", p=p, blur=blur, scaling=scaling)``
    uses the cost :math:`|x - y|^p / p` and :math:`\varepsilon = \mathrm{blur}^p`.
    With the same cost and :math:`\varepsilon` the divergences agree (the
    entropy terms of the two conventions cancel in :math:`S_\varepsilon`):

    ==========================================  ==========================================================
    GeomLoss                                    snsot.torch
    ==========================================  ==========================================================
    ``SamplesLoss("sinkhorn", p=2, blur=s)``    ``SinkhornLoss(reg=2 * s**2, cost="sqeuclidean")`` times 1/2,
                                                or ``SinkhornLoss(reg=s**2, cost=lambda x, y:
                                                pairwise_cost(x, y) / 2)``
    ``SamplesLoss("sinkhorn", p=1, blur=s)``    ``SinkhornLoss(reg=s, cost="euclidean")``
    ``SamplesLoss("sinkhorn", p=p, blur=s)``    ``SinkhornLoss(reg=s**p, cost=lambda x, y:
                                                pairwise_cost(x, y, p) / p)``
    ``scaling=...`` (annealing speed)            no counterpart: every solve runs to ``tol`` (L1 marginal
                                                error), so values and gradients do not depend on it
    ``reach=r`` (unbalanced)                    ``reg_m=r**p`` (same cost and ``reg`` as above; the debiased
                                                values agree, see :func:`sinkhorn_divergence`)
    ``debias=False``                            ``debias=False`` (values differ by the entropy convention:
                                                GeomLoss uses ``KL(P | a b^T)``, snsot ``sum P (log P - 1)``)
    ==========================================  ==========================================================
    """

    def __init__(self, reg, cost="sqeuclidean", debias=True, reg_m=None, method="sns", tol=1e-9, **options):
        super().__init__()
        _check_cost(cost)
        _divergence_reg_m(reg_m)
        self.reg, self.cost, self.debias, self.reg_m = reg, cost, debias, reg_m
        self.method, self.tol, self.options = method, tol, options

    def forward(self, *args):
        if len(args) == 2:
            x, y = args
            a = b = None
        elif len(args) == 4:
            a, x, b, y = args
        else:
            raise TypeError(f"SinkhornLoss: call as loss(x, y) or loss(a, x, b, y); got {len(args)} arguments")
        return sinkhorn_divergence(x, y, a, b, reg=self.reg, reg_m=self.reg_m, cost=self.cost, debias=self.debias,
                                   method=self.method, tol=self.tol, **self.options)

    def extra_repr(self) -> str:
        extra = "" if self.reg_m is None else f", reg_m={self.reg_m!r}"
        return f"reg={self.reg!r}, cost={self.cost!r}, debias={self.debias}{extra}"
