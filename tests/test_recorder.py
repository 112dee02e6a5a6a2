"""The Recorder's stall rule: a tol below round-off stops promptly and says so; nothing else is cut."""

import numpy as np
import pytest

import snsot
from snsot.result import STAGE_NEWTON, STAGE_SINKHORN
from snsot.solvers._common import Recorder
from snsot.solvers._scale import NEWTON_WEIGHT, STALL_WINDOW, Watch, _watching


def _feed(errors, stages=None, floor=1.0):
    """Iterations a Recorder lets run on this error sequence before the stall rule stops it (None: never)."""
    with _watching(Watch(floor=floor)):
        rec = Recorder()
    stages = stages or [STAGE_SINKHORN] * len(errors)
    for k, (err, stage) in enumerate(zip(errors, stages)):
        if rec(err, 0.0, stage):
            return k + 1, rec.stalled
    return None, rec.stalled


def test_a_flat_error_below_the_floor_stops_after_the_window():
    stopped_at, best = _feed([0.5] * 500)
    assert stopped_at == STALL_WINDOW + 1 and best == 0.5


def test_newton_steps_count_as_several_sinkhorn_iterations():
    stopped_at, _ = _feed([0.5] * 500, [STAGE_NEWTON] * 500)
    assert stopped_at == -(-STALL_WINDOW // NEWTON_WEIGHT) + 1


def test_progress_or_an_error_above_the_floor_never_stops():
    assert _feed(0.5 * 0.98 ** np.arange(2000))[0] is None  # steady progress, 2% per iteration
    assert _feed([2.0] * 2000)[0] is None  # flat, but above the round-off scale
    # noise around a level that keeps setting new lows by less than 1% is a stall
    rng = np.random.default_rng(0)
    assert _feed(list(0.5 * (1 + 1e-3 * rng.random(2000))))[0] is not None


def test_without_a_watch_or_with_the_rule_off_nothing_is_stopped():
    assert Recorder().watch is None
    rec = Recorder()
    assert not any(rec(0.5, 0.0, STAGE_SINKHORN) for _ in range(1000))
    assert _feed([0.5] * 1000, floor=None)[0] is None


def _point_clouds(n, seed=0):
    rng = np.random.default_rng(seed)
    return snsot.costs.pairwise(rng.random((n, 2)), rng.random((n, 2)))


@pytest.mark.parametrize("method", ["sns", "sinkhorn"])
def test_a_tol_below_round_off_stops_with_converged_false_and_says_the_error_stalled(method):
    C = _point_clouds(200)
    with pytest.warns(snsot.ConvergenceWarning, match="round-off floor"):
        res = snsot.solve(C, reg=0.01, method=method, tol=1e-17, max_iter=100_000)
    assert not res.converged
    assert res.status == "floor" and "round-off floor" in res.message
    assert res.n_iter < 5_000  # far from max_iter: it stopped on the stall
    # it did reach the floor first: the error is at round-off level, not a premature stop
    assert res.marginal_error < 1e-13
    # the floor quoted in the message is the best error seen during the run
    assert f"{res.history.marginal_error.min():.3g}" in res.message


def test_stop_at_floor_false_runs_exactly_max_iter_iterations():
    C = _point_clouds(60)
    res = snsot.solve(C, reg=0.05, method="sinkhorn", tol=1e-300, max_iter=700, stop_at_floor=False, warn=False)
    assert res.n_iter == 700 and not res.converged
    assert "maximum number of iterations" in res.message


@pytest.mark.parametrize("method", ["sns", "sinkhorn"])
def test_the_stall_rule_does_not_change_a_solve_that_reaches_tol(method):
    C = _point_clouds(150, seed=1)
    on = snsot.solve(C, reg=0.005, method=method, tol=1e-12)
    off = snsot.solve(C, reg=0.005, method=method, tol=1e-12, stop_at_floor=False)
    assert on.converged and off.converged
    assert on.n_iter == off.n_iter
    np.testing.assert_array_equal(on.plan, off.plan)


def test_stop_at_floor_must_be_a_bool():
    with pytest.raises(ValueError, match="stop_at_floor"):
        snsot.solve(np.ones((3, 3)), reg=1.0, stop_at_floor="yes")


@pytest.mark.slow
def test_a_tol_of_1e_16_at_n_2000_stops_on_the_stall_rule():
    # Regression: this ran to max_iter (3 minutes) before the stall rule.
    C = _point_clouds(2000)
    res = snsot.solve(C, reg=0.01, tol=1e-16, warn=False)
    assert not res.converged and "round-off floor" in res.message
    assert res.n_iter < 1_000


def test_history_maps_a_unit_mass_run_to_the_callers_units_even_without_a_stage_reg():
    # weights 2**2 times those the solver saw: errors scale by 4, dual values by 4 plus reg * log(4) * mass
    with _watching(Watch(exponent=2, mass=4.0, reg=0.5)):
        rec = Recorder()
    rec(1.0, 1.0, STAGE_SINKHORN)  # rec.reg never set by this "solver": the problem's reg applies
    rec.reg = 0.25
    rec(0.5, 2.0, STAGE_SINKHORN)
    h = rec.history()
    np.testing.assert_allclose(h.marginal_error, [4.0, 2.0])
    np.testing.assert_allclose(h.objective, [4.0 + 0.5 * np.log(4.0) * 4.0, 8.0 + 0.25 * np.log(4.0) * 4.0])
    assert rec.error == [1.0, 0.5]  # the solver reads back its own units
