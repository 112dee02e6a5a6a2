"""Numba kernels: the only loops over the n x m cost matrix.

Every kernel makes one fused pass (or two cheap ones) over ``C`` and computes
in float64 whatever the dtype of ``C`` (float32 costs are read, never copied).
``tests/test_kernels.py`` compares each kernel that carries maths with a
readable numpy reference: the twins in :mod:`snsot._reference` (and the
``*_reference`` functions below), or a one-line numpy/scipy formula
(``np.exp``, ``scipy.sparse`` products, a dense solve). The selection
helpers (``_cap_cut``, ``_block_max``, ``_scan``, ``_select_row``) and
``_chunk_sum`` are tested through the kernels that call them.

Conventions: ``P_ij = exp((f_i + g_j - C_ij) / reg)``; ``inv_reg = 1 / reg``.
Rows are processed in ``n_chunks`` contiguous blocks run in parallel; column
reductions are accumulated per block and summed afterwards, which keeps the
result independent of the thread schedule (deterministic for a given
``n_chunks``).
"""

from __future__ import annotations

import functools
import math
import os
import stat
import tempfile
import threading
import types as pytypes
from contextlib import contextmanager

import numba
import numpy as np
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic

# ---------------------------------------------------------------------------
# Builds: a serial one that releases the GIL, and a parallel one
# ---------------------------------------------------------------------------
#
# Every kernel with a ``prange`` loop is compiled twice (lazily, on first use
# of each): a parallel build, and a serial build (``prange`` runs as ``range``)
# on numba's thread pool never touched. Both release the GIL (``nogil``), so
# Python threads solving independent problems run at once. The serial build
# is picked (:func:`runs_serial`) where the parallel one would be slower or
# unsafe:
#
# - the solve asked for one thread (the default below PARALLEL_MIN_SIZE), so
#   no thread hand-off is paid;
# - in a process forked from the one that imported us: GNU OpenMP (numba's
#   "omp" layer) kills a forked child that enters a parallel region once the
#   parent has, and the "workqueue" layer's threads do not exist in the
#   child, so a ``multiprocessing`` fork pool would hang;
# - in a Python thread other than the main one under the "workqueue" layer,
#   which aborts the process when two threads launch parallel work at once.


def _probe():  # a function of this file for the cache locator probe below
    return None


def _choose_cache() -> tuple[bool, str | None]:
    """Whether the kernels can be cached on disk, and in which directory.

    numba raises at *decoration* time (so: ``import snsot``) when no cache
    locator is usable: a read-only install, ``HOME`` not writable, a
    container under an arbitrary UID. Then fall back to a private per-user
    directory under the temporary directory (kept across processes), and if
    that is not safely ours either, to no disk cache (kernels compile on
    first use in each process).
    """
    from numba.core.caching import FunctionCache

    try:
        FunctionCache(_probe)
        return True, None
    except Exception:  # RuntimeError "no locator available", or an OSError
        pass
    getuid = getattr(os, "getuid", None)
    if getuid is None:
        return False, None
    path = os.path.join(tempfile.gettempdir(), f"snsot-numba-cache-{getuid()}")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
        # numba unpickles what it finds there: use the directory only if no one
        # else could have written to it.
        if stat.S_ISDIR(st.st_mode) and st.st_uid == getuid() and not st.st_mode & 0o022:
            tempfile.TemporaryFile(dir=path).close()
            return True, path
    except OSError:
        pass
    return False, None


#: Whether compiled kernels are cached on disk; :data:`CACHE_DIR` is the private
#: fallback directory in use, or None when numba's own locations work.
CACHE, CACHE_DIR = _choose_cache()


@contextmanager
def _cache_dir():
    """numba reads ``config.CACHE_DIR`` when a cached kernel is declared: point it at our fallback only then."""
    if CACHE_DIR is None:
        yield
        return
    before = numba.config.CACHE_DIR
    numba.config.CACHE_DIR = CACHE_DIR
    try:
        yield
    finally:
        numba.config.CACHE_DIR = before


def kernel(fastmath=False):
    """``njit`` for a serial kernel: cached (where possible) and releasing the GIL.

    ``error_model="numpy"``, as in :func:`parallel_kernel`: a division by zero
    (a row sum that underflowed to 0, say) gives inf/NaN, which the callers
    check for and turn into a fallback, instead of a ``ZeroDivisionError``
    escaping from :func:`snsot.solve`.
    """

    def decorate(func):
        with _cache_dir():
            return njit(nogil=True, fastmath=fastmath, cache=CACHE, error_model="numpy")(func)

    return decorate


def _renamed(func, suffix: str):
    """A copy of ``func`` under another qualified name.

    numba's cache keys a function by its name and signature, not by its
    compile flags: the serial and parallel builds need distinct names, or
    one would load the other's machine code from the cache.
    """
    copy = pytypes.FunctionType(func.__code__, func.__globals__, func.__name__ + suffix,
                                func.__defaults__, func.__closure__)
    copy.__qualname__ = func.__qualname__ + suffix
    copy.__doc__ = func.__doc__
    return copy


def parallel_kernel(fastmath=False):
    """Compile a kernel with ``prange`` loops twice; calls go to the build :func:`runs_serial` picks.

    The returned function has the kernel's name, signature and docstring,
    and the two builds as its ``serial`` and ``parallel`` attributes.
    """

    def decorate(func):
        with _cache_dir():
            # error_model="numpy": a division by zero gives inf/NaN (which callers
            # check for) in both builds, as parallel loops always do, instead
            # of raising ZeroDivisionError in the serial build only.
            options = dict(nogil=True, fastmath=fastmath, cache=CACHE, error_model="numpy")
            parallel = njit(parallel=True, **options)(func)
            serial = njit(**options)(_renamed(func, "__serial"))

        @functools.wraps(func)
        def run(*args):
            return (serial if runs_serial() else parallel)(*args)

        run.serial, run.parallel = serial, parallel
        return run

    return decorate


_thread_state = threading.local()
_forked = False


def _mark_forked() -> None:
    global _forked
    _forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_mark_forked)

_layer_is_workqueue: bool | None = None


def _workqueue_layer() -> bool:
    """Whether numba's parallel kernels run on its "workqueue" layer (not safe for concurrent launches)."""
    global _layer_is_workqueue
    if _layer_is_workqueue is None:
        numba.get_num_threads()  # starts the threading layer if nothing has yet
        _layer_is_workqueue = numba.threading_layer() == "workqueue"
    return _layer_is_workqueue


def must_run_serial() -> bool:
    """True where the parallel builds are unsafe: in a forked child, or off the main thread under "workqueue"."""
    if _forked:
        return True
    return threading.current_thread() is not threading.main_thread() and _workqueue_layer()


def runs_serial() -> bool:
    """Whether kernels called now run their serial build.

    Inside :func:`thread_limit`: when it settled on one thread, or
    :func:`must_run_serial`. Outside it: :func:`must_run_serial`.
    """
    serial = getattr(_thread_state, "serial", None)
    return must_run_serial() if serial is None else serial


# Instruction-level fast-math flags. 'reassoc' is left out of the exp so the
# Cody-Waite range reduction is not re-associated away; loops that reduce use
# it so that LLVM can vectorise their sums.
_EXP_FLAGS = {"nnan", "ninf", "nsz", "contract", "arcp"}
_LOOP_FLAGS = {"nsz", "contract", "arcp", "reassoc"}

_LOG2E = 1.4426950408889634
_LN2_HI = 0.693147180369123816490  # high part of ln 2, exactly representable with trailing zeros
_LN2_LO = 1.90821492927058770002e-10
# exp(x) underflows below the smallest normal double for x < -708.39; we return
# exactly 0 there (the mass lost is < 1e-307 per entry) and never build denormals,
# whose arithmetic is slow on x86.
_EXP_MIN = -708.0
_EXP_MAX = 709.0


@intrinsic
def _int64_bits_as_float64(typingctx, x):
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))

    return sig, codegen


@intrinsic
def _float64_bits_as_int64(typingctx, x):
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int64))

    return sig, codegen


# Adding 1.5 * 2**52 rounds a double of magnitude < 2**51 to an integer held in
# the low mantissa bits: bits(x + SHIFTER) = bits(SHIFTER) + round(x). This
# replaces a float -> int64 conversion, which AVX2 cannot do on vectors.
_SHIFTER = 6755399441055744.0


@kernel(fastmath=_EXP_FLAGS)
def fast_exp(x):
    """exp(x) to about 1 ulp, branch-free so that loops calling it vectorise.

    Range reduction ``x = k ln2 + r`` with ``|r| <= ln2 / 2``, a degree-13
    Taylor polynomial (Horner; Estrin's lower-latency form measured no faster) for ``exp(r)`` (truncation error < 5e-18 relative) and
    ``2**k`` built from its IEEE bits. Returns 0 for ``x < -708`` and ``inf``
    for ``x > 709``.
    """
    xc = min(max(x, _EXP_MIN), _EXP_MAX)
    kd = xc * _LOG2E + _SHIFTER
    k = kd - _SHIFTER
    r = (xc - k * _LN2_HI) - k * _LN2_LO
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    # (bits(kd) + 1023) << 52 == (k + 1023) << 52 modulo 2**64, since the
    # shifter's own bits vanish under the shift: the IEEE bits of 2**k.
    scale = _int64_bits_as_float64((_float64_bits_as_int64(kd) + 1023) << 52)
    y = p * scale
    y = 0.0 if x < _EXP_MIN else y
    y = np.inf if x > _EXP_MAX else y
    return y


@kernel()
def _exp_array(x):
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = fast_exp(x[i])
    return out


def fast_exp_array(x) -> np.ndarray:
    """Apply :func:`fast_exp` elementwise to a float64 array (for tests)."""
    return _exp_array(np.ascontiguousarray(x, dtype=np.float64).ravel()).reshape(np.shape(x))


#: Cost matrices with fewer entries run the kernels on one thread: a pass over
#: them takes about a millisecond, less than one scheduler time slice, so on a
#: busy machine waiting for a descheduled worker costs far more than the
#: parallel pass saves (measured: 16.8 s on 2 threads vs 0.12 s on 1 for an
#: 80 x 60 problem under load; on an idle machine threads gain < 2x here).
PARALLEL_MIN_SIZE = 1 << 20


@contextmanager
def thread_limit(size: int, n_threads: int | None = None):
    """Run the kernels inside on ``n_threads`` (default: by problem ``size``), then restore.

    One thread selects the kernels' serial builds (see :func:`runs_serial`);
    so does a forked child or a non-main thread under the "workqueue" layer,
    whatever ``n_threads`` says. The setting is per Python thread.
    """
    previous = getattr(_thread_state, "serial", None)
    if must_run_serial():
        # numba's thread pool is not touched at all here (not even its count)
        _thread_state.serial = True
        try:
            yield
        finally:
            _thread_state.serial = previous
        return
    before = numba.get_num_threads()
    if n_threads is None:
        n_threads = before if size >= PARALLEL_MIN_SIZE else 1
    n_threads = max(1, min(int(n_threads), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n_threads)
    _thread_state.serial = n_threads == 1
    try:
        yield
    finally:
        numba.set_num_threads(before)
        _thread_state.serial = previous


def default_chunks(n_rows: int) -> int:
    """Number of row blocks: one per thread, none smaller than 16 rows (one block for the serial builds)."""
    if runs_serial():
        return 1
    return max(1, min(numba.get_num_threads(), n_rows // 16))


# ---------------------------------------------------------------------------
# Log-domain Sinkhorn half-steps
# ---------------------------------------------------------------------------


@kernel()
def _chunk_sum(part):
    """Column sums of the per-block partial sums ``part[k, :]``, added in block order (deterministic)."""
    n_chunks, m = part.shape
    col = np.zeros(m)
    for k in range(n_chunks):
        for j in range(m):
            col[j] += part[k, j]
    return col


@parallel_kernel(fastmath=_LOOP_FLAGS)
def row_update(C, g, log_a, reg, f_out):
    """f_i = reg log a_i - softmin_reg over j of (C_ij - g_j).

    ``f_i = reg log a_i - [M_i + reg log sum_j exp((g_j - C_ij - M_i)/reg)]``
    with ``M_i = max_j (g_j - C_ij)``: every exponent is <= 0 and one is 0, so
    the sum is in [1, m] and nothing overflows or underflows to zero.
    """
    n, m = C.shape
    inv_reg = 1.0 / reg
    for i in prange(n):
        mx = -np.inf
        for j in range(m):
            mx = max(mx, g[j] - C[i, j])
        s = 0.0
        for j in range(m):
            s += fast_exp((g[j] - C[i, j] - mx) * inv_reg)
        f_out[i] = reg * log_a[i] - (mx + reg * math.log(s))


@parallel_kernel(fastmath=_LOOP_FLAGS)
def col_update(C, f, log_b, reg, g_out, n_chunks):
    """g_j = reg log b_j - softmin_reg over i of (C_ij - f_i), stabilised like :func:`row_update`.

    Two row-major passes (column maxima, then shifted sums), each reduced per
    block of rows, so ``C`` is never read column-wise.
    """
    n, m = C.shape
    inv_reg = 1.0 / reg
    part_max = np.full((n_chunks, m), -np.inf)
    for k in prange(n_chunks):
        pm = part_max[k]
        for i in range(k * n // n_chunks, (k + 1) * n // n_chunks):
            fi = f[i]
            for j in range(m):
                pm[j] = max(pm[j], fi - C[i, j])
    mx = part_max[0].copy()
    for k in range(1, n_chunks):
        for j in range(m):
            mx[j] = max(mx[j], part_max[k, j])
    part_sum = np.zeros((n_chunks, m))
    for k in prange(n_chunks):
        ps = part_sum[k]
        for i in range(k * n // n_chunks, (k + 1) * n // n_chunks):
            fi = f[i]
            for j in range(m):
                ps[j] += fast_exp((fi - C[i, j] - mx[j]) * inv_reg)
    s = _chunk_sum(part_sum)
    for j in range(m):
        g_out[j] = reg * log_b[j] - (mx[j] + reg * math.log(s[j]))


def row_update_reference(C, g, log_a, reg):
    """Numpy twin of :func:`row_update`."""
    from scipy.special import logsumexp

    return reg * log_a - reg * logsumexp((g[None, :] - np.asarray(C, np.float64)) / reg, axis=1)


def col_update_reference(C, f, log_b, reg):
    """Numpy twin of :func:`col_update`."""
    from scipy.special import logsumexp

    return reg * log_b - reg * logsumexp((f[:, None] - np.asarray(C, np.float64)) / reg, axis=0)


# ---------------------------------------------------------------------------
# The Newton pass: plan sums and sparse Hessian candidates in one sweep
# ---------------------------------------------------------------------------


@kernel()
def _cap_cut(buf, cap, hist):
    """Smallest power of two ``2**e`` with at most ``cap`` entries of ``buf`` >= it.

    A histogram of the entries' IEEE exponents replaces a partial sort:
    integer work on a row already in cache, instead of a selection
    (``np.partition`` here cost ~25x the exp pass itself).
    """
    hist[:] = 0
    for j in range(buf.shape[0]):
        hist[_float64_bits_as_int64(buf[j]) >> 52] += 1  # entries are >= 0: no sign bit
    total = 0
    e = 2047
    while e > 0:
        if total + hist[e - 1] > cap:
            break
        total += hist[e - 1]
        e -= 1
    # all entries with biased exponent >= e are kept; 2**(e - 1023) is the cut
    return _int64_bits_as_float64(np.int64(e) << 52)


#: Rows are processed in blocks of this many entries; the block maxima let the
#: candidate selection skip the (typically almost all) blocks with no entry
#: above the cut, instead of a branchy scan of the whole row.
_BLOCK = 16


@kernel(fastmath=_LOOP_FLAGS)
def _block_max(buf, blockmax):
    # fixed-length inner loops, which LLVM unrolls into a few vector max instructions
    m = buf.shape[0]
    nfull = m // _BLOCK
    for jb in range(nfull):
        bm = buf[jb * _BLOCK]
        for t in range(1, _BLOCK):
            bm = max(bm, buf[jb * _BLOCK + t])
        blockmax[jb] = bm
    if nfull < blockmax.shape[0]:
        bm = buf[nfull * _BLOCK]
        for j in range(nfull * _BLOCK + 1, m):
            bm = max(bm, buf[j])
        blockmax[nfull] = bm


@kernel(fastmath=_LOOP_FLAGS)
def _scan(buf, blockmax, cut, ibuf, vbuf):
    """Entries of ``buf`` >= ``cut`` into ``ibuf``/``vbuf`` (branch-free within a block); returns their number."""
    m = buf.shape[0]
    c = 0
    for jb in range(blockmax.shape[0]):
        if blockmax[jb] >= cut:
            for j in range(jb * _BLOCK, min(jb * _BLOCK + _BLOCK, m)):
                x = buf[j]
                ibuf[c] = j
                vbuf[c] = x
                c += x >= cut
    return c


@kernel()
def _select_row(buf, blockmax, tau, cap, hist, ibuf, vbuf, idx_row, val_row):
    """Store up to ``cap`` entries of ``buf`` that are >= ``tau``; return how many.

    Only blocks whose maximum reaches the cut are scanned. When more than
    ``cap`` entries qualify, the cut rises (:func:`_cap_cut`) and the scan is
    redone. ``ibuf``/``vbuf`` are scratch of length ``m + 1``.
    """
    c = _scan(buf, blockmax, tau, ibuf, vbuf)
    if c > cap:
        c = min(cap, _scan(buf, blockmax, _cap_cut(buf, cap, hist), ibuf, vbuf))
    for t in range(c):
        idx_row[t] = ibuf[t]
        val_row[t] = vbuf[t]
    return c


#: Entries of a stored base plan below this are stored as exactly 0. With the
#: base used only within :data:`BASE_DRIFT` (``u_i v_j <= e**100``) such an entry
#: stands for less than 3e-207 of mass, and products of stored entries with
#: the scalings stay normal numbers (>= 1e-250 e**-100 ~ 4e-294): no denormals.
P_FLOOR = 1e-250
#: A stored base plan ``B = P(f0, g0)`` represents ``P(f, g) = diag(u) B diag(v)``,
#: ``u = exp((f - f0)/reg)``, ``v = exp((g - g0)/reg)``, while
#: ``(max|f - f0| + max|g - g0|) / reg <= BASE_DRIFT``.
BASE_DRIFT = 100.0


@parallel_kernel(fastmath=_LOOP_FLAGS)
def plan_pass(C, f, g, reg, tau, cap, n_chunks, row_sum, counts, idx, val, P):
    """Row sums, column sums and the large entries of the plan, in one pass over ``C``.

    Writes ``row_sum[i] = sum_j P_ij`` and, for each row, up to ``cap`` entries
    with ``P_ij >= tau`` into ``idx[i, :counts[i]]`` / ``val[i, :counts[i]]``
    (when more than ``cap`` qualify, the cut rises to the power of two that
    keeps the most entries without exceeding ``cap``; see :func:`_cap_cut`).
    Stores the plan itself in ``P`` (entries below :data:`P_FLOOR` as 0) as
    the base for :func:`scaled_pass` and :func:`base_sinkhorn_step`. Returns the
    column sums.

    Exponents above 709 give ``inf`` sums: the caller treats such a point as
    having dual value ``-inf`` (it is a rejected line-search trial).
    """
    n, m = C.shape
    inv_reg = 1.0 / reg
    part_col = np.zeros((n_chunks, m))
    for k in prange(n_chunks):
        pc = part_col[k]
        hist = np.empty(2048, dtype=np.int64)
        blockmax = np.empty((m + _BLOCK - 1) // _BLOCK)
        ibuf = np.empty(m + 1, dtype=np.int32)
        vbuf = np.empty(m + 1)
        for i in range(k * n // n_chunks, (k + 1) * n // n_chunks):
            fi = f[i]
            buf = P[i]
            s = 0.0
            for j in range(m):
                p = fast_exp((fi + g[j] - C[i, j]) * inv_reg)
                pc[j] += p
                s += p
                buf[j] = p
            row_sum[i] = s
            _block_max(buf, blockmax)
            counts[i] = _select_row(buf, blockmax, tau, cap, hist, ibuf, vbuf, idx[i], val[i])
            for j in range(m):  # the row is still in cache
                buf[j] = buf[j] if buf[j] >= P_FLOOR else 0.0
    col = _chunk_sum(part_col)
    return col


@parallel_kernel(fastmath=_LOOP_FLAGS)
def scaled_pass(B, u, v, tau, cap, n_chunks, row_sum, counts, idx, val):
    """What :func:`plan_pass` computes, for the plan ``diag(u) B diag(v)`` of a stored base ``B``.

    No exponentials: a Newton trial point near the base costs one read of ``B``.
    """
    n, m = B.shape
    part_col = np.zeros((n_chunks, m))
    for k in prange(n_chunks):
        pc = part_col[k]
        buf = np.empty(m)
        hist = np.empty(2048, dtype=np.int64)
        blockmax = np.empty((m + _BLOCK - 1) // _BLOCK)
        ibuf = np.empty(m + 1, dtype=np.int32)
        vbuf = np.empty(m + 1)
        for i in range(k * n // n_chunks, (k + 1) * n // n_chunks):
            ui = u[i]
            s = 0.0
            for j in range(m):
                p = B[i, j] * ui * v[j]
                buf[j] = p
                pc[j] += p
                s += p
            row_sum[i] = s
            _block_max(buf, blockmax)
            counts[i] = _select_row(buf, blockmax, tau, cap, hist, ibuf, vbuf, idx[i], val[i])
    col = _chunk_sum(part_col)
    return col


@parallel_kernel(fastmath=_LOOP_FLAGS)
def scaled_sums(B, u, v, tau, n_chunks, row_sum):
    """Row and column sums of ``diag(u) B diag(v)``, and how many of its entries are >= ``tau``.

    Writes the row sums into ``row_sum``; returns ``(col_sum, count)``. The
    line-search pass of the dense Newton variant: one read of ``B``, no
    candidates kept.
    """
    n, m = B.shape
    part_col = np.zeros((n_chunks, m))
    part_count = np.zeros(n_chunks, dtype=np.int64)
    for k in prange(n_chunks):
        pc = part_col[k]
        c = 0
        for i in range(k * n // n_chunks, (k + 1) * n // n_chunks):
            ui = u[i]
            s = 0.0
            for j in range(m):
                p = B[i, j] * ui * v[j]
                pc[j] += p
                s += p
                c += p >= tau
            row_sum[i] = s
        part_count[k] = c
    col = _chunk_sum(part_col)
    return col, part_count.sum()


#: In the dense Newton kernels, plan entries below this count as 0 where they
#: are squared (so that no square is a denormal, whose arithmetic is slow).
_SQUARE_FLOOR = 1e-150


@parallel_kernel(fastmath=_LOOP_FLAGS)
def dense_schur_setup(B, u, v, d_row, w, n_chunks):
    """Column passes of the dense Schur complement: ``(P^T w, sum_i P_ij**2 / d_row_i)``.

    ``P = diag(u) B diag(v)``. The first is the right-hand side's
    elimination term, the second the off-diagonal part of the Jacobi
    preconditioner's diagonal; both come from one read of ``B``.
    """
    n, m = B.shape
    part = np.zeros((2, n_chunks, m))
    for k in prange(n_chunks):
        pw = part[0, k]
        pq = part[1, k]
        for i in range(k * n // n_chunks, (k + 1) * n // n_chunks):
            ui = u[i]
            wi = w[i]
            inv_d = 1.0 / d_row[i]
            for j in range(m):
                p = B[i, j] * ui * v[j]
                pw[j] += p * wi
                q = p if p >= _SQUARE_FLOOR else 0.0
                pq[j] += q * q * inv_d
    return _chunk_sum(part[0]), _chunk_sum(part[1])


@parallel_kernel(fastmath=_LOOP_FLAGS)
def dense_schur_matvec(B, u, v, d_row, d_col, y, n_chunks):
    """``diag(d_col) y - P^T diag(1/d_row) P y`` for ``P = diag(u) B diag(v)``, in one read of ``B``.

    Each row's gather ``(P y)_i`` is followed at once by its scatter into
    the column accumulator while the row is in cache (the dense twin of
    :func:`_schur_matvec`).
    """
    n, m = B.shape
    vy = v * y
    part_col = np.zeros((n_chunks, m))
    for k in prange(n_chunks):
        pc = part_col[k]
        for i in range(k * n // n_chunks, (k + 1) * n // n_chunks):
            s = 0.0
            for j in range(m):
                s += B[i, j] * vy[j]
            t = u[i] * u[i] * s / d_row[i]
            for j in range(m):
                pc[j] += B[i, j] * t
    return d_col * y - v * _chunk_sum(part_col)


@parallel_kernel(fastmath=_LOOP_FLAGS)
def scaled_matvec(B, u, v, y):
    """``diag(u) B diag(v) @ y``."""
    n, m = B.shape
    vy = v * y
    out = np.empty(n)
    for i in prange(n):
        s = 0.0
        for j in range(m):
            s += B[i, j] * vy[j]
        out[i] = u[i] * s
    return out


@parallel_kernel(fastmath=_LOOP_FLAGS)
def dense_plan(C, f, g, reg, P):
    """Fill ``P`` with ``exp((f_i + g_j - C_ij)/reg)``."""
    n, m = C.shape
    inv_reg = 1.0 / reg
    for i in prange(n):
        fi = f[i]
        for j in range(m):
            P[i, j] = fast_exp((fi + g[j] - C[i, j]) * inv_reg)


def plan_reference(C, f, g, reg):
    """Numpy twin of :func:`dense_plan` (and of the sums of :func:`plan_pass`)."""
    return np.exp((f[:, None] + g[None, :] - np.asarray(C, np.float64)) / reg)


# ---------------------------------------------------------------------------
# Sparse linear algebra for the Newton system
# ---------------------------------------------------------------------------


@kernel()
def compact_csr(counts, idx, val, tau):
    """Gather per-row candidates with value >= ``tau`` into CSR arrays."""
    n = counts.shape[0]
    indptr = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        c = 0
        for t in range(counts[i]):
            c += val[i, t] >= tau
        indptr[i + 1] = indptr[i] + c
    nnz = indptr[n]
    indices = np.empty(nnz, dtype=np.int32)
    data = np.empty(nnz)
    for i in range(n):
        pos = indptr[i]
        for t in range(counts[i]):
            if val[i, t] >= tau:
                indices[pos] = idx[i, t]
                data[pos] = val[i, t]
                pos += 1
    return indptr, indices, data


@kernel()
def dense_threshold_csr(P, tau):
    """CSR arrays ``(indptr, indices, data)`` of the entries of dense ``P`` that are ``>= tau``.

    ``tau`` must be positive (explicit zeros are never stored). Two passes
    (count, then fill), serial: it runs once per Newton step of the
    symmetric solver, next to a full pass computing ``P``.
    """
    n, m = P.shape
    indptr = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        c = 0
        for j in range(m):
            c += P[i, j] >= tau
        indptr[i + 1] = indptr[i] + c
    indices = np.empty(indptr[n], dtype=np.int32)
    data = np.empty(indptr[n])
    for i in range(n):
        pos = indptr[i]
        for j in range(m):
            if P[i, j] >= tau:
                indices[pos] = j
                data[pos] = P[i, j]
                pos += 1
    return indptr, indices, data


def dense_threshold_csr_reference(P, tau):
    """Numpy/scipy twin of :func:`dense_threshold_csr`."""
    import scipy.sparse as sp

    S = sp.csr_matrix(np.where(P >= tau, P, 0.0))
    S.sort_indices()
    return S.indptr.astype(np.int64), S.indices.astype(np.int32), S.data


@kernel(fastmath=_LOOP_FLAGS)
def _schur_matvec(indptr, indices, data, d_row, d_col, y, out):
    # out = diag(d_col) y - S^T diag(1/d_row) S y, in one pass over S: each
    # row's gather (S y)_i is followed at once by its scatter into out while
    # the row's entries are still in cache.
    n = indptr.shape[0] - 1
    for j in range(out.shape[0]):
        out[j] = d_col[j] * y[j]
    for i in range(n):
        s = 0.0
        for t in range(indptr[i], indptr[i + 1]):
            s += data[t] * y[indices[t]]
        ti = s / d_row[i]
        for t in range(indptr[i], indptr[i + 1]):
            out[indices[t]] -= data[t] * ti


@parallel_kernel(fastmath=_LOOP_FLAGS)
def schur_matvec_chunked(indptr, indices, data, d_row, d_col, y, n_chunks, out):
    """:func:`_schur_matvec` with the rows in ``n_chunks`` blocks run in parallel.

    Each block scatters ``S^T diag(1/d_row) S y`` over its rows into a private
    column buffer, summed in block order afterwards (deterministic for a given
    ``n_chunks``): ``n_chunks * m`` extra memory, no write conflicts. One block
    is :func:`_schur_matvec`'s loop.
    """
    n = indptr.shape[0] - 1
    m = out.shape[0]
    part = np.zeros((n_chunks, m))
    for k in prange(n_chunks):
        buf = part[k]
        for i in range(k * n // n_chunks, (k + 1) * n // n_chunks):
            s = 0.0
            for t in range(indptr[i], indptr[i + 1]):
                s += data[t] * y[indices[t]]
            ti = s / d_row[i]
            for t in range(indptr[i], indptr[i + 1]):
                buf[indices[t]] += data[t] * ti
    for j in prange(m):
        acc = 0.0
        for k in range(n_chunks):
            acc += part[k, j]
        out[j] = d_col[j] * y[j] - acc


@kernel(fastmath=_LOOP_FLAGS)
def schur_cg(indptr, indices, data, d_row, d_col, rhs, rtol, max_iter, y0):
    """Jacobi-preconditioned CG on the Schur complement ``K = D_col - S^T D_row^{-1} S``.

    ``S`` (n x m, CSR) is the sparsified plan, ``d_row``/``d_col`` the (shifted)
    row and column sums, so ``K`` is symmetric positive definite when the
    shift is positive. Stops when ``||K y - rhs|| <= rtol ||rhs||``. ``y0``
    (length ``m``, or empty for none) is a starting guess, kept only if its
    residual is smaller than ``||rhs||``. Vector
    updates are fused loops with no temporaries: at these sizes allocation
    and call overhead, not flops, would dominate.

    Returns ``(y, n_iter, relative_residual)``; the residual is NaN on a
    breakdown (``p^T K p <= 0`` or non-finite values).
    """
    n = indptr.shape[0] - 1
    m = rhs.shape[0]
    inv_diag = d_col.copy()
    for i in range(n):
        for t in range(indptr[i], indptr[i + 1]):
            inv_diag[indices[t]] -= data[t] * data[t] / d_row[i]
    for j in range(m):
        inv_diag[j] = 1.0 / (inv_diag[j] if inv_diag[j] > 0.0 else d_col[j])
    p = np.empty(m)
    q = np.empty(m)
    rr = 0.0
    for j in range(m):
        rr += rhs[j] * rhs[j]
    rhs_norm = math.sqrt(rr)
    y = np.zeros(m)
    r = rhs.copy()
    if rhs_norm == 0.0:
        return y, 0, 0.0
    if y0.shape[0] == m:
        # warm start: keep y0 only if it leaves a smaller residual than 0 does
        _schur_matvec(indptr, indices, data, d_row, d_col, y0, q)
        rr0 = 0.0
        for j in range(m):
            rr0 += (rhs[j] - q[j]) ** 2
        if rr0 < rr:
            for j in range(m):
                y[j] = y0[j]
                r[j] = rhs[j] - q[j]
    rz = 0.0
    rr = 0.0
    for j in range(m):
        p[j] = r[j] * inv_diag[j]
        rz += r[j] * p[j]
        rr += r[j] * r[j]
    if math.sqrt(rr) <= rtol * rhs_norm:
        return y, 0, math.sqrt(rr) / rhs_norm
    res = 1.0
    it = 0
    while it < max_iter:
        _schur_matvec(indptr, indices, data, d_row, d_col, p, q)
        pq = 0.0
        for j in range(m):
            pq += p[j] * q[j]
        if not pq > 0.0:  # breakdown: K not positive definite along p, or NaN
            return y, it, np.nan
        alpha = rz / pq
        rr = 0.0
        rz_new = 0.0
        for j in range(m):
            y[j] += alpha * p[j]
            r[j] -= alpha * q[j]
            rr += r[j] * r[j]
            rz_new += r[j] * r[j] * inv_diag[j]
        it += 1
        res = math.sqrt(rr) / rhs_norm
        if res <= rtol:
            break
        beta = rz_new / rz
        rz = rz_new
        for j in range(m):
            p[j] = r[j] * inv_diag[j] + beta * p[j]
    return y, it, res


@kernel(fastmath=_LOOP_FLAGS)
def csr_matvec(indptr, indices, data, y):
    """``S @ y`` for a CSR matrix."""
    n = indptr.shape[0] - 1
    out = np.empty(n)
    for i in range(n):
        s = 0.0
        for t in range(indptr[i], indptr[i + 1]):
            s += data[t] * y[indices[t]]
        out[i] = s
    return out


@kernel(fastmath=_LOOP_FLAGS)
def csr_rmatvec(indptr, indices, data, w, m):
    """``S.T @ w`` for a CSR matrix ``S`` with ``m`` columns."""
    n = indptr.shape[0] - 1
    out = np.zeros(m)
    for i in range(n):
        wi = w[i]
        for t in range(indptr[i], indptr[i + 1]):
            out[indices[t]] += data[t] * wi
    return out


# -- two-level aggregation preconditioner of the Schur complement (snsot.solvers.linalg) --------

@kernel()
def aggregate_columns(indptr, indices, data, m, strong):
    """Group the ``m`` columns of a CSR block ``S`` into aggregates; ``(labels, n_aggregates)``.

    The coupling of columns ``j`` and ``k`` in ``K = D_col - S^T D_row^{-1} S``
    is ``sum_i S_ij S_ik / d_i``: the columns of one row are a clique, and
    the row's large entries its strongest links. Greedy aggregation on those
    cliques (Vanek, Mandel and Brezina 1996, phase 1 and 2) without forming ``K``:

    1. rows in order: a row whose strong columns (``S_ij >= strong * max_j S_ij``)
       are all still free makes them one aggregate;
    2. a free column joins the aggregate of the heaviest aggregated column of
       the row in which it has its largest entry; a column in no such row is
       an aggregate of its own.

    Labels run over ``0 .. n_aggregates - 1``, every one used. O(nnz).
    """
    n = indptr.shape[0] - 1
    labels = np.full(m, -1, dtype=np.int64)
    n_agg = 0
    for i in range(n):
        lo, hi = indptr[i], indptr[i + 1]
        vmax = 0.0
        for t in range(lo, hi):
            vmax = max(vmax, data[t])
        if not vmax > 0.0:
            continue
        cut = strong * vmax
        free = True
        for t in range(lo, hi):
            if data[t] >= cut and labels[indices[t]] >= 0:
                free = False
                break
        if free:
            for t in range(lo, hi):
                if data[t] >= cut:
                    labels[indices[t]] = n_agg
            n_agg += 1
    best = np.full(m, -1.0)
    joins = np.full(m, -1, dtype=np.int64)
    for i in range(n):
        lo, hi = indptr[i], indptr[i + 1]
        heaviest = -1.0
        target = -1
        for t in range(lo, hi):
            if labels[indices[t]] >= 0 and data[t] > heaviest:
                heaviest = data[t]
                target = labels[indices[t]]
        if target < 0:
            continue
        for t in range(lo, hi):
            j = indices[t]
            if labels[j] < 0 and data[t] > best[j]:
                best[j] = data[t]
                joins[j] = target
    for j in range(m):
        if labels[j] < 0:
            if joins[j] >= 0:
                labels[j] = joins[j]
            else:
                labels[j] = n_agg
                n_agg += 1
    return labels, n_agg


@kernel()
def merge_columns(indptr, indices, data, labels, n_agg):
    """``S R^T`` in CSR: each row's entries summed per aggregate (``R`` the 0/1 aggregation matrix).

    Columns come out in first-seen order within a row (unsorted); O(nnz).
    """
    n = indptr.shape[0] - 1
    out_ptr = np.zeros(n + 1, dtype=np.int64)
    out_idx = np.empty(indices.shape[0], dtype=np.int64)
    out_val = np.empty(indices.shape[0])
    slot = np.full(n_agg, -1, dtype=np.int64)
    k = 0
    for i in range(n):
        start = k
        for t in range(indptr[i], indptr[i + 1]):
            c = labels[indices[t]]
            if slot[c] < start:  # first entry of this aggregate in row i
                slot[c] = k
                out_idx[k] = c
                out_val[k] = data[t]
                k += 1
            else:
                out_val[slot[c]] += data[t]
        out_ptr[i + 1] = k
    return out_ptr, out_idx[:k].copy(), out_val[:k].copy()


# ---------------------------------------------------------------------------
# Fused per-iteration work of the dense plan (issue 14)
# ---------------------------------------------------------------------------
#
# Between two passes over the plan, a solve used to run a dozen small NumPy
# calls (the scalings' centred shift, the Sinkhorn step's safety checks, its
# row error, the next potentials' logarithms). Each holds the GIL, and on
# MNIST-sized problems (n, m ~ 150) they took as long as the pass itself, so
# threads solving different problems waited for each other. The kernels
# below do that O(n + m) work inside the nogil pass.


@kernel()
def centred_exponents(f, g, f0, g0, reg, max_drift, x_out, y_out):
    """``x - c`` and ``y + c`` for ``x = (f - f0)/reg``, ``y = (g - g0)/reg`` into ``x_out``, ``y_out``; returns ``c``.

    ``c`` centres the range of ``x`` (``c = (max x + min x) / 2``), which leaves
    every ``x_i + y_j`` unchanged. Returns NaN, with the outputs unwritten,
    when ``max|x - c| + max|y + c| > max_drift``, when a side is empty, or
    when any value is NaN: :func:`snsot.solvers._plan.base_scalings`' rule.
    """
    n = f.shape[0]
    m = g.shape[0]
    if n == 0 or m == 0:
        return np.nan
    inv_reg = 1.0 / reg
    x_max = -np.inf
    x_min = np.inf
    for i in range(n):
        x = (f[i] - f0[i]) * inv_reg
        if x != x:
            return np.nan
        x_max = max(x_max, x)
        x_min = min(x_min, x)
    c = 0.5 * (x_max + x_min)
    drift_x = 0.0
    for i in range(n):
        drift_x = max(drift_x, abs((f[i] - f0[i]) * inv_reg - c))
    drift_y = 0.0
    for j in range(m):
        y = (g[j] - g0[j]) * inv_reg
        if y != y:
            return np.nan
        drift_y = max(drift_y, abs(y + c))
    drift = drift_x + drift_y
    if not drift <= max_drift:  # also NaN (inf - inf)
        return np.nan
    for i in range(n):
        x_out[i] = (f[i] - f0[i]) * inv_reg - c
    for j in range(m):
        y_out[j] = (g[j] - g0[j]) * inv_reg + c
    return c


@kernel()
def centred_scalings(f, g, f0, g0, reg, max_drift, u, v):
    """``u = exp(x - c)``, ``v = exp(y + c)`` for ``x = (f - f0)/reg``, ``y = (g - g0)/reg``; returns ``c``.

    See :func:`centred_exponents`, which this exponentiates (NaN, with ``u``
    and ``v`` unwritten, beyond ``max_drift``).
    """
    c = centred_exponents(f, g, f0, g0, reg, max_drift, u, v)
    if c == c:
        for i in range(u.shape[0]):
            u[i] = math.exp(u[i])
        for j in range(v.shape[0]):
            v[j] = math.exp(v[j])
    return c


@kernel()
def _block_sum(x, start, n):
    """NumPy's sum of a block of at most 128 float64: eight accumulators, then the rest in order."""
    if n < 8:
        res = 0.0
        for i in range(start, start + n):
            res += x[i]
        return res
    r0, r1, r2, r3 = x[start], x[start + 1], x[start + 2], x[start + 3]
    r4, r5, r6, r7 = x[start + 4], x[start + 5], x[start + 6], x[start + 7]
    i = start + 8
    stop = start + n - n % 8
    while i < stop:
        r0 += x[i]
        r1 += x[i + 1]
        r2 += x[i + 2]
        r3 += x[i + 3]
        r4 += x[i + 4]
        r5 += x[i + 5]
        r6 += x[i + 6]
        r7 += x[i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < start + n:
        res += x[i]
        i += 1
    return res


@kernel()
def _pairwise_sum(x, start, n):
    """``x[start:start + n].sum()`` in NumPy's own order (its pairwise summation of float64).

    Blocks of at most 128 (:func:`_block_sum`); longer runs split in halves
    (cut at a multiple of 8) whose sums are added, as NumPy recurses; here
    the recursion is an explicit stack (numba's cached builds of recursive
    functions are fragile). A fused kernel that reports what NumPy used to
    sum then gives the same bits, so the solver's decisions do not move.
    Compiled without fast-math, which would reorder it.
    """
    if n <= 128:
        return _block_sum(x, start, n)
    depth = 64  # halves: far deeper than any array
    starts = np.empty(depth, np.int64)
    sizes = np.empty(depth, np.int64)
    phase = np.zeros(depth, np.int64)  # 0: left half next, 1: right half next, 2: both summed
    sums = np.empty(depth)
    top, n_sums = 0, 0
    starts[0], sizes[0] = start, n
    while top >= 0:
        s, k = starts[top], sizes[top]
        if k <= 128:
            sums[n_sums] = _block_sum(x, s, k)
            n_sums += 1
            top -= 1
            continue
        half = k // 2
        half -= half % 8
        if phase[top] == 0:
            phase[top] = 1
            top += 1
            starts[top], sizes[top], phase[top] = s, half, 0
        elif phase[top] == 1:
            phase[top] = 2
            top += 1
            starts[top], sizes[top], phase[top] = s + half, k - half, 0
        else:
            sums[n_sums - 2] = sums[n_sums - 2] + sums[n_sums - 1]
            n_sums -= 1
            top -= 1
    return sums[0]


#: Statuses of :func:`base_sinkhorn_step`.
STEP_TAKEN, STEP_FAR, STEP_UNSAFE = 0, 1, 2


@parallel_kernel(fastmath=_LOOP_FLAGS)
def base_sinkhorn_step(B, f, g, f0, g0, reg, max_drift, a, log_a, kappa, log_b, kappa_col, safe, n_chunks,
                       rows, f_new, g_new):
    """One whole Sinkhorn iteration on the stored base ``B = P(f0, g0)``: scalings, pass, checks, next potentials.

    The fusion of :func:`centred_scalings`, one Sinkhorn pass over ``diag(u) B diag(v)`` and the
    O(n + m) work around them, so that none of it holds the GIL. With ``(u, v,
    c)`` the centred scalings of ``(f, g)``:

    - the numerator ``num_i = a_i`` (``kappa = 1``) or
      ``exp(kappa log a_i + (kappa - 1)(f0_i / reg + c))`` (the damped update
      of relaxed marginals, :meth:`snsot.solvers._dense.DensePlan.sinkhorn_step`);
    - one read of ``B``: ``s = B v``, the plan's row sums ``rows = u s``, the new
      row scaling ``u_new = num / s**kappa`` and the base's column sums
      ``col = B^T u_new``;
    - the step is safe when ``u_new <= 1/safe``, ``s**kappa >= safe`` and
      ``safe <= col < inf`` everywhere (every sum divided by is a normal number);
    - then ``f_new = f0 + reg (log u_new + c)`` and
      ``g_new = kappa_col (g0 + reg (log b - log col - c))``.

    Returns ``(status, c, row_error)``: :data:`STEP_TAKEN` (``rows``,
    ``f_new``, ``g_new`` written), :data:`STEP_FAR` (``(f, g)`` beyond
    ``max_drift`` of the base, or NaN: nothing written, ``c`` NaN) or
    :data:`STEP_UNSAFE` (``rows`` written, the potentials not). ``row_error``
    is ``sum_i |rows_i - a_i|`` (the exact marginals' row error; NaN unless
    the pass ran).
    """
    n, m = B.shape
    u = np.empty(n)
    v = np.empty(m)
    c = centred_scalings(f, g, f0, g0, reg, max_drift, u, v)
    if c != c:
        return STEP_FAR, c, np.nan
    num = _sinkhorn_numerator(a, log_a, kappa, f0, reg, c)
    u_new = np.empty(n)
    part_col = np.zeros((n_chunks, m))
    for k in prange(n_chunks):
        pc = part_col[k]
        for i in range(k * n // n_chunks, (k + 1) * n // n_chunks):
            s = 0.0
            for j in range(m):
                s += B[i, j] * v[j]
            rows[i] = u[i] * s
            un = num[i] / s if kappa == 1.0 else num[i] / s ** kappa
            u_new[i] = un
            for j in range(m):
                pc[j] += B[i, j] * un
    col = _chunk_sum(part_col)
    return _finish_sinkhorn_step(f0, g0, reg, c, a, num, log_b, kappa_col, safe, rows, u_new, col, f_new, g_new)


@kernel()
def _sinkhorn_numerator(a, log_a, kappa, f0, reg, c):
    """``a`` (``kappa = 1``), else ``exp(kappa log a + (kappa - 1)(f0 / reg + c))``, rounded as NumPy would (no fast-math)."""
    n = a.shape[0]
    num = np.empty(n)
    if kappa == 1.0:
        num[:] = a
    else:
        for i in range(n):
            num[i] = math.exp(kappa * log_a[i] + (kappa - 1.0) * (f0[i] / reg + c))
    return num


@kernel()
def _finish_sinkhorn_step(f0, g0, reg, c, a, num, log_b, kappa_col, safe, rows, u_new, col, f_new, g_new):
    """The O(n + m) tail of :func:`base_sinkhorn_step`: checks, row error, next potentials.

    Compiled without fast-math: no fused multiply-add or reordering, so the
    potentials round as NumPy's ``f0 + reg * (np.log(u_new) + c)`` does (the
    solver's iterates are those of the unfused code, bit for bit).
    """
    n = rows.shape[0]
    m = col.shape[0]
    gaps = np.empty(n)
    safe_step = True
    for i in range(n):
        gaps[i] = abs(rows[i] - a[i])
        # written as "not (ok)" so that NaN fails the test
        if not (u_new[i] <= 1.0 / safe and num[i] / u_new[i] >= safe):
            safe_step = False
    row_error = 0.0 + _pairwise_sum(gaps, 0, n)  # np.abs(rows - a).sum(), bit for bit
    for j in range(m):
        if not (col[j] >= safe and col[j] < np.inf):
            safe_step = False
    if not safe_step:
        return STEP_UNSAFE, c, row_error
    for i in range(n):
        f_new[i] = f0[i] + reg * (math.log(u_new[i]) + c)
    for j in range(m):
        g_new[j] = g0[j] + reg * (log_b[j] - math.log(col[j]) - c)
        if kappa_col != 1.0:
            g_new[j] *= kappa_col
    return STEP_TAKEN, c, row_error


@parallel_kernel(fastmath=_LOOP_FLAGS)
def dense_plan_sums(C, f, g, reg, n_chunks, P, row_sum):
    """:func:`dense_plan` with the plan's row sums, column sums and cost ``<C, P>`` from the same pass.

    Fills ``P`` and ``row_sum``; returns ``(col_sum, cost)``. The sums are
    NumPy's ``P.sum(axis=1)`` and (one block) ``P.sum(axis=0)`` bit for bit;
    the cost is ``<C, P>`` up to the order of its sum. The cost skips
    entries with ``P_ij = 0`` exactly, so a forbidden pair (``C_ij = +inf``,
    whose plan entry is 0) adds 0 instead of ``inf * 0 = NaN``; a NaN entry is
    kept (and makes the cost NaN). Replaces four passes over ``n x m`` arrays
    (the plan, two NumPy sums, a dot product) at the end of every solve.
    """
    n, m = C.shape
    inv_reg = 1.0 / reg
    part_col = np.zeros((n_chunks, m))
    part_cost = np.zeros(n_chunks)
    for k in prange(n_chunks):
        pc = part_col[k]
        cost = 0.0
        for i in range(k * n // n_chunks, (k + 1) * n // n_chunks):
            fi = f[i]
            cs = 0.0
            for j in range(m):
                # the exponent exactly as dense_plan writes it (f + g cancel to far less than each
                # when the potentials are large; a reordered sum would round differently)
                p = fast_exp((fi + g[j] - C[i, j]) * inv_reg)
                P[i, j] = p
                pc[j] += p
                if p != 0.0:
                    cs += C[i, j] * p
            # in NumPy's order (P.sum(axis=1) did this): the final marginal error decides `converged`
            row_sum[i] = _pairwise_sum(P[i], 0, m)
            cost += cs
        part_cost[k] = cost
    col = _chunk_sum(part_col)
    total = 0.0
    for k in range(n_chunks):  # block order: deterministic
        total += part_cost[k]
    return col, total
