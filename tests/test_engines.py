"""Engines (snsot._engines): what a worker process runs with, checked in the worker itself.

The memory checks count minor page faults (``getrusage``), not time: an array
of ``s`` bytes that malloc maps afresh is faulted in page by page, ``s / 4096``
faults each time; one that malloc recycles costs none.
"""

import json
import os
import resource
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from snsot import _engines, _kernels

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# 2 MiB: far above malloc's pinned 128 KiB mmap threshold, below the 4 MiB from which NumPy asks for
# transparent huge pages (which would fault a varying number of times).
ARRAY_BYTES = 2 << 20
ARRAY_PAGES = ARRAY_BYTES // PAGE
PLAN_PAGES = 784 * 784 * 8 // PAGE  # one MNIST plan, 4.9 MB

glibc_linux = pytest.mark.skipif(_engines._libc() is None or not os.path.exists("/proc/self/environ"),
                                 reason="glibc malloc on Linux only")


def faults_per_allocation(repeats: int = 8) -> float:
    """Minor page faults of allocating and filling a 2 MiB array, per allocation (after a warm-up)."""
    for _ in range(2):  # warm-up: glibc's dynamic threshold moves on the first free, the heap grows on the next
        np.ones(ARRAY_BYTES // 8)
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(repeats):
        x = np.ones(ARRAY_BYTES // 8)
        del x
    return (resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before) / repeats


def run_python(code: str, **env) -> dict:
    """Run ``code`` in a fresh interpreter started with ``env`` added; it prints one JSON line."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    full.update(env)
    full["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(_engines.__file__)),
                                          os.path.dirname(__file__), full.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc_linux
@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"MALLOC_TRIM_THRESHOLD_": "65536"}, [128 * 1024, 65536]),  # what Dask's nanny sets
    ({"MALLOC_MMAP_THRESHOLD_": "262144"}, [262144, 128 * 1024]),
    ({"MALLOC_TOP_PAD_": "0"}, [128 * 1024, 128 * 1024]),
    ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=100000"}, [128 * 1024, 100000]),
])
def test_malloc_pinned_reads_the_environment_the_process_started_with(env, expected):
    got = run_python("""
        import json
        from snsot import _engines
        print(json.dumps(_engines.malloc_pinned()))
    """, **env)
    assert got == expected


@glibc_linux
def test_a_variable_set_after_start_up_does_not_count_as_pinned(monkeypatch):
    if any(k in _engines._initial_environment() for k in _engines._PINNING_VARIABLES):
        pytest.skip("this test process was itself started with malloc settings")
    # Dask's nanny writes MALLOC_TRIM_THRESHOLD_ into its own (our) process: glibc never reads it.
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    assert _engines.malloc_pinned() is None


@glibc_linux
def test_reuse_freed_memory_stops_faulting_in_large_arrays_and_restores_on_exit():
    got = run_python("""
        import json
        from snsot import _engines
        from test_engines import faults_per_allocation
        pinned = faults_per_allocation()
        with _engines.reuse_freed_memory():
            with _engines.reuse_freed_memory():  # nested: only the last exit restores
                inside = faults_per_allocation()
            still = faults_per_allocation()
        after = faults_per_allocation()
        print(json.dumps(dict(pinned=pinned, inside=inside, still=still, after=after)))
    """, MALLOC_TRIM_THRESHOLD_="65536")
    # Pinned (as in a Dask worker): every allocation maps fresh pages, so all of them fault.
    assert got["pinned"] >= 0.9 * ARRAY_PAGES
    assert got["inside"] <= 0.05 * ARRAY_PAGES and got["still"] <= 0.05 * ARRAY_PAGES
    assert got["after"] >= 0.9 * ARRAY_PAGES  # the start-up thresholds are back


@glibc_linux
def test_reuse_freed_memory_changes_nothing_in_a_process_started_without_settings():
    got = run_python("""
        import json
        from snsot import _engines
        from test_engines import faults_per_allocation
        before = faults_per_allocation()
        with _engines.reuse_freed_memory():
            changed = _engines._malloc_restore is not None
        print(json.dumps(dict(before=before, changed=changed, after=faults_per_allocation())))
    """)
    assert not got["changed"]
    # glibc's own dynamic threshold already recycles the array: no mallopt call may break that.
    assert got["before"] <= 0.05 * ARRAY_PAGES and got["after"] <= 0.05 * ARRAY_PAGES


def _report_worker(data, chunk):
    """In a worker: malloc state, BLAS threads and the kernel builds used by a batch chunk of solves."""
    from snsot import batch

    # Make the size rule pick the parallel builds for any problem, so only the engine's
    # one-thread setting (n_threads=1 in each task) keeps the solves on the serial builds.
    _kernels.PARALLEL_MIN_SIZE = 1
    batch._solve_chunk(data, chunk[:1])  # warm-up: the first solve allocates the heap
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    records, _ = batch._solve_chunk(data, chunk)
    faults = (resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before) / len(chunk)
    builds = {name: f for name, f in vars(_kernels).items()
              if getattr(f, "parallel", None) is not None and getattr(f, "serial", None) is not None}
    return dict(pinned=_engines.malloc_pinned(), faults_per_solve=faults, blas=_engines.blas_threads(),
                parallel_builds_used=sorted(k for k, f in builds.items() if f.parallel.signatures),
                serial_builds_used=sorted(k for k, f in builds.items() if f.serial.signatures),
                converged=records[:, 3].tolist(), faults_per_allocation=faults_per_allocation())


def _mnist_work():
    from snsot import costs, datasets
    from snsot.batch import _Work

    images, _ = datasets.mnist_images()
    X = np.stack([datasets._normalise(images[i], datasets.DEFAULT_FLOOR) for i in range(4)])
    C = costs.grid((28, 28))
    work = _Work(measures={"x": X}, kinds=[("x", "x", "C")], costs={"C": C}, reg=1 / 300, method="sns", tol=1e-8,
                 max_iter=10_000, options={})
    chunk = np.array([[0, 0, 1], [0, 1, 2], [0, 2, 3], [0, 0, 3]])
    return work, chunk


def test_dask_worker_solves_on_serial_kernels_one_blas_thread_and_recycled_memory(one_worker_cluster):
    work, chunk = _mnist_work()
    # The same chunk as a bare Dask task first: the worker as the nanny started it.
    bare = one_worker_cluster.submit(_report_worker, work, chunk, pure=False).result()
    engine = _engines.DaskEngine(one_worker_cluster)
    [(_, got)] = list(engine.run(_report_worker, work, [chunk]))
    assert got["converged"] == [1.0] * len(chunk)
    assert got["parallel_builds_used"] == [] and "plan_pass" in got["serial_builds_used"]
    assert got["blas"] and set(got["blas"]) == {1}
    if got["pinned"] is not None:  # Linux with glibc: the nanny started the worker pinned
        assert got["pinned"][1] == 65536
        # Bare, each solve faults in several plans' worth of pages (~4,000 faults); through the
        # engine, malloc recycles them (the heap still grows once here).
        assert bare["faults_per_solve"] >= PLAN_PAGES
        assert got["faults_per_solve"] <= 0.25 * bare["faults_per_solve"]
        assert bare["faults_per_allocation"] >= 0.9 * ARRAY_PAGES
        assert got["faults_per_allocation"] <= 0.05 * ARRAY_PAGES


def test_process_engine_workers_use_serial_kernels_and_one_blas_thread():
    engine = _engines.ProcessEngine(2)
    work, chunk = _mnist_work()
    got = [r for _, r in engine.run(_report_worker, work, [chunk[:2], chunk[2:]])]
    for g in got:
        assert g["converged"] == [1.0, 1.0]
        assert set(g["blas"]) <= {1}
