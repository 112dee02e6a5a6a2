"""Reading transport problems from files and writing results back.

This is the input and output layer of the command line: it turns files into
the pieces of an :class:`~snsot.OTProblem` (a cost and two weight vectors)
and turns an :class:`~snsot.OTResult` into JSON and plan files. Errors are
``ValueError`` (or ``OSError`` for a missing file) whose message names the
file and says what is wrong with it.

Inputs
------
A *point cloud* is an ``(n, d)`` array of ``n`` points in ``d`` dimensions,
from a ``.npy`` or ``.csv`` file (a 1-D array is ``n`` points on a line). Its
weights are uniform (``1/n`` each) unless a weights file is given.

A *histogram* is an array of non-negative intensities on a regular grid,
from a ``.npy`` array or a greyscale ``.png``/``.pgm`` image; the intensities,
normalised to total 1, are the weights of the grid's bins (pixels), and the
bins sit on :func:`snsot.costs.grid_points` (each axis scaled to [0, 1]).

``kind="auto"`` reads images as histograms; a 1-D array or a 2-D array with
at most 3 columns as a point cloud; a 2-D array with at least 8 columns as a
histogram. An array with 4 to 7 columns could be either (a 5-column array may
be points in 5-D or a small image): with a negative entry, which no histogram
has, it is a point cloud; otherwise ``"auto"`` refuses it and asks for
``kind``. Every :class:`Measure` says how it was read in
:attr:`Measure.note`, which the command line prints on stderr.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np

from . import costs

__all__ = [
    "Measure",
    "read_measure",
    "read_weights",
    "read_cost_matrix",
    "build_cost",
    "distance_from_cost",
    "result_record",
    "write_json",
    "jsonable",
    "save_plan",
    "load_plan",
    "IMAGE_SUFFIXES",
    "ARRAY_SUFFIXES",
    "KINDS",
    "SPARSE_THRESHOLD",
    "SPARSE_FRACTION",
]

IMAGE_SUFFIXES = (".png", ".pgm")
ARRAY_SUFFIXES = (".npy", ".csv")
KINDS = ("auto", "points", "histogram")

#: ``kind="auto"``: a 2-D array with at most this many columns is a point cloud.
AUTO_MAX_POINT_DIM = 3
#: ``kind="auto"``: a non-negative 2-D array with at least this many columns is a
#: histogram; between the two, the reading is ambiguous and refused.
AUTO_MIN_HISTOGRAM_COLUMNS = 8

#: Plan entries at or below this fraction of the largest entry count as negligible.
SPARSE_THRESHOLD = 1e-12
#: A plan is saved sparse when fewer than this fraction of its entries are not negligible.
SPARSE_FRACTION = 0.1

#: Largest dense cost matrix built from files (8 bytes an entry: 2 GB), so a
#: too-large input gets a clear error instead of a MemoryError.
MAX_COST_ENTRIES = 250_000_000


@dataclass
class Measure:
    """A weighted point cloud or a histogram read from a file.

    Attributes
    ----------
    label : str
        How error messages refer to it, e.g. ``"SOURCE (x.npy)"``.
    kind : {"points", "histogram"}
    weights : ndarray, shape (n,)
        Point weights, or the histogram flattened in C order (normalised to total 1).
    points : ndarray, shape (n, d), optional
        The points of a point cloud (``None`` for a histogram).
    grid_shape : tuple of int, optional
        The grid of a histogram (``None`` for a point cloud).
    path : str
        The file it came from.
    weights_path : str, optional
        The weights file of a point cloud, if one was given.
    note : str
        How the file was read and why, e.g. ``"read as 12 points in 2-D
        (auto: 2 columns; --kind histogram reads it as a histogram)"``.
    """

    label: str
    kind: str
    weights: np.ndarray
    points: np.ndarray | None = None
    grid_shape: tuple | None = None
    path: str = ""
    weights_path: str | None = None
    note: str = ""

    @property
    def size(self) -> int:
        """Number of points or bins."""
        return int(self.weights.size)

    @property
    def image(self) -> np.ndarray | None:
        """The weights of a 2-D histogram as an image, else ``None``."""
        if self.kind == "histogram" and len(self.grid_shape) == 2:
            return self.weights.reshape(self.grid_shape)
        return None

    def describe(self) -> dict:
        """A JSON-ready description (path, kind, size, shape)."""
        d = {"path": self.path, "kind": self.kind, "size": self.size}
        if self.kind == "points":
            d["dim"] = int(self.points.shape[1])
            d["weights"] = self.weights_path or "uniform"
        else:
            d["shape"] = [int(s) for s in self.grid_shape]
        return d


def _suffix(path) -> str:
    return os.path.splitext(str(path))[1].lower()


def _check_file(path, label):
    if not os.path.exists(path):
        raise FileNotFoundError(f"{label}: file not found")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{label}: is a folder, not a file")


def read_array(path, label: str | None = None) -> np.ndarray:
    """Read a numeric array from a ``.npy`` or ``.csv`` file.

    A ``.csv`` file may use commas or whitespace and may start with one header line.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a numeric array of one of these formats.
    """
    label = label or str(path)
    _check_file(path, label)
    suffix = _suffix(path)
    if suffix == ".npy":
        with open(path, "rb") as fh:
            if fh.read(6) != b"\x93NUMPY":  # np.load would otherwise try it as a pickle
                raise ValueError(f"{label}: cannot read as a .npy file (no NumPy header)")
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as exc:
            if "pickle" in str(exc):
                raise ValueError(
                    f"{label}: holds Python objects, which snsot does not load (pickled data); save a numeric array"
                ) from None
            raise ValueError(f"{label}: cannot read as a .npy file ({exc})") from None
        except (OSError, EOFError) as exc:
            raise ValueError(f"{label}: cannot read as a .npy file ({exc})") from None
    elif suffix == ".csv":
        arr = _read_csv(path, label)
    else:
        raise ValueError(
            f"{label}: unknown file type {suffix or '(no suffix)'!r}; "
            f"expected one of {', '.join(ARRAY_SUFFIXES + IMAGE_SUFFIXES)}"
        )
    if arr.dtype == bool:
        arr = arr.astype(np.float64)
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{label}: expected real numbers; found dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{label}: the array is empty (shape {arr.shape})")
    return np.asarray(arr, dtype=np.float64)


def _read_csv(path, label) -> np.ndarray:
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = [line for line in fh if line.strip()][:2]
    if not lines:
        raise ValueError(f"{label}: the file is empty (no numbers)")
    delimiter = "," if "," in lines[0] else None
    last_error = None
    for skip in (0, 1):  # one header line is allowed
        try:
            with warnings.catch_warnings():
                # an empty table is reported by read_array in one line, not as numpy's warning
                warnings.simplefilter("ignore", UserWarning)
                return np.loadtxt(path, delimiter=delimiter, skiprows=skip, ndmin=2, dtype=np.float64)
        except ValueError as exc:
            last_error = exc
    raise ValueError(f"{label}: cannot read as a table of numbers ({last_error})")


def read_image(path, label: str | None = None) -> np.ndarray:
    """Read a greyscale image (``.png`` or ``.pgm``) as a float array of intensities.

    Colour images are converted to luminance; an alpha channel is ignored.
    Needs Pillow.
    """
    label = label or str(path)
    _check_file(path, label)
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(f"{label}: reading images needs Pillow: pip install pillow") from None
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("L", "I", "F") and not img.mode.startswith("I;16"):
                img = img.convert("L")
            arr = np.asarray(img, dtype=np.float64)
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow raises all three on bad files
        raise ValueError(f"{label}: not a readable image ({exc})") from None
    return arr


def _histogram_weights(values: np.ndarray, label: str) -> np.ndarray:
    # Checked here rather than in OTProblem: normalising needs a finite,
    # non-negative, non-zero total, and the message should name the file.
    bad = ~np.isfinite(values)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{label}: intensities must be finite; found {float(values[idx])!r} at index {idx}")
    bad = values < 0
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{label}: intensities must be non-negative; found {float(values[idx])!r} at index {idx}")
    total = values.sum()
    if not total > 0:
        raise ValueError(f"{label}: all intensities are zero; there is no mass to transport")
    return (values / total).ravel()


def read_measure(path, kind: str = "auto", *, label: str | None = None, weights=None,
                 weights_label: str | None = None) -> Measure:
    """Read a point cloud or a histogram from a file.

    Parameters
    ----------
    path : str or path-like
        A ``.npy``/``.csv`` array or a ``.png``/``.pgm`` image.
    kind : {"auto", "points", "histogram"}
        How to read the file; see the module docstring for ``"auto"``,
        which refuses an array that could be either.
    label : str, optional
        Name used in error messages (default: the path).
    weights : str or path-like, optional
        A file of point weights (point clouds only); uniform when omitted.
    weights_label : str, optional
        Name of the weights file in error messages (default: its path).

    Returns
    -------
    Measure

    Raises
    ------
    FileNotFoundError, ValueError
        On a missing or unreadable file, a wrong shape or invalid intensities.
    """
    path = str(path)
    label = label or path
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}; got {kind!r}")
    suffix = _suffix(path)
    if suffix in IMAGE_SUFFIXES:
        if kind == "points":
            raise ValueError(f"{label}: an image cannot be read as a point cloud; use --kind histogram or auto")
        arr = read_image(path, label)
        why = "an image" if kind == "auto" else "--kind histogram"
        kind = "histogram"
    else:
        arr = read_array(path, label)
        if arr.ndim > 2:
            raise ValueError(
                f"{label}: expected a 1-D or 2-D array (points n x d, or a histogram); got shape {arr.shape}"
            )
        if kind == "auto":
            kind, why = _auto_kind(arr, label)
        else:
            why = f"--kind {kind}"

    if kind == "histogram":
        if weights is not None:
            raise ValueError(
                f"{label}: is a histogram, whose intensities are its weights; "
                "weights files apply to point clouds only"
            )
        note = f"read as a histogram on a {' x '.join(str(s) for s in arr.shape)} grid ({why})"
        return Measure(label, "histogram", _histogram_weights(arr, label), grid_shape=arr.shape, path=path,
                       note=note)

    points = arr[:, None] if arr.ndim == 1 else arr
    if not np.isfinite(points).all():
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(points))[0])
        raise ValueError(f"{label}: point coordinates must be finite; found {float(points[idx])!r} at index {idx}")
    n = points.shape[0]
    if weights is None:
        w, wpath = np.full(n, 1.0 / n), None
    else:
        weights_label = weights_label or str(weights)
        w, wpath = read_weights(weights, weights_label), str(weights)
        if w.size != n:
            raise ValueError(f"{weights_label}: has {w.size} weights but {label} has {n} points")
    note = f"read as {n} point{'s' if n != 1 else ''} in {points.shape[1]}-D ({why})"
    return Measure(label, "points", w, points=points, path=path, weights_path=wpath, note=note)


def _auto_kind(arr: np.ndarray, label: str) -> tuple[str, str]:
    """``kind="auto"``: ``("points" or "histogram", the reason in words)``, or refuse an ambiguous array."""
    if arr.ndim == 1:
        return "points", "auto: a 1-D array is points on a line; --kind histogram reads it as a histogram"
    rows, cols = arr.shape
    if cols <= AUTO_MAX_POINT_DIM:
        return "points", f"auto: {cols} column{'s' if cols > 1 else ''}; --kind histogram reads it as a histogram"
    if cols >= AUTO_MIN_HISTOGRAM_COLUMNS:
        return "histogram", f"auto: {cols} columns; --kind points reads it as {rows} points in {cols}-D"
    if arr.min() < 0:
        return "points", f"auto: {cols} columns with negative entries, which a histogram cannot have"
    raise ValueError(
        f"{label}: a {rows} x {cols} array could be {rows} points in {cols}-D or a {rows} x {cols} histogram; "
        "say which with --kind points or --kind histogram"
    )


def read_weights(path, label: str | None = None) -> np.ndarray:
    """Read a weight vector (a 1-D array, or one row or column) from ``.npy`` or ``.csv``.

    The values are not checked here: :class:`~snsot.OTProblem` checks them.
    """
    label = label or str(path)
    w = read_array(path, label)
    if w.ndim == 2 and 1 in w.shape:
        w = w.ravel()
    if w.ndim != 1:
        raise ValueError(f"{label}: weights must be a 1-D array; got shape {w.shape}")
    return w


def read_cost_matrix(path, label: str | None = None) -> np.ndarray:
    """Read a cost matrix from a ``.npy`` file (values are checked by :class:`~snsot.OTProblem`)."""
    label = label or str(path)
    if _suffix(path) != ".npy":
        raise ValueError(f"{label}: the cost matrix must be a .npy file")
    C = read_array(path, label)
    if C.ndim != 2:
        raise ValueError(f"{label}: the cost matrix must be 2-D (n, m); got shape {C.shape}")
    return C


def build_cost(source: Measure, target: Measure, metric="sqeuclidean") -> np.ndarray:
    """The cost matrix between two measures read from files.

    Point clouds use :func:`snsot.costs.pairwise`; histograms use
    :func:`snsot.costs.grid` (bins on [0, 1] per axis, so two images of
    different sizes are compared on the same square).

    Raises
    ------
    ValueError
        If one is a point cloud and the other a histogram, if the dimensions
        differ, or if the dense cost would be too large.
    """
    if source.kind != target.kind:
        raise ValueError(
            f"{target.label}: is a {target.kind.replace('points', 'point cloud')} but "
            f"{source.label} is a {source.kind.replace('points', 'point cloud')}; "
            "use two of the same kind (see --kind), or give --cost-matrix"
        )
    entries = source.size * target.size
    if entries > MAX_COST_ENTRIES:
        raise ValueError(
            f"problem too large: {source.size} x {target.size} = {entries:,} cost entries "
            f"(at most {MAX_COST_ENTRIES:,}; snsot works on dense cost matrices)"
        )
    if source.kind == "points":
        da, db = source.points.shape[1], target.points.shape[1]
        if da != db:
            raise ValueError(f"{target.label}: points have dimension {db} but {source.label} has {da}")
        return costs.pairwise(source.points, target.points, metric)
    if len(source.grid_shape) != len(target.grid_shape):
        raise ValueError(
            f"{target.label}: histogram has {len(target.grid_shape)} axes but "
            f"{source.label} has {len(source.grid_shape)}"
        )
    return costs.grid(source.grid_shape, metric, shape_b=target.grid_shape)


def distance_from_cost(cost: float, metric) -> float | None:
    r"""The transport distance implied by a transport cost :math:`\langle C, P\rangle`.

    ``"sqeuclidean"``: the cost is a squared 2-Wasserstein distance, so the
    distance is ``sqrt(cost)``; a power ``p``: ``cost ** (1/p)``;
    ``"euclidean"`` and ``"cityblock"``: the cost itself. ``None`` for a
    user-supplied cost matrix (``metric=None``), whose meaning is unknown.
    With an entropic plan this is the distance of that plan, which tends to
    the Wasserstein distance as ``reg`` goes to zero.
    """
    if metric is None or cost is None or not math.isfinite(cost):
        return None
    cost = max(float(cost), 0.0)
    if metric == "sqeuclidean":
        return math.sqrt(cost)
    if metric in ("euclidean", "cityblock"):
        return cost
    return cost ** (1.0 / float(metric))


def jsonable(x):
    """``x`` with numpy scalars as Python numbers and non-finite floats as ``None`` (JSON has no NaN)."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None  # JSON has no NaN or inf
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def result_record(result, *, metric=None, source: Measure | None = None, target: Measure | None = None,
                  cost_matrix: str | None = None) -> dict:
    """The JSON record of a solve: :meth:`OTResult.summary` plus ``distance`` and the inputs.

    ``metric`` is the cost's metric (``None`` for a cost-matrix file); see
    :func:`distance_from_cost` for how ``distance`` follows from ``cost``.
    Non-finite numbers become ``null``.
    """
    record = {"distance": distance_from_cost(result.cost, metric)}
    record.update(result.summary())
    record["cost_metric"] = metric if isinstance(metric, (str, type(None))) else float(metric)
    inputs = {}
    if source is not None:
        inputs["source"] = source.describe()
    if target is not None:
        inputs["target"] = target.describe()
    if cost_matrix is not None:
        inputs["cost_matrix"] = str(cost_matrix)
    record["inputs"] = inputs
    return jsonable(record)


def write_json(path, record: dict) -> None:
    """Write a JSON record (as from :func:`result_record`) to ``path``."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(jsonable(record), fh, indent=2)
        fh.write("\n")


def save_plan(path, plan: np.ndarray) -> str:
    """Save a transport plan to a ``.npz`` file, sparse when most entries are negligible.

    Entries at most ``SPARSE_THRESHOLD`` (1e-12) times the largest are
    negligible. When fewer than ``SPARSE_FRACTION`` (10%) of the entries are
    not negligible, the plan is saved with :func:`scipy.sparse.save_npz` as a
    CSR matrix *without* the negligible entries (the mass dropped is at most
    ``1e-12 * max * n * m``); otherwise it is saved dense with
    :func:`numpy.savez_compressed` under the key ``"plan"``.
    :func:`load_plan` reads either.

    Returns
    -------
    str
        ``"sparse"`` or ``"dense"``.
    """
    path = str(path)
    if _suffix(path) != ".npz":
        raise ValueError(f"--plan: the file name must end in .npz; got {path!r}")
    plan = np.asarray(plan)
    keep = plan > SPARSE_THRESHOLD * (plan.max() if plan.size else 0.0)
    if keep.sum() < SPARSE_FRACTION * plan.size:
        from scipy import sparse

        sparse.save_npz(path, sparse.csr_matrix(np.where(keep, plan, 0.0)), compressed=True)
        return "sparse"
    np.savez_compressed(path, plan=plan)
    return "dense"


def load_plan(path, dense: bool = True):
    """Read a plan written by :func:`save_plan`; a dense array unless ``dense=False``."""
    with np.load(path, allow_pickle=False) as data:
        if "plan" in data.files:
            return data["plan"]
    from scipy import sparse

    P = sparse.load_npz(path)
    return P.toarray() if dense else P
