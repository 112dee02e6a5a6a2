r"""KL-relaxed marginals: the unbalanced entropic problem and its dual.

The problem
-----------
With ``rho = (rho_1, rho_2)`` (``reg_m``; POT's name) and
:math:`\varepsilon` = ``reg``, unbalanced entropic OT is

.. math::
    \min_{P \ge 0}\; \langle C, P\rangle + \varepsilon \sum_{ij} P_{ij}(\log P_{ij} - 1)
    + \rho_1 \mathrm{KL}(P 1 \,|\, a) + \rho_2 \mathrm{KL}(P^T 1 \,|\, b),
    \qquad \mathrm{KL}(x|y) = \sum_i x_i \log(x_i / y_i) - x_i + y_i,

the objective of POT's ``ot.unbalanced.sinkhorn_unbalanced(a, b, C, reg,
reg_m, reg_type="entropy")`` (POT writes the entropy as ``reg * KL(P | 1)``,
which differs from ours by the constant ``reg * n * m``; its ``log["total_cost"]``
also leaves out the mass terms ``sum(y - x)`` of the two marginal KLs, so it
is not this number: compare plans, or recompute the primal from POT's plan).
The totals of ``a`` and ``b`` may differ. ``rho_k = inf`` makes side ``k`` a
hard constraint; ``rho = (inf, inf)`` is balanced OT.

The dual
--------
By Fenchel-Rockafellar duality (the conjugate of ``rho KL(. | a)`` at ``h`` is
``rho <a, exp(h / rho) - 1>``), with the plan
:math:`P_{ij} = \exp((f_i + g_j - C_{ij})/\varepsilon)` as in the balanced case,

.. math::
    D(f, g) = \rho_1 \langle a, 1 - e^{-f/\rho_1}\rangle
            + \rho_2 \langle b, 1 - e^{-g/\rho_2}\rangle
            - \varepsilon \sum_{ij} P_{ij},

concave, strictly so when a ``rho`` is finite (no free constant between ``f``
and ``g``), and equal to the primal optimum at its maximiser. As ``rho -> inf``,
``rho (1 - exp(-f / rho)) -> f``: the balanced dual. We evaluate it as
``-rho expm1(-f / rho)``, exact in that limit.

Gradient: with the *relaxed targets* :math:`\tilde a = a e^{-f/\rho_1}` and
:math:`\tilde b = b e^{-g/\rho_2}`,

.. math::
    \partial_f D = \tilde a - P 1, \qquad \partial_g D = \tilde b - P^T 1 .

At the optimum ``P 1 = a~`` and ``P^T 1 = b~``: the plan's marginals are the
targets the penalty settled on.

Hessian: :math:`-\varepsilon \nabla^2 D` is the balanced one plus a diagonal,

.. math::
    \begin{pmatrix} \mathrm{diag}(P1 + \tfrac{\varepsilon}{\rho_1}\tilde a) & P \\
                    P^T & \mathrm{diag}(P^T1 + \tfrac{\varepsilon}{\rho_2}\tilde b)\end{pmatrix},

so the Newton system of SNS keeps its off-diagonal block (the plan, and its
sparsification) and only its diagonal blocks gain ``reg / rho * target``.

Sinkhorn (exact maximisation in ``f`` for fixed ``g``): solving
``a_i exp(-f_i / rho_1) = (P 1)_i`` gives

.. math::
    f^{new} = \kappa_1 \bigl(f + \varepsilon \log(a / P(f, g) 1)\bigr),
    \qquad \kappa_1 = \frac{\rho_1}{\rho_1 + \varepsilon},

the balanced update scaled by ``kappa_1`` (the "damped" update, exponent
``rho / (rho + reg)`` on the scalings ``u = exp(f / reg)``); likewise for ``g``.
After a ``g`` update the columns meet their targets exactly, as in the
balanced case.

Stopping measure
----------------
The L1 norm of the dual gradient,
``||P 1 - a~||_1 + ||P^T 1 - b~||_1``, which is the balanced marginal error
when ``rho = inf`` and, like it, is in units of mass: ``tol`` means the same
thing for both. :attr:`snsot.OTResult.marginal_error` reports it.

Gradients of the value (the envelope theorem, for ``snsot.torch``): with ``V``
the optimal value, ``dV/dC = P``, ``dV/da = rho_1 (1 - exp(-f / rho_1))`` and
``dV/db = rho_2 (1 - exp(-g / rho_2))`` (``f`` and ``g`` when ``rho = inf``):
see :meth:`KLMarginals.weight_gradients`.
"""

from __future__ import annotations

import math

import numpy as np

from ._marginals import BalancedMarginals

__all__ = ["KLMarginals", "sinkhorn_unbalanced_reference", "unbalanced_primal"]


def _relaxed(h: np.ndarray, rho: float) -> np.ndarray:
    """``rho (1 - exp(-h / rho))`` per entry, exact as ``rho -> inf`` (where it is ``h``)."""
    if math.isinf(rho):
        return h
    return -rho * np.expm1(-h / rho)


class KLMarginals(BalancedMarginals):
    """The KL marginal penalty ``rho_1 KL(P1 | a) + rho_2 KL(P^T 1 | b)``; see the module docstring.

    The second implementation of the marginals seam
    (:class:`~snsot.solvers._marginals.BalancedMarginals`): the same
    questions, answered with the relaxed targets ``a exp(-f / rho_1)``,
    ``b exp(-g / rho_2)`` in place of ``a`` and ``b``, the penalty's
    ``reg / rho * target`` on the Hessian's diagonal and the damped Sinkhorn
    exponents ``rho / (rho + reg)``. A side with ``rho = inf`` answers as the
    balanced class does.

    Parameters
    ----------
    problem : OTProblem
        Its ``a``, ``b`` (positive: zero-mass bins removed; any totals),
        ``reg`` and ``reg_m = (rho_1, rho_2)``.
    """

    #: the row target ``a exp(-f / rho_1)`` depends on ``f``: plans must ask :meth:`row_error`
    fixed_row_target = False

    def __init__(self, problem):
        super().__init__(problem)
        self.rho = (float(problem.reg_m[0]), float(problem.reg_m[1]))
        self.row_exponent, self.col_exponent = (
            1.0 if math.isinf(r) else r / (r + self.reg) for r in self.rho)

    def targets(self, f, g) -> tuple[np.ndarray, np.ndarray]:
        """``(a exp(-f / rho_1), b exp(-g / rho_2))``: what the plan's row and column sums should be."""
        return _target(self.a, f, self.rho[0]), _target(self.b, g, self.rho[1])

    def dual(self, f, g, plan_total: float) -> float:
        """``D(f, g)`` given ``sum(P(f, g))``."""
        return float(self.a @ _relaxed(f, self.rho[0]) + self.b @ _relaxed(g, self.rho[1]) - self.reg * plan_total)

    def dual_with_exact_cols(self, f, g) -> float:
        """``D(f, g)`` at a Sinkhorn iterate: its columns meet their targets, so ``sum(P)`` is theirs."""
        return self.dual(f, g, float(_target(self.b, g, self.rho[1]).sum()))

    def row_error(self, f, row) -> float:
        return float(np.abs(row - _target(self.a, f, self.rho[0])).sum())

    def sinkhorn_row_error(self, f, f_full) -> float:
        # rows a exp((f - f_full)/reg) against targets a exp(-f/rho): one expm1 of the log ratio
        return float(np.abs(_target(self.a, f, self.rho[0])
                            * np.expm1((f - f_full) / self.reg + _ratio(f, self.rho[0]))).sum())

    def gradient(self, f, g, row, col):
        """``(a exp(-f/rho_1) - P 1, b exp(-g/rho_2) - P^T 1)``."""
        ta, tb = self.targets(f, g)
        return ta - row, tb - col

    def error(self, f, g, row, col) -> float:
        """The stopping measure: ``||P 1 - a~||_1 + ||P^T 1 - b~||_1``, the L1 norm of the dual gradient."""
        ta, tb = self.targets(f, g)
        return float(np.abs(ta - row).sum() + np.abs(tb - col).sum())

    def hessian_diagonal(self, f, g, row, col, delta: float):
        """The plan's sums, shifted by at most ``reg / rho``, plus the penalty's ``reg / rho * target``.

        The balanced shift ``delta`` removes the null direction ``(1, -1)``; a
        finite ``rho`` on either side already does (the matrix is then
        irreducibly diagonally dominant, whatever the sparsification drops),
        and a shift much larger than the penalty's curvature ``reg / rho``
        swamps it: with ``rho = 1e3``, ``reg = 0.05`` and totals 22 and 75 the
        full ``1e-3`` shift cut every Newton step along ``(1, -1)`` to a
        twentieth and SNS took 173 steps (``tests/test_unbalanced.py``). Capped
        at ``reg / min(rho)`` (at the optimum the targets equal the sums, so the
        shift is then at most the penalty's own term) it keeps its damping
        where it helps (Newton steps, shift full / capped / none: MNIST at reg
        1e-4, rho 1: 92 / 109 / 133; 2-D clouds: 49 / 22 / 16; the rho = 1e3
        case: 173 / 21 / 6).
        """
        shift = min(delta, self.reg / min(self.rho))
        d_row, d_col = row * (1.0 + shift), col * (1.0 + shift)
        ta, tb = self.targets(f, g)
        if not math.isinf(self.rho[0]):
            d_row = d_row + (self.reg / self.rho[0]) * ta
        if not math.isinf(self.rho[1]):
            d_col = d_col + (self.reg / self.rho[1]) * tb
        return d_row, d_col

    def weight_gradients(self, f, g) -> tuple[np.ndarray, np.ndarray]:
        """Gradients of the optimal value with respect to ``a`` and ``b`` (envelope theorem).

        ``rho_1 (1 - exp(-f / rho_1))`` and ``rho_2 (1 - exp(-g / rho_2))``;
        ``f`` and ``g`` themselves on a hard-constrained side.
        """
        return _relaxed(f, self.rho[0]), _relaxed(g, self.rho[1])


def _target(w, h, rho):
    return w if math.isinf(rho) else w * np.exp(-h / rho)


def _ratio(h, rho):
    return 0.0 if math.isinf(rho) else h / rho


def unbalanced_primal(C, P, a, b, reg, rho) -> float:
    """The primal objective at a plan ``P`` (numpy; used to check duality)."""
    r, c = P.sum(axis=1), P.sum(axis=0)

    def xlogx(x):
        return np.where(x > 0, x * np.log(np.where(x > 0, x, 1.0)), 0.0)

    def kl(x, y):
        return float(np.sum(xlogx(x) - x * np.log(y) - x + y))

    value = float(np.sum(C * P) + reg * np.sum(xlogx(P) - P))
    for rho_k, x, y in zip(rho, (r, c), (a, b)):
        if math.isinf(rho_k):
            continue
        value += rho_k * kl(x, y)
    return value


def sinkhorn_unbalanced_reference(C, a, b, reg, rho, n_iter=10_000, tol=1e-12):
    """Plain numpy log-domain damped Sinkhorn: the readable reference of the fast solvers.

    Returns ``(f, g, n)``: potentials after ``n`` iterations, stopping once
    the dual gradient's L1 norm is below ``tol``.
    """
    from scipy.special import logsumexp

    C = np.asarray(C, dtype=np.float64)
    k1, k2 = (1.0 if math.isinf(r) else r / (r + reg) for r in rho)
    ta = (lambda f: a) if math.isinf(rho[0]) else (lambda f: a * np.exp(-f / rho[0]))
    tb = (lambda g: b) if math.isinf(rho[1]) else (lambda g: b * np.exp(-g / rho[1]))
    f = np.zeros(C.shape[0])
    for it in range(1, n_iter + 1):
        g = k2 * (reg * np.log(b) - reg * logsumexp((f[:, None] - C) / reg, axis=0))
        f = k1 * (reg * np.log(a) - reg * logsumexp((g[None, :] - C) / reg, axis=1))
        P = np.exp((f[:, None] + g[None, :] - C) / reg)
        if np.abs(P.sum(axis=1) - ta(f)).sum() + np.abs(P.sum(axis=0) - tb(g)).sum() < tol:
            break
    return f, g, it
