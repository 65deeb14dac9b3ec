"""Gradients of cross_entropy with respect to the logits, on PyTorch and JAX.

Each example's loss is ``sum_c q_c * nll_c`` with ``nll_c = -log_softmax(x)_c``
and ``q`` its per-class coefficients: ``(1 - eps) * w[y] * onehot(y) + eps / C
* w`` for a class index ``y``, ``w * ((1 - eps) * t + eps / C)`` for target
probabilities ``t``. As ``d nll_c / dx = softmax(x) - onehot(c)``, its
gradient is ``(sum_c q_c) * softmax(x) - q``: softmax minus the target,
smoothed and weighted; 'mean' divides it by the mean's denominator. The
references below evaluate that closed form in mpmath.

These tests are specific to the two autodiff libraries and do not take the
``bk`` fixture; each runs where its library's backend is tested (``--backend
torch`` or ``--backend jax``, or every CPU backend by default) and skips
elsewhere, PyTorch being installed in every session as a reference. They run
in float64, on JAX under ``jax.enable_x64`` where the session did not enable
it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import mpmath
import numpy as np
import pytest

from lsekit import cross_entropy
from tests.support import exact_log_softmax, exact_softmax, jax_x64, library_session

EPS = 0.1
# The entries of the gradient are differences (``Q * softmax_j - q_j``): a
# relative 1e-12 is asked of each, but an entry that cancels is only as good
# as the roundings of the terms it is the difference of, each some 1e-16 of
# the gradient's largest entry; 1e-14 of that is allowed.
RTOL = 1e-12
ATOL = 1e-14


# Exact reference ----------------------------------------------------------


def _mp(v: Any) -> mpmath.mpf:
    return mpmath.mpf(float(v))


def exact(
    x: np.ndarray,
    target: np.ndarray,
    *,
    axis: int = -1,
    weight: np.ndarray | None = None,
    label_smoothing: float = 0.0,
    ignore_index: int | None = None,
    where: np.ndarray | None = None,
    reduction: str = "mean",
) -> tuple[np.ndarray, np.ndarray]:
    """The loss and its gradient (the closed form), as float64 arrays.

    For ``reduction='none'`` the gradient is that of the losses' sum.
    """
    n_classes = x.shape[axis]
    probabilities = np.issubdtype(target.dtype, np.floating)
    rows = np.moveaxis(x, axis, -1)
    examples = rows.shape[:-1]
    rows = rows.reshape(-1, n_classes)
    if probabilities:
        targets = list(np.moveaxis(target, axis, -1).reshape(-1, n_classes))
    else:
        targets = [int(v) for v in target.reshape(-1)]
    counted = np.ones(examples, dtype=bool)
    if where is not None:
        counted &= np.broadcast_to(where, examples)
    if ignore_index is not None:
        counted &= target != ignore_index
    counted = counted.reshape(-1)
    w = [mpmath.mpf(1)] * n_classes if weight is None else [_mp(v) for v in weight]
    eps = _mp(label_smoothing)
    keep, share = 1 - eps, eps / n_classes

    losses, grads = [], []
    denominator = mpmath.mpf(0)
    for row, t, k in zip(rows, targets, counted, strict=True):
        if not k:
            losses.append(mpmath.mpf(0))
            grads.append([mpmath.mpf(0)] * n_classes)
            continue
        if probabilities:
            q = [wc * (keep * _mp(tc) + share) for wc, tc in zip(w, t, strict=True)]
            denominator += 1
        else:
            q = [share * wc for wc in w]
            q[t] += keep * w[t]
            denominator += w[t]
        nll = [-v for v in exact_log_softmax(row)]
        losses.append(mpmath.fsum(qc * v for qc, v in zip(q, nll, strict=True) if qc))
        total = mpmath.fsum(q)
        grads.append(
            [total * s - qc for s, qc in zip(exact_softmax(row), q, strict=True)]
        )

    scale = mpmath.mpf(1)
    if reduction == "mean":
        scale = 1 / denominator if denominator else mpmath.mpf(0)
    grad = np.array([[float(g * scale) for g in r] for r in grads])
    grad = np.moveaxis(grad.reshape((*examples, n_classes)), -1, axis)
    if reduction == "none":
        loss = np.array([float(v) for v in losses]).reshape(examples)
    else:
        loss = np.array(float(mpmath.fsum(losses) * scale))
    return loss, grad


def assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, what
    assert np.isfinite(got).all(), f"{what}: {got}"
    scale = float(np.max(np.abs(want), initial=0.0))
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL * scale, err_msg=what)


# The two autodiff libraries ----------------------------------------------------


class Torch:
    name = "torch"

    def __init__(self) -> None:
        self.torch = pytest.importorskip("torch")

    def _convert(self, v: Any) -> Any:
        return self.torch.from_numpy(np.array(v)) if isinstance(v, np.ndarray) else v

    def value_and_grad(
        self, x: np.ndarray, target: np.ndarray, **kw: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        xt = self.torch.tensor(x, dtype=self.torch.float64, requires_grad=True)
        kw = {k: self._convert(v) for k, v in kw.items()}
        loss = cross_entropy(xt, self._convert(target), **kw)
        assert loss.dtype == self.torch.float64
        (grad,) = self.torch.autograd.grad(loss.sum(), xt)
        return loss.detach().numpy(), grad.numpy()


class Jax:
    name = "jax"

    def __init__(self) -> None:
        self.jax = pytest.importorskip("jax")

    def _convert(self, v: Any) -> Any:
        return self.jax.numpy.asarray(v) if isinstance(v, np.ndarray) else v

    def function(self, target: np.ndarray, **kw: Any) -> Any:
        t = self._convert(target)
        kw = {k: self._convert(v) for k, v in kw.items()}

        def f(x: Any) -> Any:
            return self.jax.numpy.sum(cross_entropy(x, t, **kw))

        return f

    def value_and_grad(
        self, x: np.ndarray, target: np.ndarray, **kw: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        xj = self.jax.numpy.asarray(x, dtype=self.jax.numpy.float64)
        t = self._convert(target)
        kw = {k: self._convert(v) for k, v in kw.items()}
        loss = cross_entropy(xj, t, **kw)
        assert loss.dtype == self.jax.numpy.float64
        grad = self.jax.grad(self.function(target, **kw))(xj)
        return np.asarray(loss), np.asarray(grad)


def _jax_x64() -> Iterator[Jax]:
    engine = Jax()
    with jax_x64():
        yield engine


@pytest.fixture
def jax_engine(request: pytest.FixtureRequest) -> Iterator[Jax]:
    library_session(request, "jax")
    yield from _jax_x64()


@pytest.fixture
def torch(request: pytest.FixtureRequest) -> Any:
    return library_session(request, "torch")


@pytest.fixture(params=["torch", "jax"])
def engine(request: pytest.FixtureRequest) -> Iterator[Any]:
    library_session(request, request.param)
    if request.param == "torch":
        yield Torch()
    else:
        yield from _jax_x64()


# Cases -----------------------------------------------------------------------

rng = np.random.default_rng(20)
N, C, D = 7, 5, 3
X = rng.normal(scale=3.0, size=(N, C))
X3 = rng.normal(scale=3.0, size=(N, C, D))
Y = rng.integers(C, size=N)
Y[:3] = [2, 0, 2]  # ignore_index=2 drops some, not all
Y3 = rng.integers(C, size=(N, D))
W = rng.uniform(0.25, 4.0, size=C)
P = rng.dirichlet(np.ones(C), size=N)
P3 = np.moveaxis(rng.dirichlet(np.ones(C), size=(N, D)), -1, 1)
MASK = np.array([True, False, True, True, False, True, True])
MASK3 = rng.uniform(size=(N, D)) < 0.6

SMOOTHED = {"weight": W, "label_smoothing": EPS}

# name: (logits, target, keywords); each runs with 'sum', 'mean' and 'none'.
CASES: dict[str, tuple[np.ndarray, np.ndarray, dict[str, Any]]] = {
    "indices": (X, Y, {}),
    "weighted": (X, Y, {"weight": W}),
    "smoothed": (X, Y, {"label_smoothing": EPS}),
    "weighted-smoothed": (X, Y, SMOOTHED),
    "ignore-index": (X, Y, {**SMOOTHED, "ignore_index": 2}),
    "where": (X, Y, {**SMOOTHED, "where": MASK}),
    "probabilities": (X, P, {}),
    "probabilities-weighted-smoothed": (X, P, SMOOTHED),
    "probabilities-where": (X, P, {**SMOOTHED, "where": MASK}),
    "axis-1": (X3, Y3, {**SMOOTHED, "axis": 1}),
    "axis-1-ignore-where": (
        X3,
        Y3,
        {**SMOOTHED, "axis": 1, "ignore_index": 0, "where": MASK3},
    ),
    "axis-1-probabilities": (X3, P3, {**SMOOTHED, "axis": 1}),
}
REDUCTIONS = ["sum", "mean", "none"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", list(CASES))
def test_closed_form(engine, case, reduction):
    x, t, kw = CASES[case]
    loss, grad = engine.value_and_grad(x, t, reduction=reduction, **kw)
    want_loss, want_grad = exact(x, t, reduction=reduction, **kw)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-14, err_msg="loss")
    assert_close(grad, want_grad, f"{engine.name} {case} {reduction}")


def _torch_peer(torch, x, t, kw, reduction):
    """PyTorch's own loss and gradient of the same call."""
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    ignore = kw.get("ignore_index")
    loss = torch.nn.functional.cross_entropy(
        xt,
        torch.from_numpy(np.array(t)),
        weight=None if "weight" not in kw else torch.from_numpy(kw["weight"]),
        ignore_index=-100 if ignore is None else ignore,
        reduction=reduction,
        label_smoothing=kw.get("label_smoothing", 0.0),
    )
    (grad,) = torch.autograd.grad(loss.sum(), xt)
    return loss.detach().numpy(), grad.numpy()


# PyTorch has no where=, and its class axis is 1.
PEER_CASES = [
    name
    for name, (x, _, kw) in CASES.items()
    if "where" not in kw and kw.get("axis", 1 if x.ndim == 2 else -1) == 1
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", PEER_CASES)
def test_torch_cross_entropy_gradients(torch, case, reduction):
    x, t, kw = CASES[case]
    loss, grad = Torch().value_and_grad(x, t, reduction=reduction, **kw)
    peer_loss, peer_grad = _torch_peer(torch, x, t, kw, reduction)
    np.testing.assert_allclose(loss, peer_loss, rtol=1e-12, err_msg="loss")
    assert_close(grad, peer_grad, f"torch peer {case} {reduction}")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", ["ignore-index", "where", "probabilities-where"])
def test_masked_examples_have_zero_gradient(engine, case, reduction):
    x, t, kw = CASES[case]
    loss, grad = engine.value_and_grad(x, t, reduction=reduction, **kw)
    dropped = ~MASK if "where" in kw else t == kw["ignore_index"]
    assert dropped.any()
    assert (grad[dropped] == 0.0).all()
    assert (np.abs(grad[~dropped]).sum(axis=-1) > 0).all()
    if reduction == "none":
        assert (loss[dropped] == 0.0).all()


NOTHING = {
    "all-ignored": (X, np.full(N, 3), {**SMOOTHED, "ignore_index": 3}),
    "all-masked": (X, Y, {**SMOOTHED, "where": np.zeros(N, dtype=bool)}),
    "all-masked-probabilities": (X, P, {"where": np.zeros(N, dtype=bool)}),
    "all-masked-broadcast": (X3, Y3, {"axis": 1, "where": np.zeros(D, dtype=bool)}),
}


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("case", list(NOTHING))
def test_nothing_counted(engine, case, reduction):
    # PyTorch's mean is 0 / 0 here; lsekit's is 0, with an exactly zero
    # (not NaN) gradient.
    x, t, kw = NOTHING[case]
    loss, grad = engine.value_and_grad(x, t, reduction=reduction, **kw)
    assert loss.shape == ()
    assert loss == 0.0
    assert grad.shape == x.shape
    assert (grad == 0.0).all(), grad


# The special cases share the shape of X: on JAX every new shape compiles
# every operation anew.
INF = np.inf
X_INF = np.array(
    [
        [0.0, -INF, 1.0, -INF, 2.0],
        [-INF, 2.0, -INF, -3.0, 0.5],
        [5.0, -INF, -INF, -INF, -INF],  # one finite class: a certain prediction
        [-1.0, 0.5, -INF, 0.0, -2.0],
        [-INF, -INF, 3.0, 1.0, -INF],
        [0.25, -INF, -0.5, 4.0, -INF],
        [1.0, 2.0, 3.0, -INF, 4.0],
    ]
)
Y_INF = np.array([2, 3, 0, 1, 3, 3, 4])
# No mass where the logit is -inf: the loss is finite.
P_INF = np.where(X_INF == -INF, 0.0, rng.dirichlet(np.ones(C), size=N))
INF_CASES = {
    "indices": (Y_INF, {}),
    "weighted": (Y_INF, {"weight": W}),
    "probabilities": (P_INF, {"weight": W}),
}


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("case", list(INF_CASES))
def test_negative_infinity_in_other_classes(engine, case, reduction):
    t, kw = INF_CASES[case]
    loss, grad = engine.value_and_grad(X_INF, t, reduction=reduction, **kw)
    want_loss, want_grad = exact(X_INF, t, reduction=reduction, **kw)
    assert np.isfinite(loss)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-14)
    assert_close(grad, want_grad, case)
    assert (grad[X_INF == -INF] == 0.0).all()
    # A certain prediction (one finite logit, the target's) costs nothing.
    assert (grad[2] == 0.0).all()


def test_negative_infinity_matches_torch(torch):
    t, kw = INF_CASES["weighted"]
    loss, grad = Torch().value_and_grad(X_INF, t, **kw)
    peer_loss, peer_grad = _torch_peer(torch, X_INF, t, kw, "mean")
    np.testing.assert_allclose(loss, peer_loss, rtol=1e-12)
    assert_close(grad, peer_grad, "torch peer")


def test_zero_weight_on_negative_infinity_with_smoothing(engine):
    # Smoothing spreads mass over every class, so a -inf logit would cost
    # eps / C * inf, unless its class weighs nothing: then it costs 0, and
    # its gradient is 0 (PyTorch: NaN).
    x = X.copy()
    x[::2, 1] = -INF
    y = np.where(Y == 1, 0, Y)
    kw = {"weight": np.where(np.arange(C) == 1, 0.0, W), "label_smoothing": 0.2}
    loss, grad = engine.value_and_grad(x, y, reduction="mean", **kw)
    want_loss, want_grad = exact(x, y, reduction="mean", **kw)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-14)
    assert_close(grad, want_grad, "zero weight")
    assert (grad[::2, 1] == 0.0).all()


X_TIES = np.array(
    [
        [2.0, 2.0, -1.0, 0.0, 1.0],
        [2.0, 2.0, -1.0, 0.0, 1.0],
        [3.0, 3.0, 3.0, 3.0, 3.0],
        [-5.0, 7.0, 7.0, 7.0, 0.0],
        [0.0, -40.0, 0.0, -40.0, -40.0],
        [1.0, 1.0, 1.0, -2.0, -3.0],
        [-2.0, 0.0, 0.0, -1.0, -3.0],
    ]
)
Y_TIES = np.array([0, 3, 2, 1, 2, 0, 1])


@pytest.mark.parametrize("kw", [{}, SMOOTHED], ids=["plain", "weighted-smoothed"])
def test_ties_at_the_maximum(engine, kw):
    # The maximum's own gradient must be shared equally among the tied
    # entries; sent to one of them, the result is no longer softmax - q.
    _, grad = engine.value_and_grad(X_TIES, Y_TIES, reduction="sum", **kw)
    _, want = exact(X_TIES, Y_TIES, reduction="sum", **kw)
    assert_close(grad, want, "ties")
    if not kw:
        # Tied non-target entries have the same softmax, so the same gradient.
        np.testing.assert_allclose(grad[1, 0], grad[1, 1], rtol=1e-15)
        np.testing.assert_allclose(grad[3, 2], grad[3, 3], rtol=1e-15)


@pytest.mark.parametrize(
    "case",
    [
        "weighted-smoothed",
        "ignore-index",
        "axis-1-ignore-where",
        "axis-1-probabilities",
        "probabilities-where",
    ],
)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_torch_gradcheck(torch, case, reduction):
    x, t, kw = CASES[case]
    kw = {
        k: torch.from_numpy(np.array(v)) if isinstance(v, np.ndarray) else v
        for k, v in kw.items()
    }
    target = torch.from_numpy(np.array(t))
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)

    def f(logits):
        return cross_entropy(logits, target, reduction=reduction, **kw)

    assert torch.autograd.gradcheck(f, (xt,))
    assert torch.autograd.gradgradcheck(f, (xt,))


@pytest.mark.parametrize(
    ("case", "reduction"),
    [
        ("weighted-smoothed", "mean"),
        ("ignore-index", "sum"),
        ("axis-1-ignore-where", "mean"),
        ("probabilities-where", "mean"),
    ],
)
def test_jax_grad_under_jit_matches_eager(jax_engine, case, reduction):
    jax = jax_engine.jax
    x, t, kw = CASES[case]
    f = jax_engine.function(t, reduction=reduction, **kw)
    xj = jax.numpy.asarray(x)
    eager = np.asarray(jax.grad(f)(xj))
    jitted = np.asarray(jax.jit(jax.grad(f))(xj))
    # Not bit for bit: XLA fuses the compiled graph and may contract a * b + c
    # into one rounding, which moves the last bit or two.
    scale = float(np.max(np.abs(eager)))
    np.testing.assert_allclose(jitted, eager, rtol=1e-14, atol=1e-16 * scale)
    _, want = exact(x, t, reduction=reduction, **kw)
    assert_close(jitted, want, case)
