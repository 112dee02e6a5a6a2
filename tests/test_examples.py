"""The examples run (at a small size) and do what they claim."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gradient_flow_decreases_the_divergence_and_draws(tmp_path):
    out = tmp_path / "flow.png"
    values = _load("gradient_flow").main(["--n", "40", "--steps", "4", "--reg", "1e-2", "--out", str(out)])
    assert len(values) == 4
    assert all(later < earlier for earlier, later in zip(values, values[1:]))
    assert out.stat().st_size > 0


def test_torus_example_matches_dense_sns_at_a_small_size(tmp_path):
    import numpy as np
    from scipy.spatial.distance import cdist

    import snsot

    module = _load("torus")
    out = tmp_path / "torus.png"
    res = module.main(["--n", "500", "--reg", "1e-2", "--tol", "1e-9", "--out", str(out)])
    x, y = module.torus(500, 0), module.torus(500, 1, tilt=0.3)
    dense = snsot.solve(cdist(x, y), reg=1e-2, tol=1e-9)  # the oracle: the dense euclidean cost
    assert res.converged and dense.converged
    np.testing.assert_allclose(res.plan.toarray(), dense.plan, rtol=0, atol=1e-10)
    assert res.cost == np.float64(res.cost) and abs(res.cost - dense.cost) <= 1e-7 * dense.cost
    assert res.scales[-1]["points"] and out.stat().st_size > 0
