"""Engines that run many independent chunks of work: a thread pool, or Dask.

An engine runs ``task(data, chunk)`` for every chunk and yields
``(chunk_index, result)`` as each finishes (not in order). ``data`` is the
large read-only input shared by every task (the cost, the histograms): a
thread pool shares it by reference; Dask sends it to each worker once
(``scatter(..., broadcast=True)``). Engines know nothing about transport;
:mod:`snsot.batch` and :mod:`snsot.distances` build the tasks.

Dask is imported only when a Dask engine is made, so ``import snsot`` never
imports it.

Every engine runs its tasks with the BLAS library capped at one thread
(:func:`one_blas_thread`): each solve then keeps exactly one core busy. Left
alone, OpenBLAS wakes a worker thread for the plan's cost (one ``ddot`` over
the ``n m`` entries) and that thread then spins, waiting for more work, for
longer than the next solve takes: one "single-threaded" solve kept both
cores of a 2-core machine busy (CPU/wall 1.99), so a second solve running
beside it had no core of its own.

Every engine also lets glibc's ``malloc`` reuse freed memory
(:func:`reuse_freed_memory`) where the process was started with its
thresholds pinned low. Dask's nanny starts each worker with
``MALLOC_TRIM_THRESHOLD_=65536``, which also freezes glibc's mmap threshold
at 128 KiB: every array above that (a 784 x 784 plan is 4.9 MB) is then
mapped fresh and faulted in page by page, then unmapped when freed. A MNIST
solve took ~3,500 page faults instead of ~200 and 20-35% more CPU time
(``benchmarks/dask_malloc_check.py``), which made a Dask worker's solves
slower than the thread pool's (Dask 0.78 of threads on the whole 100-digit
matrix).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import threading
import time
from contextlib import contextmanager
from concurrent.futures import FIRST_COMPLETED, CancelledError, ProcessPoolExecutor, ThreadPoolExecutor, wait
from typing import Callable, Iterator, Sequence

__all__ = ["ThreadEngine", "ProcessEngine", "DaskEngine", "make_engine", "ENGINES", "default_workers",
           "one_blas_thread", "blas_threads", "reuse_freed_memory", "malloc_pinned"]

ENGINES = ("threads", "processes", "dask")

#: Seconds allowed to reach a Dask scheduler before giving up with a clear error.
CONNECT_TIMEOUT = 5.0


def default_workers() -> int:
    """Cores this process may use (``os.sched_getaffinity`` where available)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


# ---------------------------------------------------------------- one BLAS thread per solve

#: OpenBLAS builds name their thread controls with a prefix (``scipy_`` in the NumPy/SciPy
#: wheels) and a suffix (``64_`` for the 64-bit-integer build NumPy ships).
_OPENBLAS_NAMES = [f"{prefix}openblas_{{}}_num_threads{suffix}" for prefix in ("", "scipy_")
                   for suffix in ("", "64_")]


def _openblas_controls() -> list:
    """``(get, set)`` thread-count functions of every OpenBLAS loaded in this process.

    Found from ``/proc/self/maps`` (Linux); the libraries are only looked
    up (``RTLD_NOLOAD``), never loaded. Elsewhere, an empty list.
    """
    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split()[-1] for line in fh if "openblas" in line.rsplit("/", 1)[-1].lower()}
    except OSError:
        return []
    controls = []
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_LOCAL)
        except OSError:
            continue
        for name in _OPENBLAS_NAMES:
            if hasattr(lib, name.format("set")) and hasattr(lib, name.format("get")):
                get, set_ = getattr(lib, name.format("get")), getattr(lib, name.format("set"))
                get.restype, get.argtypes = ctypes.c_int, []
                set_.restype, set_.argtypes = None, [ctypes.c_int]
                controls.append((get, set_))
                break
    return controls


_found: tuple | None = None  # (pid, threadpoolctl controller or None, OpenBLAS controls)


def _blas_libraries():
    """The BLAS controls of this process, found once per process (a search takes milliseconds).

    NumPy's and SciPy's BLAS are loaded when snsot is imported, before the
    first search; a BLAS loaded later is not seen.
    """
    global _found
    if _found is None or _found[0] != os.getpid():
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _found = (os.getpid(), None, _openblas_controls())
        else:
            _found = (os.getpid(), ThreadpoolController(), [])
    return _found[1], _found[2]


class _BlasLimit:
    """Cap the BLAS libraries of this process at ``limit`` threads until :meth:`restore`.

    With threadpoolctl installed it does the work (OpenBLAS, MKL, BLIS, on
    every platform); without it OpenBLAS is capped directly (Linux), and
    other BLAS libraries are left as they are.
    """

    def __init__(self, limit: int):
        controller, controls = _blas_libraries()
        self._tpc = None if controller is None else controller.limit(limits=limit, user_api="blas")
        self._before = [(set_, get()) for get, set_ in controls]
        for set_, _ in self._before:
            set_(limit)

    def restore(self) -> None:
        if self._tpc is not None:
            self._tpc.restore_original_limits()
        for set_, before in self._before:
            set_(before)


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limit = None


@contextmanager
def one_blas_thread():
    """Run the body with BLAS (OpenBLAS, and MKL/BLIS through threadpoolctl) on one thread.

    BLAS thread counts are per process, not per thread: the cap is set when
    the first caller enters and lifted when the last one leaves, so nested
    and concurrent uses (several engines, threads of a Dask worker) are
    safe. Other code of this process that calls BLAS meanwhile also runs on
    one thread.
    """
    global _blas_users, _blas_limit
    with _blas_lock:
        if _blas_users == 0:
            _blas_limit = _BlasLimit(1)
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limit.restore()
                _blas_limit = None


def blas_threads() -> list[int]:
    """Thread counts of the OpenBLAS libraries loaded in this process (Linux; for tests and reports)."""
    return [get() for get, _ in _openblas_controls()]


# ---------------------------------------------------------------- malloc that reuses freed memory

# glibc mallopt parameters (malloc.h) and the values glibc itself moves its thresholds up to
# (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit; trim threshold twice the mmap threshold, as glibc sets it).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_GLIBC_DEFAULT_THRESHOLD = 128 * 1024
REUSE_MMAP_THRESHOLD = 32 * 1024 * 1024
REUSE_TRIM_THRESHOLD = 2 * REUSE_MMAP_THRESHOLD
#: Settings that switch off glibc's dynamic mmap threshold when given at process start.
_PINNING_VARIABLES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
_PINNING_TUNABLES = ("glibc.malloc.trim_threshold", "glibc.malloc.mmap_threshold", "glibc.malloc.top_pad",
                     "glibc.malloc.mmap_max")


def _initial_environment() -> dict:
    """The environment this process was started with (``/proc/self/environ``; Linux), else ``{}``.

    glibc reads its malloc settings there once, at start-up: later changes to
    ``os.environ`` (Dask's nanny writes ``MALLOC_TRIM_THRESHOLD_`` into its own
    process before starting workers) do not change this process's malloc.
    """
    try:
        with open("/proc/self/environ", "rb") as fh:
            raw = fh.read()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def _malloc_setting(env: dict, variable: str, tunable: str) -> int | None:
    """A malloc threshold given at start-up by ``variable`` or by ``GLIBC_TUNABLES`` (which wins), or None."""
    value = None
    if variable in env:
        value = env[variable]
    for item in env.get("GLIBC_TUNABLES", "").split(":"):
        name, _, v = item.partition("=")
        if name == tunable:
            value = v
    if value is None:
        return None
    try:
        return int(value, 0)
    except ValueError:
        return None


def malloc_pinned() -> tuple[int, int] | None:
    """glibc's ``(mmap, trim)`` thresholds if this process started with them fixed, else None.

    None also where malloc is not glibc's (macOS, Windows, musl): nothing to
    change there. Fixed means any of ``MALLOC_TRIM_THRESHOLD_``,
    ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TOP_PAD_``, ``MALLOC_MMAP_MAX_`` (or
    their ``GLIBC_TUNABLES``) was set when the process started: glibc then
    keeps its mmap threshold where it started (128 KiB unless given) instead
    of raising it to the size of the blocks the program frees.
    """
    if _libc() is None:
        return None
    env = _initial_environment()
    tunables = env.get("GLIBC_TUNABLES", "")
    if not any(v in env for v in _PINNING_VARIABLES) and not any(t in tunables for t in _PINNING_TUNABLES):
        return None
    mmap = _malloc_setting(env, "MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold")
    trim = _malloc_setting(env, "MALLOC_TRIM_THRESHOLD_", "glibc.malloc.trim_threshold")
    return (_GLIBC_DEFAULT_THRESHOLD if mmap is None else mmap,
            _GLIBC_DEFAULT_THRESHOLD if trim is None else trim)


_libc_found: list = []


def _libc():
    """glibc's ``mallopt`` and ``malloc_trim`` as ctypes functions, or None when malloc is not glibc's."""
    if not _libc_found:
        found = None
        try:
            libc = ctypes.CDLL(None)
            if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim"):
                libc.mallopt.restype, libc.mallopt.argtypes = ctypes.c_int, [ctypes.c_int, ctypes.c_int]
                libc.malloc_trim.restype, libc.malloc_trim.argtypes = ctypes.c_int, [ctypes.c_size_t]
                found = libc
        except (OSError, AttributeError):  # no C library to look into (Windows)
            pass
        _libc_found.append(found)
    return _libc_found[0]


_malloc_lock = threading.Lock()
_malloc_users = 0
_malloc_restore = None  # (mmap, trim) thresholds to put back, or None when nothing was changed


@contextmanager
def reuse_freed_memory():
    """Run the body with glibc's malloc keeping freed blocks of up to 32 MiB for reuse.

    Only where this process started with malloc's thresholds fixed
    (:func:`malloc_pinned`; every Dask worker started by a nanny): the mmap
    and trim thresholds are raised to 32 and 64 MiB, the values glibc
    itself moves to when left alone, so a solve's large temporaries are
    recycled instead of mapped and faulted in anew each time. On the last
    exit the start-up thresholds are put back and free memory is returned
    to the system (``malloc_trim``). Elsewhere it does nothing.
    Reference-counted like :func:`one_blas_thread`.
    """
    global _malloc_users, _malloc_restore
    with _malloc_lock:
        if _malloc_users == 0:
            pinned = malloc_pinned()
            if pinned is not None:
                libc = _libc()
                libc.mallopt(_M_MMAP_THRESHOLD, REUSE_MMAP_THRESHOLD)
                libc.mallopt(_M_TRIM_THRESHOLD, REUSE_TRIM_THRESHOLD)
                _malloc_restore = pinned
        _malloc_users += 1
    try:
        yield
    finally:
        with _malloc_lock:
            _malloc_users -= 1
            if _malloc_users == 0 and _malloc_restore is not None:
                libc = _libc()
                libc.mallopt(_M_MMAP_THRESHOLD, _malloc_restore[0])
                libc.mallopt(_M_TRIM_THRESHOLD, _malloc_restore[1])
                libc.malloc_trim(0)
                _malloc_restore = None


_held_for_life = []


def _hold_for_process_life() -> None:
    """Enter :func:`reuse_freed_memory` once in this process and never leave (worker processes).

    A Dask worker runs our chunks one after another: putting the thresholds
    back after each chunk would unmap the temporaries and fault them in again
    at the next chunk's first solve.
    """
    if not _held_for_life or _held_for_life[0][0] != os.getpid():
        ctx = reuse_freed_memory()
        ctx.__enter__()
        _held_for_life[:] = [(os.getpid(), ctx)]


def _in_dask_worker(task, data, chunk):
    """``task(data, chunk)`` under :func:`one_blas_thread`, with malloc reusing memory (the form sent to Dask)."""
    _hold_for_process_life()
    with one_blas_thread():
        return task(data, chunk)


def _check_jobs(n_jobs) -> int:
    if n_jobs is None:
        return default_workers()
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
        try:
            import numpy as np

            if isinstance(n_jobs, np.integer) and n_jobs >= 1:
                return int(n_jobs)
        except ImportError:  # pragma: no cover
            pass
        raise ValueError(f"n_jobs: must be a positive integer or None; got {n_jobs!r}")
    return n_jobs


class ThreadEngine:
    """A pool of ``n_jobs`` threads (default: one per core) in this process.

    Each task solves its problems on one thread; once the numba kernels
    release the GIL the threads run truly in parallel, and until then they
    still give correct results (only slower). The pool is opened per
    :meth:`run` and shut down when the run ends or is interrupted: queued
    chunks are cancelled, chunks already running finish their current
    problems and their results are dropped.
    """

    name = "threads"

    def __init__(self, n_jobs: int | None = None):
        self.n_jobs = _check_jobs(n_jobs)

    @property
    def n_workers(self) -> int:
        return self.n_jobs

    def run(self, task: Callable, data, chunks: Sequence) -> Iterator[tuple[int, object]]:
        with one_blas_thread(), reuse_freed_memory():
            yield from self._run(task, data, chunks)

    def _run(self, task, data, chunks):
        if self.n_jobs == 1:  # no pool: the same results, in order, in this thread
            for k, chunk in enumerate(chunks):
                yield k, task(data, chunk)
            return
        pool, submit = self._pool(task, data)
        try:
            # Keep at most 2 chunks per thread queued, so an interrupt has little to cancel
            # and memory for pending work stays bounded.
            pending = {}
            it = iter(enumerate(chunks))
            for k, chunk in it:
                pending[submit(pool, chunk)] = k
                if len(pending) >= 2 * self.n_jobs:
                    break
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    k = pending.pop(fut)
                    yield k, fut.result()
                    nxt = next(it, None)
                    if nxt is not None:
                        pending[submit(pool, nxt[1])] = nxt[0]
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _pool(self, task, data):
        pool = ThreadPoolExecutor(max_workers=self.n_jobs, thread_name_prefix="snsot")
        return pool, lambda pool, chunk: pool.submit(task, data, chunk)

    def close(self) -> None:
        pass


_worker_data = None
_worker_blas = None


def _set_worker_data(data) -> None:
    global _worker_data, _worker_blas
    _worker_data = data
    # The worker process is ours alone: cap BLAS and let malloc reuse memory for its whole life.
    _worker_blas = _BlasLimit(1)
    _hold_for_process_life()


def _run_in_worker(task, chunk):
    return task(_worker_data, chunk)


class ProcessEngine(ThreadEngine):
    """A pool of ``n_jobs`` worker processes (default: one per core) on this machine.

    Each solve runs single-threaded in a worker, so the parts of a solve that
    hold the GIL (the Python and small-NumPy work between kernels) run in
    parallel too, which threads cannot do. The shared data reaches each
    worker once (inherited by ``fork`` where the platform has it, otherwise
    pickled once per worker); chunks and results are pickled. Forked workers
    run the kernels' serial builds (see :func:`snsot._kernels.runs_serial`),
    so a fork after a solve is safe.
    """

    name = "processes"

    def _pool(self, task, data):
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        pool = ProcessPoolExecutor(max_workers=self.n_jobs, mp_context=context,
                                   initializer=_set_worker_data, initargs=(data,))
        return pool, lambda pool, chunk: pool.submit(_run_in_worker, task, chunk)


class DaskEngine:
    """Run chunks on a Dask distributed cluster.

    Parameters
    ----------
    client : dask.distributed.Client, str or None
        A connected client; or a scheduler address such as
        ``"tcp://host:8786"`` (connected within :data:`CONNECT_TIMEOUT`
        seconds, else ``ConnectionError`` naming the address); or ``None`` to
        start a ``LocalCluster`` of ``n_jobs`` single-threaded worker
        processes (default: one per core), closed again by :meth:`close`.
    n_jobs : int, optional
        Workers of the local cluster (only with ``client=None``).
    retries : int
        Times a failing task is resubmitted (``Client.submit(retries=)``);
        tasks on a worker that dies are rescheduled by the scheduler itself.
    """

    name = "dask"
    #: Reruns of a chunk whose shared data was lost with the workers holding it.
    LOST_DATA_RETRIES = 3
    #: What a worker runs: ``_wrap(task, data, chunk)`` (the benchmark swaps it to measure the unwrapped worker).
    _wrap = staticmethod(_in_dask_worker)

    def __init__(self, client=None, n_jobs: int | None = None, retries: int = 2):
        try:
            import distributed
        except ImportError:
            raise ImportError("engine='dask' needs dask.distributed: pip install 'snsot[dask]'") from None
        self._own = None
        if client is None:
            n = _check_jobs(n_jobs)
            # One single-threaded process per core: each problem runs on one core, and
            # processes sidestep the GIL whatever the kernels do.
            cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                               dashboard_address=None, silence_logs=40)
            client = distributed.Client(cluster)
            self._own = (client, cluster)
        elif isinstance(client, str):
            address = client
            try:
                client = distributed.Client(address, timeout=f"{CONNECT_TIMEOUT}s")
            except (OSError, TimeoutError) as exc:
                raise ConnectionError(
                    f"client: cannot reach the Dask scheduler at {address!r} within {CONNECT_TIMEOUT:g} s "
                    f"({type(exc).__name__}: {exc}); is 'dask scheduler' running there?"
                ) from None
            self._own = (client, None)
        elif not isinstance(client, distributed.Client):
            raise TypeError(f"client: expected a dask.distributed.Client, an address or None; got {type(client).__name__}")
        self.client = client
        self.retries = int(retries)

    @property
    def n_workers(self) -> int:
        info = self.client.scheduler_info()
        return max(1, sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()))

    def run(self, task: Callable, data, chunks: Sequence) -> Iterator[tuple[int, object]]:
        from distributed import as_completed

        # One copy of the shared data per worker, sent once; tasks receive it by reference.
        scattered = [self._scatter(data)]
        run_id = time.monotonic_ns()
        futures, chunk_of, attempts = {}, {}, {}

        def submit(k, chunk):
            attempts[k] = attempts.get(k, 0) + 1
            fut = self.client.submit(self._wrap, task, scattered[-1], chunk, retries=self.retries,
                                     pure=False,
                                     key=f"snsot-chunk-{run_id}-{k}-{attempts[k]}")
            futures[fut], chunk_of[k] = k, chunk
            return fut

        # A bounded number of tasks in flight (4 per worker thread): the scheduler stays
        # small on long runs, and an interrupt has little to cancel.
        it = iter(enumerate(chunks))
        limit = 4 * self.n_workers
        first = []
        for k, chunk in it:
            first.append(submit(k, chunk))
            if len(first) >= limit:
                break
        queue = as_completed(first)
        try:
            for fut in queue:
                k = futures.pop(fut)
                try:
                    result = fut.result()
                except CancelledError:
                    # Scattered data has no recipe: if every worker holding it died (Dask's memory
                    # manager may keep a single replica of a broadcast), tasks needing it are
                    # cancelled. Send the data again and rerun the chunk.
                    if attempts[k] > self.LOST_DATA_RETRIES:
                        raise
                    if scattered[-1].status != "finished":
                        scattered.append(self._scatter(data))
                    queue.add(submit(k, chunk_of[k]))
                    continue
                del chunk_of[k]
                nxt = next(it, None)
                if nxt is not None:
                    queue.add(submit(*nxt))
                yield k, result
        finally:
            self.client.cancel(list(futures))
            self.client.cancel(scattered)

    def _scatter(self, data):
        # A worker that just died may still be listed by the scheduler: the broadcast then
        # fails on its closed connection. Try again shortly, and in the end send to one worker
        # (others fetch the data from it when their first task needs it).
        for attempt in range(10):
            try:
                [future] = self.client.scatter([data], broadcast=attempt < 9, hash=False)
                return future
            except OSError:  # distributed's CommClosedError is one
                if attempt == 9:
                    raise
                time.sleep(0.5)

    def close(self) -> None:
        if self._own is not None:
            client, cluster = self._own
            client.close()
            if cluster is not None:
                cluster.close()
            self._own = None


def make_engine(engine, n_jobs=None, client=None):
    """``ThreadEngine`` or ``DaskEngine`` from the user's ``engine`` and ``client`` arguments.

    Returns ``(engine, owned)``; ``owned`` engines are closed by the caller.
    """
    if isinstance(engine, (ThreadEngine, DaskEngine)):  # ProcessEngine is a ThreadEngine
        return engine, False
    if engine not in ENGINES:
        raise ValueError(f"engine: expected one of {', '.join(map(repr, ENGINES))}; got {engine!r}")
    if engine == "threads":
        if client is not None:
            raise ValueError("client: only used with engine='dask'")
        return ThreadEngine(n_jobs), True
    if engine == "processes":
        if client is not None:
            raise ValueError("client: only used with engine='dask'")
        return ProcessEngine(n_jobs), True
    return DaskEngine(client, n_jobs), True
