"""The divergence benchmark: rows well formed, errors measured against the reference."""

import numpy as np
import pytest

pytest.importorskip("torch")

from snsot.bench.divergence import clouds, markdown_divergence, run_divergence  # noqa: E402


def test_clouds_keep_the_cost_in_0_2():
    x, y = clouds(500, 0)
    for p in (x, y):
        assert float(p.min()) >= 0 and float(p.max()) <= 1


def test_rows_report_errors_against_the_reference():
    rows = run_divergence((60,), (5e-2,), repeats=1, time_cap=2.0, log=lambda msg: None, scalings=(0.5,))
    ours = [r for r in rows if r["method"] == "snsot.torch"]
    assert {r["settings"] for r in ours} == {"tol=1e-09", "tol=1e-06"}
    tight = next(r for r in ours if r["settings"] == "tol=1e-09")
    # tol 1e-9 on the marginals gives a gradient within ~1e-9 of the tol 1e-12 reference.
    assert tight["grad_error"] < 1e-6 and tight["value_error"] < 1e-6
    for r in rows:
        assert r["status"] in ("ok", "absent", "not run") or r["status"].startswith("failed")
        if r["status"] == "ok":
            assert r["forward"] > 0 and r["backward"] > 0 and np.isfinite(r["grad_error"])
    text = markdown_divergence(rows, "cmd")
    assert "| 60 | 0.05 | snsot.torch | tol=1e-09 |" in text and "`cmd`" in text
