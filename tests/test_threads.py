"""Process and thread safety: fork pools, Python threads, read-only caches, the two kernel builds.

The claims that involve a fork, a threading layer or an unwritable cache run
in a subprocess with a timeout, so a hang or an abort fails the test instead
of hanging or killing the test run.
"""

import os
import shutil
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import snsot
from snsot import _kernels as K

SRC = Path(snsot.__file__).resolve().parents[1]


def _run(script: str, env_extra=None, timeout=600, pythonpath=SRC) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env["PYTHONPATH"] = str(pythonpath)
    env.update(env_extra or {})
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def _problem(seed, n=40, m=30):
    rng = np.random.default_rng(seed)
    a, b = rng.random(n) + 0.1, rng.random(m) + 0.1
    return rng.random((n, m)), a / a.sum(), b / b.sum()


# ---------------------------------------------------------------------------
# The two builds
# ---------------------------------------------------------------------------


def _kernel_cases(rng):
    n, m = 70, 45
    C = rng.random((n, m))
    f, g = rng.normal(size=n) * 0.1, rng.normal(size=m) * 0.1
    reg = 0.2
    B = np.exp((f[:, None] + g[None, :] - C) / reg)
    u, v = np.exp(rng.normal(size=n) * 0.1), np.exp(rng.normal(size=m) * 0.1)
    a = rng.random(n) + 0.1
    d_row, d_col = rng.random(n) + 5.0, rng.random(m) + 5.0
    y, w = rng.normal(size=m), rng.normal(size=n)
    cap, chunks = 8, 3
    keep = B * (rng.random((n, m)) < 0.2)  # a CSR block with about a fifth of the entries
    csr = (np.concatenate([[0], np.cumsum((keep > 0).sum(axis=1))]).astype(np.int64),
           np.nonzero(keep)[1].astype(np.int32), keep[keep > 0])
    pass_out = lambda: (np.empty(n), np.zeros(n, np.int64), np.zeros((n, cap), np.int32), np.zeros((n, cap)))  # noqa: E731
    return {
        "row_update": lambda k: (k(C, g, np.log(a), reg, out := np.empty(n)), out)[1],
        "col_update": lambda k: (k(C, f, np.log(a[:m]), reg, out := np.empty(m), chunks), out)[1],
        "plan_pass": lambda k: (k(C, f, g, reg, 0.02, cap, chunks, *(o := pass_out()), P := np.empty((n, m))), *o, P),
        "scaled_pass": lambda k: (k(B, u, v, 0.02, cap, chunks, *(o := pass_out())), *o),
        "scaled_sums": lambda k: (*k(B, u, v, 0.02, chunks, r := np.empty(n)), r),
        "dense_schur_setup": lambda k: k(B, u, v, d_row, w, chunks),
        "dense_schur_matvec": lambda k: k(B, u, v, d_row, d_col, y, chunks),
        "scaled_matvec": lambda k: k(B, u, v, y),
        "schur_matvec_chunked": lambda k: (k(*csr, d_row, d_col, y, chunks, out := np.empty(m)), out)[1],
        "dense_plan": lambda k: (k(C, f, g, reg, P := np.empty((n, m))), P)[1],
        "dense_plan_sums": lambda k: (*k(C, f, g, reg, chunks, P := np.empty((n, m)), r := np.empty(n)), P, r),
        "base_sinkhorn_step": lambda k: (
            k(B, f + 0.01 * reg * w, g + 0.02 * reg * y, f, g, reg, K.BASE_DRIFT, a, np.log(a), 0.9, np.log(a[:m]),
              0.8, 1e-100, chunks, r := np.empty(n), fn := np.empty(n), gn := np.empty(m))[::2], r, fn, gn),
    }


CASES = sorted(_kernel_cases(np.random.default_rng(0)))


@pytest.mark.parametrize("name", CASES)
def test_serial_and_parallel_builds_of_a_kernel_agree(name):
    call = _kernel_cases(np.random.default_rng(7))[name]
    kern = getattr(K, name)
    serial, parallel = call(kern.serial), call(kern.parallel)
    for s, p in zip(np.atleast_1d(serial) if not isinstance(serial, tuple) else serial,
                    np.atleast_1d(parallel) if not isinstance(parallel, tuple) else parallel):
        np.testing.assert_allclose(s, p, rtol=1e-13, atol=0)


def test_every_parallel_kernel_has_a_serial_build_that_releases_the_gil():
    parallel_kernels = [name for name in dir(K) if callable(getattr(K, name)) and hasattr(getattr(K, name), "parallel")]
    assert sorted(parallel_kernels) == CASES  # a new parallel kernel must join the agreement test above
    for name in parallel_kernels:
        kern = getattr(K, name)
        assert kern.serial.targetoptions.get("nogil") and kern.parallel.targetoptions.get("nogil"), name
        assert not kern.serial.targetoptions.get("parallel") and kern.parallel.targetoptions.get("parallel"), name
    for name in ("schur_cg", "compact_csr", "csr_matvec", "csr_rmatvec", "centred_scalings"):
        assert getattr(K, name).targetoptions.get("nogil"), name


def test_one_thread_selects_the_serial_build_and_more_the_parallel_one_on_the_main_thread():
    assert threading.current_thread() is threading.main_thread()
    with K.thread_limit(10, 1):
        assert K.runs_serial()
        assert K.default_chunks(1000) == 1
        with K.thread_limit(10, 2):
            assert not K.runs_serial()
        assert K.runs_serial()  # restored on exit
    with K.thread_limit(K.PARALLEL_MIN_SIZE, 2):
        assert not K.runs_serial()
    with K.thread_limit(K.PARALLEL_MIN_SIZE - 1):  # default: one thread below the size threshold
        assert K.runs_serial()


def test_the_serial_build_is_picked_per_python_thread():
    seen = {}

    def worker():
        with K.thread_limit(10, 1):
            seen["worker"] = K.runs_serial()
            barrier.wait()

    barrier = threading.Barrier(2, timeout=60)
    with K.thread_limit(10, 2):
        t = threading.Thread(target=worker)
        t.start()
        barrier.wait()
        seen["main"] = K.runs_serial()
        t.join()
    assert seen == {"worker": True, "main": K.must_run_serial()}


# ---------------------------------------------------------------------------
# Threads and processes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n_threads", [None, 2])
def test_solving_from_a_thread_pool_gives_the_results_of_a_serial_loop(n_threads):
    problems = [_problem(s) for s in range(6)]
    solve = lambda p: snsot.solve(p[0], p[1], p[2], reg=0.05, n_threads=n_threads)  # noqa: E731
    loop = [solve(p) for p in problems]
    with ThreadPoolExecutor(3) as pool:
        threaded = list(pool.map(solve, problems))
    for r1, r2 in zip(loop, threaded):
        assert r1.converged and r2.converged
        np.testing.assert_allclose(r2.plan, r1.plan, rtol=1e-12, atol=1e-300)


FORK_SCRIPT = """
    import multiprocessing as mp, sys
    import numba, numpy as np, snsot

    def problem(seed):
        rng = np.random.default_rng(seed)
        a, b = rng.random(40) + 0.1, rng.random(30) + 0.1
        return rng.random((40, 30)), a / a.sum(), b / b.sum()

    def solve(seed):
        C, a, b = problem(seed)
        return snsot.solve(C, a, b, reg=0.05, n_threads=N_THREADS).plan

    if __name__ == "__main__":
        # Start numba's thread pool in the parent (a solve on two threads).
        C, a, b = problem(0)
        snsot.solve(C, a, b, reg=0.05, n_threads=2)
        loop = [solve(s) for s in range(6)]
        with mp.get_context("fork").Pool(2) as pool:
            forked = pool.map_async(solve, range(6)).get(timeout=300)
        for p1, p2 in zip(loop, forked):
            np.testing.assert_allclose(p2, p1, rtol=1e-12, atol=1e-300)
        print("layer", numba.threading_layer())
"""


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
@pytest.mark.parametrize("n_threads", [None, 2])
def test_a_fork_pool_after_a_solve_returns_the_results_of_a_serial_loop(n_threads):
    out = _run(FORK_SCRIPT.replace("N_THREADS", repr(n_threads)), timeout=600)
    assert "layer" in out


THREADS_SCRIPT = """
    from concurrent.futures import ThreadPoolExecutor
    import numba, numpy as np, snsot

    def solve(seed):
        rng = np.random.default_rng(seed)
        C, a, b = rng.random((40, 30)), rng.random(40) + 0.1, rng.random(30) + 0.1
        a, b = a / a.sum(), b / b.sum()
        return snsot.solve(C, a, b, reg=0.05, n_threads=2).plan   # asks for the parallel build

    loop = [solve(s) for s in range(8)]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(solve, range(8)))
    for p1, p2 in zip(loop, threaded):
        np.testing.assert_allclose(p2, p1, rtol=1e-12, atol=1e-300)
    print("layer", numba.threading_layer())
"""


def test_solving_from_several_threads_under_the_workqueue_layer_works():
    out = _run(THREADS_SCRIPT, env_extra={"NUMBA_THREADING_LAYER": "workqueue"}, timeout=600)
    assert "layer workqueue" in out


# ---------------------------------------------------------------------------
# Read-only caches
# ---------------------------------------------------------------------------

CACHE_SCRIPT = """
    import numpy as np, snsot
    from snsot import _kernels as K
    rng = np.random.default_rng(0)
    C = rng.random((30, 20))
    res = snsot.solve(C, reg=0.1, method="sinkhorn")
    assert res.converged
    print("cache", K.CACHE, K.CACHE_DIR)
"""


@pytest.fixture
def unwritable_install(tmp_path):
    """A copy of the package where numba finds no writable cache location of its own.

    ``__pycache__`` is a file (so the in-tree cache cannot be made, even as
    root) and HOME / XDG_CACHE_HOME are a file (so the user-wide one cannot).
    """
    site = tmp_path / "site"
    shutil.copytree(SRC / "snsot", site / "snsot", ignore=shutil.ignore_patterns("__pycache__"))
    for d in [site / "snsot", *(p for p in (site / "snsot").rglob("*") if p.is_dir())]:
        (d / "__pycache__").write_text("not a directory")
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"HOME": str(home), "XDG_CACHE_HOME": str(home), "TMPDIR": str(tmp), "PYTHONDONTWRITEBYTECODE": "1"}
    return site, tmp, env


@pytest.mark.slow
def test_import_and_solve_work_when_no_cache_location_is_writable(unwritable_install):
    site, tmp, env = unwritable_install
    out = _run(CACHE_SCRIPT, env_extra=env, pythonpath=site)
    private = tmp / f"snsot-numba-cache-{os.getuid()}"
    assert f"cache True {private}" in out
    assert any(private.rglob("*.nbi"))  # the kernels were cached there
    # A second process reuses it (and a directory others could write to is refused).
    assert f"cache True {private}" in _run(CACHE_SCRIPT, env_extra=env, pythonpath=site)
    private.chmod(0o777)
    import_only = "from snsot import _kernels as K; print('cache', K.CACHE, K.CACHE_DIR)"
    assert "cache False None" in _run(import_only, env_extra=env, pythonpath=site)
