"""The one place that talks to array-api-compat.

Everything backend-specific that the neutral implementation needs -- which
namespace an argument belongs to, how to turn Python scalars and lists into
arrays, which dtype to compute in -- lives here, so that ``_core`` is written
against the Array API standard alone.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import sys
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import array_api_compat

from ._core import reductions as _reductions

__all__ = [
    "add_rows",
    "as_arrays",
    "autodiff",
    "blocked_logmatmulexp",
    "compiled",
    "compute_dtype",
    "device",
    "differentiable",
    "errstate",
    "finalize",
    "index_dtype",
    "isdtype",
    "namespace",
    "passes",
    "positions",
    "put",
    "readable",
    "reusing",
]


# array-api-compat's type checks go through ``functools.lru_cache``, which
# Dynamo warns about, once per call site, each time ``torch.compile``
# traces one: a user who compiles a call to lsekit would see a screenful of
# warnings. PyTorch's tensors are told apart first, here, and namespaces by
# name; array-api-compat answers for the other arrays.
_NAMESPACES = {
    "numpy": ("numpy", "array_api_compat.numpy"),
    "torch": ("torch", "array_api_compat.torch"),
    "dask": ("dask.array", "array_api_compat.dask.array"),
    "jax": ("jax.numpy",),
    "array_api_strict": ("array_api_strict",),
}


def _is_torch(x: object) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _is_numpy(x: object) -> bool:
    return not _is_torch(x) and array_api_compat.is_numpy_array(x)


def _is_jax(x: object) -> bool:
    return not _is_torch(x) and array_api_compat.is_jax_array(x)


def _is_namespace(xp: ModuleType, library: str) -> bool:
    return xp.__name__ in _NAMESPACES[library]


def _is_array(x: object) -> bool:
    if _is_torch(x):
        return True
    if x is None or isinstance(x, (bool, int, float, complex, list, tuple)):
        return False
    return array_api_compat.is_array_api_obj(x)


def device(x: Any) -> Any:
    """The device of ``x`` (see ``array_api_compat.device``)."""
    if _is_torch(x):
        return x.device
    return array_api_compat.device(x)


def _torch_namespace() -> ModuleType:
    # array_namespace's answer for a tensor; a plain import, which Dynamo
    # follows where it would not follow importlib.
    import array_api_compat.torch as xp

    return xp


def _numpy_namespace() -> ModuleType:
    # array_namespace's answer for a NumPy array.
    import array_api_compat.numpy as xp

    return xp


def _namespace(func: str, named: dict[str, Any]) -> ModuleType:
    arrays = {k: v for k, v in named.items() if _is_array(v)}
    if not arrays:
        # Python scalars and lists are read as NumPy, as SciPy does.
        return _numpy_namespace()
    if all(_is_torch(v) for v in arrays.values()):
        return _torch_namespace()
    try:
        return array_api_compat.array_namespace(*arrays.values())
    except TypeError:
        kinds = ", ".join(
            f"{k} is {type(v).__module__}.{type(v).__qualname__}"
            for k, v in arrays.items()
        )
        raise TypeError(
            f"{func}() got arrays from different libraries ({kinds}); "
            "convert them to one array library first"
        ) from None


def _same_device(func: str, devices: dict[str, Any]) -> Any:
    """The one device of ``devices`` (by argument name; None if empty), or
    a ValueError naming them."""
    common = next(iter(devices.values()), None)
    if any(d != common for d in devices.values()):
        found = ", ".join(f"{k} on {d}" for k, d in devices.items())
        raise ValueError(f"{func}() got arrays on different devices ({found})")
    return common


def as_arrays(
    func: str, required: int = 1, **named: Any
) -> tuple[ModuleType, dict[str, Any]]:
    """Return the common namespace and every non-None argument as its array.

    Arguments that are not arrays (Python scalars, lists, NumPy scalars) are
    converted with the namespace of the arrays among them, on their device.
    The first ``required`` arguments are data and may not be None.
    """
    for name, value in list(named.items())[:required]:
        if value is None:
            raise TypeError(f"{func}() argument {name!r} must be an array, not None")
    numpy = sys.modules.get("numpy")
    if numpy is not None and all(
        v is None or type(v) is numpy.ndarray for v in named.values()
    ):
        # NumPy's own arrays, the common case: one namespace, one device,
        # nothing to convert, and the checks below cost more than the
        # arithmetic of a small call.
        return _numpy_namespace(), dict(named)
    torch = sys.modules.get("torch")
    if torch is not None and all(
        v is None or type(v) is torch.Tensor for v in named.values()
    ):
        # Tensors alone: the namespace is known, and so are the devices.
        found = {}
        for k, v in named.items():
            if v is None:
                continue
            if v.layout is not torch.strided:
                # Sparse and other layouts have none of the strided
                # operations that the Array API's functions are made of.
                raise TypeError(
                    f"{func}() argument {k!r} must be a dense tensor (layout "
                    f"torch.strided), got layout {v.layout}"
                )
            found[k] = v.device
        _same_device(func, found)
        return _torch_namespace(), dict(named)
    xp = _namespace(func, named)
    devices = {k: device(v) for k, v in named.items() if _is_array(v)}
    # Under jax.jit a traced argument has no device yet (None); only the
    # devices that are known can disagree.
    devices = {k: d for k, d in devices.items() if d is not None}
    common = _same_device(func, devices)
    out: dict[str, Any] = {}
    for k, v in named.items():
        if v is None or _is_array(v):
            out[k] = v
            continue
        try:
            out[k] = xp.asarray(v, device=common)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"{func}() argument {k!r} could not be converted to an array: "
                f"{v!r} ({exc})"
            ) from None
    return xp, out


# The answers about dtypes, which never change for a namespace, a dtype and
# a device (and PyTorch's default dtype): a lookup costs a call
# microseconds (array-api-compat's isdtype for PyTorch, a dozen calls;
# its dtypes() makes a tensor of each dtype), and a small call makes
# several. In a plain dict, as Dynamo warns about functools.cache; not
# while Dynamo traces, which refuses a write inside torch.cond's branches
# and would guard the compiled code on the dict's contents.
_DTYPES: dict[tuple[Any, ...], Any] = {}


def compiling() -> bool:
    """Whether Dynamo (``torch.compile``) traces this call: a cache written
    then would guard the compiled code on its contents, which the write
    itself changes (a second compile, at the next call)."""
    torch = sys.modules.get("torch")
    return torch is not None and bool(torch.compiler.is_compiling())


def _memo(key: tuple[Any, ...], find: Any) -> Any:
    if compiling():
        return find()
    if key not in _DTYPES:
        _DTYPES[key] = find()
    return _DTYPES[key]


def isdtype(xp: ModuleType, dtype: Any, kind: str | tuple[str, ...]) -> bool:
    """``xp.isdtype(dtype, kind)``, remembered."""
    return bool(_memo((xp.__name__, dtype, kind), lambda: xp.isdtype(dtype, kind)))


def _settled(xp: ModuleType, kind: str, dtype: Any, device: Any) -> Any:
    """The key under which an answer about ``dtype`` on ``device`` is
    remembered, or None where the device may not be hashable (CuPy's,
    JAX's), and the answer is cheap against the work anyway."""
    if _is_namespace(xp, "numpy"):
        return ("numpy", kind, dtype)
    if _is_namespace(xp, "torch"):
        torch = sys.modules["torch"]
        return ("torch", kind, dtype, device, torch.get_default_dtype())
    return None


def compute_dtype(xp: ModuleType, dtype: Any, device: Any) -> Any:
    """The floating dtype that a computation on ``dtype`` inputs runs in.

    Booleans and integers go to the namespace's default real floating dtype.
    Half precision (float16, bfloat16) runs in float32, so that neither the
    sum of exponentials nor logits near the dtype's maximum overflow.
    float32 runs in float64 where the namespace has it: the float32
    exponentials, logarithms and sums of some libraries (XLA's among them)
    are several ulps off, and a float64 pass rounds once, at the end.
    """
    key = _settled(xp, "compute", dtype, device)
    if key is None:
        return _compute_dtype(xp, dtype, device)
    return _memo(key, lambda: _compute_dtype(xp, dtype, device))


def _compute_dtype(xp: ModuleType, dtype: Any, device: Any) -> Any:
    info = xp.__array_namespace_info__()
    if isdtype(xp, dtype, ("bool", "integral")):
        return info.default_dtypes(device=device)["real floating"]
    if not isdtype(xp, dtype, "real floating"):
        return dtype
    bits = xp.finfo(dtype).bits
    if bits < 32:
        return xp.float32
    if bits == 32 and "float64" in info.dtypes(device=device, kind="real floating"):
        return xp.float64
    return dtype


@contextlib.contextmanager
def errstate(xp: ModuleType) -> Iterator[None]:
    """Silence NumPy's floating-point warnings for an eager computation.

    The core is written so that the usual non-finite inputs produce no
    warning; this only guards the exotic ones (infinite weights on ``-inf``
    terms) on NumPy-backed namespaces, where the arithmetic runs eagerly
    inside this block.
    """
    if _is_namespace(xp, "numpy") or _is_namespace(xp, "array_api_strict"):
        numpy = sys.modules["numpy"]
        with numpy.errstate(all="ignore"):
            yield
    else:
        yield


def compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn(xp, *arrays, **options)``, compiled as one program on JAX.

    Eager JAX compiles each operation on its own, for each new shape, and
    runs them one by one: a standard-only call of some fifty operations
    took a second to compile for each new shape and milliseconds to run.
    Compiled whole, it runs as one program, compiled once for each shape
    and set of options. ``fn``'s keyword-only parameters are the options:
    static, and hashable. Under ``jax.jit`` the programs nest; other
    libraries call ``fn`` itself.
    """
    params = inspect.signature(fn).parameters.values()
    static = tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY)

    @functools.cache
    def program() -> Callable[..., Any]:
        jitted: Callable[..., Any] = sys.modules["jax"].jit(
            fn, static_argnums=0, static_argnames=static
        )
        return jitted

    @functools.wraps(fn)
    def call(xp: ModuleType, *arrays: Any, **options: Any) -> Any:
        if _is_namespace(xp, "jax"):
            return program()(xp, *arrays, **options)
        return fn(xp, *arrays, **options)

    return call


def finalize(xp: ModuleType, x: Any) -> Any:
    """Give 0-d NumPy results as NumPy scalars, as SciPy does."""
    if _is_namespace(xp, "numpy") and x.ndim == 0:
        return x[()]
    return x


def index_dtype(xp: ModuleType, device: Any) -> Any:
    """The namespace's default indexing dtype (what gathers expect)."""
    key = _settled(xp, "index", None, device)
    if key is None:
        return _index_dtype(xp, device)
    return _memo(key, lambda: _index_dtype(xp, device))


def _index_dtype(xp: ModuleType, device: Any) -> Any:
    return xp.__array_namespace_info__().default_dtypes(device=device)["indexing"]


def readable(x: Any) -> bool:
    """Whether the values of ``x`` can be read now, cheaply and safely.

    False for Dask arrays (reading computes the graph), JAX tracers (inside
    ``jax.jit``), PyTorch tensors while ``torch.compile`` traces, and those
    that ``torch.func.vmap`` batches (one value per mapped slice).
    """
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(x, (numpy.ndarray, numpy.generic)):
        # The common case, asked several times in a small call.
        return True
    if _is_torch(x):
        torch = sys.modules["torch"]
        return not (
            torch.compiler.is_compiling() or torch._C._functorch.is_batchedtensor(x)
        )
    if _is_jax(x):
        return not isinstance(x, sys.modules["jax"].core.Tracer)
    return not array_api_compat.is_lazy_array(x)


def positions(xp: ModuleType, mask: Any) -> Any:
    """``nonzero(mask)[0]`` for a 1-D ``mask``, on eager arrays.

    On JAX, padded with 0 to the next power of two: every operation on the
    positions compiles once per shape, and the padding keeps the shapes
    few. ``put`` reads only as many values as ``mask`` holds.
    """
    if _is_jax(mask):
        count = int(xp.sum(xp.astype(mask, index_dtype(xp, device(mask)))))
        size = 0 if count == 0 else 1 << (count - 1).bit_length()
        return sys.modules["jax.numpy"].nonzero(mask, size=size, fill_value=0)[0]
    return xp.nonzero(mask)[0]


def put(xp: ModuleType, x: Any, mask: Any, values: Any, at: Any = None) -> Any:
    """``x`` with ``x[mask] = values``, for 1-D ``x`` and ``mask``.

    ``values`` come in the order of ``nonzero(mask)``, and ``x`` must be an
    array the caller made and may overwrite. NumPy, PyTorch and CuPy arrays
    are written in place, through the positions ``at`` (``positions(mask)``)
    where the caller has them, which is cheaper than the mask; the standard
    has no scatter, so elsewhere each masked position takes its value by its
    rank among the masked ones (and values past the masked count, from the
    padding of ``positions``, are never read).
    """
    if _is_torch(x) or _is_numpy(x) or array_api_compat.is_cupy_array(x):
        x[mask if at is None else at] = values
        return x
    counts = xp.astype(mask, index_dtype(xp, device(x)))
    rank = xp.clip(xp.cumulative_sum(counts) - 1, 0, None)
    return xp.where(mask, xp.take(values, rank), x)


def namespace(x: Any) -> ModuleType:
    """The array-api-compat namespace of ``x``."""
    if _is_torch(x):
        return _torch_namespace()
    return array_api_compat.array_namespace(x)


def passes(xp: ModuleType) -> _reductions.Passes:
    """How the core goes over arrays of ``xp``: chunk by chunk on Dask,
    where its steps written over whole arrays would hold far more than a
    chunk in memory (``_dask``); at once elsewhere, PyTorch picking the
    losses' targets by ``gather``."""
    if _is_namespace(xp, "dask"):
        from . import _dask

        return _dask.PASSES
    if _is_namespace(xp, "torch"):
        return _TORCH_PASSES
    return _reductions.EAGER


class _TorchPasses(_reductions.Passes):
    def take(self, xp: ModuleType, a: Any, at: Any, axis: int) -> Any:
        # array-api-compat's take_along_axis is torch.take_along_dim, which
        # specialises a torch.compile graph to its arguments' shapes: one
        # compile for each batch size and number of classes. gather picks
        # the same entries (the indices are in range) and does not.
        return a.gather(axis, at)


_TORCH_PASSES = _TorchPasses()


def blocked_logmatmulexp(a: Any, b: Any) -> Any:
    """``log(exp(a) @ exp(b))`` block by block, for Dask arrays of shapes
    ``(..., M, K)`` and ``(..., K, N)``; None for other arrays."""
    if _is_torch(a) or not array_api_compat.is_dask_array(a):
        return None
    from . import _dask

    return _dask.logmatmulexp(a, b)


def autodiff(*arrays: Any) -> str | None:
    """The autodiff system that may differentiate through ``arrays``.

    "torch" when PyTorch records a graph through them, carries forward-mode
    tangents on them, or a ``torch.func`` transform wraps them (``vmap``
    among them: the hook's batching rule keeps the eager path's reads of
    values out of the batched code); "jax" for JAX arrays (``jax.grad`` may
    trace any call); None otherwise.
    """
    first = arrays[0]
    if _is_torch(first):
        torch = sys.modules["torch"]
        if torch.compiler.is_compiling():
            # Dynamo traces no hook (nor the checks below); AOT autograd
            # differentiates the traced operations themselves.
            return None
        if torch.is_grad_enabled() and any(x.requires_grad for x in arrays):
            return "torch"
        wrapped = torch._C._functorch.is_functorch_wrapped_tensor
        dual = torch.autograd.forward_ad.unpack_dual
        if any(wrapped(x) or dual(x).tangent is not None for x in arrays):
            return "torch"
        return None
    if _is_jax(first):
        return "jax"
    return None


def differentiable(x: Any) -> bool:
    """Whether autodiff may differentiate through ``x``: always for JAX
    arrays, and for PyTorch tensors that autograd, forward-mode AD or a
    ``torch.func`` transform tracks, or while ``torch.compile`` traces."""
    if _is_torch(x):
        torch = sys.modules["torch"]
        return (
            torch.compiler.is_compiling() or x.requires_grad or autodiff(x) is not None
        )
    return _is_jax(x)


def add_rows(xp: ModuleType, x: Any, index: Any, values: Any) -> Any:
    """``x`` with ``values[i]`` added to row ``index[i]``, repeats summed.

    ``x`` must be an array the caller made and may overwrite.
    """
    if _is_torch(x):
        return x.index_add_(0, index, values)
    if _is_jax(x):
        return x.at[index].add(values)
    if _is_numpy(x):
        sys.modules["numpy"].add.at(x, index, values)
        return x
    # The standard has no scatter-add: a one-hot matrix product sums the
    # rows instead.
    rows = xp.arange(x.shape[0], dtype=index.dtype, device=device(x))
    onehot = xp.astype(rows[:, None] == index[None, :], x.dtype)
    return x + xp.matmul(onehot, values)


class _Functional:
    """Elementwise steps on arrays the caller made and no longer needs,
    each returning its result: new arrays, as the standard computes them."""

    def __init__(self, xp: ModuleType) -> None:
        self.xp = xp

    def log(self, x: Any) -> Any:
        return self.xp.log(x)

    def exp_floor(self, t: Any, x: Any, floor: float) -> Any:
        """``exp(max(t, floor))``, and 0 where ``x`` is -inf."""
        xp = self.xp
        return xp.where(x == -math.inf, 0.0, xp.exp(xp.maximum(t, floor)))

    def zero_at(self, x: Any, at: Any) -> Any:
        """``x`` (..., K) with ``x[..., at[..., 0]] = 0`` in every row."""
        xp = self.xp
        k = x.shape[-1]
        columns = xp.arange(k, dtype=at.dtype, device=device(x))
        return xp.where(columns == at, 0.0, x)


class _NumPyLike(_Functional):
    """The same steps written into the argument's memory (NumPy, CuPy):
    no fresh allocation, whose first touch costs as much as the arithmetic
    on matrices of a few megabytes."""

    def __init__(self, xp: ModuleType, lib: ModuleType) -> None:
        super().__init__(xp)
        self.lib = lib

    def log(self, x: Any) -> Any:
        return self.lib.log(x, out=x)

    def exp_floor(self, t: Any, x: Any, floor: float) -> Any:
        # exp first, which sends -inf to 0 itself; then only the finite
        # entries that fell below exp(floor), typically none, are raised.
        lib = self.lib
        e = lib.exp(t, out=t)
        low = e < math.exp(floor)
        low &= x != -math.inf
        if low.any():
            e[low] = math.exp(floor)
        return e

    def zero_at(self, x: Any, at: Any) -> Any:
        rows = self.lib.reshape(x, (-1, x.shape[-1]))
        flat = self.lib.reshape(at, (-1,))
        rows[self.lib.arange(flat.shape[0]), flat] = 0
        return x


class _Torch(_Functional):
    """The same steps as PyTorch's in-place methods."""

    def log(self, x: Any) -> Any:
        # PyTorch's log on the CPU takes some forty times longer on zeros
        # (P of the cells with no pair of finite terms) than on other
        # values: those take log(1) and then -inf.
        if x.numel() and float(x.amin()) == 0.0:
            zero = x == 0
            return x.masked_fill_(zero, 1.0).log_().masked_fill_(zero, -math.inf)
        return x.log_()

    def exp_floor(self, t: Any, x: Any, floor: float) -> Any:
        e = t.clamp_min_(floor).exp_()
        # The smallest entry (a vectorised reduction) tells whether there
        # is any -inf to zero, at a tenth of the cost of comparing every
        # entry; it is NaN where x holds NaN, and then the mask decides.
        low = float(x.amin()) if x.numel() else 0.0
        if low == -math.inf or low != low:
            e.masked_fill_(x == -math.inf, 0)
        return e

    def zero_at(self, x: Any, at: Any) -> Any:
        rows = x.view(-1, x.shape[-1])
        flat = at.reshape(-1)
        torch = sys.modules["torch"]
        rows[torch.arange(flat.shape[0], device=x.device), flat] = 0
        return x


def reusing(xp: ModuleType, x: Any) -> _Functional:
    """Elementwise steps that may overwrite their argument, for arrays like
    ``x`` that the caller made: in place for NumPy, CuPy and eager PyTorch
    (no autograd graph is recorded through them), as new arrays elsewhere
    (JAX, Dask, array-api-strict, and under ``torch.compile``)."""
    if _is_torch(x):
        return _Torch(xp) if readable(x) else _Functional(xp)
    if _is_numpy(x):
        return _NumPyLike(xp, sys.modules["numpy"])
    if array_api_compat.is_cupy_array(x):
        return _NumPyLike(xp, sys.modules["cupy"])
    return _Functional(xp)
