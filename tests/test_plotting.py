"""snsot.plotting: each picture is drawn, saved as a PNG, and shows what it claims."""

import sys

import numpy as np
import pytest

import snsot
from snsot import costs

pytest.importorskip("matplotlib")
from snsot import plotting  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 2000  # a drawn picture, not an empty canvas


@pytest.fixture(scope="module")
def points_result():
    rng = np.random.default_rng(0)
    x, y = rng.random((12, 2)), rng.random((9, 2)) + 0.3
    return x, y, snsot.solve(costs.pairwise(x, y), reg=0.01)


@pytest.fixture(scope="module")
def image_result():
    A = np.zeros((8, 8))
    A[1:3, 1:4] = 1.0
    B = np.zeros((8, 8))
    B[5:7, 4:7] = 2.0
    a, b = A.ravel() / A.sum(), B.ravel() / B.sum()
    return A, B, snsot.solve(costs.grid((8, 8)), a, b, reg=0.005)


def test_convergence_one_problem_and_a_grid(tmp_path, points_result):
    _, _, res = points_result
    sink = snsot.solve(costs.pairwise(*points_result[:2]), reg=0.01, method="sinkhorn",
                       max_iter=20, warn=False)
    fig = plotting.plot_convergence({"SNS": res})
    assert len(fig.axes) == 2
    plotting.save(fig, tmp_path / "one.png")
    assert_png(tmp_path / "one.png")

    fig = plotting.plot_convergence({"p1": {"SNS": res, "Sinkhorn": sink}, "p2": {"SNS": res}}, tol=1e-9)
    assert len(fig.axes) == 4
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(lbl.startswith("Sinkhorn (not converged") for lbl in labels)
    plotting.save(fig, tmp_path / "grid.png")
    assert_png(tmp_path / "grid.png")


def test_convergence_iterations_go_on_a_log_axis_when_runs_differ_widely(points_result):
    _, _, res = points_result
    long = snsot.solve(costs.pairwise(*points_result[:2]), reg=0.01, method="sinkhorn", max_iter=50 * res.n_iter,
                       tol=1e-300, warn=False)
    fig = plotting.plot_convergence({"SNS": res, "Sinkhorn": long})
    assert fig.axes[0].get_xscale() == "log"
    assert plotting.plot_convergence({"SNS": res}).axes[0].get_xscale() == "linear"


def test_convergence_draws_epsilon_scaling_stages_dotted_and_the_target_reg_solid():
    C = np.random.default_rng(5).random((60, 60))
    staged = snsot.solve(C, reg=1e-4, eps_scaling=True, warn=False)
    plain = snsot.solve(C, reg=1e-4, eps_scaling=False, warn=False)
    n_early = int(np.sum(np.asarray(staged.history.reg) > staged.reg * (1 + 1e-9)))
    assert 0 < n_early < len(staged.history)
    ax = plotting.plot_convergence({"SNS": staged}).axes[0]
    dotted = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":" and len(ln.get_xdata())]
    solid = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-" and ln.get_label().startswith("SNS")]
    assert len(dotted) == 1 and len(dotted[0].get_xdata()) == n_early
    assert len(solid[0].get_xdata()) == len(staged.history) - n_early
    assert any("epsilon-scaling" in t.get_text() for t in ax.get_legend().get_texts())
    ax = plotting.plot_convergence({"SNS": plain}).axes[0]
    assert not [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]


def test_convergence_needs_results():
    with pytest.raises(ValueError, match="results: expected a non-empty mapping"):
        plotting.plot_convergence({})


def test_plan_heatmap_leaves_out_empty_bins(tmp_path, image_result):
    _, _, res = image_result
    fig = plotting.plot_plan(res.plan)
    ax = fig.axes[0]
    assert ax.images[0].get_array().shape == (6, 6)  # the bins that carry mass
    assert "6 of 64 with mass" in ax.get_xlabel()
    plotting.save(fig, tmp_path / "plan.png")
    assert_png(tmp_path / "plan.png")
    assert plotting.plot_plan(res.plan, support_only=False).axes[0].images[0].get_array().shape == (64, 64)


def test_matches_draw_the_strongest_entries_as_segments(tmp_path, points_result):
    x, y, res = points_result
    fig = plotting.plot_matches(x, y, res.plan, n_matches=5)
    segments = fig.axes[0].collections[0].get_segments()
    assert len(segments) == 5
    i, j = np.unravel_index(np.argmax(res.plan), res.plan.shape)
    assert any(np.allclose(s, [x[i], y[j]]) for s in segments)  # the largest entry is among them
    plotting.save(fig, tmp_path / "matches.png")
    assert_png(tmp_path / "matches.png")


def test_matches_need_two_dimensional_points(points_result):
    _, _, res = points_result
    with pytest.raises(ValueError, match="2-D points only"):
        plotting.plot_matches(np.zeros((12, 3)), np.zeros((9, 3)), res.plan)
    with pytest.raises(ValueError, match="does not match"):
        plotting.plot_matches(np.zeros((2, 2)), np.zeros((9, 2)), res.plan)


def test_images_picture_has_source_target_halfway_and_displacement(tmp_path, image_result):
    A, B, res = image_result
    fig = plotting.plot_images(A, B, res.plan, title="blocks")
    assert [ax.get_title() for ax in fig.axes] == ["source", "target", "halfway (t = 1/2)",
                                                   "displacement (source → target)"]
    plotting.save(fig, tmp_path / "images.png")
    assert_png(tmp_path / "images.png")


def test_halfway_of_the_identity_plan_is_the_image_itself():
    # Each pixel stays put, so the midpoint interpolation must give the image back exactly.
    img = np.random.default_rng(1).random((5, 7))
    img /= img.sum()
    xa = costs.grid_points(img.shape)
    half = plotting._halfway(np.diag(img.ravel()), xa, xa, img.shape)
    np.testing.assert_allclose(half, img, atol=1e-15)


def test_halfway_conserves_mass_and_lands_between_the_blocks(image_result):
    A, B, res = image_result
    xa = costs.grid_points(A.shape)
    half = plotting._halfway(res.plan, xa, xa, A.shape)
    kept = res.plan[res.plan > res.plan.max() / 1e10].sum()
    assert half.sum() == pytest.approx(kept, rel=1e-12)
    rows, cols = np.indices(A.shape)
    centre = lambda w: (np.sum(rows * w) / w.sum(), np.sum(cols * w) / w.sum())  # noqa: E731
    np.testing.assert_allclose(centre(half), np.add(centre(A), centre(B)) / 2, atol=0.05)


def test_barycentric_targets_move_the_source_block_onto_the_target_block(image_result):
    A, B, res = image_result
    xa, _, target, has = plotting._barycentric_positions(res.plan, A.shape, B.shape)
    assert has.sum() == 6
    rows_b, cols_b = np.nonzero(B)
    lo = np.array([rows_b.min(), cols_b.min()]) / 7 - 0.05
    hi = np.array([rows_b.max(), cols_b.max()]) / 7 + 0.05
    assert np.all((target[has] >= lo) & (target[has] <= hi))


def test_figures_leave_pyplot_alone(image_result):
    A, B, res = image_result
    plotting.plot_images(A, B, res.plan)
    plt = sys.modules.get("matplotlib.pyplot")
    assert plt is None or plt.get_fignums() == []


def test_missing_matplotlib_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r'pip install "snsot\[plot\]"'):
        plotting._figure()
