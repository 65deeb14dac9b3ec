"""Bad arguments: each is rejected with a clear message naming the value.

The table runs on NumPy inputs; ``test_same_error_on_every_backend`` repeats
a few rows with every backend's arrays, to show that the exception type and
message do not depend on the array library.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from lsekit import log_softmax, logsumexp, softmax

X = np.arange(6.0).reshape(2, 3)  # the 2-D input of every row
FUNCS: dict[str, Callable[..., Any]] = {
    "logsumexp": logsumexp,
    "softmax": softmax,
    "log_softmax": log_softmax,
}
ARG = {"logsumexp": "a", "softmax": "x", "log_softmax": "x"}


def _torch_ones(
    shape: tuple[int, ...], dtype: str = "float64", device: str = "cpu"
) -> Any:
    torch = pytest.importorskip("torch")
    return torch.ones(shape, dtype=getattr(torch, dtype), device=device)


def _common_rows(name: str) -> list[Any]:
    """Rows that every one of the three functions rejects alike."""
    f = FUNCS[name]
    fn = re.escape(f"{name}()")
    arg = ARG[name]
    rows = [
        # axis
        (lambda: f(X, axis=2), ValueError,
         rf"{fn} axis 2 is out of bounds for array of dimension 2",
         "axis-out-of-bounds"),
        (lambda: f(X, axis=-3), ValueError,
         rf"{fn} axis -3 is out of bounds for array of dimension 2",
         "axis-negative-out-of-bounds"),
        (lambda: f(X, axis=(0, 5)), ValueError,
         rf"{fn} axis 5 is out of bounds for array of dimension 2",
         "axis-out-of-bounds-in-tuple"),
        (lambda: f(np.array(1.0), axis=0), ValueError,
         rf"{fn} axis 0 is out of bounds for array of dimension 0",
         "axis-on-0d"),
        (lambda: f(X, axis=1.5), TypeError,
         rf"{fn} axis must be None, an int or a tuple of ints, not 1\.5$",
         "axis-float"),
        (lambda: f(X, axis="0"), TypeError,
         rf"{fn} axis must be None, an int or a tuple of ints, not '0'$",
         "axis-str"),
        (lambda: f(X, axis=(0, 1.0)), TypeError,
         rf"{fn} axis must be .*, not \(0, 1\.0\)$",
         "axis-float-in-tuple"),
        (lambda: f(X, axis=True), TypeError,
         rf"{fn} axis must be an int or a tuple of ints, not True$",
         "axis-bool"),
        (lambda: f(X, axis=(0, 0)), ValueError,
         rf"{fn} axis \(0, 0\) repeats an axis",
         "axis-repeated"),
        (lambda: f(X, axis=(0, -2)), ValueError,
         rf"{fn} axis \(0, -2\) repeats an axis",
         "axis-repeated-negative"),
        # where
        (lambda: f(X, where=np.ones((2, 3), dtype=np.int64)), TypeError,
         rf"{fn} where must be a boolean array, got dtype int64$",
         "where-int"),
        (lambda: f(X, where=np.ones((2, 3))), TypeError,
         rf"{fn} where must be a boolean array, got dtype float64$",
         "where-float"),
        (lambda: f(X, where=[1, 0, 1]), TypeError,
         rf"{fn} where must be a boolean array, got dtype int(32|64)$",
         "where-int-list"),
        (lambda: f(X, where=np.ones((3, 2), dtype=bool)), ValueError,
         rf"{fn} where of shape \(3, 2\) does not broadcast against an array "
         r"of shape \(2, 3\)",
         "where-shape-mismatch"),
        (lambda: f(X, where=np.ones(4, dtype=bool)), ValueError,
         rf"{fn} where of shape \(4,\) does not broadcast against an array "
         r"of shape \(2, 3\)",
         "where-shape-mismatch-1d"),
        # the data
        (lambda: f(np.array(["a"])), TypeError,
         rf"{fn} argument '{arg}' must hold numbers, got dtype <U1$",
         "str-array"),
        (lambda: f(["a", "b"]), TypeError,
         rf"{fn} argument '{arg}' must hold numbers, got dtype <U1$",
         "str-list"),
        (lambda: f(np.array([1.0, None], dtype=object)), TypeError,
         rf"{fn} argument '{arg}' must hold numbers, got dtype object$",
         "object-array"),
        (lambda: f(np.array(["2020-01-01"], dtype="datetime64[D]")), TypeError,
         rf"{fn} argument '{arg}' must hold numbers, got dtype datetime64\[D\]$",
         "datetime-array"),
        (lambda: f([[1.0], [1.0, 2.0]]), TypeError,
         rf"{fn} argument '{arg}' could not be converted to an array: "
         r"\[\[1\.0\], \[1\.0, 2\.0\]\]",
         "ragged-list"),
        (lambda: f(None), TypeError,
         rf"{fn} argument '{arg}' must be an array, not None$",
         "none-data"),
        # two devices of one library
        (lambda: f(_torch_ones((2, 3)), where=_torch_ones((2, 3), "bool", "meta")),
         ValueError,
         rf"{fn} got arrays on different devices \({arg} on cpu, where on meta\)",
         "torch-cpu-x-meta-where"),
        # two array libraries
        (lambda: f(X, where=_torch_ones((2, 3), "bool")), TypeError,
         rf"{fn} got arrays from different libraries \({arg} is numpy\.ndarray, "
         r"where is torch\.Tensor\)",
         "numpy-x-torch-where"),
        (lambda: f(_torch_ones((2, 3)), where=np.ones((2, 3), dtype=bool)), TypeError,
         rf"{fn} got arrays from different libraries \({arg} is torch\.Tensor, "
         r"where is numpy\.ndarray\)",
         "torch-x-numpy-where"),
    ]  # fmt: skip
    return rows


def _logsumexp_rows() -> list[Any]:
    fn = re.escape("logsumexp()")
    return [
        (lambda: logsumexp(X, keepdims="yes"), TypeError,
         rf"{fn} keepdims must be True or False, not 'yes'$",
         "keepdims-str"),
        (lambda: logsumexp(X, keepdims=None), TypeError,
         rf"{fn} keepdims must be True or False, not None$",
         "keepdims-none"),
        (lambda: logsumexp(X, keepdims=1), TypeError,
         rf"{fn} keepdims must be True or False, not 1$",
         "keepdims-int"),
        (lambda: logsumexp(X, return_sign=2), TypeError,
         rf"{fn} return_sign must be True or False, not 2$",
         "return-sign-int"),
        (lambda: logsumexp(X, return_sign="False"), TypeError,
         rf"{fn} return_sign must be True or False, not 'False'$",
         "return-sign-str"),
        (lambda: logsumexp(X, b=np.ones((3, 2))), ValueError,
         rf"{fn} b of shape \(3, 2\) does not broadcast against an array "
         r"of shape \(2, 3\)",
         "b-shape-mismatch"),
        (lambda: logsumexp(X, b=np.ones(4)), ValueError,
         rf"{fn} b of shape \(4,\) does not broadcast against an array "
         r"of shape \(2, 3\)",
         "b-shape-mismatch-1d"),
        (lambda: logsumexp(X, b=np.array(["a"])), TypeError,
         rf"{fn} argument 'b' must hold numbers, got dtype <U1$",
         "b-str-array"),
        (lambda: logsumexp(X, b=np.array([1.0, None, 2.0], dtype=object)), TypeError,
         rf"{fn} argument 'b' must hold numbers, got dtype object$",
         "b-object-array"),
        (lambda: logsumexp(X, b=[[1.0], [1.0, 2.0]]), TypeError,
         rf"{fn} argument 'b' could not be converted to an array: "
         r"\[\[1\.0\], \[1\.0, 2\.0\]\]",
         "b-ragged-list"),
        (lambda: logsumexp(X, b=_torch_ones((2, 3))), TypeError,
         rf"{fn} got arrays from different libraries \(a is numpy\.ndarray, "
         r"b is torch\.Tensor\)",
         "numpy-a-torch-b"),
        # where is checked against the broadcast of a and b: (3,) with
        # (2, 1) is (2, 3), which a where of shape (3, 1) does not fit.
        (lambda: logsumexp(
            np.ones(3), b=np.ones((2, 1)), where=np.ones((3, 1), dtype=bool)
         ), ValueError,
         rf"{fn} where of shape \(3, 1\) does not broadcast against an array "
         r"of shape \(2, 3\)",
         "where-against-a-and-b"),
    ]  # fmt: skip


def _normalised_rows(name: str) -> list[Any]:
    """softmax and log_softmax return x's shape: where may not enlarge it."""
    f = FUNCS[name]
    fn = re.escape(f"{name}()")
    return [
        (lambda: f(X, where=np.ones((4, 2, 3), dtype=bool)), ValueError,
         rf"{fn} where of shape \(4, 2, 3\) would enlarge x of shape \(2, 3\)",
         "where-enlarges"),
        (lambda: f(np.ones(3), where=np.ones((2, 3), dtype=bool)), ValueError,
         rf"{fn} where of shape \(2, 3\) would enlarge x of shape \(3,\)",
         "where-enlarges-1d"),
        (lambda: f(np.ones((3, 1)), where=np.ones((3, 2), dtype=bool)), ValueError,
         rf"{fn} where of shape \(3, 2\) would enlarge x of shape \(3, 1\)",
         "where-enlarges-axis"),
    ]  # fmt: skip


def _table() -> list[Any]:
    rows = []
    for name in FUNCS:
        specific = _logsumexp_rows() if name == "logsumexp" else _normalised_rows(name)
        for call, exc, pattern, ident in _common_rows(name) + specific:
            rows.append(pytest.param(call, exc, pattern, id=f"{name}-{ident}"))
    return rows


BAD_INPUT = _table()


@pytest.mark.parametrize(("call", "exc", "pattern"), BAD_INPUT)
def test_bad_input(call, exc, pattern):
    with pytest.raises(exc, match=pattern) as info:
        call()
    # The error is lsekit's own, not one from deep inside a library.
    assert type(info.value) is exc


def test_table_ids_are_unique():
    ids = [p.id for p in BAD_INPUT]
    assert len(ids) == len(set(ids))


# The same rows on every backend ---------------------------------------------


@pytest.mark.parametrize("name", list(FUNCS))
def test_axis_out_of_bounds_on_every_backend(bk, name):
    x = bk.asarray(X)
    with pytest.raises(ValueError, match=r"axis 2 is out of bounds .* dimension 2"):
        FUNCS[name](x, axis=2)
    with pytest.raises(ValueError, match=r"axis \(0, -2\) repeats an axis"):
        FUNCS[name](x, axis=(0, -2))


@pytest.mark.parametrize("name", list(FUNCS))
@pytest.mark.parametrize("dtype", ["int64", "float64"])
def test_where_dtype_on_every_backend(bk, name, dtype):
    x = bk.asarray(X)
    where = bk.asarray(np.ones(X.shape, dtype=dtype), dtype=None)
    pattern = (
        re.escape(f"{name}() where must be a boolean array, got dtype ")
        + re.escape(str(where.dtype))
        + "$"
    )
    with pytest.raises(TypeError, match=pattern):
        FUNCS[name](x, where=where)


@pytest.mark.parametrize("b_shape", [(3, 2), (4,)])
def test_b_shape_on_every_backend(bk, b_shape):
    a, b = bk.asarray(X), bk.asarray(np.ones(b_shape))
    pattern = re.escape(
        f"logsumexp() b of shape {b_shape} does not broadcast against an array "
        "of shape (2, 3)"
    )
    with pytest.raises(ValueError, match=pattern):
        logsumexp(a, b=b)


@pytest.mark.parametrize("name", list(FUNCS))
def test_where_shape_on_every_backend(bk, name):
    x = bk.asarray(X)
    where = bk.asarray(np.ones((3, 2), dtype=bool), dtype=None)
    pattern = re.escape(
        f"{name}() where of shape (3, 2) does not broadcast against an array "
        "of shape (2, 3)"
    )
    with pytest.raises(ValueError, match=pattern):
        FUNCS[name](x, where=where)


def test_numpy_mixed_with_another_backend(bk):
    if bk.name == "numpy":
        pytest.skip("the numpy backend's arrays are NumPy arrays")
    a = bk.asarray(X)
    kind = re.escape(f"{type(a).__module__}.{type(a).__qualname__}")
    with pytest.raises(TypeError, match=rf"a is {kind}, b is numpy\.ndarray"):
        logsumexp(a, b=np.ones(3))
    with pytest.raises(TypeError, match=rf"x is {kind}, where is numpy\.ndarray"):
        softmax(a, where=np.ones((2, 3), dtype=bool))
