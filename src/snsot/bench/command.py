"""``snsot bench`` / ``python -m snsot.bench``: options, the run, and the files it writes."""

from __future__ import annotations

import argparse
import json
import sys
import time
from fractions import Fraction
from pathlib import Path

from .. import datasets
from . import robustness
from .config import (ALL_PROBLEMS, DEFAULT_REG, DEFAULT_TOL, HEADLINE_PROBLEMS, METHODS, PEER_SWEEP_MAX_ENTRIES,
                     SCALING_NEWTON_REG, SCALING_SIZES, SWEEP_METHODS, SWEEP_REGS, _QUICK)
from .figures import _safe, plot_convergence, plot_scaling
from .measure import measure_cold_start, run_grid, run_scaling, run_sweep
from .report import _jsonable, _reg_label, _report, machine_info, markdown_table, write_csv


def _parse_reg(text):
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"reg: expected a positive number such as 1e-3 or 1/1200; got {text!r}")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"reg: must be positive; got {text!r}")
    return value


def _parse_list(choices):
    def parse(text):
        items = [s.strip() for s in text.split(",") if s.strip()]
        if items == ["all"] and choices is METHODS:
            return list(METHODS)
        if items == ["all"]:
            return list(ALL_PROBLEMS)
        bad = [s for s in items if s not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad[0]!r}; choose from {', '.join(choices)} or 'all'")
        return items
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``snsot bench`` options to ``parser``."""
    parser.add_argument("--problems", type=_parse_list(tuple(datasets.PROBLEMS)), default=None,
                        help="comma-separated problem names or 'all', every registered one (default: %s)"
                        % ",".join(HEADLINE_PROBLEMS))
    parser.add_argument("--methods", type=_parse_list(METHODS), default=None,
                        help="comma-separated methods or 'all' (default: all): %s" % ", ".join(METHODS))
    parser.add_argument("--reg", type=_parse_reg, nargs="+", default=None,
                        help="regularisation(s), e.g. 1e-3 or 1/1200 (default: 1/1200)")
    parser.add_argument("--tol", type=float, default=DEFAULT_TOL,
                        help="L1 marginal error every method must reach (default: %(default)g)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs after the warm-up; faster solves get more, "
                        "as many as fit in half a second, at most 21 (default: 3)")
    parser.add_argument("--time-cap", type=float, default=None,
                        help="seconds per method and problem before it is stopped (default: 60)")
    parser.add_argument("--sweep", action="store_true",
                        help="also sweep reg over %s on every chosen problem with %s, and with %s on problems "
                        "up to %d entries; adds the SNS vs Sinkhorn robustness table"
                        % (", ".join(_reg_label(r) for r in SWEEP_REGS), ", ".join(SWEEP_METHODS[:2]),
                           ", ".join(SWEEP_METHODS[2:]), PEER_SWEEP_MAX_ENTRIES))
    parser.add_argument("--scaling", action="store_true",
                        help="also time SNS on random assignment with n in %s" % ", ".join(map(str, SCALING_SIZES)))
    parser.add_argument("--torch", action="store_true",
                        help="instead: the issue-12 report in one run, the Sinkhorn divergence with gradients "
                        "(snsot.torch vs GeomLoss and POT's torch backend; needs torch) and unbalanced SNS vs "
                        "Sinkhorn (ours, POT's) at reg 1e-3 and 1e-4 (or --reg); writes TORCH.md and torch.json "
                        "and links them from RESULTS.md")
    parser.add_argument("--torch-sizes", type=lambda t: [int(v) for v in t.split(",")], default=None,
                        help="comma-separated cloud sizes for --torch (default: 1000,5000; --quick: 300)")
    parser.add_argument("--geomloss-scalings", type=lambda t: [float(v) for v in t.split(",")], default=None,
                        help="comma-separated GeomLoss annealing factors for --torch (default: 0.5,0.9; "
                        "those above 0.5 run up to n=2000 only)")
    parser.add_argument("--quick", action="store_true",
                        help="small problems, 1 repeat, 3 s cap, small sweep and scaling: under a minute")
    parser.add_argument("--unbalanced", action="store_true",
                        help="instead: unbalanced OT (reg_m = 1), SNS vs Sinkhorn vs POT's sinkhorn_unbalanced at reg "
                        "1e-3 and 1e-4 (or --reg) to --tol (default there 1e-9); writes unbalanced.md and .json")
    parser.add_argument("--seed", type=int, default=0, help="problem seed (MNIST: index of the digit pair)")
    parser.add_argument("--threads", type=int, default=None, help="n_threads for snsot (default: its own choice)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    parser.add_argument("--distances", action="store_true",
                        help="instead: snsot.distances throughput on MNIST (threads, Dask) against POT's batch "
                             "solver and joblib loops (see snsot.bench.distances)")
    parser.add_argument("--digits", type=int, default=30, help="--distances: MNIST digits, all pairs (default 30)")
    parser.add_argument("--peer-pairs", type=int, default=6, help="--distances: pairs for the peers (default 6)")
    parser.add_argument("--pot-iter", type=int, default=300,
                        help="--distances: iteration cap of POT's Sinkhorn solvers (default 300)")
    parser.add_argument("--sample-pairs", type=int, default=1000,
                        help="--distances: random pairs timed on 1 and 2 workers (default 1000; the whole matrix "
                             "runs on 2 threads and on Dask)")
    parser.add_argument("--pointcloud", action="store_true",
                        help="instead: 2-D point clouds on a truncated support vs dense SNS and POT's lazy solvers "
                        "(writes POINTCLOUD.md, pointcloud.json, pointcloud_scaling.png)")
    parser.add_argument("--pointcloud-sizes", type=lambda t: [int(v) for v in t.split(",") if v], default=[10_000, 100_000],
                        help="comma-separated n for --pointcloud (default: 10000,100000)")
    parser.add_argument("--pointcloud-regs", type=lambda t: [float(v) for v in t.split(",")], default=None,
                        help="comma-separated reg per size for --pointcloud (default: 1e-4 up to 10^4 points, 1e-5 up "
                        "to 10^5, 1e-6 beyond)")
    parser.add_argument("--pointcloud-huge", action="store_true",
                        help="--pointcloud: also n = 10^6 at reg 1e-6, truncated SNS only (target 15 minutes); "
                        "with --pointcloud-sizes '' it runs alone and keeps the other sizes' rows in pointcloud.json")
    parser.add_argument("--pointcloud-dims", type=lambda t: [int(v) for v in t.split(",")], default=[],
                        help="--pointcloud: also truncated vs dense SNS at n = 4000, reg 1e-3 in these dimensions")
    parser.add_argument("--peer-time-cap", type=float, default=60.0,
                        help="--pointcloud: seconds each peer (POT, GeomLoss) may run (default 60)")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks"),
                        help="where RESULTS.md, results.csv, results.json and the PNGs go (default: %(default)s)")


def run(args: argparse.Namespace, log=None) -> int:
    """Run the benchmark described by parsed ``args``; returns the exit code."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if getattr(args, "distances", False):
        from . import distances

        return distances.run(args, log)
    if getattr(args, "pointcloud", False):
        from . import pointcloud

        sizes = list(args.pointcloud_sizes)
        regs = list(args.pointcloud_regs or [pointcloud.default_reg(n) for n in sizes])
        if len(regs) != len(sizes):
            log("bench: --pointcloud-regs needs one reg per size")
            return 2
        if args.pointcloud_huge:
            sizes.append(pointcloud.HUGE[0])
            regs.append(pointcloud.HUGE[1])
        pointcloud.run(sizes, regs, args.tol, Path(args.out_dir), seed=args.seed, plots=not args.no_plots, log=log,
                       peer_timeout=args.peer_time_cap, dims=args.pointcloud_dims)
        return 0
    quick = bool(getattr(args, "quick", False))
    cfg = dict(
        problems=args.problems or list(_QUICK["problems"] if quick else HEADLINE_PROBLEMS),
        methods=args.methods or list(METHODS),
        regs=args.reg or list(_QUICK["regs"] if quick else (DEFAULT_REG,)),
        tol=args.tol,
        repeats=args.repeats if args.repeats is not None else (_QUICK["repeats"] if quick else 3),
        time_cap=args.time_cap if args.time_cap is not None else (_QUICK["time_cap"] if quick else 60.0),
        seed=args.seed,
        options={} if args.threads is None else {"n_threads": args.threads},
    )
    if not (cfg["tol"] > 0 and cfg["repeats"] >= 1 and cfg["time_cap"] > 0):
        log("bench: --tol and --time-cap must be positive and --repeats at least 1")
        return 2
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if getattr(args, "torch", False):
        return _run_torch(args, out_dir, quick, log)
    if getattr(args, "unbalanced", False):
        from . import unbalanced

        rows = unbalanced.run(out_dir, quick=quick, regs=args.reg,
                              tol=unbalanced.TOL if args.tol == DEFAULT_TOL else args.tol,
                              repeats=cfg["repeats"], cap=args.time_cap if args.time_cap is not None else
                              (cfg["time_cap"] if quick else 30.0), seed=args.seed, log=log)
        print((out_dir / "unbalanced.md").read_text())
        return 0 if rows else 1
    cache = {"problems": {}, "rows": {}}
    started = time.perf_counter()

    # Load (or compile) the kernels once so the first timed problem does not pay
    # for it; each problem still has its own warm-up run.
    from ..solvers import _warm_up

    _warm_up()

    rows, traces = run_grid(cfg["problems"], cfg["regs"], cfg["methods"], cfg, cache, log)
    sweep_rows = []
    if args.sweep or quick:
        sweep_problems = list(_QUICK["sweep_problems"]) if quick else cfg["problems"]
        sweep_methods = [m for m in SWEEP_METHODS if m in cfg["methods"]]
        regs = sorted(set(_QUICK["sweep_regs"] if quick else SWEEP_REGS), reverse=True)
        sweep_rows, _ = run_sweep(sweep_problems, regs, sweep_methods, cfg, cache, log)
    # In fresh processes, so before or after the grid makes no difference to it.
    cold_rows = measure_cold_start(log)
    scaling_rows = []
    if args.scaling or quick:
        scaling_rows = run_scaling(_QUICK["scaling_sizes"] if quick else SCALING_SIZES, cfg["regs"][0], cfg, cache, log,
                                   newton_reg=SCALING_NEWTON_REG)

    figures = []
    if not args.no_plots:
        for problem in cfg["problems"]:
            for reg in cfg["regs"]:
                group = {m: traces[(problem, reg, m)] for m in cfg["methods"] if (problem, reg, m) in traces}
                if group:
                    path = out_dir / _safe(f"convergence-{problem}-reg{_reg_label(reg).replace('/', '_')}.png")
                    plot_convergence(path, f"{problem}, reg = {_reg_label(reg)}, tol = {cfg['tol']:g}", group,
                                     cfg["tol"])
                    figures.append(path.name)
        if scaling_rows:
            plot_scaling(out_dir / "scaling.png", [r for r in scaling_rows if r["reg"] == cfg["regs"][0]])
            figures.append("scaling.png")

    elapsed = time.perf_counter() - started
    command = getattr(args, "command_line", None) or "python -m snsot.bench " + " ".join(sys.argv[1:])
    info = machine_info()
    problems = [cache["problems"][p] for p in cfg["problems"]]
    # SNS vs Sinkhorn per problem and reg: from the sweep, or from the main grid without one.
    has_pair = {"snsot-sns", "snsot-sinkhorn"} <= set(cfg["methods"])
    records = robustness.cells(sweep_rows or rows) if has_pair else []
    report = _report(command, info, cfg, rows, sweep_rows, scaling_rows, problems, figures, elapsed, records,
                     cache["problems"], cold_rows)
    if (out_dir / TORCH_REPORT).exists():  # a grid rerun keeps the link to the --torch report
        report += "\n" + _torch_link(out_dir)
    (out_dir / "RESULTS.md").write_text(report)
    write_csv(out_dir / "results.csv", rows + sweep_rows + scaling_rows)
    if records:
        write_csv(out_dir / "robustness.csv", records)
    payload = dict(command=command, machine=info, config={k: v for k, v in cfg.items()}, elapsed=elapsed,
                   rows=rows, sweep=sweep_rows, scaling=scaling_rows, cold_start=cold_rows, figures=figures,
                   robustness=dict(summary=robustness.summary(records), cells=records) if records else None,
                   memory_floor={p.name: dict(read_time=p.read_time, bytes=p.C.nbytes) for p in problems})
    (out_dir / "results.json").write_text(json.dumps(_jsonable(payload), indent=1))
    print(markdown_table(rows))
    return 0


TORCH_REPORT = "TORCH.md"
_TORCH_BEGIN, _TORCH_END = "<!-- snsot bench --torch: begin -->", "<!-- snsot bench --torch: end -->"


def _torch_link(out_dir: Path) -> str:
    """The RESULTS.md block that points at TORCH.md and repeats its verdict lines."""
    text = (out_dir / TORCH_REPORT).read_text()
    verdicts = [line for line in text.splitlines() if line.startswith("- n=")]
    return "\n".join([_TORCH_BEGIN, "## PyTorch divergence and unbalanced OT (issue 12)", "",
                      f"Tables, settings and the command: [{TORCH_REPORT}]({TORCH_REPORT}) (written by "
                      "`snsot bench --torch`). Against the fastest peer at a gradient error of 1e-6:", "",
                      *verdicts, _TORCH_END, ""])


def _run_torch(args, out_dir: Path, quick: bool, log) -> int:
    """``snsot bench --torch``: divergence and unbalanced tables into TORCH.md, linked from RESULTS.md."""
    from . import unbalanced
    from .divergence import DIVERGENCE_REGS, DIVERGENCE_SIZES, GEOMLOSS_SCALINGS, markdown_divergence, run_divergence

    command = getattr(args, "command_line", None) or "snsot bench " + " ".join(sys.argv[2:])
    started = time.perf_counter()
    sizes = args.torch_sizes or ([300] if quick else list(DIVERGENCE_SIZES))
    regs = args.reg or list(DIVERGENCE_REGS)
    scalings = tuple(args.geomloss_scalings or ((0.5,) if quick else GEOMLOSS_SCALINGS))
    # POT's run in the divergence table; the unbalanced table caps each method at min(this, 10 s)
    # (SNS takes ~1 s there, so a 10 s cap still shows a > 10x gap), to keep the run near 10 minutes.
    cap = args.time_cap if args.time_cap is not None else (5.0 if quick else 20.0)
    if min(sizes) < 2 or not cap > 0:
        log("bench: --torch-sizes must be at least 2 and --time-cap positive")
        return 2
    torch_rows = run_divergence(sizes, regs, seed=args.seed, repeats=args.repeats or 3, time_cap=cap, log=log,
                                scalings=scalings)
    unb_rows = unbalanced.run(out_dir, quick=quick, regs=regs,
                              tol=unbalanced.TOL if args.tol == DEFAULT_TOL else args.tol,
                              repeats=args.repeats or (1 if quick else 3), cap=min(cap, 10.0), seed=args.seed,
                              log=log)
    elapsed = time.perf_counter() - started
    text = (markdown_divergence(torch_rows, command) + "\n" + (out_dir / "unbalanced.md").read_text()
            .replace("# Unbalanced OT", "## Unbalanced OT", 1)
            + f"\nTotal time of `{command}`: {elapsed:.0f} s.\n")
    (out_dir / TORCH_REPORT).write_text(text)
    (out_dir / "torch.json").write_text(json.dumps(_jsonable(dict(command=command, elapsed=elapsed,
                                                                  divergence=torch_rows, unbalanced=unb_rows)),
                                                   indent=1))
    results = out_dir / "RESULTS.md"
    old = results.read_text() if results.exists() else ""
    if _TORCH_BEGIN in old and _TORCH_END in old:
        head, rest = old.split(_TORCH_BEGIN, 1)
        old = head.rstrip("\n") + "\n" + rest.split(_TORCH_END, 1)[1].lstrip("\n")
    results.write_text((old.rstrip("\n") + "\n\n" if old.strip() else "") + _torch_link(out_dir))
    print(text)
    return 0


def main(argv=None) -> int:
    """``python -m snsot.bench``: the same as ``snsot bench``."""
    # The package's docstring, as ``snsot bench --help`` shows it.
    description = sys.modules[__package__].__doc__.split("\n")[0]
    parser = argparse.ArgumentParser(prog="python -m snsot.bench", description=description)
    add_arguments(parser)
    args = parser.parse_args(argv)
    args.command_line = "python -m snsot.bench " + " ".join(sys.argv[1:] if argv is None else argv)
    return run(args)

