"""PyTorch on the CPU: eagerly, the primitives of the blocked row kernels
(whose float32 rows the C kernel of ``_fused`` takes, on PyTorch's own
OpenMP threads, where it was built); under ``torch.compile``, the traced
kernels of ``_traced``.

Written through the ``out=`` and in-place forms of PyTorch's operations.
The vectors of one value per row (maxima, sums, ``t``, the certified rows)
are NumPy arrays that share memory with the tensors they come from: on a
batch of a few hundred rows each of PyTorch's operations costs several
microseconds of dispatch, NumPy's about one, and the kernel makes a few
dozen of them.
Tensors that autograd records take the kernels too, eagerly and under
``torch.compile``, with the closed-form gradients of ``_autograd``.
Tensors that forward-mode AD or a ``torch.func`` transform tracks take
the standard-only path, whose derivatives the tests check.

Under ``torch.compile`` nothing can be read while the graph is traced:
float32 rows go through ``_traced``, one fused expression for Inductor, and
``torch.cond`` runs the standard-only path on every row instead where any
row is not certified (float64, with nothing wider to sum in, keeps that
path).
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from .. import _compat
from . import _blocked, _bounds, _fused, _traced, _widened

__all__ = [
    "accepts",
    "as_rows",
    "cast",
    "cross_entropy",
    "eligible",
    "logsumexp",
    "normalised",
    "now",
    "sign",
    "transpose",
]

# The largest error of PyTorch's exp on the CPU (SLEEF's), in ulps, by the
# dtype's bits: 0.57 measured for float32 over [-104, 0].
EXP_ULPS = {32: 1.0, 64: 1.0}

# Bytes of one block's buffer. Each of PyTorch's operations is a parallel
# region of its own, whose cost (microseconds, and far more when a thread
# waits for a busy core) is paid per block; a block much larger than the
# shared cache makes each pass over it a pass over memory, and its float64
# sum (which converts the block first) slow: 2 MiB measured best, from 256
# KiB to 8 MiB, at (512, 8192) and (2048, 32000) float32.
BLOCK_BYTES = 1 << 21

# PyTorch's float64 sum of float32 terms converts them first, into a
# buffer of twice their size: slices of a block of at most SUM_CHUNK
# entries keep it in cache (a block's sum took 5-15% of the kernel's time
# less at (512, 8192) and (128, 32000), four slices against one).
SUM_CHUNK = 1 << 17

# Entries of the largest float32 array computed in float64 at once, in
# NumPy's operations on the tensor's memory (``_widened``).
SMALL = 1 << 13

# The rounding of PyTorch's float64 sum of a block's row, in ulps of the
# sum, at most. Its CPU sum is a cascade (SumKernel.cpp in ATen): four
# accumulators of vectors take the terms, each adding 16 into a chain of
# four levels whose last takes the rest (8 at most for a block's 2**19
# entries), then the accumulators and the vectors' lanes are added: no
# term's path has more than about 80 additions, and the sums of a block's
# slices (about four) add one each. Rows split among threads add a few
# more. Float32 rows are summed with their maximum's term, which is
# subtracted afterwards (see ``exclude``), so this bounds their ``t``.
SUM_DEPTH = 96


def accepts(x: Any) -> bool:
    """Whether ``x`` is an array these kernels run on."""
    torch = sys.modules.get("torch")
    return torch is not None and type(x) is torch.Tensor


def _compiling() -> bool:
    return bool(sys.modules["torch"].compiler.is_compiling())


def eligible(x: Any, func: str) -> bool:
    """Whether the kernels compute ``func`` of ``x``: float32 or float64
    on the CPU, dense, not empty, and no derivative taken
    but autograd's. Under ``torch.compile``: float32 alone, and no
    ``torch.func`` transform, whose tensors ``torch.cond`` does not take
    (Dynamo breaks the graph at the check there, and the eager check
    sends them to the standard-only path)."""
    torch = sys.modules["torch"]
    if not (
        x.dtype in (torch.float32, torch.float64)
        and x.is_cpu
        and x.layout is torch.strided
        and x.numel() > 0
    ):
        return False
    if _compiling():
        level = torch._C._functorch.maybe_current_level()
        return x.dtype == torch.float32 and level is None
    # A tensor that vmap batches is a wrapped one, and a tangent lives only
    # in a dual level: outside of any, asking for it costs a microsecond.
    return not (
        torch._C._functorch.is_functorch_wrapped_tensor(x)
        or x.is_neg()
        or (
            torch.autograd.forward_ad._current_level >= 0
            and torch.autograd.forward_ad.unpack_dual(x).tangent is not None
        )
    )


def _tracked(x: Any) -> bool:
    """Whether autograd records the operations on ``x``."""
    return bool(x.requires_grad and sys.modules["torch"].is_grad_enabled())


def now(x: Any) -> bool:
    """Whether the kernels can compute the rows of ``x`` (eligible) in this
    call: eagerly, whether autograd records them or not (``graded``)."""
    return not _compiling()


def transpose(x: Any, perm: tuple[int, ...]) -> Any:
    """``x`` with its axes in the order ``perm`` (a view)."""
    return x.permute(perm)


def as_rows(x: Any, n: int) -> Any:
    """``x`` as C-contiguous rows of ``n`` entries, copied only if needed."""
    # Rows already: each of PyTorch's calls costs a small batch a
    # microsecond or more.
    if x.ndim == 2 and x.shape[1] == n and x.is_contiguous():
        return x
    return x.contiguous().reshape(-1, n)


def _tensor(v: Any) -> Any:
    """A NumPy vector as a tensor on the same memory."""
    return sys.modules["torch"].from_numpy(v)


def _float64(v: Any) -> Any:
    """A vector tensor as a float64 NumPy vector (NumPy converts faster)."""
    return v.numpy().astype(sys.modules["numpy"].float64)


def _result(v: Any) -> Any:
    """A NumPy vector as a tensor of its own, for the caller to keep."""
    return None if v is None else _tensor(v).clone()


def _gather(x2: Any, at: Any) -> Any:
    return x2.gather(1, at)


def _cond(ok: Any, fast: Callable[[], Any], exact: Callable[[], Any]) -> Any:
    """``fast()`` where every row is certified (``ok``), ``exact()``
    otherwise: both are traced, one runs."""
    return sys.modules["torch"].cond(ok.all(), fast, exact)


_REST = _traced.rest(_traced.sum64, _cond)


def _guarded(
    kind: str,
    x2: Any,
    target: Any,
    ignore: int | None,
    exact: Callable[..., Any],
    smoothing: float = 0.0,
) -> tuple[Any, Any]:
    """``_autograd.Guarded``: under ``torch.compile``, the traced kernel of
    ``kind`` (the loss's statistics by the C kernel, where it was built)
    where it certifies every row, the standard-only path ``exact`` on every
    row otherwise, and a float64 value per row for the gradient
    (``_autograd.pullback``)."""
    xp = _compat.namespace(x2)
    if kind != "logsumexp":
        # Inductor's float64 sums of the traced kernels cost passes of
        # their own, where the kernel reads each row once; its normalised
        # rows are final, those whose maximum is not finite included, and
        # need no guard. logsumexp's traced kernel is as fast (one pass
        # without the maxima).
        from . import _kernel_op

        if _kernel_op.ROWS is not None and _fused.ENABLED:
            if kind == "cross_entropy":
                return _operated_loss(_kernel_op, x2, target, ignore, exact, smoothing)
            out, m, _ = _kernel_op.ROWS(x2, _kernel_op.KINDS.index(kind))
            torch = sys.modules["torch"]
            live = torch.where(torch.isnan(m), m, torch.isfinite(m).to(m.dtype))
            return out, live
    fast: Callable[[], tuple[Any, Any]]
    slow: Callable[[], tuple[Any, Any]]
    # A branch may not return a tensor from outside it: the copies are of
    # one value per row.
    if kind == "logsumexp":
        out, ok = _traced.logsumexp(xp, x2, _REST)
        none = xp.zeros_like(out)

        def fast() -> tuple[Any, Any]:
            return out.clone(), none.clone()

        def slow() -> tuple[Any, Any]:
            return exact(x2), _traced.infinities(xp, x2)

    elif kind == "cross_entropy":
        loss, ok, lse = _traced.cross_entropy(
            xp, x2, target, ignore, _gather, _REST, smoothing
        )

        def fast() -> tuple[Any, Any]:
            return loss.clone(), lse.clone()

        def slow() -> tuple[Any, Any]:
            return exact(x2, target), _traced.log_sum(xp, x2)

    else:

        def shifted() -> tuple[Any, Any]:
            m, t, ok = _traced.stats(xp, x2, _REST)
            live = xp.ones_like(t)

            def fast() -> tuple[Any, Any]:
                return _traced.normalised(xp, x2, m, t, kind), live.clone()

            def slow() -> tuple[Any, Any]:
                return exact(x2), _traced.finite_maxima(xp, x2)

            return tuple(_cond(ok, fast, slow))

        if kind != "softmax":
            return shifted()
        # softmax in two passes where they hold, the max-shift's three
        # where not.
        s, ok = _traced.divisors(xp, x2, _REST)
        live = xp.ones_like(s)

        def fast() -> tuple[Any, Any]:
            return _traced.divided(xp, x2, s), live.clone()

        slow = shifted

    out, aux = _cond(ok, fast, slow)
    return out, aux


def _operated_loss(
    op: ModuleType,
    x2: Any,
    target: Any,
    ignore: int | None,
    exact: Callable[..., Any],
    smoothing: float,
) -> tuple[Any, Any]:
    """``_guarded``'s loss by the C kernel's operator (``op.ROWS``), which
    takes each row's maximum ``m`` and the sum ``t`` of its other terms in
    one pass over memory; the rows it leaves, those whose maximum is not
    finite, send the call to the standard-only path."""
    xp = _compat.namespace(x2)
    torch = sys.modules["torch"]
    _, m, t = op.ROWS(x2, op.KINDS.index("logsumexp"))
    found = (m[:, None], t, torch.isfinite(m))
    loss, ok, lse = _traced.cross_entropy(
        xp, x2, target, ignore, _gather, _REST, smoothing, found
    )

    def fast() -> tuple[Any, Any]:
        return loss.clone(), lse.clone()

    def slow() -> tuple[Any, Any]:
        return exact(x2, target), _traced.log_sum(xp, x2)

    result, aux = _cond(ok, fast, slow)
    return result, aux


def _compiled(
    kind: str,
    x2: Any,
    target: Any,
    ignore: int | None,
    exact: Callable[..., Any],
    smoothing: float = 0.0,
) -> Any:
    """The result of ``_guarded``, through ``_autograd.traced`` where
    autograd records ``x2``."""
    if _tracked(x2):
        from . import _autograd

        return _autograd.traced(kind, x2, target, ignore, exact, _guarded, smoothing)
    return _guarded(kind, x2, target, ignore, exact, smoothing)[0]


def logsumexp(x2: Any, exact: Callable[[Any], Any]) -> tuple[Any, Any]:
    """Each row's log-sum-exp in float64, and the rows for the caller to
    recompute with ``exact`` (None: none)."""
    if _compiling():
        return _compiled("logsumexp", x2, None, None, exact), None
    if _tracked(x2):
        from . import _autograd

        return _autograd.reverse(
            "logsumexp", x2, None, None, _eager_logsumexp, exact
        ), None
    ops = sys.modules[__name__]
    if _widened.fits(ops, x2):
        out, redo = _widened.logsumexp(ops, x2)[:2]
    elif x2.dtype == sys.modules["torch"].float32:
        out, redo = _blocked.direct(ops, x2)
    else:
        out, redo = _blocked.logsumexp(ops, x2)[:2]
    return _result(out), _result(redo)


def _eager_logsumexp(
    x2: Any, target: Any, ignore: int | None, kind: str, exact: Any
) -> Any:
    """``_autograd.Rows`` of ``logsumexp``."""
    ops = sys.modules[__name__]
    kernels = _widened.logsumexp if _widened.fits(ops, x2) else _blocked.logsumexp
    out, redo, m, low = kernels(ops, x2)
    out, redo = _result(out), _result(redo)
    if redo is not None:
        out[redo] = exact(x2[redo])
    return out, (_tensor(m), _tensor(low), redo)


def normalised(x2: Any, kind: str, exact: Callable[[Any], Any]) -> tuple[Any, Any]:
    """The rows' ``log_softmax`` or ``softmax`` (``kind``) in their dtype,
    and the rows for the caller to recompute with ``exact`` (None: none)."""
    if _compiling():
        return _compiled(kind, x2, None, None, exact), None
    if _tracked(x2):
        from . import _autograd

        return _autograd.reverse(kind, x2, None, None, _eager_normalised, exact), None
    out, redo = _normalised(x2, kind)
    return out, _result(redo)


def _eager_normalised(
    x2: Any, target: Any, ignore: int | None, kind: str, exact: Any
) -> Any:
    """``_autograd.Rows`` of ``softmax`` and ``log_softmax``."""
    out, redo = _normalised(x2, kind)
    redo = _result(redo)
    if redo is not None:
        out[redo] = exact(x2[redo])
    return out, (redo,)


def _normalised(x2: Any, kind: str) -> tuple[Any, Any]:
    ops = sys.modules[__name__]
    kernel = _widened.normalised if _widened.fits(ops, x2) else _blocked.normalised
    return kernel(ops, x2, kind)


def _cross_entropy(
    x2: Any, at: Any, ignore: int | None, smoothing: float
) -> tuple[Any, Any, Any, Any, Any]:
    ops = sys.modules[__name__]
    fits = _widened.fits(ops, x2)
    kernel = _widened.cross_entropy if fits else _blocked.cross_entropy
    return kernel(ops, x2, at, ignore, smoothing)


def sign(out: Any) -> Any:
    """The sign of a sum of exponentials from its log: 1, 0 for an empty
    sum (``-inf``), NaN where the log is NaN."""
    torch = sys.modules["torch"]
    return torch.where(out.isnan(), out, (out > -torch.inf).to(out.dtype))


def cast(x: Any, dtype: Any) -> Any:
    """``x`` in ``dtype``, not copied if it already is."""
    return x.to(dtype)


# The primitives of ``_blocked``.


def lib() -> ModuleType:
    """The library of the per-row vectors: NumPy."""
    return sys.modules["numpy"]


def quiet() -> contextlib.AbstractContextManager[Any]:
    """NumPy's floating-point warnings off (PyTorch gives none): rows that
    overflow are recomputed."""
    state: contextlib.AbstractContextManager[Any]
    state = sys.modules["numpy"].errstate(all="ignore")
    return state


def bits(x: Any) -> int:
    return int(x.element_size() * 8)


def itemsize(x: Any) -> int:
    return int(x.element_size())


def maxima(x2: Any) -> tuple[Any, Any]:
    """Each row's maximum in float64 (NaN where the row holds one), and for
    float64 the index of the first: PyTorch's argmax costs ten times its
    amax on the CPU, and float32's sums take the largest term out by
    subtraction instead (see ``exclude``)."""
    torch = sys.modules["torch"]
    if x2.dtype == torch.float32:
        return None, _float64(x2.amax(dim=1))
    idx = x2.argmax(dim=1)
    return idx, x2.gather(1, idx[:, None])[:, 0].numpy()


def exclude(e: Any, at: Any, c0: int, whole: bool) -> Any:
    """Take each row's maximum, at the column ``at``, out of the block ``e``
    (columns from ``c0``; the rows ``whole``), or say what to subtract from
    its sum instead.

    Without an index (float32), the sum keeps every term and the largest
    (the exponential of the row's maximum, or of an entry within an ulp of
    it where the rounded exponentials tie) is subtracted from the float64
    sum: exact enough unless one term dominates (see ``_bounds``).
    """
    if at is None:
        return _float64(e.amax(dim=1))
    cols = e.shape[1]
    if whole:
        e.scatter_(1, at[:, None], 0.0)
        return None
    hit = (at >= c0) & (at < c0 + cols)
    if bool(hit.all()):
        e.scatter_(1, (at - c0)[:, None], 0.0)
    elif bool(hit.any()):
        e[hit.nonzero()[:, 0], at[hit] - c0] = 0.0
    return None


def threads() -> tuple[int, Any]:
    """The threads of ``_fused``'s kernel, PyTorch's intra-op count, and the
    addresses of ``GOMP_parallel``, ``omp_get_thread_num`` and
    ``omp_get_num_threads`` of PyTorch's OpenMP runtime, which runs them on
    its own team (None where it has none: the kernel starts threads of its
    own)."""
    return sys.modules["torch"].get_num_threads(), _openmp()


@functools.cache
def _openmp() -> tuple[int, int, int] | None:
    """The OpenMP functions of PyTorch's runtime, where the process has
    loaded one (Linux: ``libgomp`` beside ``libtorch``)."""
    import ctypes
    import os

    torch = sys.modules["torch"]
    if "ATen parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    here = os.path.join(os.path.dirname(str(torch.__file__)), "lib")
    try:
        with open("/proc/self/maps") as maps:
            loaded = maps.read()
    except OSError:
        return None
    names = ("GOMP_parallel", "omp_get_thread_num", "omp_get_num_threads")
    for name in sorted(os.listdir(here)) if os.path.isdir(here) else ():
        path = os.path.realpath(os.path.join(here, name))
        if "gomp" not in name or path not in loaded:
            continue
        try:
            runtime = ctypes.CDLL(path)
            found = [
                ctypes.cast(getattr(runtime, f), ctypes.c_void_p).value for f in names
            ]
        except (OSError, AttributeError):
            continue
        if all(found):
            return (int(found[0] or 0), int(found[1] or 0), int(found[2] or 0))
    return None


def host(x: Any) -> Any:
    """``x`` as a NumPy array on its memory."""
    return (x.detach() if x.requires_grad else x).numpy()


def memory(x: Any) -> int:
    """What ``_fused``'s kernel takes for the memory of the C-contiguous
    ``x``: its address, which costs a tenth of ``host``'s view; the caller
    holds ``x`` for the call."""
    return int(x.data_ptr())


def from_host(a: Any) -> Any:
    """A NumPy array as a tensor on its memory."""
    return _tensor(a)


def graded(x2: Any, target: Any, how: Any, box: list[Any]) -> Any:
    """``box[0]``, the kernels' result for the rows ``x2`` (NumPy arrays or
    tensors, as are the statistics after it, those of ``_autograd.Rows``),
    as it is where autograd does not record ``x2``; where it does, as a
    tensor with the closed-form gradient (``_autograd.attach``; ``how`` is
    ``(kind, ignore, exact, smoothing)``)."""
    if not _tracked(x2):
        return box[0]
    from . import _autograd

    torch = sys.modules["torch"]
    box = [v if v is None or type(v) is torch.Tensor else _tensor(v) for v in box]
    return _autograd.attach(x2, target, how, box)


def as_float32(v: Any) -> Any:
    """A float64 result (a tensor, or a NumPy array or scalar) in float32,
    as a tensor."""
    torch = sys.modules["torch"]
    if type(v) is torch.Tensor:
        return v.to(torch.float32)
    np = sys.modules["numpy"]
    return _tensor(np.asarray(v, dtype=np.float32))


def indices(target: Any, n: int) -> Any:
    """``target`` as a NumPy vector of ``n`` int64 class indices on its
    memory, or None where it is not one (another library, dtype, device or
    shape, or a tensor whose values cannot be read now)."""
    torch = sys.modules["torch"]
    if (
        type(target) is torch.Tensor
        and target.dtype == torch.int64
        and target.is_cpu
        and target.layout is torch.strided
        and target.shape == (n,)
        # Batched by vmap: wrapped. (The caller asks while nothing traces.)
        and not torch._C._functorch.is_functorch_wrapped_tensor(target)
    ):
        return (target if target.is_contiguous() else target.contiguous()).numpy()
    return None


def empty_like(x: Any) -> Any:
    return sys.modules["torch"].empty_like(x)


def empty(shape: tuple[int, int], like: Any) -> Any:
    return sys.modules["torch"].empty(shape, dtype=like.dtype)


def zeros64(n: int) -> Any:
    np = sys.modules["numpy"]
    return np.zeros(n, dtype=np.float64)


def floored(low: float, bits: int) -> bool:
    """Whether ``exp_into`` should raise a block's entries to ``FLOOR``,
    from the first block's smallest entry ``low``: where exp would not be
    a normal number (-inf included), which costs PyTorch's loops 7 to 100
    times a normal one."""
    return bool(low < _bounds.FLOOR[bits])


def minimum(x: Any) -> float:
    """The smallest entry of ``x`` (NaN if it holds one)."""
    return float(x.amin())


def exp_into(x: Any, out: Any, floor: float | None) -> Any:
    """``exp(x)`` into ``out``, of ``x`` raised to ``floor`` first unless
    that is None."""
    torch = sys.modules["torch"]
    if floor is None:
        return torch.exp(x, out=out)
    torch.clamp(x, min=floor, out=out)
    return out.exp_()


def put(x: Any, idx: Any, value: Any) -> None:
    """``x[i, idx[i]] = value`` (or ``value[i]``) in every row ``i``."""
    if isinstance(value, float):
        x.scatter_(1, idx[:, None], value)
    else:
        x.scatter_(1, idx[:, None], _tensor(value)[:, None].to(x.dtype))


def sum64(e: Any) -> Any:
    """Row sums, accumulated in float64: of float32 terms, those of column
    slices of at most ``SUM_CHUNK`` entries, added one by one."""
    torch = sys.modules["torch"]
    rows, cols = e.shape
    width = cols
    if e.dtype != torch.float64:
        width = max(1, min(cols, SUM_CHUNK // rows))
    s = torch.sum(e[:, :width], dim=1, dtype=torch.float64)
    for c0 in range(width, cols, width):
        s += torch.sum(e[:, c0 : c0 + width], dim=1, dtype=torch.float64)
    return s.numpy()


def shifted_into(x: Any, m: Any, low: Any, out: Any) -> None:
    """``(x - m) - low`` into ``out``, in ``out``'s dtype: PyTorch's
    operations on mixed dtypes take a slow path. For float32, ``x - m``, the
    cast ``low`` and the difference each round: within 1.5 ulps of the
    result, plus ``low``'s own error."""
    torch = sys.modules["torch"]
    torch.sub(x, _tensor(m).to(out.dtype), out=out)
    out.sub_(_tensor(low).to(out.dtype))


def divide_into(a: Any, b: Any, out: Any) -> None:
    """``a / b`` into ``out``, in ``out``'s dtype (``b`` rounded to it)."""
    torch = sys.modules["torch"]
    torch.div(a, _tensor(b).to(out.dtype), out=out)


def rows(x2: Any, at: Any) -> Any:
    """The rows ``at`` (NumPy indices) of ``x2``, as a C-contiguous copy."""
    return x2[_tensor(at)]


def pick(x2: Any, idx: Any) -> Any:
    """``x2[i, idx[i]]`` of every row ``i``, in float64."""
    return _float64(x2.gather(1, _tensor(idx)[:, None])[:, 0])


def cross_entropy(
    x2: Any,
    target: Any,
    ignore: int | None,
    smoothing: float,
    exact: Callable[[Any, Any], Any],
) -> Any:
    """Each row's ``logsumexp - x[target]`` in float64, with the target
    smoothed by ``smoothing``, 0 where the target is ``ignore``, the mask
    of the counted rows (None: all), and the rows for the caller to
    recompute with ``exact`` (None: none)."""
    counted = None if ignore is None else target != ignore
    if _compiling():
        loss = _compiled("cross_entropy", x2, target, ignore, exact, smoothing)
        return loss, counted, None
    if _tracked(x2):
        from . import _autograd

        rows = functools.partial(_eager_cross_entropy, smoothing=smoothing)
        loss = _autograd.reverse(
            "cross_entropy", x2, target, ignore, rows, exact, smoothing
        )
        return loss, counted, None
    loss, _, redo, _, _ = _cross_entropy(
        x2, target.contiguous().numpy(), ignore, smoothing
    )
    return _result(loss), counted, _result(redo)


def _eager_cross_entropy(
    x2: Any,
    target: Any,
    ignore: int | None,
    kind: str,
    exact: Any,
    smoothing: float = 0.0,
) -> Any:
    """``_autograd.Rows`` of ``cross_entropy``, smoothed by ``smoothing``."""
    at = target.contiguous().numpy()
    loss, _, redo, m, low = _cross_entropy(x2, at, ignore, smoothing)
    loss, redo = _result(loss), _result(redo)
    if redo is not None:
        loss[redo] = exact(x2[redo], target[redo])
    return loss, (_tensor(m), _tensor(low), redo)
