"""snsot.torch: exact gradients of the OT value, the plan and the Sinkhorn divergence.

Oracles: torch.autograd.gradcheck (central finite differences), finite
differences of snsot.solve's objective on NumPy arrays, POT's ``ot.solve``
(envelope gradients) and POT's Sinkhorn unrolled through autograd at a
``reg`` where it converges, GeomLoss where installed.
"""

import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import snsot  # noqa: E402
import snsot.torch as st  # noqa: E402

F64 = torch.float64


def _problem(n, m, seed, zero_rows=(), zero_cols=()):
    rng = np.random.default_rng(seed)
    C = rng.random((n, m))
    a, b = rng.random(n) + 0.1, rng.random(m) + 0.1
    a[list(zero_rows)] = 0
    b[list(zero_cols)] = 0
    return C, a / a.sum(), b / b.sum()


def _t(x, grad=False):
    return torch.tensor(x, dtype=F64, requires_grad=grad)


def test_import_snsot_does_not_import_torch():
    code = "import sys, snsot; snsot.solve([[0.0, 1.0], [1.0, 0.0]], reg=0.5); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------ ot_loss ---

def test_ot_loss_gradcheck_cost_and_weights():
    C, a, b = _problem(7, 5, 0)
    # Weights through a softmax keep sum a = sum b = 1 under the finite differences.
    loss = lambda C, al, be: st.ot_loss(C, torch.softmax(al, 0), torch.softmax(be, 0), reg=0.1, tol=1e-13)
    assert torch.autograd.gradcheck(loss, (_t(C, True), _t(np.log(a), True), _t(np.log(b), True)),
                                     eps=1e-6, atol=1e-7)


def test_ot_loss_value_and_cost_gradient_are_solve_objective_and_plan():
    C, a, b = _problem(9, 6, 1)
    Ct = _t(C, True)
    value = st.ot_loss(Ct, _t(a), _t(b), reg=0.05, tol=1e-12)
    value.backward()
    res = snsot.solve(C, a, b, reg=0.05, tol=1e-12)
    assert value.item() == pytest.approx(res.objective, rel=1e-12)
    np.testing.assert_allclose(Ct.grad.numpy(), res.plan, rtol=0, atol=1e-14)


def test_cost_gradient_matches_central_differences_of_the_objective():
    C, a, b = _problem(6, 8, 2)
    reg, h = 0.05, 1e-6
    Ct = _t(C, True)
    st.ot_loss(Ct, _t(a), _t(b), reg=reg, tol=1e-13).backward()
    for i, j in [(0, 0), (3, 5), (5, 7)]:
        E = np.zeros_like(C)
        E[i, j] = h
        fd = (snsot.solve(C + E, a, b, reg=reg, tol=1e-13).objective
              - snsot.solve(C - E, a, b, reg=reg, tol=1e-13).objective) / (2 * h)
        assert Ct.grad[i, j].item() == pytest.approx(fd, abs=1e-8)


def test_ot_loss_gradients_match_pot_envelope():
    ot = pytest.importorskip("ot")
    C, a, b = _problem(8, 6, 3)
    reg = 0.5  # POT's Sinkhorn converges here to round-off
    ours = [_t(C, True), _t(a, True), _t(b, True)]
    st.ot_loss(*ours, reg=reg, tol=1e-13).backward()
    pot = [_t(C, True), _t(a, True), _t(b, True)]
    ot.solve(pot[0], pot[1], pot[2], reg=reg, reg_type="entropy", grad="envelope", max_iter=100000, tol=1e-14
             ).value.backward()
    np.testing.assert_allclose(ours[0].grad.numpy(), pot[0].grad.numpy(), atol=1e-10)
    # POT centres each potential to mean 0; along weights that stay on the simplex only
    # the centred parts matter, so compare those.
    for mine, theirs in zip(ours[1:], pot[1:]):
        mine = mine.grad.numpy()
        np.testing.assert_allclose(mine - mine.mean(), theirs.grad.numpy(), atol=1e-9)


def test_weight_gradients_follow_the_centring_convention():
    C, a, b = _problem(5, 9, 4)
    at, bt = _t(a, True), _t(b, True)
    st.ot_loss(_t(C), at, bt, reg=0.1, tol=1e-12).backward()
    assert at.grad.sum().item() == pytest.approx(bt.grad.sum().item(), abs=1e-12)


def test_zero_mass_bin_gets_the_divergence_one_sided_derivative():
    # d OT / d a_i is -inf on an empty bin (the entropy's a_i log a_i); ot_loss returns its
    # finite part, and the divergent parts cancel in the divergence, which is checked here.
    rng = np.random.default_rng(5)
    x, y = rng.random((6, 2)), rng.random((5, 2))
    a, b = _problem(6, 5, 5, zero_rows=[2])[1:]
    reg, t = 0.1, 1e-7
    at = _t(a, True)
    st.sinkhorn_divergence(_t(x), _t(y), at, _t(b), reg=reg, tol=1e-14).backward()
    assert np.isfinite(at.grad.numpy()).all()

    def div(w):
        ot = lambda p, q, u, v: snsot.solve(snsot.costs.pairwise(p, q), u, v, reg=reg, tol=1e-14).objective
        return ot(x, y, w, b) - 0.5 * ot(x, x, w, w) - 0.5 * ot(y, y, b, b)

    moved = a.copy()  # move mass t from bin 0 to the empty bin 2: a one-sided difference
    moved[2] += t
    moved[0] -= t
    assert at.grad[2].item() - at.grad[0].item() == pytest.approx((div(moved) - div(a)) / t, abs=1e-5)


def _unbalanced_problem(n=5, m=4, seed=7):
    rng = np.random.default_rng(seed)
    C = snsot.costs.pairwise(rng.random((n, 2)), rng.random((m, 2)))
    return C, rng.random(n) + 0.2, 2.0 * (rng.random(m) + 0.2)  # totals differ


@pytest.mark.parametrize("reg_m", [1.0, (0.5, 2.0), (float("inf"), 1.0)])
def test_unbalanced_ot_loss_gradients_pass_gradcheck(reg_m):
    C, a, b = _unbalanced_problem()
    inputs = (_t(C, True), _t(a, True), _t(b, True))
    assert torch.autograd.gradcheck(lambda C, a, b: st.ot_loss(C, a, b, reg=0.2, reg_m=reg_m, tol=1e-13),
                                    inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_unbalanced_ot_loss_plan_gradient_is_pots_unbalanced_plan_and_value_is_the_primal():
    ot = pytest.importorskip("ot")
    from snsot.solvers._kl_marginals import unbalanced_primal

    C, a, b = _unbalanced_problem(6, 5, seed=3)
    reg, rho = 0.1, 0.7
    Ct = _t(C, True)
    value = st.ot_loss(Ct, _t(a), _t(b), reg=reg, reg_m=rho, tol=1e-13)
    value.backward()
    P_pot = ot.unbalanced.sinkhorn_unbalanced(a, b, C, reg, rho, reg_type="entropy", numItermax=100_000, stopThr=1e-15)
    np.testing.assert_allclose(Ct.grad.numpy(), P_pot, rtol=1e-7, atol=1e-12)
    # the value is the optimum of the primal (strong duality), evaluated at POT's plan
    assert value.item() == pytest.approx(unbalanced_primal(C, P_pot, a, b, reg, (rho, rho)), rel=1e-8, abs=1e-10)


def test_bad_reg_m_is_named_before_solving():
    C, a, b = _unbalanced_problem()
    for fn in (st.ot_loss, st.ot_plan):
        with pytest.raises(ValueError, match="reg_m"):
            fn(_t(C), _t(a), _t(b), reg=0.1, reg_m=-1.0)


@pytest.mark.parametrize("reg_m", [1.0, (0.5, 2.0), (float("inf"), 1.0), (1.0, float("inf"))])
def test_unbalanced_ot_plan_gradients_pass_gradcheck(reg_m):
    C, a, b = _unbalanced_problem()
    W = _t(np.random.default_rng(2).standard_normal(C.shape))
    inputs = (_t(C, True), _t(a, True), _t(b, True))
    assert torch.autograd.gradcheck(
        lambda C, a, b: (st.ot_plan(C, a, b, reg=0.2, reg_m=reg_m, tol=1e-13) * W).sum(),
        inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_unbalanced_gradients_with_forbidden_pairs_and_a_row_that_cannot_send():
    C, a, b = _unbalanced_problem(6, 5, seed=8)
    C[0, 1] = C[3, 2] = np.inf
    C[2, :] = np.inf  # row 2 sends nothing: its value gradient is rho (it pays rho a_2), its plan gradient 0
    C[4, 0] = -0.2
    W = _t(np.random.default_rng(6).standard_normal(C.shape))
    Ct = _t(C)
    for fn in (lambda a, b: st.ot_loss(Ct, a, b, reg=0.2, reg_m=0.8, tol=1e-13),
               lambda a, b: (st.ot_plan(Ct, a, b, reg=0.2, reg_m=0.8, tol=1e-13) * W).sum()):
        assert torch.autograd.gradcheck(fn, (_t(a, True), _t(b, True)), eps=1e-6, atol=1e-6, rtol=1e-4)
    at = _t(a, True)
    st.ot_loss(Ct, at, _t(b), reg=0.2, reg_m=0.8, tol=1e-13).backward()
    assert at.grad[2].item() == pytest.approx(0.8, rel=1e-12)


@pytest.mark.filterwarnings("ignore:If reg_type = entropy")
def test_unbalanced_ot_plan_is_pots_unbalanced_plan():
    ot = pytest.importorskip("ot")
    C, a, b = _unbalanced_problem(6, 5, seed=7)
    plan = st.ot_plan(_t(C), _t(a), _t(b), reg=0.1, reg_m=0.7, tol=1e-13).numpy()
    P_pot = ot.unbalanced.sinkhorn_unbalanced(a, b, C, 0.1, 0.7, reg_type="entropy", numItermax=100_000,
                                              stopThr=1e-14)
    np.testing.assert_allclose(plan, P_pot, rtol=1e-9, atol=1e-13)


def test_unbalanced_plan_gradients_tend_to_the_balanced_ones_as_reg_m_grows():
    C, a, b = _problem(6, 5, 11)
    W = np.random.default_rng(3).standard_normal(C.shape)

    def grads(**kw):
        Ct, at, bt = _t(C, True), _t(a, True), _t(b, True)
        (st.ot_plan(Ct, at, bt, reg=0.1, tol=1e-13, **kw) * _t(W)).sum().backward()
        # the balanced weight gradients are defined up to a shared constant: compare centred
        return [Ct.grad.numpy(), at.grad.numpy() - at.grad.numpy().mean(), bt.grad.numpy() - bt.grad.numpy().mean()]

    balanced = grads()
    errors = []
    for rho in (1e5, 1e7):
        errors.append(max(np.abs(x - y).max() for x, y in zip(grads(reg_m=rho), balanced)))
    assert errors[1] < 1e-6
    assert errors[1] < errors[0] / 30  # O(reg / rho): 100x per 100x in rho


@pytest.mark.parametrize("reg_m", [0.7, (float("inf"), 0.7)])
def test_unbalanced_ot_plan_zero_mass_row_one_sided_derivative(reg_m):
    C, a, b = _unbalanced_problem(6, 5, seed=7)
    a[1] = 0.0
    W = np.random.default_rng(4).standard_normal(C.shape)
    reg = 0.1
    at = _t(a, True)
    (st.ot_plan(_t(C), at, _t(b), reg=reg, reg_m=reg_m, tol=1e-13) * _t(W)).sum().backward()
    loss = lambda w: (snsot.solve(C, w, b, reg=reg, reg_m=reg_m, tol=1e-14).plan * W).sum()
    moved = a.copy()
    moved[1] = 1e-8
    fd = (loss(moved) - loss(a)) / 1e-8
    if reg_m == 0.7:  # relaxed row: mass grows like t**(rho / (rho + reg)), an infinite slope
        assert np.isinf(at.grad[1].item()) and np.sign(at.grad[1].item()) == np.sign(fd)
    else:  # hard row: the finite one-sided derivative
        assert at.grad[1].item() == pytest.approx(fd, abs=1e-5)


@pytest.mark.parametrize("bad, exc, match", [
    (lambda: st.ot_loss(np.ones((2, 2)), reg=0.1), TypeError, "C"),
    (lambda: st.ot_loss(torch.ones(2, 2, 2), reg=0.1), ValueError, "C"),
    (lambda: st.ot_loss(torch.ones(2, 3), torch.ones(3) / 3, reg=0.1), ValueError, "a"),
    (lambda: st.ot_loss(torch.ones(2, 2), reg=-1.0), ValueError, "reg"),
    (lambda: st.ot_loss(torch.tensor([[0.0, float("nan")], [1.0, 0.0]]), reg=0.1), ValueError, "C"),
    (lambda: st.sinkhorn_divergence(torch.ones(3, 2), torch.ones(3, 3), reg=0.1), ValueError, "dimension"),
    (lambda: st.sinkhorn_divergence(torch.ones(3, 2), torch.ones(3, 2), reg=0.1, cost="manhattan"), ValueError,
     "cost"),
])
def test_bad_input_is_named(bad, exc, match):
    with pytest.raises(exc, match=match):
        bad()


# ------------------------------------------------------------------ ot_plan ---

def test_ot_plan_gradcheck():
    C, a, b = _problem(6, 4, 7)
    plan = lambda C, al, be: st.ot_plan(C, torch.softmax(al, 0), torch.softmax(be, 0), reg=0.1, tol=1e-13)
    assert torch.autograd.gradcheck(plan, (_t(C, True), _t(np.log(a), True), _t(np.log(b), True)),
                                     eps=1e-6, atol=1e-7)


@pytest.mark.filterwarnings("ignore:Sinkhorn did not converge")  # stopThr=0 runs all iterations on purpose
def test_ot_plan_gradient_matches_converged_unrolled_sinkhorn():
    # An independent oracle: POT's log-domain Sinkhorn differentiated through its loop by
    # autograd, at a reg where a few hundred iterations reach round-off.
    ot = pytest.importorskip("ot")
    C, a, b = _problem(7, 6, 8)
    W = np.random.default_rng(0).standard_normal(C.shape)
    reg = 0.5

    def grads(plan_fn):
        Ct, at, bt = _t(C, True), _t(a, True), _t(b, True)
        (plan_fn(Ct, at, bt) * _t(W)).sum().backward()
        return Ct.grad.numpy(), at.grad.numpy(), bt.grad.numpy()

    ours = grads(lambda C, a, b: st.ot_plan(C, a, b, reg=reg, tol=1e-14))
    pot = grads(lambda C, a, b: ot.sinkhorn(a, b, C, reg, method="sinkhorn_log", numItermax=3000, stopThr=0))
    np.testing.assert_allclose(ours[0], pot[0], atol=1e-9)
    for mine, theirs in zip(ours[1:], pot[1:]):  # up to the shared constant
        np.testing.assert_allclose(mine - mine.mean(), theirs - theirs.mean(), atol=1e-8)


def test_ot_plan_zero_mass_row_one_sided_derivative():
    C, a, b = _problem(5, 4, 9, zero_rows=[1])
    W = np.random.default_rng(1).standard_normal(C.shape)
    reg, t = 0.1, 1e-7
    at = _t(a, True)
    (st.ot_plan(_t(C), at, _t(b), reg=reg, tol=1e-14) * _t(W)).sum().backward()
    moved = a.copy()
    moved[1] += t
    moved[3] -= t
    loss = lambda w: (snsot.solve(C, w, b, reg=reg, tol=1e-14).plan * W).sum()
    fd = (loss(moved) - loss(a)) / t
    assert at.grad[1].item() - at.grad[3].item() == pytest.approx(fd, abs=1e-5)


@pytest.mark.parametrize("reg_m", [None, 1.0, (float("inf"), 0.5)])
def test_sparse_backward_matches_the_dense_one_at_small_reg(reg_m):
    from snsot.torch._autograd import _sparse_block

    rng = np.random.default_rng(20)
    n = 200
    C = snsot.costs.pairwise(rng.random((n, 2)), rng.random((n, 2)))
    W = rng.standard_normal(C.shape)
    grads = {}
    for backward in ("dense", "sparse", "auto"):
        Ct, at, bt = _t(C, True), _t(np.full(n, 1 / n), True), _t(np.full(n, 1 / n), True)
        P = st.ot_plan(Ct, at, bt, reg=1e-3, reg_m=reg_m, tol=1e-10, backward=backward)
        (P * _t(W)).sum().backward()
        grads[backward] = [Ct.grad.numpy(), at.grad.numpy(), bt.grad.numpy()]
    assert _sparse_block(P.detach().numpy(), 1e-10) is not None  # "auto" took the sparse path here
    for dense, sparse, auto in zip(grads["dense"], grads["sparse"], grads["auto"]):
        assert np.abs(dense - sparse).max() < 1e-8
        np.testing.assert_array_equal(sparse, auto)


def test_sparse_backward_keeps_rows_of_tiny_mass_accurate():
    # a global threshold would drop every entry of a row holding 1e-12 of the mass; the per-row one keeps them
    rng = np.random.default_rng(23)
    n = 150
    C = snsot.costs.pairwise(rng.random((n, 2)), rng.random((n, 2)))
    a = np.full(n, 1.0)
    a[0] = 1e-12
    a /= a.sum()
    W = _t(rng.standard_normal(C.shape))
    grads = {}
    for backward in ("dense", "sparse"):
        at = _t(a, True)
        (st.ot_plan(_t(C), at, reg=1e-3, tol=1e-10, backward=backward) * W).sum().backward()
        grads[backward] = at.grad.numpy()
    assert abs(grads["dense"][0] - grads["sparse"][0]) < 1e-8
    assert np.abs(grads["dense"] - grads["sparse"]).max() < 1e-8


def test_sparse_backward_passes_gradcheck():
    C, a, b = _problem(6, 5, 21)
    W = _t(np.random.default_rng(5).standard_normal(C.shape))
    plan = lambda C, al, be: (st.ot_plan(C, torch.softmax(al, 0), torch.softmax(be, 0), reg=0.1, tol=1e-13,
                                         backward="sparse") * W).sum()
    assert torch.autograd.gradcheck(plan, (_t(C, True), _t(np.log(a), True), _t(np.log(b), True)),
                                    eps=1e-6, atol=1e-7)


def test_dense_plan_keeps_the_dense_backward_and_bad_backward_is_named():
    from snsot.torch._autograd import _sparse_block

    C, a, b = _problem(30, 20, 22)
    P = snsot.solve(C, a, b, reg=0.5).plan  # every entry well above the threshold
    assert _sparse_block(P, 1e-10) is None
    with pytest.raises(ValueError, match="backward"):
        st.ot_plan(_t(C), _t(a), _t(b), reg=0.1, backward="csr")
    with pytest.raises(ValueError, match="cg_rtol"):
        st.ot_plan(_t(C), _t(a), _t(b), reg=0.1, cg_rtol=0.0)


# ----------------------------------------------------- sinkhorn_divergence ---

def test_divergence_gradcheck_points_and_weights():
    rng = np.random.default_rng(10)
    x, y = _t(rng.random((6, 2)), True), _t(rng.random((5, 2)), True)
    al, be = _t(rng.standard_normal(6), True), _t(rng.standard_normal(5), True)
    div = lambda x, y, al, be: st.sinkhorn_divergence(x, y, torch.softmax(al, 0), torch.softmax(be, 0), reg=0.05,
                                                      tol=1e-13)
    assert torch.autograd.gradcheck(div, (x, y, al, be), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("cost, metric", [("sqeuclidean", "sqeuclidean"), ("euclidean", "euclidean"), (1.5, 1.5)])
def test_divergence_is_its_three_ot_terms(cost, metric):
    rng = np.random.default_rng(11)
    x, y = rng.random((8, 2)), rng.random((6, 2))
    a, b = _problem(8, 6, 11)[1:]
    reg = 0.05
    ot = lambda p, q, u, v: snsot.solve(snsot.costs.pairwise(p, q, metric), u, v, reg=reg, tol=1e-13).objective
    expected = ot(x, y, a, b) - 0.5 * ot(x, x, a, a) - 0.5 * ot(y, y, b, b)
    value = st.sinkhorn_divergence(_t(x), _t(y), _t(a), _t(b), reg=reg, cost=cost, tol=1e-13)
    assert value.item() == pytest.approx(expected, abs=1e-12)


def test_point_gradient_matches_central_differences():
    rng = np.random.default_rng(12)
    x, y = rng.random((7, 2)), rng.random((5, 2))
    reg, h = 0.02, 1e-6
    xt = _t(x, True)
    st.sinkhorn_divergence(xt, _t(y), reg=reg, tol=1e-13).backward()

    def div(p):
        ot = lambda u, v: snsot.solve(snsot.costs.pairwise(u, v), reg=reg, tol=1e-13).objective
        return ot(p, y) - 0.5 * ot(p, p) - 0.5 * ot(y, y)

    for i, k in [(0, 0), (4, 1), (6, 0)]:
        E = np.zeros_like(x)
        E[i, k] = h
        assert xt.grad[i, k].item() == pytest.approx((div(x + E) - div(x - E)) / (2 * h), abs=1e-7)


@pytest.mark.parametrize("seed", range(4))
def test_divergence_is_nonnegative_and_zero_on_equal_clouds(seed):
    rng = np.random.default_rng(seed)
    x = _t(rng.random((12, 2)))
    y = _t(rng.random((9, 2)) * (seed + 1) * 0.3)
    for reg in (1e-1, 1e-2):
        assert st.sinkhorn_divergence(x, y, reg=reg).item() >= -1e-12
        assert st.sinkhorn_divergence(x, x, reg=reg).item() == pytest.approx(0.0, abs=1e-12)


def test_batch_gives_one_divergence_per_item():
    rng = np.random.default_rng(13)
    x, y = _t(rng.random((3, 6, 2)), True), _t(rng.random((3, 5, 2)))
    a = torch.softmax(_t(rng.standard_normal((3, 6))), 1)
    values = st.sinkhorn_divergence(x, y, a, reg=0.05)
    assert values.shape == (3,)
    values.sum().backward()
    for k in range(3):
        xk = x[k].detach().clone().requires_grad_()
        single = st.sinkhorn_divergence(xk, y[k], a[k], reg=0.05)
        single.backward()
        assert values[k].item() == pytest.approx(single.item(), abs=1e-14)
        np.testing.assert_allclose(x.grad[k].numpy(), xk.grad.numpy(), atol=1e-14)


# ------------------------------------------------ unbalanced divergence ---

def _clouds(seed, n=7, m=5):
    rng = np.random.default_rng(seed)
    return rng.random((n, 2)), rng.random((m, 2)), rng.random(n) + 0.2, 2.0 * (rng.random(m) + 0.2)


def _pot_kl_value(ot, x, y, u, v, reg, rho):
    """OT with the entropy relative to u (x) v, from POT's reg_type="kl" plan and the primal written out."""
    C = snsot.costs.pairwise(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        P = ot.unbalanced.sinkhorn_unbalanced(u, v, C, reg, rho, reg_type="kl", numItermax=200_000, stopThr=1e-15)
    kl = lambda p, q: float(np.sum(p * np.log(p / q) - p + q))
    return float((C * P).sum()) + reg * kl(P, np.outer(u, v)) + rho * kl(P.sum(1), u) + rho * kl(P.sum(0), v)


def test_unbalanced_divergence_is_sejourne_formula_on_pots_kl_plans():
    ot = pytest.importorskip("ot")
    x, y, a, b = _clouds(3)
    reg, rho = 0.1, 0.7
    value = st.sinkhorn_divergence(_t(x), _t(y), _t(a), _t(b), reg=reg, reg_m=rho, tol=1e-13).item()
    expected = (_pot_kl_value(ot, x, y, a, b, reg, rho) - 0.5 * _pot_kl_value(ot, x, x, a, a, reg, rho)
                - 0.5 * _pot_kl_value(ot, y, y, b, b, reg, rho) + 0.5 * reg * (a.sum() - b.sum()) ** 2)
    assert value == pytest.approx(expected, rel=1e-10, abs=1e-13)


def test_unbalanced_divergence_is_its_three_terms_solved_by_snsot():
    x, y, a, b = _clouds(4)
    reg, rho = 0.05, 0.4

    def term(p, q, u, v):  # reg KL(P | u v^T) is the cost C - reg log u_i - reg log v_j, plus reg m(u) m(v)
        C = snsot.costs.pairwise(p, q) - reg * np.log(u)[:, None] - reg * np.log(v)[None, :]
        return snsot.solve(C, u, v, reg=reg, reg_m=rho, tol=1e-13).objective + reg * u.sum() * v.sum()

    expected = (term(x, y, a, b) - 0.5 * term(x, x, a, a) - 0.5 * term(y, y, b, b)
                + 0.5 * reg * (a.sum() - b.sum()) ** 2)
    value = st.sinkhorn_divergence(_t(x), _t(y), _t(a), _t(b), reg=reg, reg_m=rho, tol=1e-13)
    assert value.item() == pytest.approx(expected, rel=1e-11, abs=1e-13)
    # debias=False is ot_loss's value with reg_m (the solver's objective)
    plain = st.sinkhorn_divergence(_t(x), _t(y), _t(a), _t(b), reg=reg, reg_m=rho, tol=1e-13, debias=False)
    assert plain.item() == pytest.approx(
        snsot.solve(snsot.costs.pairwise(x, y), a, b, reg=reg, reg_m=rho, tol=1e-13).objective, rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_unbalanced_divergence_is_nonnegative_and_zero_on_equal_measures(seed):
    x, y, a, b = _clouds(seed, n=9, m=6)
    for reg, rho in ((0.1, 1.0), (0.01, 0.3)):
        assert st.sinkhorn_divergence(_t(x), _t(y), _t(a), _t(b), reg=reg, reg_m=rho).item() >= -1e-12
        # same points, different masses: positive
        assert st.sinkhorn_divergence(_t(x), _t(x), _t(a), _t(2 * a), reg=reg, reg_m=rho).item() > 1e-6
        assert st.sinkhorn_divergence(_t(x), _t(x), _t(a), _t(a), reg=reg, reg_m=rho).item() == pytest.approx(
            0.0, abs=1e-12)


def test_unbalanced_divergence_gradcheck_points_and_weights():
    x, y, a, b = _clouds(5, n=5, m=4)
    div = lambda x, y, a, b: st.sinkhorn_divergence(x, y, a, b, reg=0.1, reg_m=0.5, tol=1e-13)
    assert torch.autograd.gradcheck(div, (_t(x, True), _t(y, True), _t(a, True), _t(b, True)),
                                    eps=1e-6, atol=1e-6, rtol=1e-4)


def test_unbalanced_divergence_tends_to_the_balanced_one():
    x, y, a, b = _clouds(6)
    a, b = a / a.sum(), b / b.sum()
    balanced = st.sinkhorn_divergence(_t(x), _t(y), _t(a), _t(b), reg=0.1, tol=1e-13).item()
    gaps = [abs(st.sinkhorn_divergence(_t(x), _t(y), _t(a), _t(b), reg=0.1, reg_m=rho, tol=1e-13).item() - balanced)
            for rho in (1e4, 1e6)]
    assert gaps[1] < 1e-7 and gaps[1] < gaps[0] / 30  # O(1 / rho)
    assert st.sinkhorn_divergence(_t(x), _t(y), _t(a), _t(b), reg=0.1, reg_m=float("inf"),
                                  tol=1e-13).item() == pytest.approx(balanced, abs=1e-14)


def test_unbalanced_sinkhorn_loss_matches_geomloss_reach():
    geomloss = pytest.importorskip("geomloss")
    rng = np.random.default_rng(17)
    x, y = _t(rng.random((40, 2))), _t(rng.random((30, 2)))
    a, b = torch.full((40,), 1 / 40, dtype=F64), torch.full((30,), 1.5 / 30, dtype=F64)
    blur, reach = 0.3, 2.0  # GeomLoss's annealing at scaling 0.999 converges here (its error ~1e-8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = geomloss.SamplesLoss("sinkhorn", p=2, blur=blur, reach=reach, scaling=0.999,
                                      backend="tensorized")(a, x, b, y).item()
    loss = st.SinkhornLoss(reg=blur ** 2, reg_m=reach ** 2, cost=lambda p, q: st.pairwise_cost(p, q) / 2, tol=1e-12)
    assert "reg_m=4" in repr(loss)
    assert loss(a, x, b, y).item() == pytest.approx(theirs, rel=1e-6)


def test_unbalanced_divergence_drops_points_of_zero_weight():
    x, y, a, b = _clouds(8)
    a[2] = 0.0
    full = st.sinkhorn_divergence(_t(x), _t(y), _t(a), _t(b), reg=0.05, reg_m=0.5, tol=1e-13).item()
    keep = np.arange(len(a)) != 2
    dropped = st.sinkhorn_divergence(_t(x[keep]), _t(y), _t(a[keep]), _t(b), reg=0.05, reg_m=0.5, tol=1e-13).item()
    assert full == pytest.approx(dropped, abs=1e-13)


def test_unbalanced_divergence_keeps_float32():
    x, y, a, b = _clouds(9)
    x32 = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    value = st.SinkhornLoss(reg=0.05, reg_m=1.0)(torch.tensor(a, dtype=torch.float32), x32,
                                                 torch.tensor(b, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))
    value.backward()
    assert value.dtype == torch.float32 and x32.grad.dtype == torch.float32 and torch.isfinite(x32.grad).all()


def test_unbalanced_divergence_refuses_two_penalties_naming_reg_m():
    x, y, a, b = _clouds(7)
    with pytest.raises(ValueError, match="reg_m"):
        st.sinkhorn_divergence(_t(x), _t(y), _t(a), _t(b), reg=0.1, reg_m=(1.0, 2.0))
    with pytest.raises(ValueError, match="reg_m"):
        st.SinkhornLoss(reg=0.1, reg_m=-1.0)


@pytest.mark.parametrize("reg_m, debias", [(None, True), (0.5, True), (None, False), (0.5, False)])
def test_batch_is_solved_on_the_thread_pool_and_equals_the_loop(monkeypatch, reg_m, debias):
    from snsot import _engines

    rng = np.random.default_rng(18)
    B = 4
    x, y = _t(rng.random((B, 7, 2)), True), _t(rng.random((B, 5, 2)), True)
    a = _t(rng.random((B, 7)) + 0.2, True)
    b = _t((rng.random((B, 5)) + 0.2) * (1.0 if reg_m is None else 2.0), True)
    if reg_m is None:  # balanced: equal masses
        a = (a / a.sum(1, keepdims=True)).detach().requires_grad_()
        b = (b / b.sum(1, keepdims=True)).detach().requires_grad_()
    runs = []
    real_run = _engines.ThreadEngine.run

    def counting_run(self, task, data, chunks):
        runs.append((self.n_jobs, len(chunks)))
        return real_run(self, task, data, chunks)

    monkeypatch.setattr(_engines.ThreadEngine, "run", counting_run)
    values = st.sinkhorn_divergence(x, y, a, b, reg=0.05, reg_m=reg_m, debias=debias, tol=1e-12, n_jobs=2)
    assert runs == [(2, B * (3 if debias else 1))]  # one pool run for all the problems of the batch
    values.sum().backward()
    for k in range(B):
        leaves = [t[k].detach().clone().requires_grad_() for t in (x, y, a, b)]
        single = st.sinkhorn_divergence(*leaves, reg=0.05, reg_m=reg_m, debias=debias, tol=1e-12)
        single.backward()
        assert values[k].item() == pytest.approx(single.item(), abs=1e-12)
        for batched, leaf in zip((x, y, a, b), leaves):
            np.testing.assert_allclose(batched.grad[k].numpy(), leaf.grad.numpy(), rtol=0, atol=1e-12)


def test_batch_n_jobs_is_checked():
    x = torch.rand(2, 4, 2, dtype=F64)
    with pytest.raises(ValueError, match="n_jobs"):
        st.sinkhorn_divergence(x, x, reg=0.1, n_jobs=0)


def test_float32_keeps_its_dtype_and_gets_gradients():
    rng = np.random.default_rng(14)
    x = torch.tensor(rng.random((10, 2)), dtype=torch.float32, requires_grad=True)
    y = torch.tensor(rng.random((8, 2)), dtype=torch.float32)
    value = st.SinkhornLoss(reg=0.05)(x, y)
    assert value.dtype == torch.float32 and value.requires_grad
    value.backward()
    assert x.grad.dtype == torch.float32 and torch.isfinite(x.grad).all()
    x64 = x.detach().double().requires_grad_()
    st.sinkhorn_divergence(x64, y.double(), reg=0.05).backward()
    np.testing.assert_allclose(x.grad.numpy(), x64.grad.numpy(), rtol=1e-4, atol=1e-6)
    C = torch.rand(4, 3, dtype=torch.float32, requires_grad=True)
    plan = st.ot_plan(C, reg=0.1)
    assert plan.dtype == torch.float32 and plan.requires_grad


def test_sinkhorn_loss_takes_geomloss_call_forms():
    rng = np.random.default_rng(15)
    x, y = _t(rng.random((6, 2))), _t(rng.random((5, 2)))
    a, b = torch.full((6,), 1 / 6, dtype=F64), torch.full((5,), 1 / 5, dtype=F64)
    loss = st.SinkhornLoss(reg=0.05)
    assert loss(a, x, b, y).item() == pytest.approx(loss(x, y).item(), abs=1e-14)
    with pytest.raises(TypeError, match="SinkhornLoss"):
        loss(x)


def test_sinkhorn_loss_matches_geomloss_through_the_table():
    geomloss = pytest.importorskip("geomloss")
    rng = np.random.default_rng(16)
    x, y = _t(rng.random((40, 2))), _t(rng.random((30, 2)))
    blur = 0.5  # large enough that GeomLoss's annealed loop is converged
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = geomloss.SamplesLoss("sinkhorn", p=2, blur=blur, scaling=0.99, backend="tensorized")(x, y).item()
    ours = 0.5 * st.SinkhornLoss(reg=2 * blur ** 2, cost="sqeuclidean")(x, y).item()
    same = st.SinkhornLoss(reg=blur ** 2, cost=lambda p, q: st.pairwise_cost(p, q) / 2)(x, y).item()
    assert ours == pytest.approx(same, rel=1e-10)
    assert ours == pytest.approx(theirs, rel=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_inputs_come_back_on_their_device():
    x = torch.rand(8, 2, device="cuda", requires_grad=True)
    y = torch.rand(6, 2, device="cuda")
    value = st.sinkhorn_divergence(x, y, reg=0.05)
    assert value.device.type == "cuda"
    value.backward()
    assert x.grad.device.type == "cuda"
