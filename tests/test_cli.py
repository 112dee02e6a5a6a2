"""The ``snsot`` command, driven as a subprocess the way people run it.

Every command line below runs once, in parallel, in ``python -m snsot``; the
tests then check its exit status, its output and the files it wrote. JSON
results are compared with :func:`snsot.solve` on the same inputs.
"""

import importlib.util
import io as stdio
import json
import math
import os
import shutil
import subprocess
import sys
import types
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import snsot
from snsot import cli, costs
from snsot import io as sio

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HAS_MPL = importlib.util.find_spec("matplotlib") is not None
HAS_PIL = importlib.util.find_spec("PIL") is not None
needs_mpl = pytest.mark.skipif(not HAS_MPL, reason="matplotlib not installed")
needs_pil = pytest.mark.skipif(not HAS_PIL, reason="Pillow not installed")

# Blocks matplotlib in a subprocess, as if it were not installed.
NO_MPL = "import sys; sys.modules['matplotlib'] = None; from snsot.cli import main; sys.exit(main(sys.argv[1:]))"

# name -> command line (run in the data folder). Solves use small problems.
RUNS = {
    "points": ["solve", "x.npy", "y.npy", "--reg", "0.01", "--json", "--out", "points.json",
               "--plan", "points.npz", "--plot", "points.png", "--plot-convergence", "points_conv.png"],
    "csv_weighted": ["solve", "x.csv", "y.csv", "--weights-a", "wa.npy", "--weights-b", "wb.csv",
                     "--cost", "euclidean", "--reg", "0.02", "--json"],
    "histograms": ["solve", "h1.npy", "h2.npy", "--reg", "0.01", "--json", "--plan", "hist.npz"],
    "images": ["solve", "i1.png", "i2.pgm", "--reg", "0.005", "--json", "--plot", "images.png"],
    "line": ["solve", "l1.npy", "l2.npy", "--kind", "histogram", "--cost", "1.5", "--reg", "0.002", "--json",
             "--plot", "line.png"],
    "not_converged": ["solve", "x.npy", "y.npy", "--reg", "0.001", "--method", "sinkhorn", "--max-iter", "3",
                      "--out", "nc.json"],
    "demo": ["demo", "--n", "60", "--time-budget", "0.5", "--out-dir", "demo"],
    "demo_no_mpl": ["demo", "--n", "40", "--time-budget", "0.3", "--out-dir", "demo_no_mpl", "--json"],
}

# name -> (command line, text the one-line message must contain): the errors the issue
# names, run as subprocesses. The rest of the error paths run in-process (IN_PROCESS_ERRORS).
ERRORS = {    "missing_file": (["solve", "missing.npy", "y.npy"], "snsot solve: error: SOURCE (missing.npy): file not found"),
    "unreadable_image": (["solve", "bad.png", "i1.png"], "SOURCE (bad.png): not a readable image"),
    "wrong_shape": (["solve", "cube.npy", "y.npy"], "SOURCE (cube.npy): expected a 1-D or 2-D array"),
    "nan_weights": (["solve", "x.npy", "y.npy", "--weights-a", "nan_w.npy"],
                    "--weights-a (nan_w.npy): weights must be finite; found nan at index 2"),
    "negative_weights": (["solve", "x.npy", "y.npy", "--weights-b", "neg_w.npy"],
                         "--weights-b (neg_w.npy): weights must be non-negative; found -0.5 at index 0"),
    "mismatched_mass": (["solve", "x.npy", "y.npy", "--weights-b", "heavy_w.npy"],
                        "--weights-b (heavy_w.npy): total mass 2.0 differs from the total of a 1.0"),
    "zero_image": (["solve", "zero.png", "i1.png"], "SOURCE (zero.png): all intensities are zero"),
    "mixed_kinds": (["solve", "x.npy", "h1.npy"], "TARGET (h1.npy): is a histogram but SOURCE (x.npy) is a point cloud"),
    "reg_not_a_number": (["solve", "x.npy", "y.npy", "--reg", "abc"], "argument --reg: invalid float value: 'abc'"),
    "bad_method": (["solve", "x.npy", "y.npy", "--method", "newton"], "argument --method: invalid choice: 'newton'"),
    "unknown_option": (["solve", "x.npy", "y.npy", "--frobnicate"],
                       "snsot solve: error: unrecognized arguments: --frobnicate (see 'snsot solve --help')"),
    "demo_bad_index": (["demo", "--mnist", "10000", "1", "--no-plot"], "--mnist: image index must be in [0, 10000)"),
    "plot_without_mpl": (["solve", "x.npy", "y.npy", "--plot", "p.png"], 'install the plot extra: pip install "snsot[plot]"'),
    # issue 11 section 6, as subprocesses so that a numpy warning on stderr would show
    "empty_csv": (["solve", "empty.csv", "y.csv"], "SOURCE (empty.csv): the file is empty (no numbers)"),
    "header_only_csv": (["solve", "header.csv", "y.csv"], "SOURCE (header.csv): the array is empty"),
    "ambiguous_kind": (["solve", "p5.npy", "q5.npy"],
                       "SOURCE (p5.npy): a 20 x 5 array could be 20 points in 5-D or a 20 x 5 histogram; "
                       "say which with --kind points or --kind histogram"),
    "demo_negative_budget": (["demo", "--time-budget", "-1", "--no-plot"],
                             "argument --time-budget: must be a positive number of seconds; got '-1'"),
}
IN_PROCESS_ERRORS = {
    "unknown_suffix": (["solve", "notes.txt", "y.npy"], "SOURCE (notes.txt): unknown file type '.txt'"),
    "weights_length": (["solve", "x.npy", "y.npy", "--weights-a", "wb.csv"],
                       "--weights-a (wb.csv): has 9 weights but SOURCE (x.npy) has 12 points"),
    "nan_histogram": (["solve", "nan_h.npy", "h1.npy"], "SOURCE (nan_h.npy): intensities must be finite"),
    "dimensions": (["solve", "x.npy", "x3.npy"], "TARGET (x3.npy): points have dimension 3 but SOURCE (x.npy) has 2"),
    "cost_shape": (["solve", "x.npy", "y.npy", "--cost-matrix", "C.npy"],
                   "TARGET (y.npy): has 9 weights but the cost has 10 columns"),
    "negative_reg": (["solve", "x.npy", "y.npy", "--reg", "-1"], "--reg: must be a positive finite number; got -1.0"),
    "cost_p": (["solve", "x.npy", "y.npy", "--cost", "p"], "give the number itself, e.g. --cost 1.5"),
    "plan_suffix": (["solve", "x.npy", "y.npy", "--plan", "plan.txt"], "--plan: the file name must end in .npz"),
    "no_folder": (["solve", "x.npy", "y.npy", "--out", "nowhere/r.json"], "--out: folder"),
    "cost_and_matrix": (["solve", "x.npy", "y.npy", "--cost", "euclidean", "--cost-matrix", "C.npy"],
                        "give either --cost or --cost-matrix, not both"),
    "no_inputs": (["solve"], "SOURCE and TARGET are required unless --cost-matrix is given"),
    "no_command": ([], "snsot: error: the following arguments are required: {solve,demo,bench,distances}"),
    "demo_zero_budget": (["demo", "--time-budget", "0"], "argument --time-budget: must be a positive number"),
    "demo_nan_budget": (["demo", "--time-budget", "nan"], "argument --time-budget: must be a positive number"),
    "demo_bad_reg": (["demo", "--reg", "-1", "--no-plot"], "--reg: must be a positive finite number; got -1.0"),
    "out_is_a_folder": (["solve", "x.npy", "y.npy", "--out", "demo"], "--out: 'demo' is a folder"),
    "plot_is_a_folder": (["solve", "x.npy", "y.npy", "--plot", "demo"], "--plot: 'demo' is a folder"),
}
NO_MPL_RUNS = {"demo_no_mpl", "plot_without_mpl"}


def _inputs(folder):
    rng = np.random.default_rng(0)
    x, y = rng.random((12, 2)), 0.5 + 0.2 * rng.standard_normal((9, 2))
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", y)
    np.save(folder / "x3.npy", rng.random((5, 3)))
    np.savetxt(folder / "x.csv", x, delimiter=",", header="u,v", comments="")
    np.savetxt(folder / "y.csv", y, delimiter=",")
    wa = rng.random(12) + 0.1
    np.save(folder / "wa.npy", wa / wa.sum())
    wb = rng.random(9) + 0.1
    np.savetxt(folder / "wb.csv", wb / wb.sum())
    np.save(folder / "nan_w.npy", np.r_[0.5, 0.5, np.nan, np.zeros(9)])
    np.save(folder / "neg_w.npy", np.r_[-0.5, np.full(8, 1.5 / 8)])
    np.save(folder / "heavy_w.npy", np.full(9, 2 / 9))
    h1 = np.zeros((10, 10))
    h1[1:4, 2:6] = rng.random((3, 4))
    h2 = np.zeros((10, 10))
    h2[6:9, 5:8] = 1.0
    np.save(folder / "h1.npy", h1)
    np.save(folder / "h2.npy", h2)
    np.save(folder / "nan_h.npy", np.where(h1 > 0, np.nan, 0.0))
    np.save(folder / "cube.npy", np.ones((2, 3, 4)))
    np.save(folder / "l1.npy", np.exp(-np.linspace(-3, 3, 40) ** 2))
    np.save(folder / "l2.npy", np.exp(-np.linspace(-1, 5, 30) ** 2))
    np.save(folder / "C.npy", rng.random((12, 10)))
    (folder / "notes.txt").write_text("1 2\n")
    (folder / "bad.png").write_bytes(b"this is not an image")
    if HAS_PIL:
        from PIL import Image

        img1 = np.zeros((9, 11), dtype=np.uint8)
        img1[1:4, 1:5] = 200
        img1[2, 2] = 90
        img2 = np.zeros((9, 11), dtype=np.uint8)
        img2[5:8, 6:10] = 120
        Image.fromarray(img1).save(folder / "i1.png")
        Image.fromarray(img2).save(folder / "i2.pgm")
        Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(folder / "zero.png")
    (folder / "demo").mkdir()
    (folder / "demo_no_mpl").mkdir()
    (folder / "empty.csv").write_text("")
    (folder / "header.csv").write_text("u,v\n")
    np.save(folder / "p5.npy", rng.random((20, 5)))
    np.save(folder / "q5.npy", rng.random((15, 5)))


def _run(folder, name, args):
    prefix = [sys.executable, "-c", NO_MPL] if name in NO_MPL_RUNS else [sys.executable, "-m", "snsot"]
    return subprocess.run(prefix + list(args), cwd=folder, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    _inputs(folder)
    return folder


@pytest.fixture(scope="module")
def run(folder):
    """Start every command line once (in parallel) and hand out the finished processes by name."""
    commands = dict(RUNS)
    commands.update({name: args for name, (args, _) in ERRORS.items()})
    # One solve first, alone, so that parallel runs find the compiled kernels cached.
    first = {"points": _run(folder, "points", commands.pop("points"))}
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {name: pool.submit(_run, folder, name, args) for name, args in commands.items()}
        done = {name: f.result() for name, f in futures.items()}
    done.update(first)
    return done.__getitem__


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert len(data) > 2000, f"{path.name} is nearly empty"


def assert_matches_library(record, expected, distance):
    """The JSON of the command against snsot.solve on the same inputs."""
    assert record["converged"] is True and expected.converged
    assert record["marginal_error"] < record["tol"] == 1e-9
    assert record["n_iter"] == expected.n_iter
    assert record["n_newton"] == expected.n_newton
    assert record["cost"] == pytest.approx(expected.cost, rel=1e-10)
    assert record["objective"] == pytest.approx(expected.objective, rel=1e-10, abs=1e-14)
    assert record["shape"] == list(expected.plan.shape)
    if distance is None:
        assert record["distance"] is None
    else:
        assert record["distance"] == pytest.approx(distance(expected.cost), rel=1e-10)


def parse(proc):
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# ---------------------------------------------------------------- solving


def test_points_json_out_plan_and_pictures(run, folder):
    proc = run("points")
    record = parse(proc)
    x, y = np.load(folder / "x.npy"), np.load(folder / "y.npy")
    expected = snsot.solve(costs.pairwise(x, y), reg=0.01)
    assert_matches_library(record, expected, math.sqrt)
    assert record["cost_metric"] == "sqeuclidean"
    assert record["inputs"]["source"] == {"path": "x.npy", "kind": "points", "size": 12, "dim": 2, "weights": "uniform"}
    assert json.loads((folder / "points.json").read_text()) == record  # --out holds the same record
    plan = sio.load_plan(folder / "points.npz")
    np.testing.assert_allclose(plan, expected.plan, rtol=1e-8, atol=1e-15)
    assert record["outputs"]["plan"] == {"path": "points.npz", "format": "dense"}
    if HAS_MPL:
        assert_png(folder / "points.png")
        assert_png(folder / "points_conv.png")


def test_csv_points_with_weight_files_and_euclidean_cost(run, folder):
    record = parse(run("csv_weighted"))
    x, y = np.load(folder / "x.npy"), np.loadtxt(folder / "y.csv", delimiter=",")
    a, b = np.load(folder / "wa.npy"), np.loadtxt(folder / "wb.csv")
    expected = snsot.solve(costs.pairwise(x, y, "euclidean"), a, b, reg=0.02)
    assert_matches_library(record, expected, lambda c: c)
    assert record["inputs"]["target"]["weights"] == "wb.csv"


def test_histograms_from_npy_with_empty_bins(run, folder):
    record = parse(run("histograms"))
    h1, h2 = np.load(folder / "h1.npy"), np.load(folder / "h2.npy")
    expected = snsot.solve(costs.grid((10, 10)), h1.ravel() / h1.sum(), h2.ravel() / h2.sum(), reg=0.01)
    assert_matches_library(record, expected, math.sqrt)
    assert record["inputs"]["source"] == {"path": "h1.npy", "kind": "histogram", "size": 100, "shape": [10, 10]}
    # 12 x 9 bins carry mass out of 100 x 100: the plan is saved sparse, and nothing that matters is lost.
    assert record["outputs"]["plan"]["format"] == "sparse"
    np.testing.assert_allclose(sio.load_plan(folder / "hist.npz"), expected.plan, rtol=1e-8,
                               atol=1e-12 * expected.plan.max())


@needs_pil
def test_png_and_pgm_images_as_histograms(run, folder):
    from PIL import Image

    record = parse(run("images"))
    A = np.asarray(Image.open(folder / "i1.png"), dtype=float)
    B = np.asarray(Image.open(folder / "i2.pgm"), dtype=float)
    expected = snsot.solve(costs.grid(A.shape, shape_b=B.shape), A.ravel() / A.sum(), B.ravel() / B.sum(),
                           reg=0.005)
    assert_matches_library(record, expected, math.sqrt)
    assert record["inputs"]["target"]["shape"] == [9, 11]
    if HAS_MPL:
        assert_png(folder / "images.png")


def test_one_dimensional_histograms_with_a_power_cost(run, folder):
    record = parse(run("line"))
    l1, l2 = np.load(folder / "l1.npy"), np.load(folder / "l2.npy")
    expected = snsot.solve(costs.grid(40, 1.5, shape_b=30), l1 / l1.sum(), l2 / l2.sum(), reg=0.002)
    assert_matches_library(record, expected, lambda c: c ** (1 / 1.5))
    assert record["cost_metric"] == 1.5
    if HAS_MPL:
        assert_png(folder / "line.png")


def test_cost_matrix_file_without_point_files(folder, monkeypatch, capsys):
    status, out, err = main_in(folder, monkeypatch, capsys, "solve", "--cost-matrix", "C.npy",
                               "--weights-a", "wa.npy", "--reg", "0.05", "--json")
    assert status == 0, err
    record = json.loads(out)
    expected = snsot.solve(np.load(folder / "C.npy"), np.load(folder / "wa.npy"), None, reg=0.05)
    assert_matches_library(record, expected, None)
    assert record["inputs"] == {"cost_matrix": "C.npy"}


def test_human_report_names_the_outcome_and_the_files_written(folder, monkeypatch, capsys):
    status, out, err = main_in(folder, monkeypatch, capsys, "solve", "x.npy", "y.npy", "--reg", "0.01",
                               "--plan", "report.npz")
    assert status == 0, err
    assert out.startswith("sns: converged, marginal error")
    assert "Sinkhorn +" in out and "distance" in out
    assert "wrote report.npz (dense)" in out
    # not a terminal: no progress display; only how each file was read
    assert err.splitlines() == [
        "snsot: note: SOURCE (x.npy): read as 12 points in 2-D (auto: 2 columns; --kind histogram reads it as a "
        "histogram)",
        "snsot: note: TARGET (y.npy): read as 9 points in 2-D (auto: 2 columns; --kind histogram reads it as a "
        "histogram)",
    ]


def test_quiet_prints_nothing(folder, monkeypatch, capsys):
    assert main_in(folder, monkeypatch, capsys, "solve", "x.npy", "y.npy", "--reg", "0.01", "-q") == (0, "", "")


def main_in(folder, monkeypatch, capsys, *args):
    """Run ``snsot ARGS`` through cli.main in this process; returns (status, stdout, stderr)."""
    monkeypatch.chdir(folder)
    status = cli.main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_unconverged_solve_exits_3_writes_its_result_and_warns(run, folder):
    proc = run("not_converged")
    assert proc.returncode == cli.EXIT_NOT_CONVERGED == 3
    record = json.loads((folder / "nc.json").read_text())
    assert record["converged"] is False and record["n_iter"] == 3 and record["marginal_error"] > 1e-9
    assert "NOT converged" in proc.stdout
    assert proc.stderr.splitlines()[-1].startswith("snsot: warning: not converged: marginal error")
    assert all(line.startswith("snsot: note: ") for line in proc.stderr.splitlines()[:-1])
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- user errors


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_user_errors_print_one_line_and_exit_2(run, name):
    if name in ("unreadable_image", "zero_image") and not HAS_PIL:
        pytest.skip("Pillow not installed")
    proc = run(name)
    assert_one_line_error(proc.returncode, proc.stdout, proc.stderr, ERRORS[name][1])


@pytest.mark.parametrize("name", sorted(IN_PROCESS_ERRORS))
def test_more_user_errors_through_main(folder, monkeypatch, capsys, name):
    # The same contract as above, through cli.main in this process (no import cost per case).
    monkeypatch.chdir(folder)
    args, message = IN_PROCESS_ERRORS[name]
    status = cli.main(args)
    out, err = capsys.readouterr()
    assert_one_line_error(status, out, err, message)


def assert_one_line_error(status, stdout, stderr, message):
    assert status == cli.EXIT_USAGE == 2, stderr
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("snsot")
    assert ": error: " in lines[0]
    assert message in lines[0]
    assert "Traceback" not in stderr


# ---------------------------------------------------------------- how files are read, where outputs go


def test_an_ambiguous_array_solves_once_kind_says_what_it_is(folder, monkeypatch, capsys):
    status, out, err = main_in(folder, monkeypatch, capsys, "solve", "p5.npy", "q5.npy", "--kind", "points",
                               "--reg", "0.05", "--json")
    assert status == 0, err
    record = json.loads(out)
    assert record["inputs"]["source"]["kind"] == "points" and record["inputs"]["source"]["dim"] == 5
    expected = snsot.solve(costs.pairwise(np.load(folder / "p5.npy"), np.load(folder / "q5.npy")), reg=0.05)
    assert_matches_library(record, expected, math.sqrt)
    assert err.splitlines() == ["snsot: note: SOURCE (p5.npy): read as 20 points in 5-D (--kind points)",
                                "snsot: note: TARGET (q5.npy): read as 15 points in 5-D (--kind points)"]


@pytest.fixture
def solve_must_not_run(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("solve ran although an output path was bad")

    monkeypatch.setattr(cli, "solve", fail)


@needs_mpl
@pytest.mark.parametrize("option", ["--plot", "--plot-convergence"])
def test_an_unsupported_picture_suffix_is_refused_before_solving_naming_option_and_file(
        folder, monkeypatch, capsys, solve_must_not_run, option):
    status, out, err = main_in(folder, monkeypatch, capsys, "solve", "x.npy", "y.npy", option, "pic.xyz")
    assert_one_line_error(status, out, err, f"{option}: cannot write a picture to 'pic.xyz': unsupported suffix "
                                            "'.xyz'; use one of ")
    assert ".png" in err and ".pdf" in err
    assert not (folder / "pic.xyz").exists()


@pytest.mark.parametrize("args, message", [
    (["--out", "nowhere/r.json"], "--out: folder"),
    (["--plan", "p.txt"], "--plan: the file name must end in .npz"),
    (["--out", "demo"], "--out: 'demo' is a folder"),
])
def test_bad_output_paths_are_refused_before_solving(folder, monkeypatch, capsys, solve_must_not_run, args,
                                                    message):
    status, out, err = main_in(folder, monkeypatch, capsys, "solve", "x.npy", "y.npy", *args)
    assert_one_line_error(status, out, err, message)


@needs_mpl
def test_plot_without_a_suffix_writes_a_png_and_prints_the_path_really_written(folder, monkeypatch, capsys):
    status, out, err = main_in(folder, monkeypatch, capsys, "solve", "x.npy", "y.npy", "--reg", "0.05",
                               "--plot", "matches", "--plot-convergence", "conv")
    assert status == 0, err
    assert "wrote matches.png" in out.splitlines() and "wrote conv.png" in out.splitlines()
    assert_png(folder / "matches.png")
    assert_png(folder / "conv.png")
    assert not (folder / "matches").exists()


def test_debug_raises_instead_of_printing_one_line(folder, monkeypatch):
    monkeypatch.chdir(folder)
    with pytest.raises(FileNotFoundError, match=r"SOURCE \(missing.npy\): file not found"):
        cli.main(["solve", "missing.npy", "y.npy", "--debug"])
    with pytest.raises(cli.UsageError, match="give either --cost or --cost-matrix"):
        cli.main(["solve", "x.npy", "y.npy", "--cost", "euclidean", "--cost-matrix", "C.npy", "--debug"])


def test_help_documents_the_subcommands_and_exit_codes(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for text in ("solve", "demo", "bench", "exit status:", "3    solved but the tolerance was not met"):
        assert text in out


# ---------------------------------------------------------------- demo


def test_demo_prints_the_table_and_writes_the_pictures(run, folder):
    proc = run("demo")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "random assignment n=60" in out and "MNIST #3119 (3) -> #8078 (8)" in out
    rows = [line for line in out.splitlines() if line.startswith(("random", "MNIST"))]
    assert len(rows) == 4
    # each row is honest: converged, or stopped by the time budget (timings are never asserted)
    assert all(("  yes  " in r) or ("  no (stopped at 0.5 s budget)  " in r) for r in rows), out
    names = ("convergence.png", "plan.png", "mnist.png") if HAS_MPL else ()
    for name in names:
        assert f"wrote {os.path.join('demo', name)}" in out
        assert_png(folder / "demo" / name)


def test_demo_without_matplotlib_still_reports_and_says_how_to_get_pictures(run, folder):
    proc = run("demo_no_mpl")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [(r["problem"].split()[0], r["method"]) for r in report["rows"]] == [
        ("random", "SNS"), ("random", "Sinkhorn"), ("MNIST", "SNS"), ("MNIST", "Sinkhorn")]
    for row in report["rows"]:
        # honest: converged means the tolerance was met, otherwise the reason is given
        assert row["converged"] == (row["marginal_error"] < 1e-9)
        assert row["converged"] or row["note"]
    assert report["pictures"] == []
    assert 'pip install "snsot[plot]"' in proc.stderr
    assert os.listdir(folder / "demo_no_mpl") == []


# ---------------------------------------------------------------- bench wiring


def test_bench_takes_its_arguments_and_work_from_snsot_bench(monkeypatch, capsys):
    seen = {}
    fake = types.ModuleType("snsot.bench")
    fake.__doc__ = "Fake benchmarks."
    fake.add_arguments = lambda parser: parser.add_argument("--quick", action="store_true")

    def fake_run(args):
        seen["quick"] = args.quick
        return 0

    fake.run = fake_run
    monkeypatch.setitem(sys.modules, "snsot.bench", fake)
    monkeypatch.setattr(snsot, "bench", fake, raising=False)
    assert cli.main(["bench", "--quick"]) == 0
    assert seen == {"quick": True}
    assert cli.main(["bench", "--nope"]) == 2
    assert "snsot bench: error: unrecognized arguments: --nope" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("snsot.bench") is None, reason="snsot.bench not written yet")
def test_bench_help_runs():
    proc = subprocess.run([sys.executable, "-m", "snsot", "bench", "--help"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: snsot bench")


@pytest.mark.skipif(shutil.which("snsot") is None, reason="console script not on PATH")
def test_console_script_is_installed():
    proc = subprocess.run(["snsot", "--version"], capture_output=True, text=True, timeout=300)
    assert (proc.returncode, proc.stdout.strip()) == (0, f"snsot {snsot.__version__}")


# ---------------------------------------------------------------- progress display


class _Terminal(stdio.StringIO):
    def isatty(self):
        return True


def test_progress_shows_stage_iteration_and_error_on_a_terminal(monkeypatch):
    clock = iter([0.0, 1.0, 1.05, 1.2, 1.3])
    monkeypatch.setattr(cli.time, "perf_counter", lambda: next(clock))
    stream = _Terminal()
    progress = cli.Progress("sns: ", stream=stream)  # created at t=0
    assert progress(1, 0, 0.5, 0.0) is False  # t=1.0: shown
    progress(2, 0, 0.25, 0.0)  # t=1.05: too soon after the last line, skipped
    progress(3, 1, 1e-7, 0.0)  # t=1.2: shown
    progress.close()
    text = stream.getvalue()
    assert "sns: Sinkhorn iteration      1  marginal error 5.00e-01" in text
    assert "iteration      2" not in text
    assert "Newton iteration      3  marginal error 1.00e-07" in text
    assert text.count("\r") == 4 and text.endswith("\r")  # two lines, then one erased: "\r   \r"


def test_progress_is_silent_off_a_terminal_and_stops_at_the_time_budget(monkeypatch):
    clock = iter([0.0, 5.0, 11.0])
    monkeypatch.setattr(cli.time, "perf_counter", lambda: next(clock))
    stream = stdio.StringIO()
    progress = cli.Progress(stream=stream, time_budget=10.0)
    assert progress(1, 0, 0.5, 0.0) is False
    assert progress(2, 0, 0.4, 0.0) is True  # past 10 s: asks the solver to stop
    progress.close()
    assert stream.getvalue() == ""


def test_large_point_clouds_take_the_truncated_sparse_path(folder, monkeypatch, capsys):
    monkeypatch.setattr(cli, "DENSE_COST_LIMIT", 100.0)  # 12 x 9 points: 864 bytes of dense cost
    status, out, err = main_in(folder, monkeypatch, capsys, "solve", "x.npy", "y.npy", "--reg", "0.01",
                               "--tol", "1e-9", "--plan", "truncated.npz", "--json")
    assert status == 0, err
    assert "solving on a truncated sparse support" in err
    record = json.loads(out)
    assert record["support_size"] <= 12 * 9 and record["outside_mass"] < 1e-10
    import scipy.sparse as sp

    P = sp.load_npz(folder / "truncated.npz").toarray()
    x, y = np.load(folder / "x.npy"), np.load(folder / "y.npy")
    dense = snsot.solve(costs.pairwise(x, y), reg=0.01, tol=1e-9)
    np.testing.assert_allclose(P, dense.plan, atol=1e-9)


# ---------------------------------------------------------------- --reg-m (unbalanced OT)


@pytest.mark.parametrize("values, pair", [(["0.5"], [0.5, 0.5]), (["inf", "0.5"], ["inf", 0.5])])
def test_reg_m_solves_unbalanced_ot_as_the_library_does(folder, monkeypatch, capsys, values, pair):
    # heavy_w.npy has total 2 against the uniform source's 1: refused without --reg-m (see ERRORS)
    status, out, err = main_in(folder, monkeypatch, capsys, "solve", "x.npy", "y.npy", "--weights-b", "heavy_w.npy",
                               "--reg", "0.05", "--reg-m", *values, "--json")
    assert status == 0, err
    record = json.loads(out)
    x, y, b = np.load(folder / "x.npy"), np.load(folder / "y.npy"), np.load(folder / "heavy_w.npy")
    rho = tuple(float(v) for v in values) if len(values) == 2 else float(values[0])
    expected = snsot.solve(snsot.costs.pairwise(x, y), None, b, reg=0.05, reg_m=rho)
    assert record["reg_m"] == pair
    assert record["distance"] is None  # not a Wasserstein distance once the marginals are relaxed
    assert record["converged"] is True and record["n_iter"] == expected.n_iter
    assert record["objective"] == pytest.approx(expected.objective, rel=1e-10)
    assert record["cost"] == pytest.approx(expected.cost, rel=1e-10)


def test_reg_m_is_reported_in_the_human_report(folder, monkeypatch, capsys):
    status, out, err = main_in(folder, monkeypatch, capsys, "solve", "x.npy", "y.npy", "--reg", "0.05",
                               "--reg-m", "2")
    assert status == 0, err
    assert "reg_m      2.0, 2.0 (unbalanced" in out


@pytest.mark.parametrize("values, message", [
    (["1", "2", "3"], "--reg-m: give one number (both sides) or two (source, target); got 3"),
    (["-1"], "a marginal penalty must be positive"),
    (["abc"], "expected a positive number or inf; got 'abc'"),
    (["nan"], "a marginal penalty must be positive"),
])
def test_bad_reg_m_is_one_line_naming_the_option(folder, monkeypatch, capsys, values, message):
    status, out, err = main_in(folder, monkeypatch, capsys, "solve", "x.npy", "y.npy", "--reg-m", *values)
    assert_one_line_error(status, out, err, message)
    assert "--reg-m" in err
