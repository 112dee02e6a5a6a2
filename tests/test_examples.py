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
