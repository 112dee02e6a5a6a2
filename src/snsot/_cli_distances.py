"""``snsot distances``: the distance matrix between many image or histogram files.

Thin, like the rest of the command: read the files with :mod:`snsot.io`,
call :func:`snsot.distances`, report. Errors travel up to
:func:`snsot.cli.main`, which prints them as one line (exit status 2).
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from fractions import Fraction

import numpy as np

from . import costs
from . import io as sio
from .distances import VALUES, distances

DESCRIPTION = (
    "Entropic transport values between every pair of FILES (greyscale .png/.pgm images, or .npy histograms, "
    "all on the same grid; pixel positions span [0, 1] per axis). Each unordered pair is solved once, to --tol. "
    "The matrix is written to --out as results arrive (NaN where not known yet), so a stopped run continues "
    "with --resume."
)

NOTES = """
files written beside --out D.npy: D.npy.json (the problem's fingerprint: --resume
  refuses a file from other inputs or options), D.npy.solves.npy (one row per solve),
  and D.npy.files.txt (the input files, in the order of the rows).
a cluster: start 'dask scheduler' on one machine and 'dask worker tcp://HOST:8786'
  on each machine (snsot installed everywhere), then pass --scheduler tcp://HOST:8786.
"""


def _files(patterns):
    paths = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise ValueError(f"{pattern}: no file matches")
        paths.extend(matches)
    if len(paths) < 2:
        raise ValueError(f"FILES: need at least 2 files; got {len(paths)}")
    return paths


def _number(text):
    """A float written as a decimal or a fraction such as 1/1200 (its sign and size are checked later)."""
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number such as 1e-3 or 1/1200; got {text!r}") from None


def _write_files(out, paths):
    """The input files in row order, beside the matrix (written once the out file is known to be ours)."""
    with open(out + ".files.txt", "w") as fh:
        fh.write("\n".join(paths) + "\n")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILES_OR_GLOB", help="image or .npy histogram files, or quoted globs")
    p.add_argument("--out", required=True, metavar="D.npy", help="the (k, k) matrix, written as results arrive")
    p.add_argument("--reg", type=_number, default=1e-3, help="entropic regularisation, e.g. 1e-3 or 1/1200 "
                   "(default 1e-3; pixels span [0, 1] per axis)")
    p.add_argument("--value", choices=VALUES, default="cost",
                   help="cost <C, P> (default), the entropic objective, or the Sinkhorn divergence")
    p.add_argument("--cost", default="sqeuclidean", metavar="METRIC",
                   help="ground cost between pixels: sqeuclidean (default), euclidean, cityblock or a power p")
    p.add_argument("--tol", type=float, default=1e-9, help="target L1 marginal error per pair (default 1e-9)")
    p.add_argument("--method", default="sns", help="solver (default sns)")
    p.add_argument("--engine", choices=("threads", "processes", "dask"), default=None,
                   help="threads of this process (default), or Dask (a local cluster unless --scheduler)")
    p.add_argument("--scheduler", metavar="tcp://HOST:8786", help="address of a running Dask scheduler")
    p.add_argument("--n-jobs", type=int, default=None, help="threads, or local Dask workers (default: one per core)")
    p.add_argument("--resume", action="store_true", help="continue an --out file of the same problem")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no report")


def run(args) -> int:
    from .cli import EXIT_INTERRUPTED, EXIT_NOT_CONVERGED, EXIT_OK

    paths = _files(args.files)
    measures = [sio.read_measure(path, "histogram") for path in paths]
    shape = measures[0].grid_shape
    for path, m in zip(paths, measures):
        if m.grid_shape != shape:
            raise ValueError(f"{path}: has {'x'.join(map(str, m.grid_shape))} bins but {paths[0]} has "
                             f"{'x'.join(map(str, shape))}; all histograms must share their grid")
    metric = args.cost
    try:
        metric = float(metric)
    except ValueError:
        pass
    C = costs.grid(shape, metric)
    X = np.stack([m.weights for m in measures])
    engine = "dask" if args.scheduler or args.engine == "dask" else "threads"
    try:
        D, info = distances(X, C=C, reg=args.reg, value=args.value, tol=args.tol, method=args.method, engine=engine,
                            client=args.scheduler, n_jobs=args.n_jobs, out=args.out, resume=args.resume,
                            progress=False if args.quiet else None, return_info=True)
        _write_files(args.out, paths)
    except KeyboardInterrupt:
        _write_files(args.out, paths)
        print(f"\nsnsot distances: interrupted; finished pairs are kept in {args.out}: "
              "run the same command with --resume to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    summary = {"out": args.out, "files": len(paths), "shape": list(D.shape), "value": args.value, "reg": args.reg,
               "tol": args.tol, "solves": info.n_solves, "solved_now": info.n_solved,
               "converged": int(info.converged.sum()), "entries": int(info.converged.size),
               "total_iter": info.total_iter, "time": info.time,
               "solves_per_second": info.n_solved / info.time if info.time > 0 else None,
               "engine": info.engine, "workers": info.n_workers}
    if args.json:
        print(json.dumps(summary))
    elif not args.quiet:
        print(f"{args.out}: {D.shape[0]} x {D.shape[1]} {args.value} matrix; {info.n_solved} of {info.n_solves} "
              f"solves done now in {info.time:.3g} s on {info.engine} x {info.n_workers}; "
              f"{summary['converged']}/{summary['entries']} entries converged")
    if not info.converged.all():
        print(f"snsot distances: warning: {summary['entries'] - summary['converged']} entries did not reach "
              f"--tol {args.tol:g}", file=sys.stderr)
        return EXIT_NOT_CONVERGED
    return EXIT_OK


def main(argv) -> int:
    """``snsot distances ...``; parsing errors raise :class:`snsot.cli.UsageError`."""
    from .cli import EPILOG, _common, _Parser

    parser = _Parser(prog="snsot distances", description=DESCRIPTION, epilog=EPILOG + NOTES,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    _common(parser)
    return run(parser.parse_args(argv))
