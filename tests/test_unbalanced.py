"""Unbalanced (KL-relaxed) entropic OT: the dual's derivation, the reference, and the solvers.

Oracles: POT's ``ot.unbalanced.sinkhorn_unbalanced(reg_type="entropy")`` run
to ``stopThr=1e-15``, the primal objective recomputed in numpy from a plan,
central finite differences of the dual, and balanced ``snsot.solve``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from snsot.problem import parse_reg_m
from snsot.solvers._kl_marginals import (
    KLMarginals,
    sinkhorn_unbalanced_reference,
    unbalanced_primal,
)

ot = pytest.importorskip("ot")


def _problem(seed, n=30, m=40, scale_b=2.0):
    rng = np.random.default_rng(seed)
    C = rng.random((n, m))
    a = rng.random(n) + 0.05
    b = (rng.random(m) + 0.05) * scale_b  # masses differ
    return C, a, b


def _pot_plan(C, a, b, reg, rho):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # POT warns that reg_type="entropy" overrides c
        P, log = ot.unbalanced.sinkhorn_unbalanced(
            a, b, C, reg, rho, reg_type="entropy", stopThr=1e-15, numItermax=200_000, log=True)
    return P, log


def _plan(C, f, g, reg):
    return np.exp((f[:, None] + g[None, :] - C) / reg)


def _dual(C, a, b, f, g, reg, rho):
    """The unbalanced dual written out independently of KLMarginals."""
    value = -reg * _plan(C, f, g, reg).sum()
    for w, h, r in ((a, f, rho[0]), (b, g, rho[1])):
        value += w @ h if math.isinf(r) else r * w @ (1.0 - np.exp(-h / r))
    return value


# ---------------------------------------------------------------------------
# The derivation (module docstring of snsot.solvers._kl_marginals)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("rho", [(0.7, 0.7), (0.1, 3.0), (math.inf, 0.5)])
def test_pot_optimum_satisfies_our_optimality_conditions(rho):
    """At POT's solution, P 1 = a exp(-f/rho_1) and P^T 1 = b exp(-g/rho_2), with f = reg log u."""
    C, a, b = _problem(0)
    reg = 0.05
    P, log = _pot_plan(C, a, b, reg, rho)
    f, g = reg * log["logu"], reg * log["logv"]
    ta, tb = KLMarginals(a, b, rho).targets(f, g)
    np.testing.assert_allclose(P.sum(axis=1), ta, rtol=1e-10)
    np.testing.assert_allclose(P.sum(axis=0), tb, rtol=1e-10)


@pytest.mark.parametrize("rho", [(0.7, 0.7), (0.2, 5.0)])
def test_strong_duality_primal_of_pot_plan_equals_dual(rho):
    C, a, b = _problem(1)
    reg = 0.05
    P, log = _pot_plan(C, a, b, reg, rho)
    f, g = reg * log["logu"], reg * log["logv"]
    marg = KLMarginals(a, b, rho)
    primal = unbalanced_primal(C, P, a, b, reg, rho)
    dual = marg.dual(f, g, _plan(C, f, g, reg).sum(), reg)
    assert dual == pytest.approx(primal, rel=1e-10, abs=1e-12)
    assert dual == pytest.approx(_dual(C, a, b, f, g, reg, rho), rel=1e-13)


def test_gradient_and_hessian_diagonal_match_finite_differences():
    C, a, b = _problem(2, n=6, m=5)
    reg, rho = 0.3, (0.4, 2.0)
    rng = np.random.default_rng(3)
    f, g = rng.normal(size=6) * 0.1, rng.normal(size=5) * 0.1
    marg = KLMarginals(a, b, rho)
    P = _plan(C, f, g, reg)
    ta, tb = marg.targets(f, g)
    grad = np.concatenate([ta - P.sum(1), tb - P.sum(0)])
    x = np.concatenate([f, g])

    def D(z):
        return _dual(C, a, b, z[:6], z[6:], reg, rho)

    h = 1e-5
    fd = np.array([(D(x + h * e) - D(x - h * e)) / (2 * h) for e in np.eye(11)])
    np.testing.assert_allclose(grad, fd, rtol=1e-7, atol=1e-9)
    # -reg * Hessian's diagonal = plan sums + the penalty's term
    extra_r, extra_c = marg.hessian_diagonal(f, g, reg)
    want = np.concatenate([P.sum(1) + extra_r, P.sum(0) + extra_c])
    fd2 = np.array([-(D(x + h * e) - 2 * D(x) + D(x - h * e)) / h**2 * reg for e in np.eye(11)])
    np.testing.assert_allclose(want, fd2, rtol=1e-4)


def test_infinite_rho_gives_the_balanced_dual():
    C, a, b = _problem(3, scale_b=1.0)
    b = b * a.sum() / b.sum()
    f, g = np.linspace(-0.2, 0.3, 30), np.linspace(0.1, -0.1, 40)
    reg = 0.1
    total = _plan(C, f, g, reg).sum()
    balanced = a @ f + b @ g - reg * total
    assert KLMarginals(a, b, (math.inf, math.inf)).dual(f, g, total, reg) == balanced
    # and a huge finite rho approaches it continuously
    assert KLMarginals(a, b, (1e12, 1e12)).dual(f, g, total, reg) == pytest.approx(balanced, rel=1e-10)


# ---------------------------------------------------------------------------
# The numpy reference
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("rho", [0.5, (0.05, 2.0), (math.inf, 0.3), (1.0, math.inf)])
def test_reference_matches_pot(rho):
    C, a, b = _problem(4)
    reg = 0.05
    pair = parse_reg_m(rho)
    P_pot, _ = _pot_plan(C, a, b, reg, rho)
    f, g, _ = sinkhorn_unbalanced_reference(C, a, b, reg, pair, tol=1e-14)
    np.testing.assert_allclose(_plan(C, f, g, reg), P_pot, rtol=1e-8, atol=1e-14)


def test_reference_with_infinite_rho_is_balanced_sinkhorn():
    C, a, b = _problem(5, scale_b=1.0)
    b = b * a.sum() / b.sum()
    reg = 0.1
    f, g, _ = sinkhorn_unbalanced_reference(C, a, b, reg, (math.inf, math.inf), tol=1e-12)
    P_pot = ot.sinkhorn(a, b, C, reg, method="sinkhorn_log", stopThr=1e-14, numItermax=100_000)
    np.testing.assert_allclose(_plan(C, f, g, reg), P_pot, rtol=1e-7, atol=1e-14)


# ---------------------------------------------------------------------------
# reg_m validation
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("value, want", [(2, (2.0, 2.0)), ((1, 3), (1.0, 3.0)), ([0.5], (0.5, 0.5)),
                                          (math.inf, (math.inf, math.inf)), ((math.inf, 1e-3), (math.inf, 1e-3))])
def test_parse_reg_m_accepts_numbers_and_pairs(value, want):
    assert parse_reg_m(value) == want


@pytest.mark.parametrize("value", [0, -1.0, math.nan, (1, 2, 3), (), "1", None, (1, -2), True, [[1, 2]]])
def test_parse_reg_m_rejects_with_a_message_naming_it(value):
    with pytest.raises(ValueError, match="reg_m"):
        parse_reg_m(value)
