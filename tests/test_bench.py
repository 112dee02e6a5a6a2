"""The benchmark harness: it writes its report, measures errors itself, and never fakes a peer.

Timings are never asserted; only what the harness reports about them.
"""

import argparse
import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from snsot import bench
from snsot.bench import robustness

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _args(out_dir, *argv):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args([*argv, "--out-dir", str(out_dir)])


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One ``--quick`` run, the way a user starts it, shared by the checks below."""
    out = tmp_path_factory.mktemp("quick")
    proc = subprocess.run([sys.executable, "-m", "snsot.bench", "--quick", "--out-dir", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout, json.loads((out / "results.json").read_text())


def test_quick_writes_table_csv_json_and_figures(quick):
    out, stdout, payload = quick
    assert stdout.startswith("| problem |") and "snsot-sns" in stdout
    report = (out / "RESULTS.md").read_text()
    assert "python -m snsot.bench --quick" in report.split("## Main table")[0]  # the command comes first
    for section in ("## Main table", "## Robustness: SNS vs Sinkhorn per problem and reg", "## Memory floor",
                    "## Regularisation sweep", "## Scaling", "## First call in a new process", "## Notes",
                    "## Figures"):
        assert section in report
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {"problem", "method", "status", "l1_error", "time"} <= set(rows[0])
    pngs = sorted(out.glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == PNG_MAGIC for p in pngs)
    assert set(payload["figures"]) == {p.name for p in pngs}
    machine = payload["machine"]
    assert machine["cores"] >= 1 and machine["numpy"] == np.__version__
    assert {"cpu", "python", "numba", "ot", "regot"} <= set(machine)


def test_quick_sns_rows_converge_and_errors_are_measured(quick):
    _, _, payload = quick
    tol = payload["config"]["tol"]
    sns = [r for r in payload["rows"] + payload["sweep"] + payload["scaling"] if r["method"] == "snsot-sns"]
    assert sns
    for row in sns:
        assert row["status"] == "ok", row
        assert row["l1_error"] < tol
        assert row["n_iter"] == row["n_sinkhorn"] + row["n_newton"]
    # every status is one the report explains; "ok" always means the L1 error was met
    for row in payload["rows"] + payload["sweep"]:
        assert row["status"] in ("ok", "capped", "not converged", "exact", "absent") or \
            row["status"].startswith(("skipped", "error"))
        if row["status"] == "ok":
            assert row["l1_error"] < tol
    for row in payload["scaling"]:
        assert row["tracemalloc_peak"] > 0 and row["cost_matrix_bytes"] > 0
    # the largest size again at a small reg, so that the peak includes the Newton stage's buffers
    last = payload["scaling"][-1]
    assert last["reg"] == bench.config.SCALING_NEWTON_REG and last["shape"] == payload["scaling"][-2]["shape"]
    assert last["n_newton"] > 0


def test_gap_is_measured_against_the_exact_cost(quick):
    _, _, payload = quick
    exact = {r["problem"]: r["cost"] for r in payload["rows"] if r["method"] == "pot-emd" and r["status"] == "exact"}
    pytest.importorskip("ot")
    assert exact
    for row in payload["rows"]:
        if row["status"] == "ok" and row["problem"] in exact:
            assert row["gap"] == pytest.approx(row["cost"] - exact[row["problem"]], abs=1e-12)
            # the entropic plan is feasible up to tol, so it cannot beat the exact optimum by more than that
            assert row["gap"] > -2 * payload["config"]["tol"]


def test_absent_peers_are_reported_as_absent(tmp_path, monkeypatch, capsys):
    # A None entry in sys.modules makes "import regot" raise ImportError, as if not installed.
    monkeypatch.setitem(sys.modules, "regot", None)
    monkeypatch.setitem(sys.modules, "ot", None)
    args = _args(tmp_path, "--problems", "random200", "--reg", "0.05", "--repeats", "1", "--time-cap", "5")
    assert bench.run(args, log=lambda msg: None) == 0
    payload = json.loads((tmp_path / "results.json").read_text())
    status = {r["method"]: r for r in payload["rows"]}
    for method in ("regot-ssns", "regot-splr", "regot-bcd", "pot-sinkhorn", "pot-emd"):
        assert status[method]["status"] == "absent"
        assert "time" not in status[method] and "l1_error" not in status[method]
    assert status["snsot-sns"]["status"] == "ok"
    assert payload["machine"]["regot"] == "absent" and payload["machine"]["ot"] == "absent"
    assert "| absent |" in capsys.readouterr().out


def test_time_cap_stops_a_slow_method_and_reports_a_bound(tmp_path):
    # Sinkhorn at reg 1e-4 on random assignment needs far more than 0.2 s.
    args = _args(tmp_path, "--problems", "random200", "--methods", "snsot-sinkhorn", "--reg", "1e-4",
                 "--repeats", "2", "--time-cap", "0.2", "--no-plots")
    assert bench.run(args, log=lambda msg: None) == 0
    (row,) = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert row["status"] == "capped" and row["runs"] == 1
    assert row["l1_error"] >= 1e-10
    assert "| > " in (tmp_path / "RESULTS.md").read_text()


@pytest.mark.parametrize("method, module", [("regot-ssns", "regot"), ("pot-sinkhorn", "ot")])
def test_peer_tolerance_is_translated_until_the_l1_error_is_met(method, module):
    pytest.importorskip(module)
    problem = bench.build_problem("random200")
    # reg 0.01: RegOT SSNS meets 1e-10 there (at 0.02 on this problem it stalls near 5e-10 in L1)
    row, trace = bench.measure(method, problem, reg=0.01, tol=1e-10, repeats=1, cap=20)
    assert row["status"] == "ok"
    assert row["l1_error"] < 1e-10
    assert "tol=" in row["setting"] or "stopThr=" in row["setting"]  # what the peer was given is reported
    assert trace["norm"] != "L1"  # peers' own norms are labelled as such in the figures


def test_l1_marginal_error_definition():
    P = np.array([[0.2, 0.1], [0.0, 0.7]])
    a = np.array([0.25, 0.75])
    b = np.array([0.2, 0.8])
    # rows: |0.3-0.25| + |0.7-0.75| = 0.1; columns: |0.2-0.2| + |0.8-0.8| = 0
    assert bench.l1_marginal_error(P, a, b) == pytest.approx(0.1)


@pytest.mark.parametrize("text, value", [("1/1200", 1 / 1200), ("1e-3", 1e-3), ("0.01", 0.01)])
def test_reg_accepts_fractions(tmp_path, text, value):
    assert _args(tmp_path, "--reg", text).reg == [value]


@pytest.mark.parametrize("argv, message", [(["--reg", "-1"], "positive"), (["--methods", "nope"], "unknown"),
                                           (["--problems", "mnist-l3"], "unknown")])
def test_bad_arguments_are_rejected(tmp_path, argv, message, capsys):
    with pytest.raises(SystemExit):
        _args(tmp_path, *argv)
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------- robustness: SNS vs Sinkhorn per problem and reg

def _row(status="ok", time=1.0, n_iter=100, **extra):
    return dict(status=status, time=time, n_iter=n_iter, **extra)


def _skipped(time_bound, n_iter_bound, bound_reg=1e-3):
    return dict(status=f"skipped (> cap at reg {bound_reg:g})", time_bound=time_bound, n_iter_bound=n_iter_bound,
                bound_reg=bound_reg)


@pytest.mark.parametrize("sns_time, outcome", [(0.014, "pass"), (0.015, "pass"), (0.0151, "fail"), (0.001, "pass")])
def test_where_sinkhorn_is_easy_sns_may_take_up_to_one_and_a_half_times_as_long(sns_time, outcome):
    v = robustness.judge(_row(time=sns_time), _row(time=0.01, n_iter=49))
    assert v["kind"] == "easy" and v["ratio"] == pytest.approx(sns_time / 0.01) and v["ratio_bound"] == ""
    assert v["outcome"] == outcome
    assert v["verdict"] == ("easy: ratio <= 1.5 ok" if outcome == "pass" else "FAIL: easy, ratio > 1.5")


@pytest.mark.parametrize("sns_time, outcome", [(0.5, "pass"), (0.999, "pass"), (1.0, "fail"), (1.2, "fail")])
def test_where_sinkhorn_is_hard_sns_must_be_faster(sns_time, outcome):
    v = robustness.judge(_row(time=sns_time), _row(time=1.0, n_iter=50))  # 50 iterations is no longer easy
    assert v["kind"] == "hard" and v["outcome"] == outcome
    assert v["verdict"] == ("hard: faster ok" if outcome == "pass" else "FAIL: hard, SNS not faster")


@pytest.mark.parametrize("ratio", [0.7, 1.0, 1.4])
def test_a_hard_cell_where_sns_never_left_sinkhorn_is_a_tie_not_a_pass(ratio):
    sinkhorn = _row(time=1.0, n_iter=116)
    v = robustness.judge(_row(time=ratio, n_sinkhorn=116, n_newton=0), sinkhorn)
    assert v["outcome"] == "tie" and v["verdict"].startswith("tie") and v["kind"] == "hard"
    # slower than the noise allowance, or different work: judged as usual
    assert robustness.judge(_row(time=1.6, n_sinkhorn=116, n_newton=0), sinkhorn)["outcome"] == "fail"
    assert robustness.judge(_row(time=ratio, n_sinkhorn=20, n_newton=5), sinkhorn)["outcome"] == \
        ("pass" if ratio < 1 else "fail")
    assert robustness.judge(_row(time=ratio, n_sinkhorn=40, n_newton=0), _row(time=1.0, n_iter=40))["outcome"] == "pass"


@pytest.mark.parametrize("sinkhorn", [_row("capped", time=15.2, n_iter=9998), _row("not converged", time=3.0, n_iter=800),
                                      _skipped(time_bound=15.1, n_iter_bound=4000)])
def test_a_stopped_or_skipped_sinkhorn_gives_an_upper_bound_on_the_ratio(sinkhorn):
    v = robustness.judge(_row(time=0.3), sinkhorn)
    bound = sinkhorn.get("time_bound", sinkhorn.get("time"))
    assert v["ratio_bound"] == "<" and v["ratio"] == pytest.approx(0.3 / bound)
    assert v["kind"] == "hard" and v["outcome"] == "pass" and v["verdict"] == "hard: faster ok"


def test_a_bound_that_settles_nothing_is_undecided_not_a_pass():
    # Sinkhorn stopped (say a stall) after 2 s; SNS took 3 s: Sinkhorn's real time is unknown.
    v = robustness.judge(_row(time=3.0), _row("not converged", time=2.0, n_iter=900))
    assert v["outcome"] == "undecided" and v["ratio"] == pytest.approx(1.5) and v["ratio_bound"] == "<"
    # capped before 50 iterations: easy or hard is unknown, but faster settles both criteria
    v = robustness.judge(_row(time=0.1), _row("capped", time=3.0, n_iter=20))
    assert v["kind"] == "" and v["outcome"] == "pass" and v["verdict"] == "faster ok"
    for sinkhorn in (None, {"status": "error: ValueError: boom"}):
        assert robustness.judge(_row(time=0.1), sinkhorn)["outcome"] == "undecided"


@pytest.mark.parametrize("sns", [None, _row("capped", time=15.0), _row("not converged", time=0.2),
                                 {"status": "error: RuntimeError: x"}])
def test_sns_must_converge_whatever_sinkhorn_did(sns):
    for sinkhorn in (_row(time=100.0, n_iter=10**5), _row("capped", time=15.0, n_iter=10**4), None):
        v = robustness.judge(sns, sinkhorn)
        assert v["outcome"] == "fail" and v["verdict"].startswith("FAIL: SNS")


@pytest.mark.parametrize("block_sns_time, paired_ratio, outcome", [(0.016, 1.1, "pass"), (0.012, 1.6, "fail")])
def test_interleaved_timings_decide_the_ratio_where_they_exist(block_sns_time, paired_ratio, outcome):
    sns = _row(time=block_sns_time, paired_sns_time=0.021, paired_sinkhorn_time=0.02, paired_ratio=paired_ratio,
               paired_runs=9)
    v = robustness.judge(sns, _row(time=0.01, n_iter=20))
    assert v["paired"] is True and v["ratio"] == pytest.approx(paired_ratio)
    assert v["outcome"] == outcome
    # without them, the rows' own medians decide
    del sns["paired_runs"]
    v = robustness.judge(sns, _row(time=0.01, n_iter=20))
    assert v["paired"] is False and v["ratio"] == pytest.approx(block_sns_time / 0.01)


def test_measure_paired_takes_the_runs_in_turn(monkeypatch):
    import importlib

    M = importlib.import_module("snsot.bench.measure")  # the module (the package re-exports a function of that name)

    calls = []

    def fake(name, seconds):
        def solve(problem, reg, tol, cap, state, options):
            calls.append(name)
            return argparse.Namespace(time=seconds[len([c for c in calls if c == name]) - 1])
        return solve

    # the first run of each is the warm-up; 0.5 + 1.0 s of it leaves the 3 s budget room for 2, so the floor of 5 holds
    monkeypatch.setitem(M.SOLVERS, "a", fake("a", [0.5, 1, 2, 3, 4, 5]))
    monkeypatch.setitem(M.SOLVERS, "b", fake("b", [1.0, 6, 7, 8, 9, 10]))
    pair = M.measure_paired("a", "b", None, 0.1, 1e-9, 10.0)
    assert pair["runs"] == 5 and (pair["time_a"], pair["time_b"]) == (3.0, 8.0)
    # runs side by side: 1/6, 2/7, 3/8, 4/9, 5/10; their median is 3/8 (the medians' ratio here too)
    assert pair["ratio"] == pytest.approx(3 / 8)
    # a slow spell that caught one run of a pair does not move the paired ratio as it moves the medians':
    # a is 1.1x b in every pair but the third, where a alone was slowed threefold
    calls.clear()
    monkeypatch.setitem(M.SOLVERS, "a", fake("a", [0.5, 1.1, 1.1, 3.3, 3.3, 3.3]))
    monkeypatch.setitem(M.SOLVERS, "b", fake("b", [1.0, 1.0, 1.0, 1.0, 3.0, 3.0]))
    pair = M.measure_paired("a", "b", None, 0.1, 1e-9, 10.0)
    assert pair["time_a"] / pair["time_b"] == pytest.approx(3.3) and pair["ratio"] == pytest.approx(1.1)
    assert calls == ["a", "b"] + ["a", "b", "b", "a"] * 2 + ["a", "b"]  # warm-up, then alternating order


def test_cells_pair_the_rows_per_problem_and_reg_and_count_outcomes():
    def row(problem, reg, method, **kw):
        return dict(problem=problem, reg=reg, method=method, shape="2 x 2", **kw)

    rows = [
        row("p", 1e-2, "snsot-sns", **_row(time=0.01, n_sinkhorn=5, n_newton=0, l1_error=1e-11)),
        row("p", 1e-2, "snsot-sinkhorn", **_row(time=0.01, n_iter=5)),
        row("p", 1e-2, "regot-ssns", **_row(time=0.1, n_iter=5)),  # peers play no part
        row("p", 1e-3, "snsot-sns", **_row(time=0.2, n_sinkhorn=3, n_newton=9, l1_error=1e-12)),
        row("p", 1e-3, "snsot-sinkhorn", **_row("capped", time=15.0, n_iter=9000)),
        row("p", 1e-4, "snsot-sns", **_row("capped", time=15.0, n_sinkhorn=3, n_newton=900, l1_error=1e-5)),
        row("p", 1e-4, "snsot-sinkhorn", **_skipped(15.0, 9000, bound_reg=1e-3)),
        row("q", 1e-2, "snsot-sns", **_row(time=0.1, n_sinkhorn=5, n_newton=0, l1_error=1e-11)),
    ]
    records = robustness.cells(rows)
    assert [(r["problem"], r["reg"]) for r in records] == [("p", 1e-2), ("p", 1e-3), ("p", 1e-4), ("q", 1e-2)]
    assert [r["outcome"] for r in records] == ["pass", "pass", "fail", "undecided"]
    assert records[1]["sinkhorn_bound"] == ">" and records[1]["sinkhorn_time"] == 15.0
    assert records[2]["sinkhorn_bound_reg"] == 1e-3 and records[2]["sinkhorn_n_iter"] == 9000
    assert records[0]["sinkhorn_bound"] == "" and records[0]["sns_l1_error"] == 1e-11
    stats = robustness.summary(records)
    assert (stats["cells"], stats["passed"], stats["tied"], stats["failed"], stats["undecided"],
            stats["sns_converged"]) == (4, 2, 0, 1, 1, 3)


def test_quick_report_shows_the_robustness_cells_and_the_same_data_in_csv_and_json(quick):
    out, _, payload = quick
    cells = payload["robustness"]["cells"]
    summary = payload["robustness"]["summary"]
    assert cells and summary["cells"] == len(cells)
    assert summary["passed"] == sum(c["outcome"] == "pass" for c in cells)
    # every verdict follows from the numbers the cell carries
    sweep = payload["sweep"]
    for cell in cells:
        sns, sinkhorn = ({(r["problem"], r["reg"], r["method"]): r for r in sweep}.get((cell["problem"], cell["reg"], m))
                         for m in ("snsot-sns", "snsot-sinkhorn"))
        assert {k: cell[k] for k in ("outcome", "verdict", "kind", "ratio_bound")} == \
            {k: v for k, v in robustness.judge(sns, sinkhorn).items() if k in ("outcome", "verdict", "kind", "ratio_bound")}
    report = (out / "RESULTS.md").read_text()
    section = report.split("## Robustness: SNS vs Sinkhorn per problem and reg")[1].split("\n## ")[0]
    assert f"**{summary['passed']}/{summary['cells']} cells pass**" in section
    assert all(f"reg = {label}" in section for label in ("0.1", "0.01", "1/1200"))
    assert all(cell["verdict"] in section for cell in cells)
    with open(out / "robustness.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["problem"], r["outcome"]) for r in rows] == [(c["problem"], c["outcome"]) for c in cells]
    # quick cells where both converged within a second were timed again, interleaved
    paired = [c for c in cells if c["sinkhorn_status"] == "ok" and c["sns_status"] == "ok" and c["sinkhorn_time"] < 1]
    assert paired and all(c["paired"] and c["paired_runs"] >= 5 for c in paired)
    assert all(c["ratio"] == c["paired_ratio"] and c["paired_ratio"] > 0 for c in paired)
    assert "(interleaved, " in section


def test_a_method_capped_at_a_larger_reg_is_reported_with_that_bound(tmp_path):
    args = _args(tmp_path, "--problems", "random200", "--methods", "snsot-sinkhorn", "--reg", "1e-3", "1e-4",
                 "--repeats", "1", "--time-cap", "0.2", "--no-plots")
    assert bench.run(args, log=lambda msg: None) == 0
    capped, skipped = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert capped["reg"] == 1e-3 and capped["status"] == "capped"
    assert skipped["reg"] == 1e-4 and skipped["status"].startswith("skipped") and "time" not in skipped
    assert skipped["time_bound"] == capped["time"] and skipped["n_iter_bound"] == capped["n_iter"]
    assert skipped["bound_reg"] == 1e-3
    assert f"> {capped['time']:.3g} (not run: capped at reg 0.001)" in (tmp_path / "RESULTS.md").read_text()


def test_problems_all_is_every_registered_problem(tmp_path):
    from snsot import datasets

    chosen = _args(tmp_path, "--problems", "all").problems
    assert sorted(chosen) == sorted(datasets.PROBLEMS) and len(set(chosen)) == len(chosen)
    assert chosen[:3] == list(bench.HEADLINE_PROBLEMS)


def test_fast_solves_get_more_timed_runs_but_never_beyond_the_cap():
    from snsot.bench.measure import _repeat_count

    assert _repeat_count(3, 2.0, 60) == 3
    assert _repeat_count(3, 20.0, 60) == 3 and _repeat_count(3, 40.0, 60) == 1
    assert 3 < _repeat_count(3, 0.005, 60) <= 21
    assert _repeat_count(3, 0.005, 0.05) <= 10  # half a second of runs would overrun a 0.05 s cap


def test_quick_reports_the_first_call_with_and_without_cached_kernels(quick):
    out, _, payload = quick
    empty, cached = payload["cold_start"]
    assert empty["status"] == cached["status"] == "ok"
    assert "empty" in empty["setting"] and "cached" in cached["setting"]
    # compiling costs more than loading; a warm solve of that size is far quicker than either first one
    assert empty["first_solve"] > cached["first_solve"] > cached["second_solve"]
    assert f"| {cached['first_solve']:.2f} |" in (out / "RESULTS.md").read_text()
