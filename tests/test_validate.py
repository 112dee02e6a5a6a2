"""Every public argument is checked where it enters, from one table, with a message that names it.

Each hole issue 11 (section 5) listed is a claim here: the bad value is
refused before any solver runs, and the message starts with the argument's name.
"""

import inspect
import math

import numpy as np
import pytest

import snsot
from snsot import solvers
from snsot._validate import RULES, ArgumentTypeError, Rule, check, real_array

C3 = np.arange(9, dtype=np.float64).reshape(3, 3) / 8.0
U3 = np.full(3, 1.0 / 3.0)


@pytest.fixture
def no_solver_runs(monkeypatch):
    """Replace every registered solver by one that fails the test if called."""

    def must_not_run(problem, *, tol, max_iter, init=None, callback=None, **options):
        raise AssertionError("the solver ran although an argument was invalid")

    for name, solver in list(solvers._REGISTRY.items()):
        spy = lambda *args, _s=solver, **kw: must_not_run(*args, **kw)  # noqa: E731
        spy.__signature__ = inspect.signature(solver)
        monkeypatch.setitem(solvers._REGISTRY, name, spy)


# ---------------------------------------------------------------- the holes of issue 11, section 5


@pytest.mark.parametrize(
    "option, value, error, match",
    [
        ("eps_factor", "abc", TypeError, r"^eps_factor: must be a number > 1; got 'abc'$"),
        ("n_warmup", "x", TypeError, r"^n_warmup: must be an integer >= 0 or None; got 'x'$"),
        ("max_cg", "many", TypeError, r"^max_cg: must be an integer >= 1; got 'many'$"),
        ("callback", 5, TypeError, r"^callback: must be a callable or None; got 5 of type int$"),
        ("kappa", np.nan, ValueError, r"^kappa: must be a number > 0; got nan$"),
        ("kappa", -1.0, ValueError, r"^kappa: must be a number > 0; got -1\.0$"),
        ("eps_factor", 0.5, ValueError, r"^eps_factor: must be a number > 1; got 0\.5$"),
        ("max_cg", 2.5, ValueError, r"^max_cg: must be an integer >= 1; got 2\.5$"),
        ("n_threads", 0, ValueError, r"^n_threads: must be a positive integer or None; got 0$"),
        ("n_threads", "2", TypeError, r"^n_threads: must be a positive integer"),
        ("warn", "no", TypeError, r"^warn: must be True or False; got 'no'$"),
        ("hessian", "full", ValueError, r"^hessian: must be 'auto', 'sparse' or 'dense'; got 'full'$"),
        ("eps_scaling", 1, ValueError, r"^eps_scaling: must be 'auto', True or False; got 1$"),
        ("switch_horizon", True, TypeError, r"^switch_horizon: must be an integer >= 0 or None; got True$"),
        ("tol", np.array([1e-9, 1e-8]), TypeError, r"^tol: must be a positive finite number"),
    ],
)
def test_a_bad_option_is_refused_before_solving_with_a_message_naming_it(no_solver_runs, option, value,
                                                                          error, match):
    with pytest.raises(error, match=match):
        snsot.solve(C3, U3, U3, reg=0.5, **{option: value})


@pytest.mark.parametrize("name", ["a", "b"])
def test_complex_weights_are_refused_not_truncated_to_their_real_part(no_solver_runs, name):
    kw = {"a": U3, "b": U3, name: U3 + 0.1j}
    with pytest.raises(TypeError, match=rf"^{name}: weights must be real; got a complex array$"):
        snsot.solve(C3, reg=0.5, **kw)


def test_numeric_strings_as_weights_are_refused_not_parsed(no_solver_runs):
    with pytest.raises(TypeError, match=r"^a: weights must be numeric; got dtype <U"):
        snsot.solve(C3, ["0.3", "0.3", "0.4"], U3, reg=0.5)


def test_pot_sinkhorn_with_a_scalar_for_a_names_a():
    # POT users sometimes pass a mass where a histogram belongs.
    with pytest.raises(ValueError, match=r"^a: weights must be a 1-D array; got shape \(\)$"):
        snsot.sinkhorn(1.0, U3, C3, 0.5)
    with pytest.raises(ValueError, match=r"^b: weights must be a 1-D array; got shape \(\)$"):
        snsot.sinkhorn2(U3, 1.0, C3, 0.5)


def test_kappa_nan_used_to_run_thousands_of_newton_steps_and_now_raises_at_once(no_solver_runs):
    with pytest.raises(ValueError, match=r"^kappa:"):
        snsot.solve(C3, U3, U3, reg=1e-3, method="sns", kappa=float("nan"))


@pytest.mark.parametrize("method", ["sns", "sinkhorn"])
def test_a_callback_that_is_not_callable_is_refused_for_every_method(no_solver_runs, method):
    with pytest.raises(TypeError, match=r"^callback: must be a callable"):
        snsot.solve(C3, U3, U3, reg=0.5, method=method, callback="print")


def test_arguments_are_checked_before_the_cost_is_read():
    # A bad option is reported even when the cost is also bad: options are checked first, cheaply.
    with pytest.raises(ValueError, match=r"^tol:"):
        snsot.solve(np.full((3, 3), np.nan), reg=0.5, tol=-1.0)


# ---------------------------------------------------------------- the table itself


def test_every_public_option_of_every_registered_method_has_a_rule():
    for name in snsot.available_methods():
        params = inspect.signature(solvers._REGISTRY[name]).parameters
        public = [p for p in params if p not in ("problem", "init") and not p.startswith("_")]
        missing = [p for p in public if p not in RULES]
        assert not missing, f"method {name!r}: options without a rule in RULES: {missing}"


def test_every_argument_of_solve_with_a_value_rule_has_one():
    params = inspect.signature(snsot.solve).parameters
    for p in ("reg", "tol", "max_iter", "callback", "warn", "n_threads"):
        assert p in params and p in RULES


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_rule_refuses_a_string_and_names_the_argument(name):
    rule = RULES[name]
    if rule.kind == "choice" and any(isinstance(c, str) for c in rule.choices):
        bad = "not-a-choice"
    else:
        bad = "abc"
    with pytest.raises(ValueError, match=rf"^{name}: must be "):
        check(name, bad)


@pytest.mark.parametrize("name", sorted(n for n, r in RULES.items() if r.kind in ("real", "int")))
def test_every_numeric_rule_refuses_nan_infinity_bools_and_complex(name):
    for bad in (math.nan, math.inf, -math.inf, True, 1 + 0j, [1.0]):
        with pytest.raises(ValueError, match=rf"^{name}: must be "):
            check(name, bad)


@pytest.mark.parametrize("name", sorted(RULES))
def test_none_is_accepted_exactly_where_the_rule_says_optional(name):
    if RULES[name].optional:
        assert check(name, None) is None
    else:
        with pytest.raises(TypeError, match=rf"^{name}: must be .*; got None$"):
            check(name, None)


@pytest.mark.parametrize(
    "rule, inside, outside",
    [
        (Rule("real", low=0, low_open=True), [1e-300, 1.0, 1e300], [0.0, -1e-300]),
        (Rule("real", low=1, low_open=True), [1.0000001, 10], [1.0, 0.5]),
        (Rule("real", low=0, high=1, low_open=True), [1e-9, 0.5, 1.0], [0.0, 1.0000001]),
        (Rule("int", low=0), [0, 5, np.int64(7), 3.0], [-1, 2.5]),
        (Rule("int", low=0, low_open=True), [1, np.uint8(200)], [0, -3]),
    ],
)
def test_bounds_are_open_or_closed_as_the_rule_says(rule, inside, outside):
    for v in inside:
        assert check("x", v, rule) == v
    for v in outside:
        with pytest.raises(ValueError, match=r"^x: must be "):
            check("x", v, rule)


def test_numbers_come_back_as_python_numbers_of_the_rules_kind():
    assert type(check("max_iter", np.int32(5))) is int
    assert type(check("max_iter", 5.0)) is int
    assert type(check("tol", np.float32(1e-3))) is float
    assert check("tol", np.array(1e-3)) == 1e-3  # a 0-d array is a number


def test_choices_match_on_type_so_1_is_not_true_and_true_is_not_1():
    assert check("eps_scaling", True) is True
    assert check("eps_scaling", np.bool_(False)) is False
    with pytest.raises(ValueError):
        check("eps_scaling", 0)


def test_a_type_error_is_also_a_value_error_for_callers_that_catch_either():
    with pytest.raises(ArgumentTypeError) as info:
        check("tol", "tight")
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


def test_names_without_a_rule_pass_through():
    sentinel = object()
    assert check("no_such_argument", sentinel) is sentinel


# ---------------------------------------------------------------- real_array


@pytest.mark.parametrize(
    "x, error, match",
    [
        (np.ones(3) + 1j, TypeError, r"^w: values must be real; got a complex array$"),
        (["1", "2"], TypeError, r"^w: values must be numeric; got dtype <U1$"),
        (np.array([1.0, None], dtype=object), TypeError, r"^w: values must be numeric; got dtype object$"),
        ([[1.0, 2.0], [3.0]], ValueError, r"^w: values must be a rectangular numeric array"),
        ([1.0, np.nan, 2.0], ValueError, r"^w: values must not be NaN; found nan at index 1$"),
    ],
)
def test_real_array_refuses_what_numpy_would_mangle(x, error, match):
    with pytest.raises(error, match=match):
        real_array(x, "w")


def test_real_array_keeps_float32_when_asked_and_converts_the_rest():
    assert real_array(np.ones(2, np.float32), "w", dtype=None).dtype == np.float32
    assert real_array(np.ones(2, np.int64), "w", dtype=None).dtype == np.float64
    assert real_array([True, False], "w").dtype == np.float64
    np.testing.assert_array_equal(real_array([1, 2], "w"), [1.0, 2.0])
