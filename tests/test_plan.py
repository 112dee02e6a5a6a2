"""The plan interface is sufficient: a second, pure-numpy Plan driven by the same loops gives the same iterates.

``NumpyPlan`` recomputes ``P(f, g)`` from ``C`` in plain numpy at every
call: no stored base, no numba kernels, no CSR. If the loops in
``sinkhorn.py`` and ``sns.py`` used anything beyond the interface, or if
:class:`~snsot.solvers._dense.DensePlan` computed something else than the
interface says, the two runs would part.
"""

import numpy as np
import pytest
from scipy.special import logsumexp

import snsot
from snsot import _reference as ref
from snsot.problem import OTProblem
from snsot.solvers._plan import WHOLE_PLAN, FinalPlan, Plan, PlanPoint, SinkhornStep, base_scalings
from snsot.solvers.linalg import OffDiagonal, SchurComplement

from strategies import make_problem


class _Block(OffDiagonal):
    """A dense numpy matrix as the off-diagonal block; CG is the generic :func:`~snsot.solvers.linalg.pcg`."""

    def __init__(self, S):
        self.S, self.shape = S, S.shape

    def matvec(self, y):
        return self.S @ y

    def schur(self, d_row, d_col, w):
        schur = SchurComplement()
        S = self.S
        schur.matvec = lambda y: ref.schur_matvec(S, d_row, d_col, y)
        elim, sq = ref.schur_setup(S, d_row, w)
        diag = d_col - sq
        schur.inv_diag = 1.0 / np.where(diag > 0, diag, d_col)
        return schur, elim


class _Point(PlanPoint):
    def __init__(self, n, m, quota):
        super().__init__(n, m, quota)
        self.kept = None  # the candidates: the plan where kept, 0 elsewhere
        self.P = None

    @property
    def fullest_row(self):
        return 0 if self.kept is None else int((self.kept > 0).sum(axis=1).max())


class NumpyPlan(Plan):
    def __init__(self, problem):
        self.problem = problem

    shape = property(lambda self: self.problem.shape)
    support_size = property(lambda self: self.problem.shape[0] * self.problem.shape[1])
    max_row_length = property(lambda self: self.problem.shape[1])

    def attach(self, problem):
        self.problem = problem

    def _P(self, f, g):
        with np.errstate(over="ignore"):
            return ref.plan(self.problem.C, f, g, self.problem.reg)

    def sinkhorn_cols(self, f, marginals):
        p = self.problem
        return marginals.col_exponent * (p.reg * marginals.log_b - p.reg * logsumexp((f[:, None] - p.C) / p.reg, axis=0))

    def sinkhorn_step(self, f, g, marginals):
        p = self.problem
        row = self._P(f, g).sum(axis=1)
        f_new = marginals.row_exponent * (p.reg * marginals.log_a - p.reg * logsumexp((g[None, :] - p.C) / p.reg, axis=1))
        return SinkhornStep(marginals.row_error(f, row), lambda: (f_new, self.sinkhorn_cols(f_new, marginals)))

    def new_point(self, quota):
        return _Point(*self.problem.shape, quota)

    def evaluate(self, point, f, g, tau, pinned=False):
        P = self._P(f, g)
        point.row, point.col = P.sum(axis=1), P.sum(axis=0)
        if not np.isfinite(P).all():
            point.row[:], point.col[:] = np.inf, np.inf
        point.count = int((P >= tau).sum()) if point.quota == WHOLE_PLAN else -1
        point.P = P
        if point.quota > 0:
            point.kept = np.where(ref.large_entries(P, tau, point.quota), P, 0.0)
        point.f, point.g, point.total = f, g, float(point.row.sum())
        return point

    def hessian_block(self, point, tau):
        if not np.isfinite(point.P).all():
            return None
        if point.quota == WHOLE_PLAN:
            return _Block(point.P)
        return _Block(np.where(point.kept >= tau, point.kept, 0.0))

    def final(self, f, g):
        P = self._P(f, g)
        return FinalPlan(P, P.sum(axis=1), P.sum(axis=0), float((self.problem.C * P).sum()))


def _both(method, C, a, b, reg, **options):
    problem = OTProblem(C, a, b, reg)
    with np.errstate(all="ignore"):
        numpy_run = snsot.solve(problem, method=method, _plan=NumpyPlan(problem), warn=False, **options)
    return snsot.solve(problem, method=method, warn=False, **options), numpy_run


CASES = {
    "sinkhorn": ("sinkhorn", 41, (40, 30), 5e-2, {}),
    "sns sparse Hessian": ("sns", 42, (60, 45), 2e-3, dict(hessian="sparse")),
    "sns dense Hessian": ("sns", 43, (50, 40), 1e-2, dict(hessian="dense")),
    "sns auto, rectangular": ("sns", 44, (30, 70), 2e-3, {}),
    "sns paper variant": ("sns", 45, (50, 50), 2e-3, dict(variant="paper", sparsity=0.1, n_warmup=5)),
    "sns epsilon-scaling": ("sns", 46, (40, 35), 1e-4, dict(eps_scaling=True)),
    "sns small quota grows": ("sns", 47, (60, 60), 5e-3, dict(hessian="sparse", switch_horizon=0)),
}


@pytest.mark.parametrize("case", CASES)
def test_a_numpy_plan_through_the_same_loop_gives_the_same_iterates(case):
    method, seed, shape, reg, options = CASES[case]
    p = make_problem(seed, *shape, reg, cost="sqeuclidean")
    dense, numpy_run = _both(method, p.C, p.a, p.b, p.reg, tol=1e-10, **options)
    assert dense.converged and numpy_run.converged
    assert (numpy_run.n_sinkhorn, numpy_run.n_newton) == (dense.n_sinkhorn, dense.n_newton)
    if method == "sns" and case != "sinkhorn":
        assert dense.n_newton > 0
    h1, h2 = dense.history.marginal_error, numpy_run.history.marginal_error
    # the same path: every recorded error agrees while it is well above round-off
    big = h1 > 1e-7
    np.testing.assert_allclose(h2[big], h1[big], rtol=1e-4)
    np.testing.assert_allclose(numpy_run.plan, dense.plan, rtol=0, atol=1e-12)
    assert numpy_run.objective == pytest.approx(dense.objective, rel=1e-12)


class CsrFinalPlan(NumpyPlan):
    """A plan that hands back its final plan in CSR form, as a sparse-support plan does."""

    def final(self, f, g):
        import scipy.sparse as sp

        out = super().final(f, g)
        out.plan = sp.csr_matrix(np.where(out.plan >= 1e-300, out.plan, 0.0))
        return out


@pytest.mark.parametrize("method", snsot.available_methods())
def test_a_sparse_final_plan_reaches_the_result_with_zero_mass_bins_put_back(method):
    import scipy.sparse as sp

    from checks import check_result

    p = make_problem(48, 25, 30, 5e-2, cost="sqeuclidean", weights="random", zero_a=3, zero_b=2)
    problem = OTProblem(p.C, p.a, p.b, p.reg)
    res = snsot.solve(problem, method=method, tol=1e-10, _plan=CsrFinalPlan(problem))
    dense = snsot.solve(problem, method=method, tol=1e-10)
    assert sp.issparse(res.plan) and res.plan.shape == (25, 30)
    check_result(res, p.C, p.a, p.b, 1e-10, method=method)
    np.testing.assert_allclose(res.plan.toarray(), dense.plan, rtol=0, atol=1e-12)
    assert res.summary()["shape"] == [25, 30]


@pytest.mark.parametrize("seed, drift, near", [(0, 0.5, True), (1, 40.0, True), (2, 90.0, True), (3, 150.0, False)])
def test_base_scalings_are_numpys_centred_rule_bit_for_bit(seed, drift, near):
    # the kernel behind base_scalings (the shift, the drift test) and NumPy's exp give the numpy rule's exact bits
    rng = np.random.default_rng(seed)
    n, m, reg = 31, 17, 0.01
    f0, g0 = rng.normal(size=n), rng.normal(size=m)
    f = f0 + reg * rng.uniform(-drift, drift, n) / 2 + 3.0  # the +-3 moves along (1, -1): centred away
    g = g0 + reg * rng.uniform(-drift, drift, m) / 2 - 3.0
    got = base_scalings(f, g, f0, g0, reg, 100.0)
    want = ref.centred_scalings(f, g, f0, g0, reg, 100.0)
    assert (got is not None) == (want is not None) == near
    if near:
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        assert got[2] == want[2]
