"""POT-compatible entry points: snsot.sinkhorn / snsot.sinkhorn2 against ot.sinkhorn / ot.sinkhorn2."""

import numpy as np
import ot
import pytest

import snsot

from checks import pot_plan
from strategies import make_problem


@pytest.fixture(scope="module")
def problem():
    p = make_problem(111, 45, 35, 2e-2, cost="sqeuclidean")
    return p, pot_plan(p.C, p.a, p.b, p.reg)


@pytest.mark.parametrize("method", ["sns", "sinkhorn", "sinkhorn_log", "sinkhorn_stabilized", "sinkhorn_knopp"])
def test_sinkhorn_plan_matches_pot(problem, method):
    p, P_pot = problem
    P = snsot.sinkhorn(p.a, p.b, p.C, p.reg, method=method, stopThr=1e-12)
    assert isinstance(P, np.ndarray) and P.shape == (45, 35)
    assert np.abs(P - P_pot).max() < 1e-8


def test_sinkhorn_default_call_matches_pot_default_call(problem):
    p, _ = problem
    P = snsot.sinkhorn(p.a, p.b, p.C, p.reg)
    P_pot = ot.sinkhorn(p.a, p.b, p.C, p.reg, method="sinkhorn_log", stopThr=1e-9, numItermax=100_000)
    # both stop near 1e-9 (with different rules): plans agree to that accuracy
    assert np.abs(P - P_pot).sum() < 1e-7


def test_sinkhorn_log_returns_plan_and_a_dict_in_pots_convention(problem):
    p, P_pot = problem
    out = snsot.sinkhorn(p.a, p.b, p.C, p.reg, stopThr=1e-12, log=True)
    assert isinstance(out, tuple) and len(out) == 2
    P, log = out
    assert isinstance(log, dict)
    assert np.abs(P - P_pot).max() < 1e-8
    for key in ("u", "v", "log_u", "log_v", "niter", "err"):
        assert key in log, key
    # POT's scalings: P = diag(u) exp(-M/reg) diag(v), log_u = log(u)
    K = np.exp(-p.C / p.reg)
    np.testing.assert_allclose(log["u"][:, None] * K * log["v"][None, :], P, rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(np.exp(log["log_u"]), log["u"], rtol=1e-14)
    np.testing.assert_allclose(np.exp(log["log_v"]), log["v"], rtol=1e-14)
    np.testing.assert_allclose(
        np.exp(log["log_u"][:, None] - p.C / p.reg + log["log_v"][None, :]), P, rtol=1e-10, atol=1e-300)
    assert isinstance(log["niter"], int) and log["niter"] >= 1
    assert len(log["err"]) == log["niter"] and log["err"][-1] < 1e-11


def test_sinkhorn_empty_weights_mean_uniform():
    rng = np.random.default_rng(112)
    C = rng.random((12, 9))
    P = snsot.sinkhorn([], [], C, 0.05, stopThr=1e-12)
    P_pot = ot.sinkhorn([], [], C, 0.05, method="sinkhorn_log", stopThr=1e-14, numItermax=50_000)
    np.testing.assert_allclose(P.sum(axis=1), np.full(12, 1 / 12), atol=1e-12)
    assert np.abs(P - P_pot).max() < 1e-8


def test_sinkhorn_numitermax_and_warning():
    p = make_problem(113, 60, 60, 1e-3)
    with pytest.warns(snsot.ConvergenceWarning):
        P, log = snsot.sinkhorn(p.a, p.b, p.C, p.reg, method="sinkhorn", numItermax=5, log=True)
    assert log["niter"] == 5
    assert not log["result"].converged
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        snsot.sinkhorn(p.a, p.b, p.C, p.reg, method="sinkhorn", numItermax=5, warn=False)


def test_sinkhorn_passes_solver_options():
    p = make_problem(114, 40, 40, 2e-3)
    P, log = snsot.sinkhorn(p.a, p.b, p.C, p.reg, variant="paper", stopThr=1e-10, log=True)
    assert log["result"].converged and log["result"].n_sinkhorn >= 20


def test_sinkhorn_validates_like_solve():
    with pytest.raises(ValueError, match=r"^b: weights must be non-negative"):
        snsot.sinkhorn([0.5, 0.5], [1.5, -0.5], np.ones((2, 2)), 0.1)
    with pytest.raises(ValueError, match=r"^reg: must be a positive finite number"):
        snsot.sinkhorn([], [], np.ones((2, 2)), 0.0)
    with pytest.raises(ValueError, match=r"^method: unknown method 'greenkhorn'"):
        snsot.sinkhorn([], [], np.ones((2, 2)), 0.1, method="greenkhorn")


@pytest.mark.parametrize("method", ["sns", "sinkhorn"])
def test_sinkhorn2_matches_pot(problem, method):
    p, P_pot = problem
    value = snsot.sinkhorn2(p.a, p.b, p.C, p.reg, method=method, stopThr=1e-12)
    expected = float(ot.sinkhorn2(p.a, p.b, p.C, p.reg, method="sinkhorn_log", stopThr=1e-14, numItermax=50_000))
    assert isinstance(value, float)
    assert value == pytest.approx(expected, rel=1e-9)
    assert value == pytest.approx(float((p.C * P_pot).sum()), rel=1e-9)


def test_sinkhorn2_float32_cost():
    p = make_problem(115, 30, 20, 5e-2)
    C32 = p.C.astype(np.float32)
    value = snsot.sinkhorn2(p.a, p.b, C32, p.reg, stopThr=1e-11)
    expected = float(ot.sinkhorn2(p.a, p.b, C32.astype(np.float64), p.reg, method="sinkhorn_log",
                                  stopThr=1e-14, numItermax=50_000))
    assert value == pytest.approx(expected, rel=1e-9)


def test_sinkhorn2_log_returns_value_and_dict_like_pot(problem):
    p, P_pot = problem
    out = snsot.sinkhorn2(p.a, p.b, p.C, p.reg, stopThr=1e-12, log=True)
    assert isinstance(out, tuple) and len(out) == 2
    value, log = out
    assert value == pytest.approx(float((p.C * P_pot).sum()), rel=1e-9)
    assert isinstance(log, dict)
