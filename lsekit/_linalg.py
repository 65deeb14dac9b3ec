"""Public ``logmatmulexp``.

This layer checks shapes and dtypes, applies ``matmul``'s rules (1-D
operands, broadcast batch dimensions), repairs the cells that the fast
matrix product cannot certify, and hooks the gradient into PyTorch's and
JAX's autodiff; the arithmetic lives in ``_core.linalg``.
"""

from __future__ import annotations

import functools
import math
from types import ModuleType
from typing import Any

from . import _args, _compat, _native
from ._core import linalg as _impl

__all__ = ["logmatmulexp"]

_FUNC = "logmatmulexp"
# Elements of the (cells, K) or (rows, K, N) blocks of the exact paths.
_BLOCK = 1 << 20


def _dtypes(xp: ModuleType, a: Any, b: Any) -> tuple[Any, Any]:
    """The result dtype and the dtype the product runs in.

    float32 stays float32: the matrix product is the cost, and its
    uncertified cells are repaired exactly. Half precision runs in float32.
    """
    out = xp.result_type(a.dtype, b.dtype)
    if _compat.isdtype(xp, out, ("bool", "integral")):
        out = _compat.compute_dtype(xp, out, _compat.device(a))
    work = out if xp.finfo(out).bits >= 32 else xp.float32
    return out, work


def _check(xp: ModuleType, name: str, x: Any) -> None:
    _args.check_numeric(_FUNC, name, xp, x)
    if _compat.isdtype(xp, x.dtype, "complex floating"):
        raise TypeError(f"{_FUNC}() {name} must be real, got dtype {x.dtype}")
    if x.ndim == 0:
        raise ValueError(f"{_FUNC}() {name} must have at least one dimension")


def _cells(bad: Any, m: int, n: int) -> tuple[Any, Any, Any]:
    """The flat positions of the cells marked in ``bad`` (..., M, N), and
    the rows of ``a`` and columns of ``b`` (flattened over the batch) that
    make each of them."""
    xp = _compat.namespace(bad)
    cells = _compat.positions(xp, xp.reshape(bad, (-1,)))
    batch = cells // (m * n)
    return cells, batch * m + (cells // n) % m, batch * n + cells % n


def _operands(xp: ModuleType, a: Any, b: Any) -> tuple[Any, Any]:
    """The rows of ``a`` and the columns of ``b``, each as a (-1, K) array."""
    k = a.shape[-1]
    return xp.reshape(a, (-1, k)), xp.reshape(xp.matrix_transpose(b), (-1, k))


def _columns(xp: ModuleType, b: Any, col: Any) -> Any:
    """The columns ``col`` of ``b`` (flattened over the batch), as a
    (len(col), K) array: gathered, not a transposed copy of all of ``b``."""
    k, n = b.shape[-2], b.shape[-1]
    start = (col // n) * (k * n) + col % n
    steps = xp.arange(k, dtype=col.dtype, device=_compat.device(b)) * n
    index = xp.reshape(start[:, None] + steps[None, :], (-1,))
    return xp.reshape(xp.take(xp.reshape(b, (-1,)), index), (col.shape[0], k))


def _blocks(n: int, k: int) -> list[slice]:
    step = max(1, _BLOCK // max(1, k))
    return [slice(start, min(start + step, n)) for start in range(0, n, step)]


@_compat.compiled
def _shifted(
    xp: ModuleType, a: Any, b: Any, *, split: bool, keep: bool
) -> tuple[_impl.Product, Any]:
    ops = _compat.reusing(xp, a)
    device = _compat.device(a)
    return _impl.shifted_product(xp, a, b, ops, device, split=split, keep_product=keep)


# On JAX, the product and the exact cells each compile as one program; the
# cells between them are picked eagerly, by their values.
_exact_cells = _compat.compiled(_impl.exact_cells)


def _forward(a: Any, b: Any, keep: bool = False) -> tuple[Any, _impl.Shifted | None]:
    """The product, and what its gradient needs (with ``keep``)."""
    xp = _compat.namespace(a)
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    if not _compat.readable(a):
        # Lazy arrays and traces: the cells to repair cannot be picked out
        # before the computation runs, so every cell is computed exactly;
        # the shifted product serves the gradient only.
        out = _impl.exact(xp, a, b, max(1, _BLOCK // (k * n)))
        if not keep:
            return out, None
        fast, _ = _shifted(xp, a, b, split=False, keep=True)
        certified = _impl.certified(xp, fast, k)
        return out, _impl.Shifted(certified, fast.row_max, fast.col_max, fast.product)
    fast, at = _shifted(xp, a, b, split=True, keep=keep)
    out = xp.reshape(fast.out, (-1,))
    # Cells whose P is too small to trust (but not 0, with finite shifts:
    # those are exactly -inf) are recomputed exactly. Typically there are
    # none, which one reduction tells.
    repair = None
    if not bool(xp.all(fast.enough)):
        repair = xp.reshape(~(fast.enough | (fast.out == -math.inf)), (-1,))
    # The cells that could be imprecise, or near 0, lie below a bound on
    # |out|: typically few. They are checked one by one; those near 0 whose
    # term at the row's maximum dominates take the log1p split, and the
    # imprecise ones are recomputed exactly too. (With every cell enough,
    # no |out| is NaN, and the smallest tells whether there are any.)
    size = _impl.precise_beyond(xp, fast.row_max, fast.col_max, k)
    magnitude = xp.abs(fast.out)
    if repair is not None or bool(xp.min(magnitude) < size):
        close = (magnitude < size) & fast.enough
        cells, row, col = _cells(close, m, n)
        if cells.shape[0] > 0:
            r = xp.take(xp.reshape(fast.row_max, (-1,)), row)
            c = xp.take(xp.reshape(fast.col_max, (-1,)), col)
            value = xp.take(out, cells)
            # b[..., ka_i, j], from the flat positions of b's entries.
            at = xp.take(xp.reshape(at, (-1,)), row)
            b_at = xp.take(xp.reshape(b, (-1,)), ((col // n) * k + at) * n + col % n)
            rest = xp.take(xp.reshape(fast.rest, (-1,)), cells)
            fixed = _impl.refine(xp, r, c, b_at, rest, value)
            close = xp.reshape(close, (-1,))
            out = _compat.put(xp, out, close, fixed, cells)
            imprecise = ~_impl.precise(xp, value, r + c, k)
            imprecise = _compat.put(xp, xp.zeros_like(close), close, imprecise, cells)
            repair = imprecise if repair is None else repair | imprecise
    if repair is not None:
        cells, row, col = _cells(repair, m, n)
        if cells.shape[0] > 0:
            rows = xp.reshape(a, (-1, k))
            values = [
                _exact_cells(
                    xp, xp.take(rows, row[part], axis=0), _columns(xp, b, col[part])
                )
                for part in _blocks(int(cells.shape[0]), k)
            ]
            fixed = values[0] if len(values) == 1 else xp.concat(values)
            out = _compat.put(xp, out, repair, fixed, cells)
    shape = tuple(fast.out.shape)
    out = xp.reshape(out, shape)
    if not keep:
        return out, None
    certified = (
        xp.ones_like(fast.enough) if repair is None else xp.reshape(~repair, shape)
    )
    return out, _impl.Shifted(certified, fast.row_max, fast.col_max, fast.product)


_forward_kept = functools.partial(_forward, keep=True)


def _backward(
    a: Any, b: Any, saved: tuple[Any, ...], out: Any, g: Any
) -> tuple[Any, Any]:
    """The gradients: two matrix products, and the uncertified cells' own.

    Eager PyTorch only: JAX differentiates the tangent, and under
    ``torch.compile`` autograd differentiates the traced exact path.
    """
    xp = _compat.namespace(a)
    fast = _impl.Shifted(*saved)
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    grad_a, grad_b = _impl.gradients(xp, a, b, fast, g)
    bad = ~fast.certified
    cells, row, col = _cells(bad, m, n)
    if cells.shape[0] == 0:
        return grad_a, grad_b
    rows = xp.reshape(a, (-1, k))
    flat_a, flat_b = _operands(xp, grad_a, grad_b)
    out, g = xp.reshape(out, (-1,)), xp.reshape(g, (-1,))
    # Positions padded past the marked cells (JAX) must add nothing.
    g_cells = xp.take(g, cells)
    index = xp.arange(cells.shape[0], dtype=cells.dtype, device=_compat.device(g))
    count = xp.sum(xp.astype(bad, cells.dtype))
    g_cells = xp.where(index < count, g_cells, 0.0)
    for part in _blocks(int(cells.shape[0]), k):
        share = _impl.cell_gradients(
            xp,
            xp.take(rows, row[part], axis=0),
            _columns(xp, b, col[part]),
            xp.take(out, cells[part]),
            g_cells[part],
        )
        flat_a = _compat.add_rows(xp, flat_a, row[part], share)
        flat_b = _compat.add_rows(xp, flat_b, col[part], share)
    grad_a = xp.reshape(flat_a, tuple(a.shape))
    grad_b = xp.matrix_transpose(xp.reshape(flat_b, (*b.shape[:-2], n, k)))
    return grad_a, grad_b


def _backward_twice(a: Any, b: Any, out: Any, g: Any) -> tuple[Any, Any]:
    """The gradients of every cell by broadcasting: differentiable in turn,
    through ``out`` too, at the cost of ``M * K * N`` exponentials."""
    xp = _compat.namespace(a)
    k, n = a.shape[-1], b.shape[-1]
    return _impl.exact_gradients(xp, a, b, out, g, max(1, _BLOCK // (k * n)))


def _tangent(a: Any, b: Any, saved: tuple[Any, ...], out: Any, da: Any, db: Any) -> Any:
    """The forward-mode derivative: two matrix products, and the
    uncertified cells' own."""
    xp = _compat.namespace(a)
    fast = _impl.Shifted(*saved)
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    da = xp.broadcast_to(da, tuple(a.shape))
    db = xp.broadcast_to(db, tuple(b.shape))
    t = _impl.tangent(xp, a, b, fast, da, db)
    bad = ~fast.certified
    if not _compat.readable(out):
        extra = _impl.exact_tangent(xp, a, b, out, da, db, max(1, _BLOCK // (k * n)))
        return t + xp.where(bad, extra, 0.0)
    cells, row, col = _cells(bad, m, n)
    if cells.shape[0] == 0:
        return t
    rows, drows = xp.reshape(a, (-1, k)), xp.reshape(da, (-1, k))
    flat_out = xp.reshape(out, (-1,))
    values = [
        _impl.cell_tangents(
            xp,
            xp.take(rows, row[part], axis=0),
            _columns(xp, b, col[part]),
            xp.take(flat_out, cells[part]),
            xp.take(drows, row[part], axis=0),
            _columns(xp, db, col[part]),
        )
        for part in _blocks(int(cells.shape[0]), k)
    ]
    fixed = values[0] if len(values) == 1 else xp.concat(values)
    flat = _compat.put(xp, xp.reshape(t, (-1,)), xp.reshape(bad, (-1,)), fixed, cells)
    return xp.reshape(flat, tuple(t.shape))


_RULES = _native.Rules(_forward_kept, _backward, _backward_twice, _tangent)


def logmatmulexp(a: Any, b: Any, /) -> Any:
    """Compute ``log(exp(a) @ exp(b))`` without overflow or underflow.

    The matrix product of two arrays held in log space, with ``matmul``'s
    shape rules: the last two axes are the matrices, the others broadcast,
    and a 1-D operand is a row (``a``) or a column (``b``) vector.

    Parameters
    ----------
    a : array
        Log-values of shape ``(..., M, K)`` or ``(K,)``.
    b : array
        Log-values of shape ``(..., K, N)`` or ``(K,)``.

    Returns
    -------
    out : array
        ``log(sum_k exp(a[..., i, k] + b[..., k, j]))``, of shape
        ``(..., M, N)`` with the axes of 1-D operands removed, in the
        operands' (promoted) dtype and library.

    Raises
    ------
    ValueError
        0-d operands, or inner dimensions that differ, or batch dimensions
        that do not broadcast.
    TypeError
        Complex or non-numeric operands, or arrays of two libraries.

    See Also
    --------
    logsumexp

    Notes
    -----
    Shifting each row of ``a`` and each column of ``b`` by its maximum and
    calling one matrix product is fast, but wrong (``-inf`` or a wrong
    finite number) wherever the maxima of a row and a column sit at
    different ``k``: every term of the cell is then far below the shifts.
    Here the product is computed that way with clamped exponentials, and a
    cell keeps its value only where the product is large enough that what
    was clamped or lost cannot change it, and where ``r + c`` and
    ``log(P)`` do not cancel far below their own size. The other cells are
    recomputed exactly, as ``logsumexp_k(a_ik + b_kj)``. So the result is
    never ``-inf`` or NaN where the exact value is finite, at the cost of a
    matrix product on typical inputs (log-probabilities, transition
    matrices, banded ones with ``-inf`` off the band). Cells with no pair
    of finite terms are ``-inf``; ``+inf`` and NaN propagate as they would
    through ``logsumexp(a[..., :, :, None] + b[..., None, :, :], axis=-2)``.

    Accuracy is counted in ulps of ``max(|out|, 1)``: a relative error for
    results above 1 in magnitude, an absolute one near 0. A cell keeps its
    fast value only where its error bound is at most 24 such ulps; measured
    errors are about 2 on dense inputs and up to 12 on banded ones, where
    the terms of cells near 0 cancel far below the shifts. Where the cell's
    term at its row's maximum dominates (the diagonal of a near-identity
    transition matrix, ``log(1 + exp(-40))``), the product is split around
    that term and the cell keeps its relative precision near 0 too, as
    ``logsumexp``'s log1p split does.

    The derivatives are computed the same way: the gradient (PyTorch's
    autograd, ``jax.grad``) and the forward-mode tangent (``jax.jacfwd``,
    ``torch.func.jacfwd``) by two more matrix products for the cells that
    kept their value and each recomputed cell on its own, with 0 from a
    ``-inf`` cell; JAX transposes the tangent for reverse mode. A second
    derivative in PyTorch (``create_graph=True``) differentiates a gradient
    computed by broadcasting, at the cost of ``M * K * N`` exponentials.
    ``torch.func.vmap`` maps the call as one more batch dimension.

    Under ``jax.jit`` and under ``torch.compile``, where the cells to
    recompute cannot be picked out before the computation runs, every cell
    is computed exactly by broadcasting, a block of rows at a time:
    correct, but at the cost of ``M * K * N`` exponentials. On Dask arrays
    each block of the product (the operands' chunks along ``M``, ``K`` and
    ``N``) is computed as above, on its chunks, and the blocks along ``K``
    are combined by ``logsumexp``: memory per task is that of a few
    chunks.

    float32 runs its matrix product in float32; float16 and bfloat16 run in
    float32.

    Examples
    --------
    >>> import numpy as np
    >>> from lsekit import logmatmulexp
    >>> a = np.array([[-500.0, 900.0]])
    >>> b = np.array([[900.0], [-500.0]])
    >>> logmatmulexp(a, b)  # 400 + log 2; the shifted product gives -inf
    array([[400.69314718]])
    >>> logmatmulexp(np.log([[0.5, 0.5]]), np.log([[0.9, 0.1], [0.2, 0.8]]))
    array([[-0.597837 , -0.7985077]])
    >>> logmatmulexp(np.array([[0.0, -40.0]]), np.zeros((2, 1)))  # log(1 + e**-40)
    array([[4.24835426e-18]])
    """
    xp, arr = _compat.as_arrays(_FUNC, 2, a=a, b=b)
    a, b = arr["a"], arr["b"]
    _check(xp, "a", a)
    _check(xp, "b", b)
    vector_a, vector_b = a.ndim == 1, b.ndim == 1
    if vector_a:
        a = xp.reshape(a, (1, a.shape[0]))
    if vector_b:
        b = xp.reshape(b, (b.shape[0], 1))
    k = a.shape[-1]
    if not _args.same_shape((k,), (b.shape[-2],)):
        raise ValueError(
            f"{_FUNC}() inner dimensions differ: a of shape {tuple(arr['a'].shape)} "
            f"and b of shape {tuple(arr['b'].shape)}"
        )
    try:
        batch = _args.check_broadcast(
            _FUNC, "b", tuple(b.shape[:-2]), tuple(a.shape[:-2])
        )
    except ValueError:
        raise ValueError(
            f"{_FUNC}() batch dimensions do not broadcast: a of shape "
            f"{tuple(arr['a'].shape)} and b of shape {tuple(arr['b'].shape)}"
        ) from None
    m, n = a.shape[-2], b.shape[-1]
    if not all(isinstance(d, int) for d in (*batch, m, k, n)):
        # A Dask array after boolean indexing: its matrix product needs the
        # lengths.
        raise ValueError(
            f"{_FUNC}() needs known lengths, got a of shape {tuple(a.shape)} and "
            f"b of shape {tuple(b.shape)}; call compute_chunk_sizes() first"
        )
    out_dtype, work = _dtypes(xp, a, b)
    a = xp.astype(xp.broadcast_to(a, (*batch, m, k)), work, copy=False)
    b = xp.astype(xp.broadcast_to(b, (*batch, k, n)), work, copy=False)
    shape = (*batch, m, n)
    with _compat.errstate(xp):
        if any(d == 0 for d in shape):
            out = xp.zeros(shape, dtype=work, device=_compat.device(a))
        elif k == 0:
            out = xp.full(shape, -math.inf, dtype=work, device=_compat.device(a))
        elif (library := _compat.autodiff(a, b)) is not None:
            out = _native.load(library).differentiable(_RULES)(a, b)
        elif (blocked := _compat.blocked_logmatmulexp(a, b)) is not None:
            out = blocked
        else:
            out, _ = _forward(a, b)
    if vector_b:
        out = out[..., 0]
    if vector_a:
        out = out[..., 0, :] if not vector_b else out[..., 0]
    return _compat.finalize(xp, xp.astype(out, out_dtype))
