"""The divergence benchmark: rows well formed, errors measured against the reference."""

import numpy as np
import pytest

pytest.importorskip("torch")

from snsot.bench.divergence import clouds, markdown_divergence, run_divergence  # noqa: E402


def test_clouds_keep_the_cost_in_0_2():
    x, y = clouds(500, 0)
    for p in (x, y):
        assert float(p.min()) >= 0 and float(p.max()) <= 1


def test_rows_report_errors_against_the_reference(monkeypatch):
    import snsot.bench.divergence as div

    monkeypatch.setattr(div, "_keops_works", lambda: False)  # the KeOps rows: test below
    rows = run_divergence((60,), (5e-2,), repeats=1, time_cap=2.0, log=lambda msg: None, scalings=(0.5,))
    ours = [r for r in rows if r["method"] == "snsot.torch"]
    assert {r["settings"] for r in ours} == {"tol=1e-09", "tol=1e-06"}
    tight = next(r for r in ours if r["settings"] == "tol=1e-09")
    # tol 1e-9 on the marginals gives a gradient within ~1e-9 of the tol 1e-12 reference.
    assert tight["grad_error"] < 1e-6 and tight["value_error"] < 1e-6
    for r in rows:
        assert r["status"] in ("ok", "absent", "not run") or r["status"].startswith("failed")
        if r["status"] == "ok":
            assert r["forward"] > 0 and r["backward"] > 0 and np.isfinite(r["grad_error"])
    text = markdown_divergence(rows, "cmd")
    assert "| 60 | 0.05 | snsot.torch | tol=1e-09 |" in text and "`cmd`" in text


def test_torch_command_writes_both_tables_and_links_them_from_results_once(tmp_path, monkeypatch):
    # One `snsot bench --torch` run: the divergence rows and the unbalanced rows in TORCH.md,
    # and one link block in RESULTS.md that a second run replaces rather than repeats.
    import snsot.bench.divergence as div
    from snsot.bench import main

    monkeypatch.setattr(div, "_keops_works", lambda: False)  # no C++ compile inside the test suite
    (tmp_path / "RESULTS.md").write_text("# Results\n\nthe grid table\n")
    argv = ["--torch", "--quick", "--torch-sizes", "40", "--reg", "1e-2", "--time-cap", "2",
            "--geomloss-scalings", "0.5", "--out-dir", str(tmp_path)]
    for _ in range(2):
        assert main(argv) == 0
    text = (tmp_path / "TORCH.md").read_text()
    assert "| 40 | 0.01 | snsot.torch | tol=1e-09 |" in text
    assert "## Unbalanced OT: SNS vs Sinkhorn" in text and "| clouds (200 x 200) | 0.01 |" in text
    results = (tmp_path / "RESULTS.md").read_text()
    assert results.startswith("# Results\n\nthe grid table\n")
    assert results.count("[TORCH.md](TORCH.md)") == 1 and results.count("- n=40, reg=0.01:") == 1
    payload = __import__("json").loads((tmp_path / "torch.json").read_text())
    assert {r["method"] for r in payload["divergence"]} >= {"snsot.torch"}
    assert {r["method"] for r in payload["unbalanced"]} >= {"snsot-sns", "snsot-sinkhorn"}


@pytest.mark.slow
def test_geomloss_online_rows_match_the_tensorized_ones_where_keops_compiles():
    import snsot.bench.divergence as div

    if not div._keops_works():
        pytest.skip("pykeops absent or cannot compile here")
    rows = run_divergence((50,), (5e-2,), repeats=1, time_cap=2.0, log=lambda msg: None, scalings=(0.5,))
    by = {r["method"]: r for r in rows if r["method"].startswith("GeomLoss") and r["status"] == "ok"}
    assert set(by) == {"GeomLoss tensorized", "GeomLoss online"}
    # same algorithm, two backends: the same value and gradient error up to round-off
    assert by["GeomLoss online"]["value_error"] == pytest.approx(by["GeomLoss tensorized"]["value_error"], rel=1e-6)
    assert by["GeomLoss online"]["grad_error"] == pytest.approx(by["GeomLoss tensorized"]["grad_error"], rel=1e-6)
