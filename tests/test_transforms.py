"""Every public function under the transformations of JAX and PyTorch.

``jax.jit``, ``jax.vmap`` and ``jax.grad`` of a jitted function;
``torch.compile`` with ``fullgraph=True`` (no graph break), and
``torch.func``'s ``vmap`` and ``grad``: each must give the eager result.
Where the values of a result are traced (jit, compile) lsekit cannot read
them, so some functions take another route than eagerly (logmatmulexp
computes every cell exactly); the results then agree to a few ulps, not to
the bit.

These tests are specific to the two libraries and do not take the ``bk``
fixture; each skips when its library is missing. They run in float64, on
JAX under ``jax.enable_x64`` where the session did not enable it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from lsekit import cross_entropy, log_softmax, logmatmulexp, logsumexp, softmax
from tests.support import jax_x64, library_session

rng = np.random.default_rng(5)
X = rng.normal(scale=4.0, size=(3, 4, 6))
X[0, 1, :] = -np.inf  # an all -inf slice
X[1, 2, 3] = -np.inf
X[2, 0, :2] = [30.0, -30.0]  # a dominant term
WEIGHTS = rng.normal(size=(3, 4, 6))
WEIGHTS[:, :, 0] = 0.0
MASK = rng.uniform(size=(3, 4, 6)) < 0.7
MASK[1, 0, :] = False  # a fully masked slice
TARGET = rng.integers(6, size=(3, 4))
CLASS_WEIGHT = rng.uniform(0.5, 2.0, size=6)
RIGHT = rng.normal(scale=4.0, size=(3, 6, 5))
RIGHT[0, 2, :] = -np.inf
RIGHT[2, :, 1] = [-800.0, 700.0, -800.0, -800.0, -800.0, -800.0]  # crossed maxima

# A function of the logits X (and of constants closed over), returning an
# array. ``lib`` is the array module: jax.numpy or torch.
CASES: dict[str, Callable[[Any, Any], Any]] = {
    "logsumexp": lambda x, lib: logsumexp(x, axis=-1),
    "logsumexp-tuple-axis": lambda x, lib: logsumexp(x, axis=(0, 2), keepdims=True),
    "logsumexp-weights": lambda x, lib: logsumexp(
        x, axis=-1, b=lib.asarray(WEIGHTS), return_sign=True
    )[0],
    "logsumexp-where": lambda x, lib: logsumexp(x, axis=-1, where=lib.asarray(MASK)),
    "softmax": lambda x, lib: softmax(x, axis=-1),
    "softmax-where": lambda x, lib: softmax(x, axis=-1, where=lib.asarray(MASK)),
    "log_softmax": lambda x, lib: log_softmax(x, axis=-1),
    "cross_entropy": lambda x, lib: cross_entropy(
        x[:, :2],
        lib.asarray(TARGET[:, :2]),
        weight=lib.asarray(CLASS_WEIGHT),
        label_smoothing=0.1,
        reduction="none",
    ),
    "cross_entropy-mean-where": lambda x, lib: cross_entropy(
        x[2:],
        lib.asarray(TARGET[2:]),
        where=lib.asarray(MASK[2:, :, 0]),
    ),
    "logmatmulexp": lambda x, lib: logmatmulexp(x, lib.asarray(RIGHT)),
}
# The gradient of each case is taken of sum(out * COTANGENT) over its finite
# entries (log_softmax is -inf at the -inf logits).
COTANGENT_SEED = 11


def _cotangent(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(COTANGENT_SEED).normal(size=shape)


def _close(got: Any, want: Any, what: str) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, what
    assert got.dtype == want.dtype, what
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want), err_msg=what)
    finite = np.isfinite(want)
    np.testing.assert_array_equal(got[~finite], want[~finite], err_msg=what)
    # XLA and Inductor fuse the graph and may contract a * b + c into one
    # rounding; traced logmatmulexp computes every cell by broadcasting.
    scale = np.maximum(np.abs(want[finite]), 1.0)
    np.testing.assert_array_less(
        np.abs(got[finite] - want[finite]), 64 * np.finfo(np.float64).eps * scale
    )


# JAX -------------------------------------------------------------------------------


@pytest.fixture
def jax(request):
    library_session(request, "jax")
    with jax_x64() as jax:
        yield jax


def _jax_loss(jax: Any, case: str) -> Callable[[Any], Any]:
    jnp = jax.numpy
    f = CASES[case]
    shape = np.shape(f(jnp.asarray(X), jnp))
    g = jnp.asarray(_cotangent(shape))

    def loss(x: Any) -> Any:
        out = f(x, jnp)
        return jnp.sum(jnp.where(jnp.isfinite(out), out * g, 0.0))

    return loss


@pytest.mark.parametrize("case", list(CASES))
def test_jax_jit(jax, case):
    jnp = jax.numpy
    x = jnp.asarray(X)
    f = CASES[case]
    _close(jax.jit(lambda x: f(x, jnp))(x), f(x, jnp), case)


# The cases whose constant is mapped along with x, a slice per call; the
# cross-entropy case maps its targets.
MAPPED = {
    "logsumexp-weights": WEIGHTS,
    "logsumexp-where": MASK,
    "softmax-where": MASK,
    "logmatmulexp": RIGHT,
    "cross_entropy": TARGET,
}
UNMAPPABLE = ("logsumexp-tuple-axis", "cross_entropy-mean-where")


def _slice_call(case: str, row: Any, other: Any, lib: Any) -> Any:
    """``CASES[case]`` on one slice of X, with its slice of ``MAPPED``."""
    if case == "logsumexp-weights":
        return logsumexp(row, axis=-1, b=other, return_sign=True)[0]
    if case == "logsumexp-where":
        return logsumexp(row, axis=-1, where=other)
    if case == "softmax-where":
        return softmax(row, axis=-1, where=other)
    if case == "cross_entropy":
        return cross_entropy(
            row,
            other,
            weight=lib.asarray(CLASS_WEIGHT),
            label_smoothing=0.1,
            reduction="none",
        )
    return logmatmulexp(row, other)


def _vmapped(vmap: Any, lib: Any, case: str) -> tuple[Any, Any]:
    """``case`` mapped over the leading axis of X, and what it must equal:
    the call on all of X, or the slices' calls stacked (the cross-entropy
    case takes a part of X)."""
    if case in UNMAPPABLE:
        pytest.skip("reduces over the mapped axis")
    x = lib.asarray(X)
    if case not in MAPPED:
        return vmap(lambda r: CASES[case](r, lib))(x), CASES[case](x, lib)
    other = lib.asarray(MAPPED[case])
    got = vmap(lambda r, o: _slice_call(case, r, o, lib))(x, other)
    if case == "cross_entropy":
        slices = [_slice_call(case, x[i], other[i], lib) for i in range(len(X))]
        return got, lib.stack(slices)
    return got, CASES[case](x, lib)


@pytest.mark.parametrize("case", list(CASES))
def test_jax_vmap(jax, case):
    got, want = _vmapped(jax.vmap, jax.numpy, case)
    _close(got, want, case)


@pytest.mark.parametrize("case", list(CASES))
def test_jax_grad_of_jit(jax, case):
    loss = _jax_loss(jax, case)
    x = jax.numpy.asarray(X)
    eager = jax.grad(loss)(x)
    assert np.isfinite(np.asarray(eager)).all(), case
    _close(jax.grad(jax.jit(loss))(x), eager, case)
    _close(jax.jit(jax.grad(loss))(x), eager, case)


# PyTorch ---------------------------------------------------------------------------


@pytest.fixture
def torch(request):
    return library_session(request, "torch")


def _torch_loss(torch: Any, case: str) -> Callable[[Any], Any]:
    f = CASES[case]
    shape = tuple(f(torch.asarray(X), torch).shape)
    g = torch.asarray(_cotangent(shape))

    def loss(x: Any) -> Any:
        out = f(x, torch)
        return torch.where(torch.isfinite(out), out * g, 0.0).sum()

    return loss


def _torch_grad(loss: Callable[[Any], Any], x: Any) -> Any:
    torch = pytest.importorskip("torch")
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(x), x)
    return grad


def _compiler_or_skip() -> None:
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        pytest.skip("torch.compile's CPU backend needs a C++ compiler; none found")


# Inductor warns about torch.jit in its CPU passes, which is not lsekit's.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")
@pytest.mark.parametrize("case", list(CASES))
def test_torch_compile_fullgraph(torch, case):
    # fullgraph=True: a graph break anywhere in lsekit fails the test.
    # Inductor compiles the value; the gradient's graph goes through AOT
    # autograd without Inductor's code generation, which costs a minute
    # a function on a small machine and tests nothing more of lsekit.
    _compiler_or_skip()
    torch._dynamo.reset()
    x = torch.asarray(X)
    f = CASES[case]
    got = torch.compile(lambda x: f(x, torch), fullgraph=True)(x)
    _close(got.numpy(), f(x, torch).numpy(), case)
    loss = _torch_loss(torch, case)
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    _close(_torch_grad(compiled, x).numpy(), _torch_grad(loss, x).numpy(), case)


# First calls to lsekit while Dynamo traces, in a process of their own: the
# fast path's modules must already be imported, or imported by a statement
# that Dynamo runs (the autograd functions, on the first call that records
# a gradient), since it cannot trace importlib (the other tests' eager
# calls import them in this process); and a user who compiles lsekit must
# see no warning from it. Inductor's own DeprecationWarning (torch.jit) is
# one that Python shows no user by default; the one that Dynamo gives for
# a custom autograd.Function it records without showing it. The training
# steps take the float32 fast path; torch.func's grad, compiled, the
# standard-only path after a graph break.
FIRST_CALLS = """
import warnings
import torch
import lsekit
x = torch.linspace(-3.0, 3.0, 12).reshape(3, 4)
y = torch.tensor([0, 3, 1])
w = torch.tensor([0.5, 1.0, 2.0, 1.5])
calls = {
    "logsumexp": lambda x: lsekit.logsumexp(x, axis=1),
    "softmax": lambda x: lsekit.softmax(x, axis=1),
    "log_softmax": lambda x: lsekit.log_softmax(x, axis=1),
    "cross_entropy": lambda x: lsekit.cross_entropy(x, y, reduction="none"),
    "cross_entropy-weighted": lambda x: lsekit.cross_entropy(
        x, y, weight=w.to(x.dtype), label_smoothing=0.1
    ),
    "logmatmulexp": lambda x: lsekit.logmatmulexp(x, x.T),
}
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    for name, f in calls.items():
        got = torch.compile(f, fullgraph=True)(x)
        print(name, float((got.double() - f(x.double())).abs().max()))
    for name in ("logsumexp", "softmax", "log_softmax", "cross_entropy"):
        def total(x, f=calls[name]):
            out = f(x)
            spread = torch.linspace(-1.0, 1.0, out.numel()).reshape(out.shape)
            return (out * spread).sum()
        a, b = x.clone().requires_grad_(True), x.double().requires_grad_(True)
        torch.compile(total, fullgraph=True)(a).backward()
        total(b).backward()
        print("train-" + name, float((a.grad.double() - b.grad).abs().max()))
        got = torch.compile(torch.func.grad(total))(x)
        print("grad-" + name, float((got.double() - b.grad).abs().max()))
for w in seen:
    if not (w.category is DeprecationWarning and "torch.jit" in str(w.message)):
        print("warning", w.category.__name__, w.message)
"""


def test_torch_compile_first_calls(torch):
    _compiler_or_skip()
    done = subprocess.run(
        [sys.executable, "-c", FIRST_CALLS],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line.rsplit(" ", 1) for line in done.stdout.splitlines()]
    warned = [" ".join(line) for line in lines if line[0].startswith("warning")]
    assert not warned, warned
    assert len(lines) == 14, done.stdout
    for name, error in lines:
        assert float(error) < 1e-6, name


@pytest.mark.parametrize("case", list(CASES))
def test_torch_func_grad(torch, case):
    loss = _torch_loss(torch, case)
    x = torch.asarray(X)
    got = torch.func.grad(loss)(x)
    want = _torch_grad(loss, x)
    assert torch.isfinite(want).all(), case
    _close(got.numpy(), want.numpy(), case)


@pytest.mark.parametrize("case", list(CASES))
def test_torch_func_vmap(torch, case):
    got, want = _vmapped(torch.func.vmap, torch, case)
    _close(got.numpy(), want.numpy(), case)


def test_torch_func_vmap_of_grad_is_per_slice_grad(torch):
    # The per-example gradients of a batch, the usual reason for vmap(grad).
    x = torch.asarray(X)
    right = torch.asarray(RIGHT)

    def loss(row: Any, other: Any) -> Any:
        return logsumexp(logmatmulexp(row, other))

    got = torch.func.vmap(torch.func.grad(loss))(x, right)
    want = torch.stack(
        [
            _torch_grad(lambda r, o=o: loss(r, o), row)
            for row, o in zip(x, right, strict=True)
        ]
    )
    _close(got.numpy(), want.numpy(), "vmap(grad)")
