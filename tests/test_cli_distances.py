"""``snsot distances``, run as a subprocess the way people run it.

The matrix it writes is compared with :func:`snsot.distances` on the same
images (itself checked against single solves in test_distances.py).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import snsot

PIL = pytest.importorskip("PIL.Image")


def run(args, cwd):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "snsot", "distances", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    pixels = (rng.random((4, 6, 6)) * 255).astype(np.uint8)
    pixels[pixels == 0] = 1
    for k in range(4):
        PIL.fromarray(pixels[k]).save(path / f"im{k}.png")
    np.save(path / "other.npy", rng.random((5, 5)))
    return path, pixels


def test_matrix_equals_the_library(folder):
    path, pixels = folder
    proc = run(["im*.png", "--reg", "0.02", "--out", "D.npy", "--json", "--value", "divergence"], path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["solves"] == 10 and summary["converged"] == 16
    expected = snsot.distances(pixels.astype(float), reg=0.02, value="divergence")
    np.testing.assert_allclose(np.load(path / "D.npy"), expected, rtol=0, atol=1e-12)
    assert (path / "D.npy.files.txt").read_text().split() == [f"im{k}.png" for k in range(4)]

    again = run(["im*.png", "--reg", "0.02", "--out", "D.npy", "--value", "divergence"], path)
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = run(["im*.png", "--reg", "0.02", "--out", "D.npy", "--value", "divergence", "--resume", "--json"], path)
    assert resumed.returncode == 0 and json.loads(resumed.stdout)["solved_now"] == 0
    other = run(["im*.png", "--reg", "0.03", "--out", "D.npy", "--value", "divergence", "--resume"], path)
    assert other.returncode == 2 and "holds a different problem" in other.stderr


@pytest.mark.parametrize("args, message", [
    (["im*.png", "other.npy", "--out", "E.npy"], "other.npy: has 5x5 bins but im0.png has 6x6"),
    (["nothing*.png", "--out", "E.npy"], "nothing*.png: no file matches"),
    (["im0.png", "--out", "E.npy"], "need at least 2 files"),
    (["im*.png", "--out", "E.npy", "--scheduler", "tcp://127.0.0.1:9"], "cannot reach the Dask scheduler at "
                                                                         "'tcp://127.0.0.1:9'"),
])
def test_bad_input_is_one_line_with_status_2(folder, args, message):
    path, _ = folder
    proc = run(args + ["--reg", "0.02"], path)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_ctrl_c_keeps_finished_pairs_and_resume_completes(tmp_path):
    import signal
    import time

    rng = np.random.default_rng(1)
    pixels = (rng.random((12, 8, 8)) * 255).astype(np.uint8) + 1
    for k in range(12):
        PIL.fromarray(pixels[k]).save(tmp_path / f"d{k:02d}.png")
    args = ["d*.png", "--reg", "0.005", "--out", "D.npy", "--n-jobs", "2", "-q"]
    proc = subprocess.Popen([sys.executable, "-m", "snsot", "distances", *args], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    table = tmp_path / "D.npy.solves.npy"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if table.exists():
            try:
                if (np.load(table, mmap_mode="r")[:, 0] == 1).sum() >= 3:
                    break
            except ValueError:  # header not written yet
                pass
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.skip("the run finished before it could be interrupted")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    if proc.returncode == 0:
        pytest.skip("the run finished before the interrupt arrived")
    assert proc.returncode == 130, err
    assert "--resume" in err
    done = int((np.load(table)[:, 0] == 1).sum())
    assert 3 <= done < 78
    resumed = run(args[:-1] + ["--resume", "--json"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["solved_now"] == 78 - done
    expected = snsot.distances(pixels.astype(float), reg=0.005)
    np.testing.assert_allclose(np.load(tmp_path / "D.npy"), expected, rtol=0, atol=1e-12)
