"""Input validation: every bad input is a ValueError whose message names the argument.

``OTProblem`` is the one place inputs are checked, and ``solve`` is the door
users go through, so each case is exercised through ``snsot.solve``.
"""

import numpy as np
import pytest
import ot

import snsot
from snsot import OTProblem

from checks import check_result

C3 = np.arange(9, dtype=np.float64).reshape(3, 3) / 8.0
U3 = np.full(3, 1.0 / 3.0)


def solve(C=C3, a=U3, b=U3, reg=0.5, **kw):
    return snsot.solve(C, a, b, reg=reg, **kw)


# --------------------------------------------------------------------------- weights


@pytest.mark.parametrize("name", ["a", "b"])
@pytest.mark.parametrize(
    "bad, match",
    [
        ([-0.1, 0.6, 0.5], r"weights must be non-negative"),
        ([np.nan, 0.5, 0.5], r"weights must be finite"),
        ([np.inf, 0.5, 0.5], r"weights must be finite"),
        ([0.5, -np.inf, 0.5], r"weights must be finite"),
        ([0.0, 0.0, 0.0], r"weights must have a positive total"),
        ([[0.5, 0.5, 0.0]], r"weights must be a 1-D array"),
        (["x", "y", "z"], r"weights must be numeric"),
    ],
)
def test_bad_weights_raise(name, bad, match):
    kw = {"a": U3, "b": U3, name: bad}
    with pytest.raises(ValueError, match=rf"^{name}: {match}"):
        solve(**kw)


@pytest.mark.parametrize("name, size, word", [("a", 2, "rows"), ("b", 4, "columns")])
def test_weight_length_mismatch_names_rows_or_columns(name, size, word):
    kw = {"a": U3, "b": U3, name: np.full(size, 1.0 / size)}
    with pytest.raises(ValueError, match=rf"^{name}: has {size} weights but the cost has 3 {word}"):
        solve(**kw)


@pytest.mark.parametrize("name", ["a", "b"])
def test_empty_weights_raise(name):
    kw = {"a": U3, "b": U3, name: []}
    with pytest.raises(ValueError, match=rf"^{name}: has 0 weights"):
        solve(**kw)


def test_error_message_shows_the_offending_value_plainly():
    # STYLE.md: ValueError("b: weights must be non-negative; found -0.1 at index 0")
    with pytest.raises(ValueError, match=r"^b: weights must be non-negative; found -0\.1 at index 0$"):
        solve(b=[-0.1, 0.6, 0.5])
    C = C3.copy()
    C[1, 2] = -np.inf
    with pytest.raises(ValueError, match=r"^C: cost must be finite or \+inf \(a forbidden pair\); found -inf at index \(1, 2\)$"):
        solve(C=C)


@pytest.mark.parametrize("rel", [0.0, 1e-10, 9e-9, -9e-9])
def test_totals_within_1e8_relative_are_accepted_and_b_rescaled(rel):
    b = U3 * (1.0 + rel)
    p = OTProblem(C3, U3, b, 0.5)
    assert p.b.sum() == pytest.approx(U3.sum(), rel=1e-15, abs=0)
    np.testing.assert_allclose(p.b, U3, rtol=1e-15)
    res = solve(b=b, tol=1e-12)
    assert res.converged
    assert res.plan.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("rel", [1.1e-8, 1e-6, -1e-3, 1.0])
def test_totals_differing_by_more_than_1e8_relative_raise(rel):
    with pytest.raises(ValueError, match=r"^b: total mass .* differs from the total of a"):
        solve(b=U3 * (1.0 + rel))


def test_unnormalised_equal_totals_give_a_plan_with_those_totals():
    rng = np.random.default_rng(3)
    C = rng.random((7, 5))
    a = rng.random(7)
    a *= 42.0 / a.sum()
    b = rng.random(5)
    b *= 42.0 / b.sum()
    res = snsot.solve(C, a, b, reg=0.1, tol=1e-12)  # relative to the mass: 4.2e-11 absolute
    check_result(res, C, a, b, 1e-12)
    assert res.converged
    assert res.plan.sum() == pytest.approx(42.0, rel=1e-12)
    np.testing.assert_allclose(res.plan.sum(axis=1), a, rtol=0, atol=1e-10)
    np.testing.assert_allclose(res.plan.sum(axis=0), b, rtol=0, atol=1e-10)


def test_omitted_weights_are_uniform_with_unit_mass():
    p = OTProblem(np.ones((4, 2)), reg=1.0)
    np.testing.assert_array_equal(p.a, np.full(4, 0.25))
    np.testing.assert_array_equal(p.b, np.full(2, 0.5))
    assert p.mass == 1.0


# --------------------------------------------------------------------------- cost


@pytest.mark.parametrize(
    "C, match",
    [
        (np.where(np.eye(3, dtype=bool), np.nan, C3), r"^C: cost must be finite or \+inf \(a forbidden pair\); found nan"),
        (np.where(np.eye(3, dtype=bool), -np.inf, C3), r"^C: cost must be finite or \+inf .*; found -inf"),
        (np.full((3, 3), np.inf), r"^C: every cost is \+inf"),
        (np.ones(3), r"^C: cost must be a 2-D array \(n, m\); got 1-D shape \(3,\)"),
        (np.ones((3, 3, 1)), r"^C: cost must be a 2-D array \(n, m\); got 3-D"),
        (np.float64(1.0), r"^C: cost must be a 2-D array \(n, m\); got 0-D"),
        (np.ones((3, 3)) + 1j, r"^C: cost must be real"),
        (np.array([["a", "b"], ["c", "d"]]), r"^C: cost must be numeric"),
        (np.array([[1, None], [0, 1]], dtype=object), r"^C: cost must be numeric"),
    ],
)
def test_bad_cost_raises(C, match):
    with pytest.raises(ValueError, match=match):
        snsot.solve(C, reg=0.5)


@pytest.mark.parametrize("shape", [(0, 0), (0, 3), (3, 0)])
def test_empty_cost_raises(shape):
    with pytest.raises(ValueError, match=r"^C: cost must be non-empty; got shape"):
        snsot.solve(np.ones(shape), reg=0.5)


def test_empty_list_cost_raises():
    with pytest.raises(ValueError, match=r"^C: cost must be a 2-D array"):
        snsot.solve([], reg=0.5)


def test_ragged_cost_raises():
    with pytest.raises(ValueError, match=r"^C: cost must be"):
        snsot.solve([[0.0, 1.0], [1.0]], reg=0.5)


def test_cost_dtypes_float32_kept_others_become_float64():
    assert OTProblem(C3.astype(np.float32), reg=1.0).C.dtype == np.float32
    assert OTProblem(np.arange(9).reshape(3, 3), reg=1.0).C.dtype == np.float64
    assert OTProblem(np.eye(3, dtype=bool), reg=1.0).C.dtype == np.float64
    assert OTProblem(C3.astype(np.float16), reg=1.0).C.dtype == np.float64
    assert OTProblem(np.asfortranarray(C3), reg=1.0).C.flags.c_contiguous


def test_integer_and_list_costs_solve_like_float_costs():
    Ci = np.array([[0, 1, 2], [1, 0, 1], [2, 1, 0]])
    r_int = snsot.solve(Ci, reg=0.5, tol=1e-12)
    r_list = snsot.solve(Ci.tolist(), reg=0.5, tol=1e-12)
    check_result(r_int, Ci, None, None, 1e-12)
    np.testing.assert_array_equal(r_int.plan, r_list.plan)


# --------------------------------------------------------------------------- reg


@pytest.mark.parametrize(
    "reg, match",
    [
        (0.0, r"^reg: must be a positive finite number; got 0\.0"),
        (-1e-3, r"^reg: must be a positive finite number"),
        (np.nan, r"^reg: must be a positive finite number; got nan"),
        (np.inf, r"^reg: must be a positive finite number; got inf"),
        (-np.inf, r"^reg: must be a positive finite number"),
        (None, r"^reg: the entropic regularisation is required"),
        ("abc", r"^reg: must be a positive finite number; got 'abc'"),
        ([0.1, 0.2], r"^reg: must be a positive finite number; got \[0\.1, 0\.2\]"),
    ],
)
def test_bad_reg_raises(reg, match):
    with pytest.raises(ValueError, match=match):
        solve(reg=reg)
    with pytest.raises(ValueError, match=match):
        OTProblem(C3, U3, U3, reg)


def test_reg_is_keyword_only_and_required():
    with pytest.raises(TypeError):
        snsot.solve(C3, U3, U3, 0.5)
    with pytest.raises((TypeError, ValueError), match=r"reg"):
        snsot.solve(C3)


# --------------------------------------------------------------------------- solve() arguments


def test_unknown_method_raises_and_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"^method: unknown method 'newton'; available: sinkhorn, sns"):
        solve(method="newton")


@pytest.mark.parametrize("method", ["sns", "sinkhorn"])
def test_unknown_option_raises(method):
    with pytest.raises(ValueError, match=rf"^stopThr: not an option of method '{method}'"):
        solve(method=method, stopThr=1e-9)


def test_private_options_are_not_advertised():
    with pytest.raises(ValueError) as info:
        solve(method="sns", bogus=1)
    assert "_plan" not in str(info.value)
    assert "variant" in str(info.value)


@pytest.mark.parametrize("tol", [0.0, -1e-9, np.nan, np.inf, "tight", None])
def test_bad_tol_raises(tol):
    with pytest.raises(ValueError, match=r"^tol: must be a positive"):
        solve(tol=tol)


@pytest.mark.parametrize("max_iter", [0, -5, np.nan, np.inf, "many"])
def test_bad_max_iter_raises(max_iter):
    with pytest.raises(ValueError, match=r"^max_iter: must be a positive"):
        solve(max_iter=max_iter)


@pytest.mark.filterwarnings("ignore::snsot.ConvergenceWarning")
def test_fractional_max_iter_below_one_raises():
    # 0.5 passes a "positive" check but would silently become a cap of 0 iterations.
    with pytest.raises(ValueError, match=r"^max_iter"):
        solve(max_iter=0.5)


@pytest.mark.parametrize(
    "init, match",
    [
        (np.zeros(3), r"^init: must be a pair of potentials \(f, g\)"),
        (5.0, r"^init: must be a pair of potentials"),
        ((np.zeros(3),), r"^init: must be a pair of potentials"),
        ((np.zeros(2), np.zeros(3)), r"^init: potentials must have shapes \(3,\) and \(3,\)"),
        ((np.zeros(3), np.zeros((3, 1))), r"^init: potentials must have shapes"),
        ((np.array([0.0, np.nan, 0.0]), np.zeros(3)), r"^init: potentials must be finite"),
        ((np.zeros(3), np.array([0.0, 0.0, np.inf])), r"^init: potentials must be finite"),
    ],
)
def test_bad_init_raises(init, match):
    with pytest.raises(ValueError, match=match):
        solve(init=init)


def test_non_numeric_init_names_the_argument():
    with pytest.raises(ValueError, match=r"^init"):
        solve(init=(["x", "y", "z"], np.zeros(3)))


def test_init_may_be_infinite_on_zero_mass_bins():
    a = np.array([0.5, 0.0, 0.5])
    f = np.array([0.0, -np.inf, 0.0])
    res = snsot.solve(C3, a, U3, reg=0.5, init=(f, np.zeros(3)), tol=1e-11)
    check_result(res, C3, a, U3, 1e-11)
    assert res.converged


def test_weights_beside_a_problem_raise():
    p = OTProblem(C3, U3, U3, 0.5)
    with pytest.raises(ValueError, match=r"^a, b: give weights inside the OTProblem"):
        snsot.solve(p, U3, reg=0.5)


def test_problem_object_is_accepted_by_solve():
    p = OTProblem(C3, U3, U3, 0.5)
    res = snsot.solve(p, reg=0.5, tol=1e-12)
    check_result(res, C3, U3, U3, 1e-12, reg=0.5)


def test_problem_is_not_a_cost():
    with pytest.raises(TypeError, match=r"^C: expected a cost matrix, got an OTProblem"):
        OTProblem(OTProblem(C3, reg=1.0), reg=1.0)


def test_problem_support_and_restrict():
    a = np.array([0.5, 0.0, 0.5])
    b = np.array([0.0, 1.0, 0.0])
    p = OTProblem(C3, a, b, 0.5)
    rows, cols = p.support()
    np.testing.assert_array_equal(rows, [0, 2])
    np.testing.assert_array_equal(cols, [1])
    q = p.restrict(rows, cols)
    np.testing.assert_array_equal(q.C, C3[[0, 2]][:, [1]])
    np.testing.assert_array_equal(q.a, [0.5, 0.5])
    np.testing.assert_array_equal(q.b, [1.0])
    assert q.reg == 0.5
    assert p.with_reg(0.1).reg == 0.1 and p.with_reg(0.1).C is p.C
    assert p.shape == (3, 3)


def test_cost_range_is_the_costs_min_and_max_and_survives_with_reg():
    rng = np.random.default_rng(3)
    C = rng.random((7, 5)) * 4 + 0.5
    p = OTProblem(C, reg=0.1)
    assert p.cost_range == (C.min(), C.max())
    q = p.with_reg(0.01)
    assert "cost_range" in q.__dict__  # carried over, not recomputed (epsilon-scaling makes one per stage)
    assert q.cost_range == p.cost_range and q.reg == 0.01
    sub = p.restrict(np.array([0, 2]), np.array([1, 3]))
    assert sub.cost_range == (C[np.ix_([0, 2], [1, 3])].min(), C[np.ix_([0, 2], [1, 3])].max())
    assert OTProblem(C.astype(np.float32), reg=0.1).cost_range == (float(C.astype(np.float32).min()),
                                                                    float(C.astype(np.float32).max()))


# --------------------------------------------------------------------------- costs POT accepts (issue 11 section 2)


def _random_problem(seed, n=12, m=9):
    rng = np.random.default_rng(seed)
    C = rng.random((n, m))
    a, b = rng.random(n) + 0.1, rng.random(m) + 0.1
    return C, a / a.sum(), b / b.sum()


@pytest.mark.parametrize("method", ["sns", "sinkhorn"])
@pytest.mark.parametrize("shift", [-5.0, -0.3])
def test_negative_costs_give_pots_plan_and_the_cost_of_the_original_matrix(method, shift):
    C, a, b = _random_problem(0)
    C = C + shift  # every cost negative (or of both signs for -0.3)
    reg, tol = 0.05, 1e-11
    res = snsot.solve(C, a, b, reg=reg, method=method, tol=tol)
    # (POT's log-Sinkhorn stalls above 1e-14 once |C| / reg is in the hundreds, hence modest shifts)
    P_pot = ot.sinkhorn(a, b, C, reg, method="sinkhorn_log", stopThr=1e-13, numItermax=20_000)
    np.testing.assert_allclose(res.plan, P_pot, rtol=0, atol=1e-10)
    # potentials, cost, objective and the primal-dual identity all for the ORIGINAL C
    check_result(res, C, a, b, tol, reg=reg)
    np.testing.assert_allclose(res.cost, np.sum(C * res.plan), rtol=1e-12, atol=1e-12 * abs(shift))


@pytest.mark.parametrize("method", ["sns", "sinkhorn"])
def test_adding_a_constant_to_the_cost_moves_cost_and_objective_by_it_times_the_mass(method):
    C, a, b = _random_problem(1)
    mass = 2.5
    a, b = a * mass, b * mass
    base = snsot.solve(C, a, b, reg=0.02, method=method, tol=1e-11)
    for s in (-3.0, -0.5, 4.0):
        res = snsot.solve(C + s, a, b, reg=0.02, method=method, tol=1e-11)
        np.testing.assert_allclose(res.plan, base.plan, rtol=0, atol=1e-12)
        assert res.cost == pytest.approx(base.cost + s * mass, rel=1e-11, abs=1e-11)
        assert res.objective == pytest.approx(base.objective + s * mass, rel=1e-11, abs=1e-11)
        np.testing.assert_allclose(res.history.objective[-1], res.objective, rtol=1e-9)


def test_a_warm_start_for_a_negative_cost_is_read_in_its_own_convention():
    C, a, b = _random_problem(2)
    C = C - 2.0
    res = snsot.solve(C, a, b, reg=0.05, tol=1e-11)
    again = snsot.solve(C, a, b, reg=0.05, tol=1e-11, init=res.potentials)
    assert again.n_iter <= 2  # started at the solution: nothing left to do
    np.testing.assert_allclose(again.plan, res.plan, atol=1e-12)


def test_negative_cost_problem_keeps_the_users_matrix():
    C, a, b = _random_problem(3)
    p = OTProblem(C - 1.0, a, b, reg=0.1)
    np.testing.assert_array_equal(p.C, C - 1.0)
    assert p.cost_offset == pytest.approx((C - 1.0).min())
    assert p.shifted().C.min() == 0.0
    assert OTProblem(C, a, b, reg=0.1).cost_offset == 0.0


def _forbid(C, seed, fraction=0.3):
    """C with about ``fraction`` of its pairs forbidden, keeping the diagonal so the pattern stays feasible."""
    rng = np.random.default_rng(seed)
    mask = rng.random(C.shape) < fraction
    np.fill_diagonal(mask, False)
    return np.where(mask, np.inf, C), mask


@pytest.mark.parametrize("method, reg", [("sinkhorn", 0.05), ("sns", 0.05), ("sns", 2e-3)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_infinite_costs_are_forbidden_pairs_with_a_plan_exactly_zero_there(method, reg, dtype):
    n = 15
    rng = np.random.default_rng(4)
    C = rng.random((n, n))
    a, b = np.full(n, 1.0 / n), rng.random(n) + 0.5
    b /= b.sum()
    Ci, forbidden = _forbid(C, 5)
    tol = 1e-9
    res = snsot.solve(Ci.astype(dtype), a, b, reg=reg, method=method, tol=tol)
    assert res.converged
    assert np.all(res.plan[forbidden] == 0.0)
    # oracle: POT on the same problem with forbidden pairs made so costly that exp(-cost/reg) is 0
    P_pot = ot.sinkhorn(a, b, np.where(forbidden, 1e3, C.astype(dtype).astype(np.float64)), reg, method="sinkhorn_log",
                        stopThr=1e-13, numItermax=200_000)
    np.testing.assert_allclose(res.plan, P_pot, rtol=0, atol=5e-9)
    Cf = np.where(forbidden, 0.0, Ci.astype(dtype).astype(np.float64))
    assert np.isfinite(res.cost)
    assert res.cost == pytest.approx(float(np.sum(Cf * res.plan)), rel=1e-12)
    f, g = res.potentials
    P = np.exp((f[:, None] + g[None, :] - Ci.astype(dtype).astype(np.float64)) / reg)
    np.testing.assert_allclose(res.plan, P, rtol=1e-9, atol=1e-300)
    assert res.objective == pytest.approx(a @ f + b @ g - reg * P.sum(), rel=1e-10)
    np.testing.assert_allclose(res.plan.sum(axis=1), a, atol=tol)


def test_infinite_and_negative_costs_together():
    n = 10
    C = np.random.default_rng(6).random((n, n)) - 3.0
    Ci, forbidden = _forbid(C, 7)
    res = snsot.solve(Ci, reg=0.05, tol=1e-11)
    shifted = snsot.solve(np.where(forbidden, np.inf, C + 3.0), reg=0.05, tol=1e-11)
    np.testing.assert_allclose(res.plan, shifted.plan, atol=1e-12)
    assert res.cost == pytest.approx(shifted.cost - 3.0, rel=1e-11)
    assert np.all(res.plan[forbidden] == 0.0)


def test_cost_range_ignores_forbidden_pairs():
    C = np.array([[0.5, np.inf], [2.0, 1.0]])
    p = OTProblem(C, reg=0.1)
    assert p.cost_range == (0.5, 2.0)
    assert p.restrict(np.array([0, 1]), np.array([0, 1])).cost_range == (0.5, 2.0)


def test_float32_negative_costs_are_shifted_exactly():
    C, a, b = _random_problem(8)
    C32 = (C - 0.75).astype(np.float32)
    p = OTProblem(C32, a, b, reg=0.05)
    shifted = p.shifted()
    assert shifted.C.min() == 0.0
    np.testing.assert_array_equal(shifted.C + float(C32.min()), C32.astype(np.float64))
    res = snsot.solve(C32, a, b, reg=0.05, tol=1e-11)
    check_result(res, C32, a, b, 1e-11, reg=0.05)
