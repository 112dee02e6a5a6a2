"""Can the allowed pairs of a cost with ``+inf`` entries carry the weights?

A cost of ``+inf`` forbids a pair: the plan must be 0 there. A plan with
marginals ``a`` and ``b`` supported on the allowed pairs exists if and only
if, for every set ``R`` of rows, the columns reachable from ``R`` through
allowed pairs carry at least ``a(R)`` (Hall's condition for transport; the
max-flow min-cut theorem). :func:`check_feasible` tests this with a maximum
flow source -> rows (capacity ``a_i``) -> allowed pairs (unbounded) ->
columns (capacity ``b_j``) -> sink, and names the first offending row or
column when it fails.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

__all__ = ["check_feasible"]

#: Integer scale of the flow network: the mass becomes about 2**30 units (int32 capacities).
_UNITS = 2**30


def _indices(idx, limit=5) -> str:
    shown = ", ".join(str(int(i)) for i in idx[:limit])
    return f"[{shown}{', ...' if len(idx) > limit else ''}]"


def check_feasible(C: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Raise ``ValueError`` naming ``C`` unless a plan on the finite entries of ``C`` can have marginals ``a``, ``b``.

    The per-row and per-column tests are exact. Scattered forbidden pairs
    are then certified feasible by a two-vector bound (see the comment in
    the code); only dense patterns of forbidden pairs pay for a maximum
    flow on the allowed pairs. The global (Hall) test
    rounds the weights to integers in a way that can only make the problem
    *easier* (rows rounded down, columns up), so it never refuses a feasible
    problem; a pattern that is infeasible only by a relative ``1e-9`` of the
    mass may pass it (the solve then reports ``converged=False``).

    Raises
    ------
    ValueError
        ``"C: row 3 carries mass 0.25 but its cost to every column with mass is +inf ..."``,
        the same for a column, or a set of rows whose allowed columns carry less mass.
    """
    rows, cols = np.flatnonzero(a > 0), np.flatnonzero(b > 0)
    allowed = np.isfinite(C[np.ix_(rows, cols)])
    for axis, index, weights, name, other in ((1, rows, a, "row", "column"), (0, cols, b, "column", "row")):
        empty = ~allowed.any(axis=axis)
        if empty.any():
            k = int(index[np.argmax(empty)])
            raise ValueError(
                f"C: {name} {k} carries mass {weights[k]:.6g} but its cost to every {other} with mass is +inf "
                f"(forbidden), so no plan can have these marginals"
            )
    if allowed.all():
        return
    mass = float(a.sum())
    # A cheap certificate first. A violating row set R misses a column set Z
    # entirely, so every row of R forbids all of Z and every column of Z all
    # of R: b(Z) <= d * mass and a(R) <= e * mass, where d (e) is the largest
    # forbidden fraction of a row (column). Violation needs a(R) > mass - b(Z)
    # >= (1 - d) mass, so d + e <= 1 (with a margin for round-off) proves
    # feasibility without a flow; scattered forbidden pairs pass here.
    forbidden = ~allowed
    d = float((forbidden @ b[cols]).max()) / mass
    e = float((a[rows] @ forbidden).max()) / mass
    if d + e <= 1.0 - 1e-9:
        return

    nr, nc = len(rows), len(cols)
    # Rounding that can only help: a feasible problem stays feasible (scale each
    # row's flow down to its floor; columns only lose load), so a flow short of
    # the rows' total proves infeasibility.
    row_cap = np.floor(a[rows] / mass * _UNITS * (1 - 1e-12)).astype(np.int64)
    col_cap = np.ceil(b[cols] / mass * _UNITS * (1 + 1e-12)).astype(np.int64)
    if row_cap.sum() == 0:
        return
    source, sink = 0, 1 + nr + nc
    pair_r, pair_c = np.nonzero(allowed)
    unbounded = int(row_cap.sum())  # no pair can carry more than all the rows' mass
    head = np.concatenate([np.zeros(nr, np.int64), 1 + pair_r, 1 + nr + np.arange(nc)])
    tail = np.concatenate([1 + np.arange(nr), 1 + nr + pair_c, np.full(nc, sink)])
    cap = np.concatenate([row_cap, np.full(len(pair_r), unbounded), col_cap]).astype(np.int32)
    size = sink + 1
    graph = sparse.csr_array((cap, (head, tail)), shape=(size, size))
    result = maximum_flow(graph, source, sink)
    if result.flow_value >= row_cap.sum():
        return

    # The source side of a minimum cut: rows R whose allowed columns N(R) carry less than a(R).
    flow = sparse.csr_array(result.flow)
    residual = (sparse.csr_array((cap, (head, tail)), shape=(size, size)) - flow).tocsr()
    residual.data[residual.data < 0] = 0
    residual.eliminate_zeros()
    reached = breadth_first_order(residual, source, directed=True, return_predecessors=False)
    R = np.sort(reached[(reached >= 1) & (reached <= nr)] - 1)
    N = np.sort(reached[(reached > nr) & (reached < sink)] - 1 - nr)
    bad_rows, bad_cols = rows[R], cols[N]
    raise ValueError(
        f"C: the pairs with finite cost cannot carry the weights: rows {_indices(bad_rows)} (first offending "
        f"row {int(bad_rows[0])}) hold mass {a[bad_rows].sum():.6g} but may only send it to columns "
        f"{_indices(bad_cols)}, which hold {b[bad_cols].sum():.6g}"
    )
