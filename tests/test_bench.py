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
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout, json.loads((out / "results.json").read_text())


def test_quick_writes_table_csv_json_and_figures(quick):
    out, stdout, payload = quick
    assert stdout.startswith("| problem |") and "snsot-sns" in stdout
    report = (out / "RESULTS.md").read_text()
    assert "python -m snsot.bench --quick" in report.split("## Main table")[0]  # the command comes first
    for section in ("## Main table", "## Memory floor", "## Regularisation sweep", "## Scaling", "## Figures"):
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
