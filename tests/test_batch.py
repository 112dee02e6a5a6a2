"""solve_batch: every problem of a batch is the problem a single solve would give, each with its own stop.

Oracles: snsot.solve on each problem alone (the batch must not change the
numbers), and POT's log-domain Sinkhorn for the costs (an independent solver).
"""

import numpy as np
import pytest
from checks import pot_plan

import snsot
from snsot import _engines
from snsot._engines import ProcessEngine, ThreadEngine, make_engine

REG = 2e-2


def histograms(seed, k, size, zeros=0):
    rng = np.random.default_rng(seed)
    W = rng.random((k, size)) + 0.05
    if zeros:
        W[:, :zeros] = 0.0  # zero-mass bins go through solve()'s support handling
    return W / W.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def shared():
    C = snsot.costs.grid((5, 6))
    return C, histograms(0, 7, 30, zeros=2), histograms(1, 7, 30)


def test_each_problem_equals_a_single_solve(shared):
    C, A, B = shared
    out = snsot.solve_batch(C, A, B, reg=REG, n_jobs=2, chunk_size=2)
    assert len(out) == 7 and out.converged.all()
    for k in range(7):
        r = snsot.solve(C, A[k], B[k], reg=REG)
        assert abs(out.costs[k] - r.cost) <= 1e-10
        assert abs(out.objectives[k] - r.objective) <= 1e-10
        assert out.n_iter[k] == r.n_iter
        assert out.marginal_errors[k] < 1e-9
    assert out.values is out.costs


def test_costs_match_pot_sinkhorn(shared):
    C, A, B = shared
    out = snsot.solve_batch(C, A, B, reg=REG)
    for k in range(3):
        P = pot_plan(C, A[k], B[k], REG)
        assert abs(out.costs[k] - float((C * P).sum())) < 1e-8


@pytest.mark.parametrize("stacked", [False, True])
def test_negative_costs_are_shifted_as_solve_shifts_them(shared, stacked):
    # Entropic OT is invariant to a constant added to C: same plan, cost and objective moved by s x mass.
    C, A, B = shared
    shift = 3.0 * C.max()
    Cn = np.stack([C - shift] * len(A)) if stacked else C - shift
    out = snsot.solve_batch(Cn, A, B, reg=REG, n_jobs=2, return_results=True)
    base = snsot.solve_batch(C, A, B, reg=REG)
    assert out.converged.all()
    np.testing.assert_allclose(out.costs, base.costs - shift, rtol=0, atol=1e-10)
    np.testing.assert_allclose(out.objectives, base.objectives - shift, rtol=0, atol=1e-10)
    for k in (0, 4):
        r = snsot.solve(C - shift, A[k], B[k], reg=REG)
        np.testing.assert_array_equal(out.results[k].plan, r.plan)  # the same solve, not a re-derivation
        assert out.costs[k] == r.cost and out.n_iter[k] == r.n_iter


def test_each_problem_stops_on_its_own():
    # Far-apart problems need many more iterations than identical ones: a batch that
    # ran a common iteration count would report equal counts.
    C = snsot.costs.grid((6, 6))
    A = histograms(2, 4, 36)
    B = A.copy()
    B[2:] = histograms(3, 2, 36) ** 4
    B[2:] /= B[2:].sum(axis=1, keepdims=True)
    out = snsot.solve_batch(C, A, B, reg=5e-3)
    alone = [snsot.solve(C, A[k], B[k], reg=5e-3).n_iter for k in range(4)]
    assert out.n_iter.tolist() == alone
    assert len(set(alone)) > 1


def test_stacked_costs_and_broadcast_weights():
    rng = np.random.default_rng(4)
    Cs = rng.random((3, 8, 9))
    a = np.full(8, 1 / 8)
    B = histograms(5, 3, 9)
    out = snsot.solve_batch(Cs, a, B, reg=0.05, return_potentials=True)
    for k in range(3):
        r = snsot.solve(Cs[k], a, B[k], reg=0.05)
        assert abs(out.costs[k] - r.cost) <= 1e-12
        np.testing.assert_allclose(out.potentials[k][0], r.potentials[0], atol=1e-12)


def test_return_results_gives_plans():
    C = snsot.costs.grid((4, 4))
    A = histograms(6, 3, 16)
    out = snsot.solve_batch(C, A, A[::-1], reg=0.05, return_results=True)
    for k, res in enumerate(out.results):
        assert isinstance(res, snsot.OTResult)
        assert abs(float((C * res.plan).sum()) - out.costs[k]) < 1e-12
        np.testing.assert_allclose(res.plan.sum(axis=1), A[k], atol=1e-9)


def test_one_thread_and_two_threads_agree_exactly(shared):
    C, A, B = shared
    one = snsot.solve_batch(C, A, B, reg=REG, n_jobs=1)
    two = snsot.solve_batch(C, A, B, reg=REG, n_jobs=2, chunk_size=1)
    np.testing.assert_array_equal(one.costs, two.costs)
    np.testing.assert_array_equal(one.n_iter, two.n_iter)


def test_not_converged_is_reported_per_problem():
    C = snsot.costs.grid((6, 6))
    A = histograms(7, 2, 36)
    B = np.stack([A[0], histograms(8, 1, 36)[0] ** 6])
    B /= B.sum(axis=1, keepdims=True)
    with pytest.warns(snsot.ConvergenceWarning):
        out = snsot.solve_batch(C, A, B, reg=1e-3, max_iter=5, method="sinkhorn")
    alone = [snsot.solve(C, A[k], B[k], reg=1e-3, max_iter=5, method="sinkhorn", warn=False) for k in range(2)]
    assert out.converged.tolist() == [r.converged for r in alone]
    assert not out.converged[1] and out.marginal_errors[1] >= 1e-9 and out.n_iter[1] == 5
    assert out.converged.tolist() == (out.marginal_errors < 1e-9).tolist()


def test_process_engine_gives_the_thread_engines_results_after_a_solve_in_the_parent():
    # a solve first, so the pool forks a process whose kernels (and OpenMP) are already loaded
    C = snsot.costs.grid((6, 5))
    A, B = histograms(0, 5, 30), histograms(1, 5, 30)
    snsot.solve(C, A[0], B[0], reg=REG)
    threads = snsot.solve_batch(C, A, B, reg=REG, engine="threads", n_jobs=2, chunk_size=1)
    processes = snsot.solve_batch(C, A, B, reg=REG, engine="processes", n_jobs=2, chunk_size=1)
    assert processes.converged.all()
    np.testing.assert_array_equal(processes.costs, threads.costs)  # same single-threaded solves, bit for bit
    np.testing.assert_array_equal(processes.n_iter, threads.n_iter)


@pytest.fixture
def two_blas_threads():
    """OpenBLAS set to 2 threads (restored after); skip where no OpenBLAS is found."""
    controls = _engines._openblas_controls()
    if not controls:
        pytest.skip("no OpenBLAS loaded in this process")
    before = [get() for get, _ in controls]
    for _, set_ in controls:
        set_(2)
    yield
    for (_, set_), n in zip(controls, before):
        set_(n)


def _blas_threads_in_task(data, chunk):
    return _engines.blas_threads()


@pytest.mark.parametrize("engine", [ThreadEngine(1), ThreadEngine(2), ProcessEngine(2)], ids=["threads x1", "threads x2", "processes x2"])
def test_engines_run_each_task_on_one_blas_thread_and_restore_it(engine, two_blas_threads):
    # OpenBLAS's own threads spun between two solves and took the second core from the other worker
    seen = [counts for _, counts in engine.run(_blas_threads_in_task, None, [0, 1, 2])]
    assert len(seen) == 3 and all(counts and set(counts) == {1} for counts in seen)
    assert set(_engines.blas_threads()) == {2}


def test_one_blas_thread_nests_and_restores_on_the_last_exit(two_blas_threads):
    with _engines.one_blas_thread():
        with _engines.one_blas_thread():
            assert set(_engines.blas_threads()) == {1}
        assert set(_engines.blas_threads()) == {1}
    assert set(_engines.blas_threads()) == {2}


def test_thread_engine_returns_every_chunk_once():
    engine = ThreadEngine(3)
    chunks = [np.array([k]) for k in range(20)]
    seen = sorted(int(r[0]) for _, r in engine.run(lambda data, c: c * data, 2, chunks))
    assert seen == [2 * k for k in range(20)]


@pytest.mark.parametrize("kwargs, match", [
    (dict(A=np.ones((2, 5))), "A: rows have 5 weights but the cost has 30 rows"),
    (dict(B=np.full((2, 29), 1 / 29)), "B: rows have 29"),
    (dict(A=np.full((3, 30), 1 / 30)), "numbers of problems differ"),
    (dict(B=np.where(np.arange(30) == 4, np.nan, 1 / 30)), "B: weights must be finite; found nan"),
    (dict(A=-np.ones(30)), "A: weights must be non-negative"),
    (dict(B=np.full((2, 30), 2 / 30)), "B: row 0 has total mass"),
    (dict(A=np.zeros((2, 30))), "A: row 0 has total mass 0"),
    (dict(C=np.ones((2, 2, 2, 2))), "C: expected a non-empty"),
    (dict(C=np.full((30, 30), np.inf)), "C: cost must be finite"),
    (dict(reg=0), "reg:"),
    (dict(method="nope"), "method: unknown"),
    (dict(engine="gpu"), "engine: expected one of"),
    (dict(n_jobs=0), "n_jobs: must be a positive integer"),
    (dict(client="tcp://x:1"), "client: only used with engine='dask'"),
    (dict(client="tcp://x:1", engine="processes"), "client: only used with engine='dask'"),
    (dict(chunk_size=0), "chunk_size"),
    (dict(bogus=1), "bogus: not an option of method 'sns'"),
    (dict(init=(1, 2)), "init: not accepted here"),
])
def test_bad_input_names_the_argument(kwargs, match):
    C = snsot.costs.grid((5, 6))
    args = dict(C=C, A=histograms(0, 2, 30), B=histograms(1, 2, 30), reg=REG)
    args.update(kwargs)
    C = args.pop("C")
    with pytest.raises(ValueError, match=match):
        snsot.solve_batch(C, args.pop("A"), args.pop("B"), **args)


def test_make_engine_rejects_a_non_client():
    pytest.importorskip("distributed")
    with pytest.raises(TypeError, match="client: expected a dask.distributed.Client"):
        make_engine("dask", client=42)


def test_one_warning_when_some_problems_miss_tol():
    C = snsot.costs.grid((6, 6))
    A = histograms(9, 3, 36)
    with pytest.warns(snsot.ConvergenceWarning, match="of 3 problems stopped"):
        out = snsot.solve_batch(C, A, A[::-1], reg=1e-3, max_iter=2, method="sinkhorn")
    assert not out.converged.all()
    with pytest.warns(snsot.ConvergenceWarning, match="solves stopped"):
        snsot.distances(A, C=C, reg=1e-3, max_iter=2, method="sinkhorn")
