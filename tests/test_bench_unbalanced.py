"""``snsot bench --unbalanced``: a small run's rows and report say what the methods did."""

from __future__ import annotations

import math

import numpy as np
import pytest

from snsot.bench import unbalanced


def test_quick_unbalanced_benchmark_rows_are_remeasured_and_honest(tmp_path):
    pytest.importorskip("ot")
    rows = unbalanced.run(tmp_path, quick=True, regs=[1e-2], tol=1e-9, repeats=1, cap=5.0, log=lambda *_: None)
    assert {r["method"] for r in rows} == set(unbalanced.METHODS)
    by_method = {r["method"]: r for r in rows}
    assert by_method["snsot-sns"]["status"] == "ok"
    for r in rows:
        if r["status"] == "ok":
            assert r["error"] < 1e-9 and r["time"] > 0
        else:  # capped, stopped early, or failed: never an error below tol passed off as a miss
            assert not r.get("error", math.inf) < 1e-9
    # the masses differ and the plans move an amount of mass between the two totals' reach
    C, a, b = unbalanced.problems(quick=True)["clouds"]
    assert not math.isclose(a.sum(), b.sum())
    assert 0 < by_method["snsot-sns"]["mass"] < 2 * max(a.sum(), b.sum())
    text = (tmp_path / "unbalanced.md").read_text()
    assert "| clouds (200 x 200) | 0.01 |" in text
    assert (tmp_path / "unbalanced.json").exists()


def test_gradient_norm_is_zero_only_at_the_optimum():
    C, a, b = unbalanced.problems(quick=True)["clouds"]
    import snsot

    res = snsot.solve(C, a, b, reg=0.05, reg_m=1.0, tol=1e-12)
    f, g = res.potentials
    assert unbalanced.gradient_norm(C, a, b, 0.05, 1.0, res.plan, f, g) < 1e-12
    P = np.exp((f[:, None] + 1.01 * g[None, :] - C) / 0.05)
    assert unbalanced.gradient_norm(C, a, b, 0.05, 1.0, P, f, 1.01 * g) > 1e-4
