"""Issue 14's GIL figures for one or more source trees, side by side, in one command: writes GIL.md.

    python benchmarks/gil_report.py --src before=/tmp/base/src --src after=$PWD/src \\
        [--digits 40] [--pairs 200] [--rounds 2] [--solves 78] [--out benchmarks/GIL.md]

For each round and each tree in turn (so that a change in the machine's load
hits all alike), a subprocess with that tree on PYTHONPATH runs
``benchmarks/gil_share.py`` (share of a one-thread MNIST solve outside the
nogil kernels; Python per Sinkhorn step and per small solve) and
``benchmarks/gil_threads.py`` (threads x2 / x1 on the same MNIST pairs, and
the two-thread workers' time blocked on the GIL). Medians over rounds are
reported. A "before" tree is any checkout's ``src``, e.g.
``git archive c0cd432 src | tar -x -C /tmp/base``. About 2 minutes per tree
and round on a quiet 2-core machine at the defaults.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _run(src: str, script: str, args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(Path(src).resolve()))
    out = subprocess.run([sys.executable, str(HERE / script), *args, "--json"], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", action="append", required=True, help="NAME=PATH of a source tree (repeatable)")
    parser.add_argument("--digits", type=int, default=40)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--solves", type=int, default=78, help="MNIST solves timed by gil_share (at most 78)")
    parser.add_argument("--out", type=Path, default=HERE / "GIL.md")
    args = parser.parse_args()
    trees = [s.split("=", 1) for s in args.src]
    results = {name: [] for name, _ in trees}
    started, load = time.perf_counter(), os.getloadavg()[0]
    for r in range(args.rounds):
        for name, src in trees:
            share = _run(src, "gil_share.py", [str(args.solves)])
            threads = _run(src, "gil_threads.py", ["--digits", str(args.digits), "--pairs", str(args.pairs),
                                                   "--rounds", "1"])
            results[name].append({**share, **threads})
            print(f"round {r + 1}, {name}: ratio x2/x1 {threads['ratio']:.3f}, outside kernels "
                  f"{100 * share['outside_share_cpu']:.1f}% CPU", flush=True)
    columns = [
        ("one-thread MNIST solve, ms (CPU)", "cpu_ms_per_solve", "{:.1f}"),
        ("outside the kernels, % of CPU", "outside_share_cpu", "{:.1%}"),
        ("outside the kernels, ms CPU/solve", "outside_cpu_ms_per_solve", "{:.2f}"),
        ("Python per Sinkhorn step, us (16x16)", "python_us_per_sinkhorn_step", "{:.1f}"),
        ("whole small solve, us (16x16)", "us_per_small_solve", "{:.0f}"),
        ("threads x1, solves/s", "x1_per_second", "{:.1f}"),
        ("threads x2, solves/s", "x2_per_second", "{:.1f}"),
        ("threads x2 / x1", "ratio", "{:.3f}"),
        ("x2 workers blocked (GIL)", "share_blocked", "{:.1%}"),
        ("x2 workers waiting for a core", "share_waiting", "{:.1%}"),
    ]
    names = [n for n, _ in trees]
    lines = ["# GIL-held share of a solve and thread scaling (issue 14)", "",
             "Command: `python benchmarks/gil_report.py " + " ".join(sys.argv[1:]) + "`", "",
             f"MNIST digits, grid cost |x - y|^2, reg 1/1200, tol 1e-9; {args.rounds} round(s), trees interleaved, "
             f"medians; {os.cpu_count()} CPUs, load average {load:.2f} before and {os.getloadavg()[0]:.2f} after, "
             f"{time.perf_counter() - started:.0f} s in all. Threads: {args.pairs} pairs of {args.digits} digits, "
             "runs interleaved 1, 2, 2, 1.", "",
             "| measure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, key, fmt in columns:
        cells = []
        for name in names:
            vals = [r[key] for r in results[name] if key in r]
            cells.append(fmt.format(statistics.median(vals)) if vals else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Outside the kernels: a one-thread solve's time not spent in snsot's numba kernels (Python and "
              "NumPy between them, which hold the GIL but for NumPy's loops over large arrays), from "
              "`benchmarks/gil_share.py`. Blocked / waiting: /proc/thread-self/schedstat shares of the two-thread "
              "workers' time (blocked: not runnable, i.e. waiting for the GIL; waiting: runnable but no free core, "
              "i.e. other jobs). On a loaded machine the thread ratio is a lower bound; the CPU shares are not "
              "affected."]
    args.out.write_text("\n".join(lines) + "\n")
    (args.out.with_suffix(".json")).write_text(json.dumps(results, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
