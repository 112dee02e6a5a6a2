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
