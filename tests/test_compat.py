"""POT-compatible entry points: snsot.sinkhorn / snsot.sinkhorn2 against ot.sinkhorn / ot.sinkhorn2.

POT is the oracle throughout: its signatures, its return types and log keys,
and its log-domain Sinkhorn converged to round-off for the numbers.
"""

import importlib.util
import inspect
import warnings

import numpy as np
import ot
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

import snsot
from snsot.compat import POT_METHODS, SINKHORN2_METHODS

from checks import pot_plan
from strategies import PROPERTY, make_problem, problems


@pytest.fixture(scope="module")
def problem():
    p = make_problem(111, 45, 35, 2e-2, cost="sqeuclidean")
    return p, pot_plan(p.C, p.a, p.b, p.reg)


@pytest.fixture(scope="module")
def multi():
    """One a and M, three target histograms b[:, k], with POT's per-column costs."""
    p = make_problem(121, 30, 25, 5e-2, cost="sqeuclidean")
    rng = np.random.default_rng(122)
    B = rng.random((25, 3)) + 0.05
    B /= B.sum(axis=0, keepdims=True)
    costs = np.array([float(np.vdot(p.C, pot_plan(p.C, p.a, B[:, k], p.reg))) for k in range(3)])
    return p, B, costs


def _quiet(f, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return f(*args, **kwargs)


# --- the interface is POT's ---------------------------------------------------------------------

@pytest.mark.parametrize("ours, theirs", [(snsot.sinkhorn, ot.sinkhorn), (snsot.sinkhorn2, ot.sinkhorn2)])
def test_signature_is_pots_positional_order_and_defaults(ours, theirs):
    mine = [(p.name, p.default, p.kind) for p in inspect.signature(ours).parameters.values()]
    pots = [(p.name, p.default, p.kind) for p in inspect.signature(theirs).parameters.values()]
    assert mine == pots


@pytest.mark.parametrize("method", POT_METHODS)
def test_every_pot_method_gives_pots_plan_and_pots_log_keys(problem, method):
    p, P_pot = problem
    P, log = snsot.sinkhorn(p.a, p.b, p.C, p.reg, method=method, stopThr=1e-12, log=True)
    assert isinstance(P, np.ndarray) and P.shape == (45, 35) and P.dtype == np.float64
    assert np.abs(P - P_pot).max() < 1e-8
    _, pot_log = _quiet(ot.sinkhorn, p.a, p.b, p.C, p.reg, method=method, numItermax=20, log=True)
    assert set(log) - {"result"} == set(pot_log)
    assert isinstance(log["result"], snsot.OTResult) and log["result"].converged


@pytest.mark.parametrize("method", ["SINKHORN", "Sinkhorn_Log", "GreenKhorn", "sinkhorn_STABILIZED"])
def test_method_names_are_case_insensitive_as_in_pot(problem, method):
    p, P_pot = problem
    P = snsot.sinkhorn(p.a, p.b, p.C, p.reg, method=method, stopThr=1e-12)
    assert np.abs(P - P_pot).max() < 1e-8


def test_snsot_method_names_are_accepted_too(problem):
    p, P_pot = problem
    P, log = snsot.sinkhorn(p.a, p.b, p.C, p.reg, method="sns", stopThr=1e-12, log=True)
    assert np.abs(P - P_pot).max() < 1e-8
    assert log["result"].method == "sns"


def test_log_scalings_are_pots_exactly_not_up_to_a_factor(problem):
    p, _ = problem
    K = np.exp(-p.C / p.reg)
    P, log = snsot.sinkhorn(p.a, p.b, p.C, p.reg, method="sinkhorn_log", stopThr=1e-12, log=True)
    # POT: P = diag(u) K diag(v), u = exp(log_u)
    np.testing.assert_allclose(log["u"][:, None] * K * log["v"][None, :], P, rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(np.exp(log["log_u"]), log["u"], rtol=1e-14)
    np.testing.assert_allclose(np.exp(log["log_v"]), log["v"], rtol=1e-14)
    assert isinstance(log["niter"], int) and log["niter"] >= 1
    assert len(log["err"]) == log["niter"] and log["err"][-1] < 1e-12
    # stabilized: alpha = reg * logu, P = exp((alpha_i + beta_j - M_ij) / reg), warmstart = (alpha, beta)
    P, log = snsot.sinkhorn(p.a, p.b, p.C, p.reg, method="sinkhorn_stabilized", stopThr=1e-12, log=True)
    np.testing.assert_allclose(np.exp((log["alpha"][:, None] + log["beta"][None, :] - p.C) / p.reg), P,
                               rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(log["alpha"], p.reg * log["logu"], rtol=1e-14)
    assert log["warmstart"][0] is log["alpha"] and log["warmstart"][1] is log["beta"]


def test_default_call_matches_pot_default_call(problem):
    p, _ = problem
    P = snsot.sinkhorn(p.a, p.b, p.C, p.reg)
    P_pot = ot.sinkhorn(p.a, p.b, p.C, p.reg, method="sinkhorn_log", stopThr=1e-9, numItermax=100_000)
    # both stop near 1e-9 (with different rules): plans agree to that accuracy
    assert np.abs(P - P_pot).sum() < 1e-7


def test_sinkhorn2_value_is_a_numpy_scalar_like_pots(problem):
    p, P_pot = problem
    value = snsot.sinkhorn2(p.a, p.b, p.C, p.reg, stopThr=1e-12)
    expected = ot.sinkhorn2(p.a, p.b, p.C, p.reg, method="sinkhorn_log", stopThr=1e-14, numItermax=50_000)
    assert type(value) is type(expected) is np.float64
    assert value == pytest.approx(float(expected), rel=1e-9)
    assert value == pytest.approx(float((p.C * P_pot).sum()), rel=1e-9)


def test_sinkhorn2_log_returns_value_and_the_methods_dict(problem):
    p, P_pot = problem
    value, log = snsot.sinkhorn2(p.a, p.b, p.C, p.reg, method="sinkhorn_log", stopThr=1e-12, log=True)
    assert value == pytest.approx(float((p.C * P_pot).sum()), rel=1e-9)
    _, pot_log = _quiet(ot.sinkhorn2, p.a, p.b, p.C, p.reg, method="sinkhorn_log", numItermax=20, log=True)
    assert set(log) - {"result"} == set(pot_log)


@pytest.mark.parametrize("method", ["greenkhorn", "sinkhorn_epsilon_scaling", "new_method"])
def test_sinkhorn2_refuses_the_methods_pot_refuses(method):
    C = np.random.default_rng(0).random((4, 4))
    with pytest.raises(ValueError):
        ot.sinkhorn2([], [], C, 0.1, method=method)
    with pytest.raises(ValueError, match=r"^method: unknown method"):
        snsot.sinkhorn2([], [], C, 0.1, method=method)
    assert set(SINKHORN2_METHODS) < set(POT_METHODS)


# --- b with several columns -----------------------------------------------------------------------

@pytest.mark.parametrize("method", ["sinkhorn", "sinkhorn_log", "sinkhorn_stabilized"])
def test_several_histograms_give_one_cost_each_as_pot(multi, method):
    p, B, costs = multi
    for f in (snsot.sinkhorn, snsot.sinkhorn2):
        values = f(p.a, B, p.C, p.reg, method=method, stopThr=1e-12)
        assert isinstance(values, np.ndarray) and values.shape == (3,) and values.dtype == np.float64
        np.testing.assert_allclose(values, costs, rtol=1e-9)
    pot_values = _quiet(ot.sinkhorn, p.a, B, p.C, p.reg, method=method, stopThr=1e-12, numItermax=50_000)
    assert pot_values.shape == values.shape


def test_several_histograms_log_has_one_column_per_histogram(multi):
    p, B, costs = multi
    values, log = snsot.sinkhorn(p.a, B, p.C, p.reg, method="sinkhorn_log", stopThr=1e-12, log=True)
    assert log["u"].shape == log["log_u"].shape == (30, 3) and log["v"].shape == (25, 3)
    K = np.exp(-p.C / p.reg)
    for k in range(3):
        P_k = log["u"][:, k, None] * K * log["v"][None, :, k]
        np.testing.assert_allclose(P_k.sum(axis=0), B[:, k], atol=1e-12)
        assert float(np.vdot(p.C, P_k)) == pytest.approx(costs[k], rel=1e-9)
    assert len(log["result"]) == 3


def test_several_histograms_warm_start_per_column(multi):
    p, B, _ = multi
    _, log = snsot.sinkhorn(p.a, B, p.C, p.reg, method="sinkhorn", stopThr=1e-12, log=True)
    warm = (np.log(log["u"]), np.log(log["v"]))
    _, again = snsot.sinkhorn(p.a, B, p.C, p.reg, method="sinkhorn", stopThr=1e-12, log=True, warmstart=warm)
    assert again["niter"] <= 2
    # POT's sinkhorn_log form: one (log u, log v) pair per histogram
    pairs = [(np.log(log["u"][:, k]), np.log(log["v"][:, k])) for k in range(3)]
    _, again = snsot.sinkhorn(p.a, B, p.C, p.reg, method="sinkhorn_log", stopThr=1e-12, log=True, warmstart=pairs)
    assert again["niter"] <= 2


# --- stopThr=0: exactly numItermax iterations -----------------------------------------------------

def _sinkhorn_iterates(C, a, b, reg, n_steps):
    """numpy reference of snsot's Sinkhorn order: columns made exact first, then (rows, columns) n_steps times."""
    f = np.zeros(len(a))

    def columns(f):
        return reg * (np.log(b) - logsumexp((f[:, None] - C) / reg, axis=0))

    g = columns(f)
    for _ in range(n_steps):
        f = reg * (np.log(a) - logsumexp((g[None, :] - C) / reg, axis=1))
        g = columns(f)
    return np.exp((f[:, None] + g[None, :] - C) / reg)


@pytest.mark.parametrize("n_iter", [1, 7, 40])
def test_stopthr_zero_runs_exactly_numitermax_sinkhorn_iterations(n_iter):
    p = make_problem(131, 20, 15, 0.05)
    with pytest.warns(UserWarning, match="did not converge"):
        P, log = snsot.sinkhorn(p.a, p.b, p.C, p.reg, stopThr=0, numItermax=n_iter, log=True)
    assert log["niter"] == n_iter and len(log["err"]) == n_iter
    np.testing.assert_allclose(P, _sinkhorn_iterates(p.C, p.a, p.b, p.reg, n_iter), rtol=1e-10, atol=1e-300)


def test_stopthr_zero_is_not_cut_short_at_the_round_off_floor():
    # At reg=1 this problem reaches round-off within ~30 iterations; POT still runs all 600.
    p = make_problem(132, 12, 12, 1.0)
    with pytest.warns(UserWarning):
        P, log = snsot.sinkhorn2(p.a, p.b, p.C, p.reg, stopThr=0, numItermax=600, log=True, warn=True)
    assert log["niter"] == 600 and len(log["err"]) == 600
    assert max(log["err"][-100:]) < 1e-13


# --- warm start -------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", POT_METHODS)
def test_warm_start_from_pots_own_output_is_already_converged(problem, method):
    p, P_pot = problem
    _, pot_log = _quiet(ot.sinkhorn, p.a, p.b, p.C, p.reg, method="sinkhorn_log", stopThr=1e-14,
                        numItermax=50_000, log=True)
    if method in ("sinkhorn_stabilized", "sinkhorn_epsilon_scaling"):  # POT reads (alpha, beta) here
        warm = (p.reg * pot_log["log_u"], p.reg * pot_log["log_v"])
    else:  # and (log u, log v) for the others
        warm = (pot_log["log_u"], pot_log["log_v"])
    P, log = snsot.sinkhorn(p.a, p.b, p.C, p.reg, method=method, stopThr=1e-12, log=True, warmstart=warm)
    assert np.abs(P - P_pot).max() < 1e-8
    assert log["result"].n_iter <= 2


def test_warm_start_of_the_wrong_shape_is_refused_naming_it(problem):
    p, _ = problem
    with pytest.raises(ValueError, match=r"^warmstart: the first array must have shape \(45,\)"):
        snsot.sinkhorn(p.a, p.b, p.C, p.reg, warmstart=(np.zeros(44), np.zeros(35)))
    with pytest.raises(ValueError, match=r"^warmstart: .*finite"):
        snsot.sinkhorn(p.a, p.b, p.C, p.reg, warmstart=(np.full(45, np.nan), np.zeros(35)))


# --- keywords, dtypes, warnings, inputs -------------------------------------------------------------

def test_pots_solver_keywords_are_accepted_silently(problem):
    p, P_pot = problem
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        P = snsot.sinkhorn(p.a, p.b, p.C, p.reg, method="sinkhorn_epsilon_scaling", stopThr=1e-12, tau=1e3,
                           print_period=10, epsilon0=1e4, numInnerItermax=100)
    assert np.abs(P - P_pot).max() < 1e-8


def test_unknown_keywords_warn_and_snsot_options_pass_through():
    p = make_problem(114, 40, 40, 2e-3)
    with pytest.warns(UserWarning, match="ignoring keyword.*'isLazy'"):
        snsot.sinkhorn(p.a, p.b, p.C, p.reg, stopThr=1e-10, isLazy=True)
    P, log = snsot.sinkhorn(p.a, p.b, p.C, p.reg, variant="paper", stopThr=1e-10, log=True)
    assert log["result"].converged and log["result"].n_sinkhorn >= 20


def test_float32_in_float32_out_as_pot():
    p = make_problem(115, 30, 20, 5e-2)
    a, b, C = (x.astype(np.float32) for x in (p.a, p.b, p.C))
    P = snsot.sinkhorn(a, b, C, p.reg, stopThr=1e-6)
    P_pot = _quiet(ot.sinkhorn, a, b, C, p.reg)
    assert P.dtype == P_pot.dtype == np.float32
    value = snsot.sinkhorn2(a, b, C, p.reg, stopThr=1e-6)
    value_pot = ot.sinkhorn2(a, b, C, p.reg)
    assert type(value) is type(value_pot) is np.float32
    expected = float(ot.sinkhorn2(p.a, p.b, C.astype(np.float64), p.reg, method="sinkhorn_log", stopThr=1e-14,
                                  numItermax=50_000))
    assert float(value) == pytest.approx(expected, rel=1e-6)


def test_sinkhorn_warns_by_default_and_sinkhorn2_does_not_as_pot():
    p = make_problem(113, 60, 60, 1e-3)
    with pytest.warns(UserWarning, match="did not converge"):
        ot.sinkhorn(p.a, p.b, p.C, p.reg, numItermax=5)
    with pytest.warns(snsot.ConvergenceWarning, match="did not converge"):
        P, log = snsot.sinkhorn(p.a, p.b, p.C, p.reg, numItermax=5, log=True)
    assert log["niter"] == 5 and not log["result"].converged
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ot.sinkhorn2(p.a, p.b, p.C, p.reg, numItermax=5)
        snsot.sinkhorn2(p.a, p.b, p.C, p.reg, numItermax=5)
        snsot.sinkhorn(p.a, p.b, p.C, p.reg, numItermax=5, warn=False)


def test_verbose_prints_pots_iteration_table(capsys):
    p = make_problem(116, 10, 10, 0.1)
    snsot.sinkhorn(p.a, p.b, p.C, p.reg, method="sinkhorn", stopThr=0, numItermax=25, verbose=True, warn=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("It.") and [int(line.split("|")[0]) for line in lines[2:]] == [0, 10, 20]


def test_empty_weights_mean_uniform_and_lists_are_accepted():
    rng = np.random.default_rng(112)
    C = rng.random((12, 9))
    P = snsot.sinkhorn([], [], C.tolist(), 0.05, stopThr=1e-12)
    P_pot = ot.sinkhorn([], [], C, 0.05, method="sinkhorn_log", stopThr=1e-14, numItermax=50_000)
    np.testing.assert_allclose(P.sum(axis=1), np.full(12, 1 / 12), atol=1e-12)
    assert np.abs(P - P_pot).max() < 1e-8


def test_torch_tensors_without_snsot_torch_are_refused_pointing_to_it():
    torch = pytest.importorskip("torch")
    if importlib.util.find_spec("snsot.torch") is not None:
        pytest.skip("snsot.torch is available: tensors are taken (next test)")
    C = torch.rand(5, 4, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"^M: got PyTorch tensors.*snsot\.torch"):
        snsot.sinkhorn([], [], C, 0.1)


def test_torch_tensors_give_pots_values_and_gradients():
    torch = pytest.importorskip("torch")
    pytest.importorskip("snsot.torch")
    p = make_problem(135, 12, 9, 0.5, cost="sqeuclidean")
    grads = []
    for f in (ot.sinkhorn2, snsot.sinkhorn2):  # POT differentiates its iterations, snsot its plan
        a, b, M = (torch.tensor(x, requires_grad=True) for x in (p.a, p.b, p.C))
        value = f(a, b, M, p.reg, stopThr=1e-12, numItermax=100_000)
        value.backward()
        grads.append((value.item(), M.grad.numpy().copy(), a.grad.numpy().copy()))
    (v_pot, dM_pot, da_pot), (v, dM, da) = grads
    assert v == pytest.approx(v_pot, rel=1e-9)
    np.testing.assert_allclose(dM, dM_pot, atol=1e-7)
    # a's gradient is defined up to a constant (sum a = sum b is kept): compare centred
    np.testing.assert_allclose(da - da.mean(), da_pot - da_pot.mean(), atol=1e-7)
    P = snsot.sinkhorn(*(torch.tensor(x) for x in (p.a, p.b, p.C)), p.reg, stopThr=1e-12)
    assert isinstance(P, torch.Tensor) and P.dtype == torch.float64
    np.testing.assert_allclose(P.numpy(), pot_plan(p.C, p.a, p.b, p.reg), atol=1e-10)
    with pytest.raises(TypeError, match=r"^log: log=True is not supported with PyTorch tensors"):
        snsot.sinkhorn(torch.tensor(p.a), torch.tensor(p.b), torch.tensor(p.C), p.reg, log=True)


def test_bad_arguments_are_refused_naming_them():
    C = np.ones((2, 2))
    with pytest.raises(ValueError, match=r"^b: weights must be non-negative"):
        snsot.sinkhorn([0.5, 0.5], [1.5, -0.5], C, 0.1)
    with pytest.raises(ValueError, match=r"^reg: must be a positive"):
        snsot.sinkhorn([], [], C, 0.0)  # POT returns NaN and warns here; see README
    with pytest.raises(ValueError, match=r"^method: unknown method 'new_method'"):
        snsot.sinkhorn([], [], C, 0.1, method="new_method")
    with pytest.raises(TypeError, match=r"^method: must be a string"):
        snsot.sinkhorn([], [], C, 0.1, method=None)
    with pytest.raises(ValueError, match=r"^numItermax: must be a positive integer"):
        snsot.sinkhorn([], [], C, 0.1, numItermax=0)
    with pytest.raises(ValueError, match=r"^stopThr: must be a .*number >= 0"):
        snsot.sinkhorn([], [], C, 0.1, stopThr=-1e-9)
    with pytest.raises(ValueError, match=r"^a: "):
        snsot.sinkhorn(1.0, [0.5, 0.5], C, 0.1)


def test_stopthr_zero_goes_on_when_the_solver_stops_early(monkeypatch):
    # A solver may stop before its cap (a stall detector at the round-off floor); POT's stopThr=0 does not.
    import snsot.compat as compat

    real_solve = compat.solve

    def stops_after_100(*args, max_iter, **kwargs):
        return real_solve(*args, max_iter=min(max_iter, 100), **kwargs)

    monkeypatch.setattr(compat, "solve", stops_after_100)
    p = make_problem(133, 12, 10, 0.5)
    P, log = snsot.sinkhorn(p.a, p.b, p.C, p.reg, stopThr=0, numItermax=250, log=True, warn=False)
    assert log["niter"] == 250 and len(log["err"]) == 250
    np.testing.assert_allclose(P, _sinkhorn_iterates(p.C, p.a, p.b, p.reg, 250), rtol=1e-10, atol=1e-300)


def test_a_bad_histogram_among_several_is_named_by_its_column(multi):
    p, B, _ = multi
    B = B.copy()
    B[0, 1] = -0.1
    with pytest.raises(ValueError, match=r"^b\[:, 1\]: weights must be non-negative"):
        snsot.sinkhorn2(p.a, B, p.C, p.reg)


def test_several_large_histograms_batched_give_the_looped_costs(monkeypatch):
    pytest.importorskip("snsot.batch")
    import snsot.compat as compat

    def no_loop(*args, **kwargs):
        raise AssertionError("the per-column loop ran: the batched path was not taken")

    rng = np.random.default_rng(134)
    n = 110  # n * n above compat._BATCH_MIN_SIZE: the batched path
    assert n * n >= compat._BATCH_MIN_SIZE
    x = rng.random((n, 2))
    M = ot.dist(x, x)
    a = np.full(n, 1.0 / n)
    B = rng.random((n, 3)) + 0.1
    B /= B.sum(axis=0, keepdims=True)
    with monkeypatch.context() as patch:
        patch.setattr(compat, "solve", no_loop)
        values, log = snsot.sinkhorn2(a, B, M, 0.05, stopThr=1e-12, log=True)
    looped = [snsot.sinkhorn2(a, B[:, k], M, 0.05, stopThr=1e-12) for k in range(3)]
    np.testing.assert_allclose(values, looped, rtol=1e-10)
    assert [res.converged for res in log["result"]] == [True] * 3


@settings(PROPERTY, max_examples=15)
@given(problem=problems(max_size=25), method=st.sampled_from(POT_METHODS))
def test_any_problem_any_pot_method_gives_pots_plan_and_scalings_that_rebuild_it(problem, method):
    # rectangular, zero-mass bins, total masses other than 1, reg in [1e-2, 1]
    p = problem
    P_pot = pot_plan(p.C, p.a, p.b, p.reg)
    P, log = snsot.sinkhorn(p.a, p.b, p.C, p.reg, method=method, stopThr=1e-11 * p.a.sum(), log=True)
    assert np.abs(P - P_pot).sum() < 1e-8 * p.a.sum()
    if "u" in log:
        with np.errstate(under="ignore"):
            rebuilt = log["u"][:, None] * np.exp(-p.C / p.reg) * log["v"][None, :]
        np.testing.assert_allclose(rebuilt, P, rtol=1e-9, atol=1e-300)
    if "alpha" in log:
        rebuilt = np.exp((log["alpha"][:, None] + log["beta"][None, :] - p.C) / p.reg)
        np.testing.assert_allclose(rebuilt, P, rtol=1e-9, atol=1e-300)
