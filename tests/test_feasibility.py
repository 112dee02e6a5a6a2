"""Forbidden pairs (``+inf`` costs): a pattern is refused exactly when no plan can carry the weights.

The oracle is a linear programme (scipy's HiGHS): is there ``P >= 0`` with
``P 1 = a``, ``P^T 1 = b`` and ``P = 0`` on the forbidden pairs?
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

import snsot
from snsot._feasibility import check_feasible

inf = np.inf


def lp_feasible(C, a, b) -> bool:
    """Whether some plan with marginals a, b is zero wherever C is +inf (an LP, solved by HiGHS)."""
    n, m = C.shape
    allowed = np.flatnonzero(np.isfinite(C).ravel())
    if allowed.size == 0:
        return a.sum() == 0 and b.sum() == 0
    rows, cols = np.unravel_index(allowed, (n, m))
    A = np.zeros((n + m, allowed.size))
    A[rows, np.arange(allowed.size)] = 1.0
    A[n + cols, np.arange(allowed.size)] = 1.0
    res = linprog(np.zeros(allowed.size), A_eq=A, b_eq=np.concatenate([a, b]), bounds=(0, None), method="highs")
    return res.status == 0


def test_a_row_with_mass_and_only_forbidden_pairs_is_named():
    C = np.array([[0.0, 1.0], [inf, inf]])
    with pytest.raises(ValueError, match=r"^C: row 1 carries mass 0\.5 but its cost to every column with mass is \+inf"):
        snsot.solve(C, reg=0.1)


def test_a_column_with_mass_and_only_forbidden_pairs_is_named():
    C = np.array([[0.0, inf, 1.0], [0.0, inf, 2.0]])
    with pytest.raises(ValueError, match=r"^C: column 1 carries mass 0\.333333 but its cost to every row"):
        snsot.solve(C, reg=0.1)


def test_forbidden_pairs_only_towards_zero_mass_bins_do_not_count():
    # row 1's only finite cost goes to column 0, which has no mass: row 1 is stranded
    C = np.array([[1.0, 0.0], [0.0, inf]])
    with pytest.raises(ValueError, match=r"^C: row 1 carries mass"):
        snsot.solve(C, [0.5, 0.5], [0.0, 1.0], reg=0.1)
    # a row without mass may have no finite cost at all
    res = snsot.solve(np.array([[0.0, 1.0], [inf, inf], [1.0, 0.0]]), [0.5, 0.0, 0.5], [0.5, 0.5], reg=0.1,
                      tol=1e-12)
    assert res.converged
    np.testing.assert_array_equal(res.plan[1], 0.0)


def test_a_set_of_rows_that_reaches_too_little_mass_is_named_with_its_first_row():
    # rows 2 and 3 (mass 1/2) may only go to column 0 (mass 1/4), though every row and column has a finite cost
    C = np.array([[0.0, 1.0, 1.0, inf], [1.0, 0.0, 1.0, 1.0], [0.0, inf, inf, inf], [0.0, inf, inf, inf]])
    with pytest.raises(ValueError, match=(r"^C: the pairs with finite cost cannot carry the weights: rows \[2, 3\] "
                                          r"\(first offending row 2\) hold mass 0\.5 but may only send it to "
                                          r"columns \[0\], which hold 0\.25$")):
        snsot.solve(C, reg=0.1)


def test_the_same_pattern_is_feasible_for_weights_it_can_carry():
    C = np.array([[0.0, 1.0, 1.0, inf], [1.0, 0.0, 1.0, 1.0], [0.0, inf, inf, inf], [0.0, inf, inf, inf]])
    a = np.array([0.3, 0.5, 0.1, 0.1])
    b = np.array([0.25, 0.25, 0.25, 0.25])
    assert lp_feasible(C, a, b)
    res = snsot.solve(C, a, b, reg=0.1, tol=1e-11)
    assert res.converged
    assert np.all(res.plan[np.isinf(C)] == 0.0)


@st.composite
def patterns(draw):
    n = draw(st.integers(1, 6))
    m = draw(st.integers(1, 6))
    allowed = np.array(draw(st.lists(st.booleans(), min_size=n * m, max_size=n * m)), dtype=bool).reshape(n, m)
    C = np.where(allowed, 1.0, inf)
    a = np.array(draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)), dtype=float)
    b = np.array(draw(st.lists(st.integers(0, 4), min_size=m, max_size=m)), dtype=float)
    if a.sum() == 0 or b.sum() == 0:
        a[0] += 1.0
        b[0] += 1.0
    return C, a / a.sum(), b / b.sum()


@settings(max_examples=300, deadline=None)
@given(patterns())
def test_the_check_refuses_a_pattern_exactly_when_the_lp_finds_no_plan(case):
    C, a, b = case
    try:
        check_feasible(C, a, b)
        refused = False
    except ValueError as exc:
        assert str(exc).startswith("C: ")
        refused = True
    assert refused == (not lp_feasible(C, a, b))


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 8), st.integers(2, 8), st.integers(0, 2**32 - 1), st.floats(0.0, 0.7))
def test_weights_of_a_plan_on_the_allowed_pairs_are_never_refused(n, m, seed, forbidden):
    # marginals of a random plan supported on the allowed pairs: feasible by construction
    rng = np.random.default_rng(seed)
    allowed = rng.random((n, m)) >= forbidden
    P = np.where(allowed, rng.random((n, m)) * 10.0 ** rng.uniform(-8, 0, (n, m)), 0.0)
    if P.sum() == 0:
        return
    P /= P.sum()
    check_feasible(np.where(allowed, 0.5, inf), P.sum(axis=1), P.sum(axis=0))


def test_scattered_forbidden_pairs_are_certified_and_a_dense_pattern_goes_to_the_flow(monkeypatch):
    # both routes give the LP's answer; the cheap bound must never certify an infeasible pattern
    import snsot._feasibility as feas

    calls = []
    real = feas.maximum_flow
    monkeypatch.setattr(feas, "maximum_flow", lambda *args, **kw: calls.append(1) or real(*args, **kw))
    rng = np.random.default_rng(0)
    n = 40
    a = np.full(n, 1.0 / n)
    scattered = np.where(rng.random((n, n)) < 0.05, inf, 1.0)
    np.fill_diagonal(scattered, 1.0)
    check_feasible(scattered, a, a)
    assert calls == []  # certified without a flow
    banded = np.where(np.abs(np.subtract.outer(np.arange(n), np.arange(n))) <= 1, 1.0, inf)
    check_feasible(banded, a, a)  # a band carries uniform weights (the diagonal alone does)
    assert calls == [1] and lp_feasible(banded, a, a)
