"""snsot.io: files become the cost and weights the library expects, and results go back out."""

import json
import math
import warnings

import numpy as np
import pytest

import snsot
from snsot import costs
from snsot import io as sio


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ---------------------------------------------------------------- reading


def test_points_from_npy_and_csv_agree(tmp_path, rng):
    x = rng.random((7, 2))
    np.save(tmp_path / "x.npy", x)
    np.savetxt(tmp_path / "x.csv", x, delimiter=",", header="u,v", comments="")  # one header line
    np.savetxt(tmp_path / "ws.csv", x)  # whitespace-separated
    for name in ("x.npy", "x.csv", "ws.csv"):
        m = sio.read_measure(tmp_path / name)
        assert m.kind == "points"
        np.testing.assert_allclose(m.points, x, rtol=1e-15)
        np.testing.assert_array_equal(m.weights, np.full(7, 1 / 7))


def test_auto_reads_wide_arrays_as_histograms_and_narrow_ones_as_points(tmp_path):
    np.save(tmp_path / "wide.npy", np.ones((5, 8)))
    np.save(tmp_path / "narrow.npy", np.ones((5, 3)))
    assert sio.read_measure(tmp_path / "wide.npy").kind == "histogram"
    assert sio.read_measure(tmp_path / "narrow.npy").kind == "points"
    assert sio.read_measure(tmp_path / "narrow.npy", "histogram").kind == "histogram"
    assert sio.read_measure(tmp_path / "wide.npy", "points").points.shape == (5, 8)


@pytest.mark.parametrize("cols", [4, 5, 6, 7])
def test_auto_refuses_a_non_negative_array_that_could_be_points_or_a_histogram(tmp_path, rng, cols):
    # issue 11: a 4- or 5-column .npy of points used to be read as a histogram without a word
    np.save(tmp_path / "p.npy", rng.random((100, cols)))
    with pytest.raises(ValueError, match=rf"p\.npy: a 100 x {cols} array could be 100 points in {cols}-D or a "
                                         rf"100 x {cols} histogram; say which with --kind points or --kind histogram"):
        sio.read_measure(tmp_path / "p.npy")
    assert sio.read_measure(tmp_path / "p.npy", "points").points.shape == (100, cols)
    assert sio.read_measure(tmp_path / "p.npy", "histogram").grid_shape == (100, cols)


def test_auto_reads_an_ambiguous_width_with_negative_entries_as_points(tmp_path, rng):
    np.save(tmp_path / "p.npy", rng.standard_normal((50, 5)))
    m = sio.read_measure(tmp_path / "p.npy")
    assert m.kind == "points" and m.points.shape == (50, 5)
    assert "negative entries" in m.note


@pytest.mark.parametrize(
    "array, kind, note",
    [
        (np.ones((12, 2)), "auto", "read as 12 points in 2-D (auto: 2 columns; --kind histogram reads it as a histogram)"),
        (np.ones(7), "auto", "read as 7 points in 1-D (auto: a 1-D array is points on a line;"),
        (np.ones((9, 10)), "auto", "read as a histogram on a 9 x 10 grid (auto: 10 columns; --kind points reads it"),
        (np.ones((6, 5)), "points", "read as 6 points in 5-D (--kind points)"),
        (np.ones((6, 5)), "histogram", "read as a histogram on a 6 x 5 grid (--kind histogram)"),
    ],
)
def test_every_measure_says_how_it_was_read_and_why(tmp_path, array, kind, note):
    np.save(tmp_path / "m.npy", array)
    assert sio.read_measure(tmp_path / "m.npy", kind).note.startswith(note)


@pytest.mark.parametrize("text", ["", "\n\n  \n", "u,v\n"])
def test_an_empty_csv_is_one_clean_error_without_numpy_warnings(tmp_path, text):
    (tmp_path / "e.csv").write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "input contained no data" would fail here
        with pytest.raises(ValueError, match=r"e\.csv: (the file is empty \(no numbers\)|the array is empty)"):
            sio.read_measure(tmp_path / "e.csv")


def test_histogram_weights_are_intensities_normalised_with_zeros_kept(tmp_path):
    h = np.array([[0.0, 1.0, 3.0, 0.0], [2.0, 0.0, 0.0, 4.0]])
    np.save(tmp_path / "h.npy", h)
    m = sio.read_measure(tmp_path / "h.npy", "histogram")
    assert m.grid_shape == (2, 4)
    np.testing.assert_allclose(m.weights, h.ravel() / 10.0)
    np.testing.assert_allclose(m.image, h / 10.0)
    assert m.describe() == {"path": str(tmp_path / "h.npy"), "kind": "histogram", "size": 8, "shape": [2, 4]}


def test_images_png_and_pgm_are_read_as_greyscale_histograms(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    img = np.zeros((6, 5), dtype=np.uint8)
    img[1:4, 2] = [10, 20, 30]
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(img).save(tmp_path / "a.pgm")
    rgb = np.repeat(img[:, :, None], 3, axis=2)  # grey in colour: luminance equals the grey level
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    for name in ("a.png", "a.pgm", "rgb.png"):
        m = sio.read_measure(tmp_path / name)
        assert m.kind == "histogram" and m.grid_shape == (6, 5)
        np.testing.assert_allclose(m.weights, img.ravel() / 60.0, atol=1e-12)


def test_sixteen_bit_images_keep_their_levels(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    img = np.array([[0, 1000], [3000, 60000]], dtype=np.uint16)
    Image.fromarray(img).save(tmp_path / "deep.png")
    np.testing.assert_allclose(sio.read_image(tmp_path / "deep.png"), img)


def test_weights_files_are_read_for_points(tmp_path, rng):
    np.save(tmp_path / "x.npy", rng.random((4, 2)))
    np.savetxt(tmp_path / "w.csv", [[0.1], [0.2], [0.3], [0.4]])  # a column is fine
    m = sio.read_measure(tmp_path / "x.npy", weights=tmp_path / "w.csv")
    np.testing.assert_allclose(m.weights, [0.1, 0.2, 0.3, 0.4])
    assert m.describe()["weights"] == str(tmp_path / "w.csv")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.npy", "file not found"),
        (lambda d: d, "is a folder"),
        (lambda d: _write(d / "x.txt", b"1 2"), "unknown file type '.txt'"),
        (lambda d: _save(d / "cube.npy", np.zeros((2, 2, 2))), "expected a 1-D or 2-D array"),
        (lambda d: _save(d / "empty.npy", np.zeros((0, 2))), "the array is empty"),
        (lambda d: _save(d / "text.npy", np.array(["a", "b"])), "expected real numbers"),
        (lambda d: _save(d / "obj.npy", np.array([{}, 1], dtype=object)), "holds Python objects"),
        (lambda d: _write(d / "junk.npy", b"not numpy"), "cannot read as a .npy file"),
        (lambda d: _write(d / "words.csv", b"a,b\nc,d\n"), "cannot read as a table of numbers"),
        (lambda d: _write(d / "bad.png", b"not an image"), "not a readable image"),
        (lambda d: _save(d / "nan.npy", np.array([[1.0, np.nan, 1, 1, 1, 1, 1, 1]])), "intensities must be finite; found nan"),
        (lambda d: _save(d / "neg.npy", np.array([[1.0, -2, 1, 1, 1, 1, 1, 1]])), "intensities must be non-negative; found -2.0"),
        (lambda d: _save(d / "zero.npy", np.zeros((8, 8))), "all intensities are zero"),
        (lambda d: _save(d / "nanpts.npy", np.array([[0.0, np.inf]])), "point coordinates must be finite"),
    ],
)
def test_unreadable_inputs_raise_errors_naming_the_file(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises((ValueError, OSError), match="^SOURCE: .*" + _re(message)):
        sio.read_measure(path, label="SOURCE")


def test_image_cannot_be_a_point_cloud_and_histograms_take_no_weights_file(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.ones((3, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    np.save(tmp_path / "w.npy", np.ones(9) / 9)
    with pytest.raises(ValueError, match="an image cannot be read as a point cloud"):
        sio.read_measure(tmp_path / "a.png", "points")
    with pytest.raises(ValueError, match="weights files apply to point clouds only"):
        sio.read_measure(tmp_path / "a.png", weights=tmp_path / "w.npy")


def test_weights_of_the_wrong_length_or_shape_are_refused(tmp_path, rng):
    np.save(tmp_path / "x.npy", rng.random((4, 2)))
    np.save(tmp_path / "w3.npy", np.ones(3))
    np.save(tmp_path / "w22.npy", np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"^--weights-a: has 3 weights but SOURCE has 4 points"):
        sio.read_measure(tmp_path / "x.npy", label="SOURCE", weights=tmp_path / "w3.npy", weights_label="--weights-a")
    with pytest.raises(ValueError, match=r"weights must be a 1-D array; got shape \(2, 2\)"):
        sio.read_measure(tmp_path / "x.npy", weights=tmp_path / "w22.npy")


def test_cost_matrix_must_be_a_2d_npy(tmp_path):
    np.save(tmp_path / "c1.npy", np.ones(3))
    np.savetxt(tmp_path / "c.csv", np.ones((2, 2)))
    with pytest.raises(ValueError, match="must be 2-D"):
        sio.read_cost_matrix(tmp_path / "c1.npy")
    with pytest.raises(ValueError, match="must be a .npy file"):
        sio.read_cost_matrix(tmp_path / "c.csv")


# ---------------------------------------------------------------- costs


def test_build_cost_uses_pairwise_for_points_and_grid_for_histograms(rng):
    x, y = rng.random((5, 2)), rng.random((6, 2))
    px = sio.Measure("x", "points", np.full(5, 0.2), points=x)
    py = sio.Measure("y", "points", np.full(6, 1 / 6), points=y)
    np.testing.assert_array_equal(sio.build_cost(px, py, "euclidean"), costs.pairwise(x, y, "euclidean"))
    ha = sio.Measure("a", "histogram", np.full(12, 1 / 12), grid_shape=(3, 4))
    hb = sio.Measure("b", "histogram", np.full(10, 0.1), grid_shape=(5, 2))
    np.testing.assert_array_equal(sio.build_cost(ha, hb, 1.5), costs.grid((3, 4), 1.5, shape_b=(5, 2)))


def test_build_cost_refuses_mixed_kinds_and_dimensions(rng):
    p2 = sio.Measure("P2", "points", np.full(3, 1 / 3), points=rng.random((3, 2)))
    p3 = sio.Measure("P3", "points", np.full(3, 1 / 3), points=rng.random((3, 3)))
    h2 = sio.Measure("H2", "histogram", np.full(4, 0.25), grid_shape=(2, 2))
    h1 = sio.Measure("H1", "histogram", np.full(4, 0.25), grid_shape=(4,))
    with pytest.raises(ValueError, match="^H2: is a histogram but P2 is a point cloud"):
        sio.build_cost(p2, h2)
    with pytest.raises(ValueError, match="^P3: points have dimension 3 but P2 has 2"):
        sio.build_cost(p2, p3)
    with pytest.raises(ValueError, match="^H1: histogram has 1 axes but H2 has 2"):
        sio.build_cost(h2, h1)


def test_too_large_problems_get_a_clear_error(monkeypatch):
    monkeypatch.setattr(sio, "MAX_COST_ENTRIES", 10)
    h = sio.Measure("H", "histogram", np.full(4, 0.25), grid_shape=(2, 2))
    with pytest.raises(ValueError, match="problem too large: 4 x 4 = 16 cost entries"):
        sio.build_cost(h, h)


# ---------------------------------------------------------------- outputs


@pytest.mark.parametrize(
    "metric, cost, distance",
    [("sqeuclidean", 0.25, 0.5), ("euclidean", 0.25, 0.25), ("cityblock", 2.0, 2.0), (3.0, 8.0, 2.0), (None, 1.0, None)],
)
def test_distance_is_the_cost_to_the_power_one_over_p(metric, cost, distance):
    assert sio.distance_from_cost(cost, metric) == distance


def test_result_record_is_the_summary_plus_distance_and_inputs(rng):
    x = rng.random((6, 2))
    res = snsot.solve(costs.pairwise(x, x[::-1] + 0.2), reg=0.05)
    m = sio.Measure("x", "points", np.full(6, 1 / 6), points=x, path="x.npy")
    record = sio.result_record(res, metric="sqeuclidean", source=m, target=m)
    for key, value in res.summary().items():
        assert record[key] == value
    assert record["distance"] == pytest.approx(math.sqrt(res.cost), rel=1e-15)
    assert record["inputs"]["source"] == {"path": "x.npy", "kind": "points", "size": 6, "dim": 2, "weights": "uniform"}
    json.dumps(record, allow_nan=False)  # strict JSON


def test_json_has_no_nan_or_inf(tmp_path):
    sio.write_json(tmp_path / "r.json", {"a": float("nan"), "b": [np.float64(np.inf), np.int64(3)], "c": np.bool_(True)})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": None, "b": [None, 3], "c": True}


def test_a_mostly_negligible_plan_is_saved_sparse_and_reads_back(tmp_path):
    P = np.diag(np.full(50, 0.02))
    P[0, 1] = 1e-20  # negligible: dropped
    assert sio.save_plan(tmp_path / "p.npz", P) == "sparse"
    back = sio.load_plan(tmp_path / "p.npz")
    np.testing.assert_array_equal(back, np.diag(np.full(50, 0.02)))
    assert sio.load_plan(tmp_path / "p.npz", dense=False).nnz == 50


def test_a_dense_plan_is_saved_dense_exactly(tmp_path, rng):
    P = rng.random((8, 9))
    assert sio.save_plan(tmp_path / "p.npz", P) == "dense"
    np.testing.assert_array_equal(sio.load_plan(tmp_path / "p.npz"), P)


def test_plan_files_must_end_in_npz(tmp_path):
    with pytest.raises(ValueError, match="must end in .npz"):
        sio.save_plan(tmp_path / "p.npy", np.eye(2))


# ---------------------------------------------------------------- helpers


def _save(path, arr):
    np.save(path, arr)
    return path


def _write(path, data):
    path.write_bytes(data)
    return path


def _re(text):
    import re

    return re.escape(text)
