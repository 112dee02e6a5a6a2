"""Point clouds on a truncated support against dense SNS on the full cost.

Oracles: ``snsot.solve`` on the dense cost from scipy's cdist, and the full
plan recomputed densely from the returned potentials, which checks that the
reported marginal error (with its outside-mass bound) is honest.
"""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

import snsot
from snsot import PointCloud

from checks import marginal_error


def make_clouds(kind, n, dim, seed):
    rng = np.random.default_rng(seed)
    x = rng.random((n, dim)) * 2.0
    y = np.clip(rng.normal(1.0, 0.3, (n, dim)), 0.0, 2.0)
    if kind == "far":
        y = y + 10.0
    elif kind == "dup":
        x[n // 2:] = x[: n - n // 2]
        y[: n // 3] = x[: n // 3]
    return x, y


CASES = [
    # kind, dim, cost, reg, weights
    ("plain", 2, "sqeuclidean", 1e-3, "uniform"),
    ("plain", 2, "sqeuclidean", 1e-4, "random"),  # very small reg: a narrow plan
    ("plain", 2, "euclidean", 1e-2, "random"),
    ("plain", 3, "sqeuclidean", 3e-3, "random"),
    ("plain", 3, "euclidean", 1e-2, "uniform"),
    ("plain", 1, "sqeuclidean", 1e-4, "random"),
    ("plain", 2, 1.5, 3e-3, "uniform"),
    ("far", 2, "sqeuclidean", 1e-2, "random"),
    ("dup", 2, "sqeuclidean", 1e-3, "random"),
    ("plain", 2, "sqeuclidean", 10.0, "random"),  # very large reg: the support is everything
]


@pytest.mark.parametrize("kind, dim, cost, reg, weights", CASES)
def test_point_cloud_solve_matches_dense_sns_and_reports_honestly(kind, dim, cost, reg, weights):
    n = 160
    x, y = make_clouds(kind, n, dim, seed=dim)
    rng = np.random.default_rng(7)
    if weights == "uniform":
        a = b = np.full(n, 1.0 / n)
    else:
        a, b = rng.random(n) + 0.05, rng.random(n) + 0.05
        a[4] = 0.0  # a zero-mass point
        a, b = a / a.sum(), b / b.sum()
    tol = 1e-9
    res = snsot.solve(PointCloud(x, y, cost), a, b, reg=reg, tol=tol)
    C = cdist(x, y) ** {"sqeuclidean": 2.0, "euclidean": 1.0}.get(cost, cost)
    dense = snsot.solve(C, a, b, reg=reg, tol=tol)
    assert res.converged and dense.converged
    P = res.plan.toarray()
    np.testing.assert_allclose(P, dense.plan, rtol=0, atol=1e-9)
    assert res.cost == pytest.approx(float((P * C).sum()), rel=1e-12)
    assert res.cost == pytest.approx(dense.cost, rel=1e-6, abs=1e-12)
    # Honest report: the full plan at the returned potentials, recomputed densely,
    # puts at most outside_mass outside the support and has at most the reported error.
    f, g = res.potentials
    with np.errstate(invalid="ignore"):
        full = np.exp((f[:, None] + g[None, :] - C) / reg)
    full[np.isnan(full)] = 0.0
    on_support = P > 0
    assert full[~on_support].sum() <= res.outside_mass + 1e-300
    assert marginal_error(full, a, b) <= res.marginal_error * (1 + 1e-9) + 1e-15 < tol
    assert res.support_size == res.plan.nnz <= n * n
    if a[4] == 0.0:
        assert np.isneginf(f[4]) and P[4].sum() == 0.0


def test_point_cloud_plan_is_much_sparser_than_dense_at_small_reg():
    x, y = make_clouds("plain", 400, 2, seed=11)
    res = snsot.solve(PointCloud(x, y), reg=1e-4, tol=1e-9)
    assert res.converged
    assert res.support_size < 0.2 * 400 * 400


def test_high_dimensional_clouds_use_the_dense_cost():
    rng = np.random.default_rng(2)
    x, y = rng.random((60, 5)), rng.random((50, 5))
    res = snsot.solve(PointCloud(x, y), reg=1e-2, tol=1e-9)
    dense = snsot.solve(cdist(x, y, "sqeuclidean"), reg=1e-2, tol=1e-9)
    assert isinstance(res.plan, np.ndarray) and res.support_size is None
    np.testing.assert_allclose(res.plan, dense.plan, atol=1e-12)


def test_high_dimensional_clouds_too_large_for_a_dense_cost_are_refused():
    x = np.zeros((2000, 5))
    with pytest.raises(ValueError, match=r"the dense cost of 2000 x 2000 points needs 0.032 GB"):
        snsot.solve(PointCloud(x, x), reg=1e-2, max_dense_bytes=1e6)


def test_support_that_would_exceed_memory_is_refused_before_any_solve(monkeypatch):
    from snsot.solvers import pointcloud as PC

    def no_solving(*args, **kwargs):
        raise AssertionError("the refusal must come before any truncation or solve")

    monkeypatch.setattr(PC, "truncate", no_solving)
    monkeypatch.setattr(PC, "solve_sns", no_solving)
    x, y = make_clouds("plain", 500, 2, seed=3)
    with pytest.raises(ValueError, match=r"reg: the truncated support at reg=0.001 is estimated at .* pairs "
                                         r"\(.* GB; limit max_nnz=1e\+03.*use a smaller reg, fewer points"):
        snsot.solve(PointCloud(x, y), reg=1e-3, max_nnz=1000)


def test_the_support_estimate_is_within_a_small_factor_of_the_support_built():
    from snsot.solvers.pointcloud import estimate_support

    x, y = make_clouds("plain", 2000, 2, seed=4)
    w = np.full(2000, 1 / 2000)
    for reg in (1e-4, 1e-3):
        res = snsot.solve(PointCloud(x, y), w, w, reg=reg, tol=1e-9)
        assert res.converged
        estimate = estimate_support(PointCloud(x, y), w, reg)
        assert res.support_size / 4 <= estimate <= 4 * res.support_size


@pytest.mark.parametrize("partners", [100, 400])
def test_every_scale_keeps_pairs_per_point_bounded_and_the_last_is_the_points(partners):
    # Without clusters, the first scale (reg ~ 0.03) would pair every point with most of the
    # 3000 others; the hierarchy keeps each scale near `partners` pairs per cluster or point.
    n = 3000
    x, y = make_clouds("plain", n, 2, seed=5)
    res = snsot.solve(PointCloud(x, y), reg=1e-4, tol=1e-8, start_partners=partners)
    assert res.converged
    scales = res.scales
    regs = [s["reg"] for s in scales]
    assert regs == sorted(regs, reverse=True) and regs[-1] == pytest.approx(1e-4)
    assert regs[0] >= 16 * 1e-4  # started coarse
    assert scales[-1]["points"] and (scales[-1]["n_x"], scales[-1]["n_y"]) == (n, n)
    assert not scales[1]["points"] and min(scales[1]["n_x"], scales[1]["n_y"]) < n / 2  # clusters
    for s in scales[1:]:  # the first is the small dense problem
        assert s["pairs_per_point"] <= 1.5 * partners
        assert s["max_pairs_per_point"] <= 4 * partners
        assert s["support_size"] <= 1.5 * partners * s["n_x"]
    assert scales[-1]["support_size"] == res.support_size


def test_history_covers_every_scale_with_its_reg():
    x, y = make_clouds("plain", 1500, 2, seed=6)
    res = snsot.solve(PointCloud(x, y), reg=1e-4, tol=1e-9)
    h = res.history
    assert len(h) == res.n_iter == res.n_sinkhorn + res.n_newton
    assert sum(s["n_sinkhorn"] + s["n_newton"] for s in res.scales) == res.n_iter
    assert np.all(np.diff(h.reg) <= 0)  # coarse to fine
    assert set(np.unique(h.reg)) == {s["reg"] for s in res.scales}
    assert np.all(np.diff(h.time) >= 0)
    # the last recorded iterate met the last chunk's tol on its support; the final measurement may
    # come after a refresh (a 0-iteration solve on a new support at the same potentials)
    assert h.marginal_error[-1] <= max(res.marginal_error, res.tol)
    assert h.stage.max() == 1  # Newton steps recorded


def test_a_tol_below_round_off_stops_at_the_floor_without_futile_refreshes():
    # tol 1e-17 cannot be met in float64: the solve must say "floor" (converged False) and,
    # with the outside mass already within its target, not rebuild the support again and
    # again (before the stall rule reached the refresh loop: 11 refreshes, 936 iterations).
    import warnings

    from snsot.solvers.pointcloud import _MAX_REFRESH

    x, y = make_clouds("plain", 600, 2, seed=12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = snsot.solve(PointCloud(x, y), reg=1e-3, tol=1e-17)
    assert res.status == "floor" and not res.converged
    assert res.marginal_error < 1e-12  # it did get to round-off
    assert res.scales[-1]["refreshes"] <= 1 < _MAX_REFRESH - 1
    assert res.outside_mass <= 0.01 * 1e-17 * (1 + 1e-9)  # the bound was within its target at the floor


def test_stage_tol_changes_only_the_warm_start_not_the_answer():
    x, y = make_clouds("plain", 1200, 2, seed=13)
    loose = snsot.solve(PointCloud(x, y), reg=1e-4, tol=1e-10, stage_tol=1e-2)
    tight = snsot.solve(PointCloud(x, y), reg=1e-4, tol=1e-10, stage_tol=1e-5)
    assert loose.converged and tight.converged
    assert all(s["marginal_error"] <= 1e-2 for s in loose.scales[1:-1])
    assert all(s["marginal_error"] <= 1e-5 for s in tight.scales[1:-1])
    np.testing.assert_allclose(loose.plan.toarray(), tight.plan.toarray(), rtol=0, atol=1e-9)


def test_a_looser_outside_target_before_the_last_scale_keeps_fewer_pairs_there_and_the_same_answer():
    x, y = make_clouds("plain", 1200, 2, seed=14)
    base = snsot.solve(PointCloud(x, y), reg=1e-4, tol=1e-10)
    loose = snsot.solve(PointCloud(x, y), reg=1e-4, tol=1e-10, stage_outside_fraction=0.3)
    assert base.converged and loose.converged
    np.testing.assert_allclose(loose.plan.toarray(), base.plan.toarray(), rtol=0, atol=1e-9)
    assert loose.outside_mass <= 0.01 * 1e-10  # the last scale keeps outside_fraction
    # the first truncated scale starts from the same coarse potentials: fewer pairs at the looser target
    b, s = base.scales[1], loose.scales[1]
    assert (b["reg"], b["n_x"], b["n_y"]) == (s["reg"], s["n_x"], s["n_y"])
    assert s["support_size"] < b["support_size"]
    with pytest.raises(ValueError, match=r"stage_outside_fraction: must lie in \(0, 0.5\)"):
        snsot.solve(PointCloud(x, y), reg=1e-4, stage_outside_fraction=0.5)


def test_point_clouds_refuse_sinkhorn_and_unknown_options():
    x, y = make_clouds("plain", 20, 2, seed=3)
    with pytest.raises(ValueError, match="method: point clouds can be solved with 'sns'"):
        snsot.solve(PointCloud(x, y), reg=1e-2, method="sinkhorn")
    with pytest.raises(ValueError, match="bogus: not an option for point clouds"):
        snsot.solve(PointCloud(x, y), reg=1e-2, bogus=3)


# ---------------------------------------------------------------------------
# Dense costs that are mostly +inf go to the sparse kernels
# ---------------------------------------------------------------------------


def _mostly_forbidden(n, fraction, seed, shift=0.0):
    """Sorted 1-D points, pairs allowed in a band ``|i - j| <= k`` around the diagonal (feasible
    for near-uniform weights), ``fraction`` of the entries forbidden."""
    rng = np.random.default_rng(seed)
    x, y = np.sort(rng.random(n)), np.sort(rng.random(n))
    C = (x[:, None] - y[None, :]) ** 2 + shift
    k = max(1, int(round((1 - fraction) * n / 2)))
    i, j = np.indices((n, n))
    return np.where(np.abs(i - j) <= k, C, np.inf)


@pytest.mark.parametrize("method", ["sns", "sinkhorn"])
@pytest.mark.parametrize("shift", [0.0, -0.3])  # negative costs: solved shifted, reported for C
def test_a_mostly_infinite_dense_cost_is_solved_on_its_finite_entries_with_the_dense_answer(method, shift, monkeypatch):
    from snsot.solvers import pointcloud as PC

    n = 400  # 160,000 entries: above SPARSE_MIN_ENTRIES
    C = _mostly_forbidden(n, 0.95, seed=8, shift=shift)
    rng = np.random.default_rng(9)
    a, b = 1 + 0.2 * rng.random(n), 1 + 0.2 * rng.random(n)
    a[3] = 0.0
    a, b = a / a.sum(), b / b.sum()
    reg = 1e-4
    res = snsot.solve(C, a, b, reg=reg, tol=1e-10, method=method)
    monkeypatch.setattr(PC, "SPARSE_INF_FRACTION", 1.1)  # the oracle: the dense kernels
    dense = snsot.solve(C, a, b, reg=reg, tol=1e-10, method=method)
    assert dense.support_size is None  # the oracle did take the dense path
    assert res.support_size == np.isfinite(C[a > 0]).sum()  # ... and the routed solve the sparse one
    assert res.converged and dense.converged
    assert isinstance(res.plan, np.ndarray) and res.plan.shape == (n, n)
    np.testing.assert_allclose(res.plan, dense.plan, rtol=0, atol=1e-11)
    assert np.all(res.plan[~np.isfinite(C)] == 0.0)
    assert res.cost == pytest.approx(dense.cost, rel=1e-9)
    assert res.objective == pytest.approx(dense.objective, rel=1e-9)
    assert marginal_error(res.plan, a, b) <= res.marginal_error * (1 + 1e-9) + 1e-15 < 1e-10
    f, g = res.potentials
    assert np.isneginf(f[3]) and np.isfinite(f[a > 0]).all()


def test_dense_costs_below_the_threshold_or_small_stay_dense():
    C = _mostly_forbidden(400, 0.5, seed=10)
    assert snsot.solve(C, reg=1e-2).support_size is None
    small = _mostly_forbidden(100, 0.95, seed=10)  # 10,000 entries: one dense pass is cheap
    assert snsot.solve(small, reg=1e-2).support_size is None


@pytest.mark.parametrize("fraction", [1e-30, 1e30])
def test_refreshing_after_every_newton_step_or_never_gives_the_same_answer(fraction, monkeypatch):
    # The monitor stops a solve on a support (internal status "support") once the
    # outside-mass bound reaches a fraction of the error (and its target); with supports
    # built without room, at 1e-30 it refreshes after nearly every Newton step (until the
    # last allowed support), at 1e30 never: both
    # end converged, on the dense answer, and the internal status never escapes.
    from snsot.solvers import pointcloud as PC

    monkeypatch.setattr(PC, "_MONITOR_FRACTION", fraction)
    monkeypatch.setattr(PC, "_REFRESH_ROOM", 1.0)  # no room: any drift takes the bound past its target
    rng = np.random.default_rng(21)
    x, y = rng.random((400, 2)), np.clip(rng.normal(0.5, 0.15, (350, 2)), 0, 1)
    reg = 1e-3
    res = snsot.solve(PointCloud(x, y), reg=reg, tol=1e-9)
    dense = snsot.solve(PointCloud(x, y).dense_cost(), reg=reg, tol=1e-10)
    assert res.converged and res.status == "success"
    assert abs(res.plan.toarray() - dense.plan).max() < 1e-9
    if fraction < 1:
        assert sum(s["refreshes"] for s in res.scales) >= 2


def test_predicting_each_scale_in_reg_starts_closer_with_smaller_supports_and_the_same_answer(monkeypatch):
    """The potentials' drift in reg, extrapolated from the previous scale: the last scale starts at a
    lower marginal error, the scales between keep fewer pairs (truncated at better potentials), and
    the plan is the one without the prediction (clipped Gaussian, whose tail drifts most)."""
    from snsot.bench.pointcloud import clouds
    from snsot.solvers import pointcloud as PC

    x, y = clouds(3000)[:2]
    reg = 1e-4
    runs = {}
    for predict in (True, False):
        monkeypatch.setattr(PC, "_PREDICT", predict)
        res = snsot.solve(PointCloud(x, y), reg=reg, tol=1e-10)
        assert res.converged
        runs[predict] = res
    first = {p: r.history.marginal_error[r.history.reg == reg][0] for p, r in runs.items()}
    assert first[True] < 0.97 * first[False]
    sizes = {p: [s["support_size"] for s in r.scales] for p, r in runs.items()}
    between = slice(1, len(sizes[True]) - 1)  # after the dense start, before the last
    assert all(s1 <= s0 for s1, s0 in zip(sizes[True][between], sizes[False][between]))
    assert sum(sizes[True][between]) < 0.9 * sum(sizes[False][between])
    np.testing.assert_allclose(runs[True].plan.toarray(), runs[False].plan.toarray(), rtol=0, atol=1e-10)
