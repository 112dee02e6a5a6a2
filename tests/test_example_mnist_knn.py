"""examples/mnist_knn.py runs at a small size, and its k-NN vote is right on a hand-made matrix."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "mnist_knn.py")


def load_example():
    spec = importlib.util.spec_from_file_location("mnist_knn", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_knn_vote_takes_the_majority_then_the_nearest():
    knn = load_example().knn_predict
    labels = np.array([1, 2, 2, 3])
    D = np.array([[0.1, 0.2, 0.3, 0.9],    # neighbours 1, 2, 2: majority 2
                  [0.5, 0.4, 0.9, 0.1]])   # neighbours 3, 2, 1: a tie, the nearest (3) wins
    assert knn(D, labels, 3).tolist() == [2, 3]


def test_example_runs_small(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "knn.png"
    proc = subprocess.run([sys.executable, EXAMPLE, "--train", "12", "--test", "6", "--reg", "0.02", "--out",
                           str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "accuracy, entropic W2:" in proc.stdout and "accuracy,   Euclidean:" in proc.stdout
    assert "72/72 converged" in proc.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
