"""cross_entropy: PyTorch's results on every backend, plus lsekit's own rules.

``torch.nn.functional.cross_entropy`` is the reference: random
configurations are compared against it formula for formula, with the data
moved so the classes sit at dim 1 (PyTorch's ``(N, C, d1, ..., dK)``).
The departures from PyTorch (nothing counted, zero-mass ``-inf`` classes,
all ``-inf`` rows, out-of-range indices) are checked against closed forms.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, replace

import numpy as np
import pytest

from lsekit import cross_entropy, log_softmax

torch = pytest.importorskip(
    "torch", reason="torch.nn.functional.cross_entropy is the reference"
)
F = torch.nn.functional

INF = np.inf
EPS64 = float(np.finfo(np.float64).eps)
REDUCTIONS = ("none", "mean", "sum")
INT_DTYPES = ["int8", "int16", "int32", "int64", "uint8"]


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    # Seeded by the test's own id, so that its data do not depend on which
    # other tests ran before it (or on which backends were selected).
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))


# For the hand-made cases below (C <= 5, weights <= 3, a few examples): the
# allowance of _torch_atol (4 (C + 2) ulps per unit of target weight) stays
# under 1e-13. PyTorch's rounding of log(sum(exp)) is absolute, so a small
# loss (0.005, say) cannot agree with it to a fixed relative tolerance.
TORCH_TOL = {"rtol": 1e-12, "atol": 1e-13}


# Random configurations --------------------------------------------------------


@dataclass
class Case:
    """One call of ``cross_entropy``, in lsekit's layout (classes at ``axis``)."""

    x: np.ndarray
    axis: int
    target: np.ndarray
    probabilities: bool
    weight: np.ndarray | None
    ignore_index: int | None
    reduction: str
    smoothing: float
    where: np.ndarray | None = None
    label: str = ""

    @property
    def class_axis(self) -> int:
        return self.axis % self.x.ndim

    @property
    def n_classes(self) -> int:
        return self.x.shape[self.class_axis]

    @property
    def examples(self) -> tuple[int, ...]:
        i = self.class_axis
        return self.x.shape[:i] + self.x.shape[i + 1 :]

    def describe(self) -> str:
        w = None if self.weight is None else np.round(self.weight, 3).tolist()
        mask = None if self.where is None else self.where.shape
        return (
            f"{self.label}: logits {self.x.shape} axis={self.axis} "
            f"target={'probabilities' if self.probabilities else 'indices'} "
            f"weight={w} ignore_index={self.ignore_index} "
            f"reduction={self.reduction!r} label_smoothing={self.smoothing:.4g} "
            f"where={mask} dtype={self.x.dtype}"
        )

    def rounded(self, dtype: type) -> Case:
        """The same case with its floating data rounded to ``dtype`` (kept as
        float64, so that the reference sees exactly what the backend gets)."""

        def r(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a.astype(dtype).astype(np.float64)

        target = r(self.target) if self.probabilities else self.target
        return replace(self, x=r(self.x), weight=r(self.weight), target=target)


def _probabilities(
    gen: np.random.Generator, examples: tuple[int, ...], n_classes: int, i: int
) -> np.ndarray:
    kind = gen.integers(0, 3)
    if kind == 0:
        p = gen.dirichlet(np.full(n_classes, 0.5), size=examples)
    elif kind == 1:
        p = np.eye(n_classes)[gen.integers(0, n_classes, size=examples)]
    else:
        # PyTorch does not ask probabilities to sum to 1, and neither does
        # lsekit: unnormalised sparse targets exercise the general formula.
        p = gen.uniform(0.0, 2.0, size=(*examples, n_classes))
        p[p < 0.6] = 0.0
    return np.moveaxis(p, -1, i)


# (shape, class axis): every rank from the unbatched (C,) to (N, C, d1, d2),
# the class axis at every position, C from 1 to 10. A fixed menu rather
# than random shapes: JAX compiles every operation afresh for each new
# shape (seconds apiece), so unbounded shapes would dominate its run time.
LAYOUTS = [
    ((5,), 0),
    ((10,), -1),
    ((1,), 0),
    ((4, 3), 1),
    ((3, 7), -1),
    ((2, 1), 1),
    ((4, 2), 0),
    ((10, 3), -2),
    ((3, 4, 2), 1),
    ((2, 3, 7), 2),
    ((4, 2, 3), 0),
    ((1, 10, 3), -2),
    ((2, 4, 3, 2), 1),
    ((2, 3, 2, 3), 3),
    ((3, 2, 2, 2), 0),
    ((2, 2, 7, 2), -2),
]


def _random_case(gen: np.random.Generator, label: str) -> Case:
    shape, axis = LAYOUTS[int(gen.integers(0, len(LAYOUTS)))]
    ndim = len(shape)
    i = axis % ndim
    n_classes = shape[i]
    examples = shape[:i] + shape[i + 1 :]
    axis = i - ndim if gen.random() < 0.5 else i
    scale = float(np.exp(gen.uniform(np.log(0.1), np.log(30.0))))
    offset = float(gen.choice([0.0, 0.0, 1000.0, -1000.0]))
    x = offset + scale * gen.standard_normal(shape)
    smoothing = float(gen.choice([0.0, 0.1, gen.uniform()]))
    weight = gen.uniform(0.1, 3.0, n_classes) if gen.random() < 0.5 else None
    reduction = str(gen.choice(REDUCTIONS))
    ignore = None
    if gen.random() < 0.35:
        target = _probabilities(gen, examples, n_classes, i)
        probabilities = True
    else:
        probabilities = False
        if gen.random() < 0.3:
            # The most likely class: confident, correct predictions give
            # the tiny losses that a naive log(sum(exp)) - x_y cancels.
            target = np.argmax(x, axis=i)
        else:
            target = gen.integers(0, n_classes, size=examples)
        target = np.asarray(target, dtype=np.int64)
        kind = gen.integers(0, 3)
        if kind == 1:
            ignore = int(gen.integers(0, n_classes))
        elif kind == 2:
            ignore = int(gen.choice([-100, -1, n_classes, n_classes + 3]))
        if ignore is not None:
            hit = np.asarray(gen.random(examples) < 0.3)
            target = np.where(hit, ignore, target)
        if reduction == "mean" and np.all(target == ignore):
            # PyTorch's mean over nothing is NaN by design (lsekit's is 0,
            # tested on its own below).
            reduction = "sum"
    return Case(
        x=x,
        axis=axis,
        target=target,
        probabilities=probabilities,
        weight=weight,
        ignore_index=ignore,
        reduction=reduction,
        smoothing=smoothing,
        label=f"{label} scale={scale:.3g} offset={offset:g}",
    )


# Running a case: lsekit on a backend, PyTorch as the reference ----------------


def _torch_layout(a: np.ndarray, i: int) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(a, i, 1) if a.ndim > 1 else a)


def _torch(case: Case, reduction: str | None = None) -> np.ndarray:
    """PyTorch's loss in float64, on ``case`` moved to PyTorch's layout."""
    i = case.class_axis
    x = torch.from_numpy(_torch_layout(case.x.astype(np.float64), i))
    if case.probabilities:
        t = torch.from_numpy(_torch_layout(case.target.astype(np.float64), i))
    else:
        t = torch.from_numpy(np.asarray(case.target, dtype=np.int64))
    w = None if case.weight is None else torch.from_numpy(case.weight.astype("f8"))
    out = F.cross_entropy(
        x,
        t,
        weight=w,
        # Always explicit: lsekit ignores nothing by default, PyTorch -100;
        # the random targets never hold -100 unless it is the ignore_index.
        ignore_index=-100 if case.ignore_index is None else case.ignore_index,
        reduction=case.reduction if reduction is None else reduction,
        label_smoothing=case.smoothing,
    )
    return out.numpy()


def _run(bk, case: Case, dtype: str = "float64"):
    """lsekit's loss for ``case`` on ``bk``, as NumPy, after checking the
    result's namespace, device and dtype."""
    return bk.to_numpy(_call(bk, case, dtype))


def _call(bk, case: Case, dtype: str = "float64"):
    """lsekit's loss for ``case`` on ``bk``, after checking the result's
    namespace, device and dtype; lazy on Dask."""
    a = bk.asarray(case.x, dtype)
    t = bk.asarray(case.target, dtype if case.probabilities else None)
    w = None if case.weight is None else bk.asarray(case.weight, dtype)
    m = None if case.where is None else bk.asarray(case.where, None)
    out = cross_entropy(
        a,
        t,
        axis=case.axis,
        weight=w,
        ignore_index=case.ignore_index,
        reduction=case.reduction,
        label_smoothing=case.smoothing,
        where=m,
    )
    bk.check_array(out, a, bk.dtype(dtype))
    return out


def _counted(case: Case) -> np.ndarray:
    counted = np.ones(case.examples, dtype=bool)
    if not case.probabilities and case.ignore_index is not None:
        counted &= case.target != case.ignore_index
    if case.where is not None:
        counted &= np.broadcast_to(case.where, case.examples)
    return counted


def _torch_atol(case: Case) -> float | np.ndarray:
    """An absolute allowance for PyTorch's own rounding.

    PyTorch forms ``(x - m) - log(sum(exp(x - m)))``: the logarithm of a sum
    of C rounded exponentials is off by up to about (C + 1) ulps of 1, so
    each example's loss carries an absolute error of that many ulps times
    the weight mass of its target. A confident, correct prediction's loss
    (1e-17, say) is smaller than that error, so PyTorch cannot agree with
    it relatively; lsekit, which keeps such losses to full relative
    accuracy, is the accurate side there. Elsewhere this allowance is far
    below rtol=1e-12.
    """
    n = case.n_classes
    w = np.ones(n) if case.weight is None else case.weight
    eps = case.smoothing
    if case.probabilities:
        q = (1 - eps) * np.moveaxis(case.target, case.class_axis, -1) + eps / n
        mass = (q * w).sum(axis=-1)
    else:
        y = np.clip(case.target, 0, n - 1)
        mass = (1 - eps) * w[y] + eps / n * w.sum()
    counted = _counted(case)
    mass = np.where(counted, mass, 0.0)
    per_ulp = 4.0 * (n + 2) * EPS64
    if case.reduction == "none":
        return per_ulp * mass
    total = per_ulp * float(mass.sum())
    if case.reduction == "sum":
        return total
    if case.probabilities or case.weight is None:
        return total / max(1, int(counted.sum()))
    return total / float(np.where(counted, w[np.clip(case.target, 0, n - 1)], 0).sum())


def _assert_close(got, want, *, rtol: float, atol=0.0, msg: str = "") -> None:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{msg}\nshape {got.shape} != {want.shape}"
    bound = rtol * np.abs(want) + atol
    with np.errstate(invalid="ignore"):
        ok = (got == want) | (np.abs(got - want) <= bound)
    if not ok.all():
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.abs(got - want) / np.abs(want)
        raise AssertionError(
            f"{msg}\n{int((~ok).sum())} of {ok.size} differ; got "
            f"{got[~ok][:5]}, PyTorch {want[~ok][:5]}, relative {rel[~ok][:5]}"
        )


# 1. Differential tests against PyTorch -----------------------------------------

SEEDS = range(24)
CASES_PER_SEED = 13


def _cases(bk, n: int) -> int:
    # Dask builds and computes a fresh graph for every call (about 0.1 s
    # each): it runs two cases of every seed.
    return 2 if bk.manifest.lazy else n


@pytest.mark.parametrize("seed", SEEDS)
def test_matches_torch(bk, seed):
    gen = np.random.default_rng([4217, seed])
    cases = [_random_case(gen, f"seed {seed} case {k}") for k in range(CASES_PER_SEED)]
    outs = [_call(bk, case) for case in cases]
    if bk.manifest.lazy:
        # Every case of the seed, in one computation of the lazy graphs.
        outs = list(bk.module.compute(*outs))
    for case, out in zip(cases, outs, strict=True):
        _assert_close(
            bk.to_numpy(out),
            _torch(case),
            rtol=1e-12,
            atol=_torch_atol(case),
            msg=case.describe(),
        )


@pytest.mark.parametrize("seed", range(6))
def test_matches_torch_float32(bk, seed):
    gen = np.random.default_rng([5003, seed])
    for k in range(_cases(bk, 10)):
        case = _random_case(gen, f"seed {seed} case {k}").rounded(np.float32)
        # float32 is computed in float64 and rounded once at the end: half
        # an ulp of float32 (2**-24 relative), with a factor 2 to spare.
        _assert_close(
            _run(bk, case, "float32"),
            _torch(case),
            rtol=2.0**-23,
            atol=_torch_atol(case),
            msg=case.describe(),
        )


# 2. where ----------------------------------------------------------------------


def _mask(gen: np.random.Generator, examples: tuple[int, ...]) -> np.ndarray:
    """A random mask of a shape that broadcasts to ``examples``."""
    shape = [n if gen.random() < 0.7 else 1 for n in examples]
    shape = shape[int(gen.integers(0, len(shape) + 1)) :]
    return np.asarray(gen.random(shape) < 0.7)


@pytest.mark.parametrize("seed", range(8))
def test_where_matches_torch(bk, seed):
    gen = np.random.default_rng([6007, seed])
    for k in range(_cases(bk, 10)):
        case = _random_case(gen, f"seed {seed} case {k}")
        case.where = _mask(gen, case.examples)
        counted = _counted(case)
        if case.reduction == "mean" and not counted.any():
            case.reduction = "sum"
        msg = case.describe()
        got = _run(bk, case)
        if not case.probabilities:
            # A masked example is an ignored one: give it the ignore_index.
            ignore = -100 if case.ignore_index is None else case.ignore_index
            masked = np.broadcast_to(case.where, case.examples)
            ref = replace(
                case,
                target=np.where(masked, case.target, ignore),
                ignore_index=ignore,
                where=None,
            )
            _assert_close(got, _torch(ref), rtol=1e-12, atol=_torch_atol(case), msg=msg)
            continue
        # Probabilities have no ignore_index in PyTorch: mask its per-example
        # losses by hand; the mean divides by the unmasked examples.
        each = np.where(counted, _torch(case, "none"), 0.0)
        if case.reduction == "none":
            want = each
        elif case.reduction == "sum":
            want = each.sum()
        else:
            want = each.sum() / counted.sum()
        _assert_close(got, want, rtol=1e-12, atol=_torch_atol(case), msg=msg)


def test_where_broadcasts_over_leading_axes(bk, rng):
    x = rng.normal(size=(3, 4, 5))
    t = rng.integers(0, 4, size=(3, 5))
    mask = np.array([True, False, True, True, False])
    got = cross_entropy(
        bk.asarray(x),
        bk.asarray(t, None),
        axis=1,
        reduction="none",
        where=bk.asarray(mask, None),
    )
    want = F.cross_entropy(
        torch.from_numpy(x),
        torch.from_numpy(np.where(mask, t, -100)),
        reduction="none",
    ).numpy()
    _assert_close(bk.to_numpy(got), want, **TORCH_TOL)
    assert (bk.to_numpy(got)[:, ~mask] == 0).all()


# 3. Semantics --------------------------------------------------------------------


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
@pytest.mark.parametrize("how", ["ignored", "masked", "masked probabilities"])
def test_nothing_counted_is_zero(bk, how, smoothing, weighted, rng):
    x = rng.normal(scale=3.0, size=(3, 4))
    w = bk.asarray(rng.uniform(0.5, 2.0, 4)) if weighted else None
    mask, ignore = None, None
    if how == "ignored":
        t, ignore = bk.asarray(np.full(3, 2), None), 2
    elif how == "masked":
        t, mask = bk.asarray(np.array([0, 1, 3]), None), np.zeros(3, bool)
    else:
        t, mask = bk.asarray(rng.dirichlet(np.ones(4), 3)), np.zeros(3, bool)
    where = None if mask is None else bk.asarray(mask, None)
    a = bk.asarray(x)
    for reduction in REDUCTIONS:
        out = cross_entropy(
            a,
            t,
            weight=w,
            ignore_index=ignore,
            reduction=reduction,
            label_smoothing=smoothing,
            where=where,
        )
        got = bk.to_numpy(out)
        # PyTorch's mean here is 0/0 = NaN; lsekit's is documented as 0.
        want = np.zeros(3) if reduction == "none" else np.float64(0.0)
        np.testing.assert_array_equal(got, want, err_msg=f"{how} {reduction}")
        assert got.shape == want.shape


def test_nothing_counted_has_zero_gradient(bk, rng):
    x = rng.normal(size=(3, 4))
    t = np.full(3, 1)
    if bk.name == "torch":
        a = torch.tensor(x, requires_grad=True)
        cross_entropy(a, torch.from_numpy(t), ignore_index=1).backward()
        grad = a.grad.numpy()
    elif bk.name == "jax":
        import jax

        grad = np.asarray(
            jax.grad(lambda a: cross_entropy(a, bk.asarray(t, None), ignore_index=1))(
                bk.asarray(x)
            )
        )
    else:
        pytest.skip(f"{bk.name} has no automatic differentiation")
    np.testing.assert_array_equal(grad, np.zeros_like(x))


def _row_one_torch(x_row, t_row, **kw):
    out = F.cross_entropy(torch.tensor(x_row), torch.tensor(t_row), **kw)
    return float(out)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_all_neginf_row_index_target_is_inf(bk, smoothing):
    x = np.array([[-INF, -INF, -INF], [0.5, -1.0, 2.0]])
    t = np.array([1, 2])
    a = bk.asarray(x)
    got = bk.to_numpy(
        cross_entropy(
            a, bk.asarray(t, None), reduction="none", label_smoothing=smoothing
        )
    )
    # PyTorch gives NaN for the -inf row (-inf - -inf); the other row is
    # unaffected and must still match it.
    assert got[0] == INF
    _assert_close(
        got[1], _row_one_torch(x[1], t[1], label_smoothing=smoothing), **TORCH_TOL
    )


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_all_neginf_row_reduces_to_inf(bk, reduction):
    x = np.array([[-INF, -INF, -INF], [0.5, -1.0, 2.0]])
    got = cross_entropy(
        bk.asarray(x), bk.asarray(np.array([1, 2]), None), reduction=reduction
    )
    assert bk.to_numpy(got) == INF


@pytest.mark.parametrize("target", [[0.0, 1.0, 0.0], [0.2, 0.3, 0.5]])
def test_all_neginf_row_probability_target_is_inf(bk, target):
    x = np.array([[-INF, -INF, -INF]])
    got = cross_entropy(bk.asarray(x), bk.asarray([target]), reduction="none")
    np.testing.assert_array_equal(bk.to_numpy(got), [INF])


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_neginf_logit_without_target_mass_costs_nothing(bk, reduction, weighted, rng):
    # Class 2 has logit -inf and no target mass: the loss is that of the
    # problem without class 2 (where PyTorch gives NaN, 0 * -inf, with it).
    x = rng.normal(scale=2.0, size=(4, 5))
    x[:, 2] = -INF
    p = rng.dirichlet(np.ones(5), 4)
    p[:, 2] = 0.0
    w = rng.uniform(0.5, 2.0, 5) if weighted else None
    keep = [0, 1, 3, 4]
    want = F.cross_entropy(
        torch.from_numpy(x[:, keep]),
        torch.from_numpy(p[:, keep]),
        weight=None if w is None else torch.from_numpy(w[keep]),
        reduction=reduction,
    ).numpy()
    got = cross_entropy(
        bk.asarray(x),
        bk.asarray(p),
        weight=None if w is None else bk.asarray(w),
        reduction=reduction,
    )
    _assert_close(bk.to_numpy(got), want, **TORCH_TOL)


def test_neginf_logit_with_zero_weight_costs_nothing_under_smoothing(bk):
    # Smoothing spreads mass over every class, but class 1 has weight 0:
    # its -inf logit costs nothing, and it drops out of the log-softmax.
    x = np.array([[0.3, -INF, 1.2, -0.4], [2.0, -INF, 0.1, 0.0]])
    t = np.array([0, 2])
    w = np.array([1.5, 0.0, 0.7, 1.1])
    eps, n = 0.25, 4
    keep = [0, 2, 3]
    lsm = torch.log_softmax(torch.from_numpy(x[:, keep]), dim=1).numpy()
    full = np.zeros((2, 4))
    full[:, keep] = lsm
    want = -(1 - eps) * w[t] * full[[0, 1], t] - eps / n * (w * full).sum(axis=1)
    got = cross_entropy(
        bk.asarray(x),
        bk.asarray(t, None),
        weight=bk.asarray(w),
        label_smoothing=eps,
        reduction="none",
    )
    _assert_close(bk.to_numpy(got), want, **TORCH_TOL)


def test_neginf_target_logit_with_zero_weight_costs_nothing(bk):
    # The documented rule applies to the target class itself too: weight 0
    # on class 1, whose logit is -inf, is 0 * inf = 0, not NaN.
    x = np.array([[0.0, -INF, 1.0], [0.5, 0.2, -0.3]])
    t = np.array([1, 0])
    w = np.array([1.0, 0.0, 2.0])
    got = cross_entropy(
        bk.asarray(x), bk.asarray(t, None), weight=bk.asarray(w), reduction="none"
    )
    want = [0.0, _row_one_torch(x[1], t[1], weight=torch.from_numpy(w))]
    _assert_close(bk.to_numpy(got), want, **TORCH_TOL)


@pytest.mark.parametrize(
    ("target", "smoothing"),
    [([[0.3, 0.2, 0.5]], 0.0), ([[0.5, 0.0, 0.5]], 0.1), (None, 0.1)],
    ids=["mass", "smoothed-probabilities", "smoothed-index"],
)
def test_neginf_logit_with_target_mass_is_inf(bk, target, smoothing):
    # Positive mass on a -inf logit: PyTorch and lsekit both give +inf.
    x = np.array([[0.0, -INF, 1.0]])
    t = np.array([0]) if target is None else np.array(target)
    want = F.cross_entropy(
        torch.from_numpy(x),
        torch.from_numpy(t),
        label_smoothing=smoothing,
        reduction="none",
    ).numpy()
    assert want[0] == INF
    got = cross_entropy(
        bk.asarray(x),
        bk.asarray(t, "float64" if target is not None else None),
        label_smoothing=smoothing,
        reduction="none",
    )
    np.testing.assert_array_equal(bk.to_numpy(got), want)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_index_loss_is_negative_log_softmax_at_target(bk, axis, rng):
    x = rng.normal(scale=8.0, size=(5, 6, 4))
    n = x.shape[axis]
    t = rng.integers(0, n, size=np.delete(x.shape, axis))
    a = bk.asarray(x)
    got = bk.to_numpy(
        cross_entropy(a, bk.asarray(t, None), axis=axis, reduction="none")
    )
    lsm = bk.to_numpy(log_softmax(a, axis=axis))
    at = np.take_along_axis(lsm, np.expand_dims(t, axis), axis=axis)
    # Both split the logsumexp the same way: they differ by rounding alone.
    _assert_close(got, -np.squeeze(at, axis), rtol=4 * EPS64)


@pytest.mark.parametrize("probabilities", [False, True])
def test_smoothed_weighted_loss_from_log_softmax(bk, probabilities, rng):
    x = rng.normal(scale=4.0, size=(7, 5))
    w = rng.uniform(0.2, 2.0, 5)
    eps = 0.35
    a = bk.asarray(x)
    lsm = bk.to_numpy(log_softmax(a, axis=1))
    if probabilities:
        p = rng.dirichlet(np.ones(5), 7)
        t = bk.asarray(p)
        want = -((w * ((1 - eps) * p + eps / 5)) * lsm).sum(axis=1)
    else:
        y = rng.integers(0, 5, size=7)
        t = bk.asarray(y, None)
        want = -(1 - eps) * w[y] * lsm[np.arange(7), y] - eps / 5 * (w * lsm).sum(1)
    got = cross_entropy(
        a, t, weight=bk.asarray(w), label_smoothing=eps, reduction="none"
    )
    _assert_close(bk.to_numpy(got), want, rtol=1e-14)


@pytest.mark.parametrize("weighted", [False, True])
def test_full_smoothing_is_the_uniform_target(bk, weighted, rng):
    x = rng.normal(scale=3.0, size=(6, 5))
    w = rng.uniform(0.2, 2.0, 5) if weighted else np.ones(5)
    weight = bk.asarray(w) if weighted else None
    a = bk.asarray(x)
    want = -(w * torch.log_softmax(torch.from_numpy(x), dim=1).numpy()).sum(1) / 5
    # With every label smoothed away, the class index no longer matters.
    for y in (np.zeros(6, int), rng.integers(0, 5, size=6)):
        got = cross_entropy(
            a, bk.asarray(y, None), weight=weight, label_smoothing=1.0, reduction="none"
        )
        _assert_close(bk.to_numpy(got), want, **TORCH_TOL)
    uniform = cross_entropy(
        a, bk.asarray(np.full((6, 5), 0.2)), weight=weight, reduction="none"
    )
    _assert_close(bk.to_numpy(uniform), want, **TORCH_TOL)


def test_equal_logits_cost_log_c(bk):
    for n in (1, 2, 3, 10, 1000):
        got = cross_entropy(
            bk.asarray(np.zeros((2, n))),
            bk.asarray(np.array([0, n - 1]), None),
            label_smoothing=0.4,
            reduction="none",
        )
        _assert_close(bk.to_numpy(got), [math.log(n)] * 2, rtol=2 * EPS64)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("probabilities", [False, True])
def test_unbatched(bk, reduction, probabilities, rng):
    x = rng.normal(scale=3.0, size=5)
    if probabilities:
        t = rng.dirichlet(np.ones(5))
        target = bk.asarray(t)
    else:
        t = np.array(3)
        target = bk.asarray(t, None)
    w = rng.uniform(0.5, 2.0, 5)
    a = bk.asarray(x)
    out = cross_entropy(
        a,
        target,
        axis=0,
        weight=bk.asarray(w),
        reduction=reduction,
        label_smoothing=0.1,
    )
    bk.check_array(out, a)
    want = F.cross_entropy(
        torch.from_numpy(x),
        torch.from_numpy(t),
        weight=torch.from_numpy(w),
        reduction=reduction,
        label_smoothing=0.1,
    ).numpy()
    assert want.shape == ()
    _assert_close(bk.to_numpy(out), want, **TORCH_TOL)


def test_python_lists():
    x = [[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]]
    want = F.cross_entropy(
        torch.tensor(x, dtype=torch.float64),
        torch.tensor([0, 2]),
        weight=torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64),
    )
    got = cross_entropy(x, [0, 2], weight=[1.0, 2.0, 0.5])
    assert isinstance(got, np.floating)
    _assert_close(got, want.numpy(), **TORCH_TOL)
    probs = [[0.5, 0.5, 0.0], [0.1, 0.2, 0.7]]
    got = cross_entropy(x, probs, reduction="none")
    want = F.cross_entropy(
        torch.tensor(x, dtype=torch.float64),
        torch.tensor(probs, dtype=torch.float64),
        reduction="none",
    )
    _assert_close(got, want.numpy(), **TORCH_TOL)


@pytest.mark.parametrize("int_dtype", INT_DTYPES)
def test_integer_target_dtypes(bk, int_dtype, rng):
    x = rng.normal(scale=2.0, size=(4, 3, 2))
    t = rng.integers(0, 3, size=(4, 2)).astype(int_dtype)
    target = bk.asarray(t, None)
    assert int_dtype in str(target.dtype)
    a = bk.asarray(x)
    out = cross_entropy(a, target, axis=1, reduction="none", ignore_index=2)
    bk.check_array(out, a)
    want = F.cross_entropy(
        torch.from_numpy(x),
        torch.from_numpy(t.astype(np.int64)),
        reduction="none",
        ignore_index=2,
    ).numpy()
    _assert_close(bk.to_numpy(out), want, **TORCH_TOL)


@pytest.mark.parametrize(
    ("logits", "weight", "target", "result"),
    [
        ("float32", None, "index", "float32"),
        ("float32", "float32", "float32", "float32"),
        ("float32", "float64", "index", "float64"),
        ("float64", "float32", "index", "float64"),
        ("float32", None, "float64", "float64"),
    ],
)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_result_dtype(bk, logits, weight, target, result, reduction, rng):
    x = rng.normal(size=(3, 4))
    a = bk.asarray(x, logits)
    if target != "index":
        t = bk.asarray(rng.dirichlet(np.ones(4), 3), target)
    else:
        t = bk.asarray(np.array([0, 3, 1]), None)
    w = None if weight is None else bk.asarray(rng.uniform(0.5, 2.0, 4), weight)
    out = cross_entropy(a, t, weight=w, reduction=reduction)
    bk.check_array(out, a, bk.dtype(result))
    assert bk.to_numpy(out).shape == ((3,) if reduction == "none" else ())


@pytest.mark.parametrize(
    ("shape", "axis"),
    [
        ((5,), 0),
        ((5,), -1),
        ((3, 5), 1),
        ((5, 3), 0),
        ((2, 5, 3, 4), 1),
        ((2, 3, 4, 5), -1),
        ((2, 3, 5, 4), -2),
    ],
)
def test_result_shape(bk, shape, axis, rng):
    x = rng.normal(size=shape)
    examples = tuple(np.delete(shape, axis))
    t = rng.integers(0, 5, size=examples)
    a, target = bk.asarray(x), bk.asarray(t, None)
    none = cross_entropy(a, target, axis=axis, reduction="none")
    assert tuple(none.shape) == examples
    for reduction in ("mean", "sum"):
        out = cross_entropy(a, target, axis=axis, reduction=reduction)
        assert tuple(out.shape) == ()
        bk.check_array(out, a)
    each = bk.to_numpy(none)
    _assert_close(
        bk.to_numpy(cross_entropy(a, target, axis=axis, reduction="sum")),
        each.sum(),
        rtol=1e-14,
    )


def test_inputs_not_modified(bk, rng):
    x = np.array([[0.0, -INF, 3.0, 1.0], [2.0, 1.0, -1.0, 0.5], [1.0, 1.0, 1.0, 1.0]])
    y = np.array([0, 2, 3])
    p = rng.dirichlet(np.ones(4), 3)
    p[0, 1] = 0.0
    w = np.array([1.0, 0.5, 2.0, 1.5])
    mask = np.array([True, False, True])
    a, t, q = bk.asarray(x), bk.asarray(y, None), bk.asarray(p)
    weight, where = bk.asarray(w), bk.asarray(mask, None)
    for target, kw in ((t, {"ignore_index": 3}), (q, {})):
        cross_entropy(a, target, weight=weight, where=where, label_smoothing=0.2, **kw)
    for arr, orig in ((a, x), (t, y), (q, p), (weight, w), (where, mask)):
        np.testing.assert_array_equal(bk.to_numpy(arr), orig)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_read_only_inputs(bk, rng, dtype):
    """NumPy arrays that may not be written (``writeable`` False, as a
    read-only memory map's) give the losses of their writable copies."""
    if bk.name != "numpy":
        pytest.skip("only NumPy arrays carry a writeable flag")
    x = rng.normal(0.0, 3.0, size=(6, 9)).astype(dtype)
    y = np.array([0, 8, 3, 3, 1, 5])
    fixed = [x.copy(), y.copy()]
    for arr in fixed:
        arr.flags.writeable = False
    for kw in ({}, {"ignore_index": 3}, {"label_smoothing": 0.1}):
        got = cross_entropy(*fixed, reduction="none", **kw)
        np.testing.assert_array_equal(got, cross_entropy(x, y, reduction="none", **kw))


@pytest.mark.parametrize(
    ("shape", "axis"), [((0, 4), -1), ((2, 4, 0), 1), ((0, 3, 2), 1)]
)
@pytest.mark.parametrize("probabilities", [False, True])
def test_empty_batch(bk, shape, axis, probabilities):
    a = bk.asarray(np.zeros(shape))
    examples = tuple(np.delete(shape, axis))
    if probabilities:
        t = bk.asarray(np.zeros(shape))
    else:
        t = bk.asarray(np.zeros(examples, dtype=np.int64), None)
    none = cross_entropy(a, t, axis=axis, reduction="none")
    bk.check_array(none, a)
    assert bk.to_numpy(none).shape == examples
    for reduction in ("mean", "sum"):
        out = cross_entropy(a, t, axis=axis, reduction=reduction)
        bk.check_array(out, a)
        # PyTorch's mean of an empty batch is NaN; lsekit's is 0.
        assert bk.to_numpy(out) == 0.0


def test_bad_arguments(bk):
    a = bk.asarray(np.zeros((2, 3)))
    t = bk.asarray(np.array([0, 1]), None)
    probs = bk.asarray(np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="ignore_index"):
        cross_entropy(a, probs, ignore_index=0)
    with pytest.raises(ValueError, match="weight"):
        cross_entropy(a, t, weight=bk.asarray(np.ones(4)))
    with pytest.raises(ValueError, match="label_smoothing"):
        cross_entropy(a, t, label_smoothing=1.5)
    with pytest.raises(ValueError, match="reduction"):
        cross_entropy(a, t, reduction="average")
    with pytest.raises(ValueError, match="shape"):
        cross_entropy(a, bk.asarray(np.array([0, 1, 2]), None))
    with pytest.raises(TypeError, match="target"):
        cross_entropy(a, bk.asarray(np.array([True, False]), None))


# 4. Out-of-range class indices ---------------------------------------------------


@pytest.mark.parametrize("bad", [3, 9, -1, -7])
def test_out_of_range_index(bk, bad, rng):
    x = rng.normal(size=(3, 3))
    t = np.array([0, bad, 2])
    a, target = bk.asarray(x), bk.asarray(t, None)
    if not bk.manifest.lazy:
        with pytest.raises(ValueError, match=rf"class index {bad}\b"):
            cross_entropy(a, target, reduction="none")
        if bk.name == "jax":
            import jax

            # Under jit the values are unknown at the call: NaN instead.
            got = jax.jit(lambda a, t: cross_entropy(a, t, reduction="none"))(a, target)
            _check_nan_at_bad(bk, got, x, t)
        return
    # Lazy backends cannot look at the values without computing: the call
    # succeeds and the bad example's loss is NaN once computed.
    _check_nan_at_bad(bk, cross_entropy(a, target, reduction="none"), x, t)
    for reduction in ("mean", "sum"):
        assert np.isnan(bk.to_numpy(cross_entropy(a, target, reduction=reduction)))


def _check_nan_at_bad(bk, out, x, t):
    got = bk.to_numpy(out)
    assert np.isnan(got[1])
    good = [0, 2]
    want = F.cross_entropy(
        torch.from_numpy(x[good]), torch.from_numpy(t[good]), reduction="none"
    ).numpy()
    _assert_close(got[good], want, **TORCH_TOL)


@pytest.mark.parametrize("bad", [-100, 5, -1])
def test_out_of_range_index_equal_to_ignore_index(bk, bad, rng):
    x = rng.normal(size=(4, 3))
    t = np.array([0, bad, 2, bad])
    a, target = bk.asarray(x), bk.asarray(t, None)
    for reduction in REDUCTIONS:
        got = cross_entropy(a, target, ignore_index=bad, reduction=reduction)
        want = F.cross_entropy(
            torch.from_numpy(x),
            torch.from_numpy(t),
            ignore_index=bad,
            reduction=reduction,
        ).numpy()
        _assert_close(bk.to_numpy(got), want, **TORCH_TOL, msg=reduction)


@pytest.mark.parametrize("bad", [3, -1])
def test_out_of_range_index_masked_by_where(bk, bad, rng):
    x = rng.normal(size=(4, 3))
    t = np.array([0, bad, 2, 1])
    mask = np.array([True, False, True, True])
    a, target = bk.asarray(x), bk.asarray(t, None)
    for reduction in REDUCTIONS:
        got = cross_entropy(
            a, target, where=bk.asarray(mask, None), reduction=reduction
        )
        want = F.cross_entropy(
            torch.from_numpy(x),
            torch.from_numpy(np.where(mask, t, -100)),
            ignore_index=-100,
            reduction=reduction,
        ).numpy()
        _assert_close(bk.to_numpy(got), want, **TORCH_TOL, msg=reduction)
    # Only the counted entries are checked: an unmasked bad one still raises
    # (or is NaN on lazy backends).
    mask[1] = True
    if bk.manifest.lazy:
        out = cross_entropy(a, target, where=bk.asarray(mask, None))
        assert np.isnan(bk.to_numpy(out))
    else:
        with pytest.raises(ValueError, match=rf"class index {bad}\b"):
            cross_entropy(a, target, where=bk.asarray(mask, None))


@pytest.mark.parametrize("axis", [1, -1])
def test_batch_larger_than_a_block(bk, rng, axis):
    # Eager backends cut a batch of more than 2**18 logits into blocks along
    # its first axis (the last block shorter): the result is that of the
    # whole, PyTorch's.
    x = rng.normal(scale=4.0, size=(601, 3, 151))
    i = axis % x.ndim
    n_classes = x.shape[i]
    target = rng.integers(0, n_classes, size=x.shape[:i] + x.shape[i + 1 :])
    weight = rng.uniform(0.5, 2.0, n_classes)
    case = Case(x, axis, target, False, weight, None, "none", 0.1)
    _assert_close(
        _run(bk, case), _torch(case), rtol=1e-12, atol=_torch_atol(case), msg=str(axis)
    )
