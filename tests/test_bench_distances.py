"""``snsot bench --distances``: the report's rows, pairs and ratios come from the runs they name.

Oracles: the definitions (a sample of distinct unordered pairs, shares of a
thread's time that add up to at most one), and the engines' own agreement
(the same pairs give the same costs on every engine).
"""

import argparse
import json

import numpy as np
import pytest

from snsot.bench import distances as bench


@pytest.mark.parametrize("n, size", [(5, 3), (5, 100), (40, 50)])
def test_sample_pairs_are_distinct_unordered_pairs(n, size):
    pairs = bench.sample_pairs(n, size, seed=3)
    assert len(pairs) == min(size, n * (n - 1) // 2)
    assert (pairs[:, 0] < pairs[:, 1]).all() and pairs.max() < n
    assert len({tuple(p) for p in pairs}) == len(pairs)
    np.testing.assert_array_equal(pairs, bench.sample_pairs(n, size, seed=3))  # seeded


def _spin(data, chunk):
    return sum(i * i for i in range(20000)) + int(chunk[0]), None


@pytest.mark.parametrize("make", [lambda: bench._ProbedThreads(2), lambda: bench._ProbedProcesses(2)])
def test_probed_engines_return_the_task_results_and_shares_of_at_most_one(make):
    engine = make()
    seen = sorted(r for _, (r, extras) in engine.run(_spin, None, [np.array([k, k]) for k in range(6)]))
    assert seen == sorted(sum(i * i for i in range(20000)) + k for k in range(6))
    assert engine.solves == 12  # two rows a chunk
    assert engine.per_solve()["cpu_ms"] > 0
    shares = engine.shares()
    if bench._schedstat() is None:
        pytest.skip("no /proc/thread-self/schedstat here")
    assert set(shares) == {"on_core", "waiting", "blocked"}
    assert all(v >= 0 for v in shares.values()) and shares["on_core"] + shares["waiting"] <= 1 + 1e-6


@pytest.mark.slow
def test_report_from_one_small_run(tmp_path):
    args = argparse.Namespace(digits=4, reg=[0.05], tol=1e-9, out_dir=tmp_path, sample_pairs=4, repeats=2,
                              peer_pairs=1, pot_iter=5, command_line="snsot bench --distances --digits 4")
    assert bench.run(args, log=lambda msg: None) == 0
    report = json.loads((tmp_path / "distances.json").read_text())
    names = [r["name"] for r in report["rows"]]
    for name in ("threads x1", "threads x2", "threads x2 (again)", "threads x1 (again)", "processes x2",
                 "processes x2 (again)", "threads x2, cold", "threads x2, warm starts", "threads x2, whole matrix"):
        assert name in names
    assert report["sample"] == 4 and report["all_pairs"] == 6
    assert report["threads_difference"] == 0  # the same single-threaded solves on every engine
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["threads x2, whole matrix"]["solves"] == 10  # 4 * 5 / 2, diagonal included
    assert rows["threads x1"]["converged"] == "4/4"
    assert report["ratios"]["threads x2 / x1, same pairs"] == pytest.approx(
        rows["threads x2"]["per_second"] / rows["threads x1"]["per_second"])
    if "max_difference_to_threads" in report["dask"]:
        assert report["dask"]["max_difference_to_threads"] <= 1e-12
        for name in ("Dask x2", "Dask x2, nanny's malloc (engine before the fix)", "Dask x2 (again)",
                     "Dask LocalCluster x2, whole matrix", "Dask LocalCluster x2, whole matrix (again)"):
            assert rows[name]["converged"] == rows["threads x1"]["converged"] or "whole" in name
        assert report["ratios"]["Dask x2 / threads x2, same pairs"] == pytest.approx(
            rows["Dask x2"]["per_second"] / rows["threads x2"]["per_second"])
    # Every probed row measured its workers: CPU time per solve and shares of about one at most (the
    # kernel books a wait when the thread is next scheduled, so a wait begun before a chunk can land in it).
    for r in report["rows"]:
        if "share_on_core" in r:
            assert r["worker_cpu_ms"] > 0 and r["share_on_core"] + r["share_waiting"] <= 1.05
    assert (tmp_path / "DISTANCES.md").read_text().startswith("# snsot.distances benchmark")
