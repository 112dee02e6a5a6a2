"""distances: each entry is the single solve it stands for; long runs resume; Dask gives the same matrix.

Oracles: snsot.solve on each pair alone, POT's log-domain Sinkhorn for
``value="cost"``, and the definitions (symmetry, zero diagonal of the
Sinkhorn divergence, the divergence assembled from three objectives).
"""

import json
import os
import signal

import numpy as np
import pytest
from checks import pot_plan

import snsot

REG = 2e-2
SHAPE = (5, 5)


def images(seed, k):
    return np.random.default_rng(seed).random((k,) + SHAPE) + 0.02


def normalised(X):
    H = X.reshape(len(X), -1)
    return H / H.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def grid_cost():
    return snsot.costs.grid(SHAPE)


def single(C, a, b, value):
    if value == "divergence":
        obj = lambda p, q: snsot.solve(C, p, q, reg=REG).objective  # noqa: E731
        return obj(a, b) - 0.5 * obj(a, a) - 0.5 * obj(b, b)
    return getattr(snsot.solve(C, a, b, reg=REG), value)


@pytest.mark.parametrize("value", ["cost", "objective", "divergence"])
def test_square_matrix_equals_single_solves(value, grid_cost):
    X = images(0, 5)
    D, info = snsot.distances(X, reg=REG, value=value, return_info=True, n_jobs=2, chunk_size=2)
    H = normalised(X)
    for i in range(5):
        for j in range(i, 5):
            assert abs(D[i, j] - single(grid_cost, H[i], H[j], value)) <= 1e-10
    np.testing.assert_array_equal(D, D.T)
    if value == "divergence":
        np.testing.assert_array_equal(np.diag(D), 0.0)
        assert (D[~np.eye(5, dtype=bool)] > 0).all()
    assert info.converged.all() and info.n_solves == info.n_solved == 15  # 5 * 6 / 2: unordered pairs once
    assert (info.marginal_error < 1e-9).all()


@pytest.mark.parametrize("value", ["cost", "objective", "divergence"])
def test_rectangular_matrix_equals_single_solves(value, grid_cost):
    X, Y = normalised(images(1, 3)), normalised(images(2, 4))
    D, info = snsot.distances(X, Y, C=grid_cost, reg=REG, value=value, return_info=True)
    assert D.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            assert abs(D[i, j] - single(grid_cost, X[i], Y[j], value)) <= 1e-10
    assert info.n_solves == 12 + (7 if value == "divergence" else 0)  # self-terms once per row and column


@pytest.mark.parametrize("value", ["cost", "divergence"])
def test_negative_costs_give_the_matrix_of_single_solves(value, grid_cost):
    X = normalised(images(3, 4))
    C = grid_cost - 0.75  # negative entries
    D = snsot.distances(X, C=C, reg=REG, value=value, n_jobs=2)
    for i in range(4):
        for j in range(i, 4):
            assert abs(D[i, j] - single(C, X[i], X[j], value)) <= 1e-10
    shifted = snsot.distances(X, C=grid_cost, reg=REG, value=value)
    # a constant added to C moves every cost by that constant (mass 1) and leaves divergences unchanged
    np.testing.assert_allclose(D, shifted - (0.75 if value == "cost" else 0.0), rtol=0, atol=1e-10)


def test_cost_matches_pot_sinkhorn2(grid_cost):
    X, Y = normalised(images(3, 2)), normalised(images(4, 2))
    D = snsot.distances(X, Y, C=grid_cost, reg=REG)
    for i in range(2):
        for j in range(2):
            P = pot_plan(grid_cost, X[i], Y[j], REG)
            assert abs(D[i, j] - float((grid_cost * P).sum())) < 1e-8


def test_points_and_images_give_the_cost_they_stand_for(grid_cost):
    X = images(5, 3)
    by_image = snsot.distances(X, reg=REG)
    by_cost = snsot.distances(normalised(X), C=grid_cost, reg=REG)
    by_points = snsot.distances(normalised(X), points=snsot.costs.grid_points(SHAPE), reg=REG)
    np.testing.assert_allclose(by_image, by_cost, rtol=0, atol=1e-14)
    np.testing.assert_allclose(by_points, by_cost, rtol=0, atol=1e-12)


def test_point_clouds(grid_cost):
    rng = np.random.default_rng(6)
    clouds = [rng.random((7 + r, 2)) for r in range(3)]
    w = rng.random(9)
    weighted = [clouds[0], clouds[1], (clouds[2], w)]
    D = snsot.distances(weighted, reg=REG, value="divergence")
    weights = [np.full(7, 1 / 7), np.full(8, 1 / 8), w / w.sum()]
    for i in range(3):
        for j in range(i + 1, 3):
            def obj(p, q):
                C = snsot.costs.pairwise(clouds[p], clouds[q])
                return snsot.solve(C, weights[p], weights[q], reg=REG).objective
            assert abs(D[i, j] - (obj(i, j) - 0.5 * obj(i, i) - 0.5 * obj(j, j))) <= 1e-10
    np.testing.assert_array_equal(np.diag(D), 0.0)


def test_warm_start_agrees_to_tolerance(grid_cost):
    X = images(7, 4)
    cold = snsot.distances(X, reg=REG)
    warm = snsot.distances(X, reg=REG, warm_start=True, n_jobs=1)
    np.testing.assert_allclose(warm, cold, rtol=0, atol=1e-9)


class Interrupt:
    """A progress callback that presses Ctrl-C once ``after`` solves are done."""

    def __init__(self, after):
        self.after = after

    def __call__(self, done, total):
        if done >= self.after:
            raise KeyboardInterrupt


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_interrupted_run_resumes_computing_only_missing_pairs(tmp_path, n_jobs):
    X = images(8, 6)
    out = tmp_path / "D.npy"
    with pytest.raises(KeyboardInterrupt):
        snsot.distances(X, reg=REG, value="divergence", out=out, n_jobs=n_jobs, chunk_size=2, progress=Interrupt(5))
    partial = np.load(out)
    table = np.load(str(out) + ".solves.npy")
    done_before = int((table[:, 0] == 1).sum())
    assert 5 <= done_before < 21 and np.isnan(partial).any()
    D, info = snsot.distances(X, reg=REG, value="divergence", out=out, n_jobs=n_jobs, chunk_size=2,
                              return_info=True)
    assert info.n_solved == 21 - done_before  # no pair done twice, none lost
    assert info.n_solves == 21 and info.converged.all()
    fresh = snsot.distances(X, reg=REG, value="divergence")
    np.testing.assert_array_equal(D, fresh)
    np.testing.assert_array_equal(np.load(out), fresh)
    # known entries were kept, not recomputed differently
    known = ~np.isnan(partial)
    np.testing.assert_array_equal(partial[known], fresh[known])
    # a third call has nothing to do
    _, again = snsot.distances(X, reg=REG, value="divergence", out=out, return_info=True)
    assert again.n_solved == 0


@pytest.mark.parametrize("k, l, symmetric, divergence", [(7, 7, True, False), (7, 7, True, True), (5, 3, False, True),
                                                         (5, 3, False, False), (40, 40, True, False)])
def test_solves_are_listed_in_blocks_each_once(k, l, symmetric, divergence):
    from snsot.distances import _Layout

    layout = _Layout(k, l, symmetric, divergence)
    if symmetric:
        i, j = np.triu_indices(k)
        expected = {(0, a, b) for a, b in zip(i, j)}
    else:
        expected = {(0, a, b) for a in range(k) for b in range(l)}
        if divergence:
            expected |= {(1, a, a) for a in range(k)} | {(2, b, b) for b in range(l)}
    for target in (1, 5, 64, None):
        blocks = list(layout.blocks(target))
        rows = [tuple(int(v) for v in r) for b in blocks for r in b]
        assert len(rows) == len(set(rows)) == layout.n_solves and set(rows) == expected
        # each solve has its own row of the table, and the table has no unused row
        flat = layout.flat(np.array(rows))
        np.testing.assert_array_equal(np.sort(flat), np.arange(layout.size))
        if target:
            assert max(len(b) for b in blocks) <= max(target, k)  # one source row at least


def test_resume_at_large_k_holds_no_index_array_of_all_pairs(tmp_path, monkeypatch):
    # 1000 histograms: 500,500 solves. All but four are marked done (with a fake cost, -1, that must survive),
    # so the resumed call lists, counts and refills them block by block and solves only the four.
    import importlib
    import tracemalloc

    dist_module = importlib.import_module("snsot.distances")  # the module (snsot.distances is the function)

    k = 1000
    X = np.random.default_rng(5).random((k, 2)) + 0.1
    C = np.array([[0.0, 1.0], [1.0, 0.0]])
    out = tmp_path / "D.npy"
    with pytest.raises(KeyboardInterrupt):
        snsot.distances(X, C=C, reg=0.1, out=out, n_jobs=1, chunk_size=1, progress=Interrupt(1))
    missing = [(0, 0), (0, 999), (500, 731), (998, 999)]
    table = np.lib.format.open_memmap(str(out) + ".solves.npy", mode="r+")
    table[:, 0] = 1
    table[:, 1] = -1.0  # cost
    table[:, 4] = 1  # converged
    assert table.shape[0] == k * (k + 1) // 2  # the upper triangle only, diagonal included
    for i, j in missing:
        table[i * k - i * (i - 1) // 2 + j - i, 0] = 0  # row i of the triangle starts after sum(k - t, t < i)
    table.flush()
    del table
    monkeypatch.setattr(dist_module, "_BLOCK", 4096)
    tracemalloc.start()
    try:
        D = snsot.distances(X, C=C, reg=0.1, out=out, n_jobs=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # all (i, j) index pairs as int64 would take 8 MB; 4096-solve blocks ~0.3 MB
    assert peak < 2e6
    H = X / X.sum(axis=1, keepdims=True)
    for i, j in missing:
        assert abs(D[i, j] - snsot.solve(C, H[i], H[j], reg=0.1).cost) <= 1e-10 and D[j, i] == D[i, j]
    assert D[1, 2] == D[2, 1] == -1.0 and not np.isnan(D).any()


def test_refuses_to_resume_a_different_problem(tmp_path):
    X = images(9, 3)
    out = tmp_path / "D.npy"
    snsot.distances(X, reg=REG, out=out)
    assert "fingerprint" in json.loads(open(str(out) + ".json").read())
    for other in (dict(reg=2 * REG), dict(reg=REG, value="objective"), dict(reg=REG, tol=1e-8)):
        with pytest.raises(ValueError, match="out: .* holds a different problem"):
            snsot.distances(X, out=out, **other)
    with pytest.raises(ValueError, match="different problem"):
        snsot.distances(images(10, 3), reg=REG, out=out)
    with pytest.raises(ValueError, match="pass resume=True"):
        snsot.distances(X, reg=REG, out=out, resume=False)
    foreign = tmp_path / "F.npy"
    np.save(foreign, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="was not written by snsot.distances"):
        snsot.distances(X, reg=REG, out=foreign)
    with pytest.raises(ValueError, match="out: must be a .npy"):
        snsot.distances(X, reg=REG, out=tmp_path / "D.txt")


@pytest.mark.parametrize("args, kwargs, match", [
    (([np.ones(4), np.ones(5)],), {}, "X: histograms have different lengths: row 0 has 4 bins, row 1 has 5"),
    ((np.ones((2, 25)), np.ones((2, 16))), dict(C=np.ones((25, 25))), r"C: has shape \(25, 25\) but the "
                                                                      r"histograms need \(25, 16\)"),
    ((np.ones((2, 25)),), dict(C=np.ones((25, 24))), r"C: has shape \(25, 24\)"),
    ((np.where(np.arange(25) == 3, np.nan, 1.0)[None].repeat(2, 0),), dict(C=np.ones((25, 25))),
     "X: weights must be finite; found nan"),
    ((np.ones((2, 25)),), dict(C=np.full((25, 25), np.nan)), "C: cost must be finite"),
    ((np.ones((2, 25)),), {}, "C: histograms need their ground cost"),
    ((np.ones((2, 25)), np.ones((2, 16))), dict(C=np.ones((25, 16)), value="divergence"),
     "divergence.*give points"),
    ((np.ones(25),), {}, r"X: expected k histograms"),
    ((np.ones((2, 5, 5)),), dict(value="distance"), "value: expected one of"),
    (([np.ones((3, 2)), np.ones((3, 3))],), {}, "X: point clouds have different dimensions"),
    (([np.ones((3, 2))], np.ones((2, 4))), {}, "X, Y: give both as lists of point clouds"),
    (([np.ones((3, 2))],), dict(C=np.ones((3, 3))), "C, points: point clouds carry their own positions"),
    ((np.ones((2, 5, 5)),), dict(engine="spark"), "engine: expected one of"),
])
def test_bad_input_names_the_argument(args, kwargs, match):
    kwargs.setdefault("reg", REG)
    with pytest.raises(ValueError, match=match):
        snsot.distances(*args, **kwargs)


def test_unreachable_scheduler_is_named():
    pytest.importorskip("distributed")
    with pytest.raises(ConnectionError, match="cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'"):
        snsot.distances(images(0, 2), reg=REG, engine="dask", client="tcp://127.0.0.1:9")


@pytest.mark.slow
def test_dask_gives_the_identical_matrix(dask_client):
    X = images(11, 6)
    threads = snsot.distances(X, reg=REG, value="divergence")
    D, info = snsot.distances(X, reg=REG, value="divergence", engine="dask", client=dask_client, chunk_size=2,
                              return_info=True)
    np.testing.assert_allclose(D, threads, rtol=0, atol=1e-15)  # see the killed-worker test on round-off
    assert info.engine == "dask" and info.n_workers == 2
    out = snsot.solve_batch(snsot.costs.grid(SHAPE), normalised(X), normalised(X)[::-1], reg=REG, engine="dask",
                            client=dask_client)
    np.testing.assert_array_equal(out.costs, snsot.solve_batch(snsot.costs.grid(SHAPE), normalised(X),
                                                               normalised(X)[::-1], reg=REG).costs)


@pytest.mark.slow
@pytest.mark.parametrize("victims", ["one", "all"])
def test_dask_survives_killed_workers(dask_client, victims):
    # Killing every worker also loses the scattered inputs, which have no recipe to recompute
    # them: the engine must send them again.
    X = images(12, 10)
    expected = snsot.distances(X, reg=REG)
    killed = []

    def kill(done, total):
        if not killed:
            pids = sorted(dask_client.run(os.getpid).values())
            for pid in pids[:1] if victims == "one" else pids:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    D, info = snsot.distances(X, reg=REG, engine="dask", client=dask_client, chunk_size=1, progress=kill,
                              return_info=True)
    assert killed
    # identical up to round-off: numpy's BLAS may use other thread counts in a worker (2e-17 seen on MNIST)
    np.testing.assert_allclose(D, expected, rtol=0, atol=1e-15)
    assert info.n_solved == info.n_solves == 55  # every pair once in the matrix, none lost


def test_divergence_between_different_supports_uses_their_self_costs():
    rng = np.random.default_rng(13)
    px, py = rng.random((9, 2)), rng.random((7, 2)) + 0.3
    X, Y = rng.random((2, 9)) + 0.1, rng.random((3, 7)) + 0.1
    D = snsot.distances(X, Y, points=(px, py), reg=REG, value="divergence")
    X, Y = X / X.sum(1, keepdims=True), Y / Y.sum(1, keepdims=True)

    def obj(p, q, a, b):
        return snsot.solve(snsot.costs.pairwise(p, q), a, b, reg=REG).objective

    for i in range(2):
        for j in range(3):
            expected = obj(px, py, X[i], Y[j]) - 0.5 * obj(px, px, X[i], X[i]) - 0.5 * obj(py, py, Y[j], Y[j])
            assert abs(D[i, j] - expected) <= 1e-10


def test_docstring_examples_run():
    import doctest
    import importlib

    # (snsot.distances is the function; the modules are reached by name)
    for module in (importlib.import_module("snsot.batch"), importlib.import_module("snsot.distances")):
        failed, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert attempted > 0 and failed == 0
