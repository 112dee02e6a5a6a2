"""snsot.bench.pointcloud: one measurement's fields against an independent recomputation, and the report."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

import snsot
from snsot.bench import pointcloud as B


def test_clouds_are_the_issue_problem():
    x, y = B.clouds(500, seed=0)
    assert x.shape == y.shape == (500, 2)
    assert x.min() >= 0 and x.max() <= 2 and y.min() >= 0 and y.max() <= 2
    assert abs(y.mean() - 1.0) < 0.05


@pytest.mark.parametrize("method", ["sns-sparse", "sns-dense"])
def test_measure_reports_a_converged_solve_with_its_true_cost(method):
    row = B.measure(method, 150, 1e-3, 1e-8, seed=0)
    x, y = B.clouds(150, 0)
    a = np.full(150, 1 / 150)
    ref = snsot.solve(cdist(x, y, "sqeuclidean"), a, a, reg=1e-3, tol=1e-10)
    assert row["converged"] and row["marginal_error"] < 1e-8
    assert row["cost"] == pytest.approx(ref.cost, rel=1e-6)
    assert row["time"] > 0 and row["peak_rss_mb"] > 0


def test_markdown_has_one_row_per_measurement_and_names_failures():
    rows = [
        {"method": "sns-sparse", "n": 10, "reg": 1e-3, "time": 1.0, "marginal_error": 1e-9, "converged": True,
         "cost": 0.5, "support_per_point": 3.0, "outside_mass": 1e-12, "peak_rss_mb": 100.0,
         "max_plan_diff_vs_dense": 1e-11, "speedup_vs_dense": 2.0},
        {"method": "pot-lazy-emd", "n": 10, "reg": 1e-3, "error": "timed out after 5 s"},
    ]
    md = B._markdown(rows, 1e-8)
    assert "| 10 | 0.001 | sns-sparse | 1 | 1.00e-09 | True |" in md
    assert "failed: timed out after 5 s" in md


def test_kl_value_is_the_primal_entropic_objective_and_equals_the_dual_at_the_optimum():
    x, y = B.clouds(120, seed=1)
    a = np.full(120, 1 / 120)
    reg = 1e-2
    res = snsot.solve(cdist(x, y, "sqeuclidean"), a, a, reg=reg, tol=1e-12)
    P = res.plan
    by_hand = float((P * cdist(x, y, "sqeuclidean")).sum() + reg * (P * np.log(P / np.outer(a, a))).sum())
    assert B.kl_value(P, res.cost, a, a, reg) == pytest.approx(by_hand, rel=1e-12)
    f, g = res.potentials  # the dual <a, f> + <b, g> in the KL form: the potentials minus reg log a, reg log b
    dual = float(a @ (f - reg * np.log(a)) + a @ (g - reg * np.log(a)))
    assert B.kl_value(P, res.cost, a, a, reg) == pytest.approx(dual, rel=1e-9)


def test_geomloss_row_uses_our_cost_and_reg():
    pytest.importorskip("geomloss")
    # At a large reg GeomLoss's few annealing steps nearly reach the optimum: its value and plan are
    # then close to ours (a convention slip, cost/2 or reg/2, would be off by tens of percent).
    x, y = B.clouds(150, seed=2)
    a = np.full(150, 1 / 150)
    reg = 0.5
    value, f, g = B._geomloss("tensorized", x, y, a, a, reg)
    ref = snsot.solve(cdist(x, y, "sqeuclidean"), a, a, reg=reg, tol=1e-12)
    assert value == pytest.approx(B.kl_value(ref.plan, ref.cost, a, a, reg), rel=1e-3)
    P = np.outer(a, a) * np.exp((f[:, None] + g[None, :] - cdist(x, y, "sqeuclidean")) / reg)
    assert np.abs(P - ref.plan).sum() < 0.02


def test_report_has_high_dimension_rows_and_value_gaps():
    rows = [
        {"method": "sns-sparse", "n": 10, "reg": 1e-3, "dim": 5, "time": 2.0, "converged": True, "value": 1.0},
        {"method": "sns-dense", "n": 10, "reg": 1e-3, "dim": 5, "time": 1.0, "converged": True, "value": 1.0},
    ]
    md = B._markdown(rows, 1e-8)
    assert "## Higher dimensions" in md and "| 5 | 10 | 0.001 | sns-sparse | 2 |" in md


def test_a_run_keeps_the_rows_of_other_sizes_from_an_earlier_run(tmp_path):
    import json

    earlier = [{"method": "sns-sparse", "n": 10**6, "reg": 1e-6, "dim": 2, "time": 600.0, "converged": True}]
    (tmp_path / "pointcloud.json").write_text(json.dumps(earlier))
    rows = B.run([120], [1e-2], 1e-8, tmp_path, methods=("sns-sparse",), plots=False, log=lambda *_: None)
    assert [(r["n"], r["method"]) for r in rows] == [(10**6, "sns-sparse"), (120, "sns-sparse")]
    assert rows[0]["note"] == "(earlier run)" and rows[1]["converged"]
    md = (tmp_path / "POINTCLOUD.md").read_text()
    assert "| 1000000 | 1e-06 | sns-sparse | 600 |" in md and "| 120 | 0.01 | sns-sparse |" in md
