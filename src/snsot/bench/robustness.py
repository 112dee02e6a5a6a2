"""Does SNS hold up against plain Sinkhorn on every problem and reg? One verdict per cell.

The claim checked, per (problem, reg) cell of the sweep: SNS with default
options reaches the benchmark's L1 tolerance, and

* where snsot's Sinkhorn is *easy* (it converges in fewer than
  :data:`EASY_ITERATIONS` iterations), SNS takes at most :data:`EASY_RATIO`
  times Sinkhorn's time;
* everywhere else (*hard*) SNS is faster than Sinkhorn.

A hard cell where SNS never left Sinkhorn (no Newton step, as many Sinkhorn
steps as Sinkhorn took) is a ``tie``: both did the same work, and a ratio
within :data:`EASY_RATIO` is timing noise. It is counted apart, as neither
a pass nor a failure.

Where both converged and Sinkhorn took under a second, the ratio comes from
a second measurement with the two solvers' runs taken in turn: the median
of the ratios of neighbouring runs (``paired_*`` fields of the SNS row),
which a shared machine's slow spells cannot bias; elsewhere from the two
rows' own medians.

Everything is computed from the measured rows. Sinkhorn stopped at the time
cap (``capped``), stopped without reaching the tolerance (``not
converged``), or not run because it was capped at a larger reg
(``skipped``, which carries that bound) has only a lower bound on its time
and iterations; the ratio SNS/Sinkhorn is then an upper bound, and the cell
passes only if the bound alone settles it (ratio < 1). A cell the numbers
cannot settle either way is ``undecided``, never a pass.
"""

from __future__ import annotations

#: Sinkhorn converging in fewer iterations than this is "easy".
EASY_ITERATIONS = 50
#: Where Sinkhorn is easy, SNS may take at most this multiple of its time.
EASY_RATIO = 1.5

SNS, SINKHORN = "snsot-sns", "snsot-sinkhorn"


def judge(sns: dict | None, sinkhorn: dict | None) -> dict:
    """The verdict for one cell from its SNS row and its Sinkhorn row.

    Parameters
    ----------
    sns, sinkhorn : dict or None
        Benchmark rows (as :func:`snsot.bench.measure` returns them, or a
        skipped row with ``time_bound``); None where the method has no row.

    Returns
    -------
    dict
        ``outcome`` ("pass", "tie", "fail" or "undecided"), ``verdict`` (the text
        the report shows), ``kind`` ("easy", "hard", or "" when Sinkhorn's
        iterations do not say), ``ratio`` (SNS time / Sinkhorn time, or None)
        and ``ratio_bound`` ("<" when ``ratio`` is an upper bound, else "").
    """
    out = dict(kind="", ratio=None, ratio_bound="", paired=False)
    if sns is None or sns.get("status") != "ok":
        why = "not run" if sns is None else sns.get("status", "no status")
        return {**out, "outcome": "fail", "verdict": f"FAIL: SNS {why}"}
    status = (sinkhorn or {}).get("status", "")
    if status == "ok":
        kind = "easy" if sinkhorn["n_iter"] < EASY_ITERATIONS else "hard"
        if sns.get("paired_runs"):  # runs taken in turn: the ratio the machine's slow spells cannot bias
            ratio = sns["paired_ratio"]
        else:
            ratio = sns["time"] / sinkhorn["time"]
        out.update(kind=kind, ratio=ratio, paired=bool(sns.get("paired_runs")))
        if kind == "easy":
            ok = ratio <= EASY_RATIO
            text = f"easy: ratio <= {EASY_RATIO:g} ok" if ok else f"FAIL: easy, ratio > {EASY_RATIO:g}"
        elif _same_iterations(sns, sinkhorn) and ratio <= EASY_RATIO:
            # SNS's switch kept it in Sinkhorn to the end: the same iterations,
            # the same work; the ratio is timing noise, neither a win nor a loss.
            return {**out, "outcome": "tie", "verdict": "tie: SNS ran Sinkhorn's own iterations"}
        else:
            ok = ratio < 1
            text = "hard: faster ok" if ok else "FAIL: hard, SNS not faster"
        return {**out, "outcome": "pass" if ok else "fail", "verdict": text}
    if status in ("capped", "not converged") or (sinkhorn and "time_bound" in sinkhorn):
        # Sinkhorn needs more than bound_time seconds and more than bound_iters iterations.
        bound_time = sinkhorn.get("time_bound", sinkhorn.get("time"))
        bound_iters = sinkhorn.get("n_iter_bound", sinkhorn.get("n_iter"))
        kind = "hard" if bound_iters is not None and bound_iters >= EASY_ITERATIONS else ""
        ratio = sns["time"] / bound_time
        out.update(kind=kind, ratio=ratio, ratio_bound="<")
        if ratio < 1:  # faster for certain, which also meets the easy criterion
            return {**out, "outcome": "pass", "verdict": f"{kind}: faster ok" if kind else "faster ok"}
        return {**out, "outcome": "undecided", "verdict": "undecided: Sinkhorn stopped before SNS finished"}
    why = "not run" if sinkhorn is None else status or "no status"
    return {**out, "outcome": "undecided", "verdict": f"undecided: Sinkhorn {why}"}


def _same_iterations(sns, sinkhorn) -> bool:
    """SNS took no Newton step and as many Sinkhorn steps as Sinkhorn itself."""
    return sns.get("n_newton") == 0 and sns.get("n_sinkhorn") is not None \
        and sns.get("n_sinkhorn") == sinkhorn.get("n_iter")


def cells(rows) -> list[dict]:
    """One record per (problem, reg) with an SNS or Sinkhorn row: both rows' numbers and :func:`judge`'s verdict.

    Problems keep their order in ``rows``; regs run largest first.
    """
    by_key = {(r["problem"], r["reg"], r["method"]): r for r in rows}
    problems = list(dict.fromkeys(r["problem"] for r in rows))
    regs = sorted({r["reg"] for r in rows}, reverse=True)
    out = []
    for problem in problems:
        for reg in regs:
            sns, sinkhorn = by_key.get((problem, reg, SNS)), by_key.get((problem, reg, SINKHORN))
            if sns is None and sinkhorn is None:
                continue
            sns, sinkhorn = sns or {}, sinkhorn or {}
            bounded = sinkhorn.get("status") != "ok" and ("time" in sinkhorn or "time_bound" in sinkhorn)
            out.append(dict(
                problem=problem, reg=reg, shape=(sns or sinkhorn).get("shape"),
                sns_status=sns.get("status"), sns_l1_error=sns.get("l1_error"), sns_time=sns.get("time"),
                sns_n_sinkhorn=sns.get("n_sinkhorn"), sns_n_newton=sns.get("n_newton"),
                sinkhorn_status=sinkhorn.get("status"), sinkhorn_l1_error=sinkhorn.get("l1_error"),
                sinkhorn_time=sinkhorn.get("time", sinkhorn.get("time_bound")),
                sinkhorn_n_iter=sinkhorn.get("n_iter", sinkhorn.get("n_iter_bound")),
                # ">": Sinkhorn needs more than sinkhorn_time seconds and sinkhorn_n_iter iterations
                sinkhorn_bound=">" if bounded else "",
                sinkhorn_bound_reg=sinkhorn.get("bound_reg"),  # set where the bound comes from a larger reg
                # interleaved re-timing (see snsot.bench.measure.measure_paired), where it was run
                paired_sns_time=sns.get("paired_sns_time"), paired_sinkhorn_time=sns.get("paired_sinkhorn_time"),
                paired_ratio=sns.get("paired_ratio"), paired_runs=sns.get("paired_runs"),
                **judge(sns or None, sinkhorn or None)))
    return out


def summary(records) -> dict:
    """Counts over the cells: total, pass / tie / fail / undecided, and SNS converged."""
    count = {k: sum(r["outcome"] == k for r in records) for k in ("pass", "tie", "fail", "undecided")}
    return dict(cells=len(records), passed=count["pass"], tied=count["tie"], failed=count["fail"],
                undecided=count["undecided"],
                sns_converged=sum(r["sns_status"] == "ok" for r in records),
                easy_iterations=EASY_ITERATIONS, easy_ratio=EASY_RATIO)
