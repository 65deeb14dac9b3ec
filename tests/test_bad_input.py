"""Bad arguments: each is rejected with a clear message naming the value.

The table runs on NumPy inputs; the ``*_on_every_backend`` tests repeat a
few rows with every backend's arrays, to show that the exception type and
message do not depend on the array library. The one exception is a class
index out of range for ``cross_entropy``: a lazy backend cannot read it when
the call is made, so there it gives a NaN loss instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from lsekit import cross_entropy, log_softmax, logmatmulexp, logsumexp, softmax

X = np.arange(6.0).reshape(2, 3)  # the 2-D input of every row
FUNCS: dict[str, Callable[..., Any]] = {
    "logsumexp": logsumexp,
    "softmax": softmax,
    "log_softmax": log_softmax,
}
ARG = {"logsumexp": "a", "softmax": "x", "log_softmax": "x"}
T = np.array([0, 2])  # class indices for X: one per row
P = np.full(X.shape, 1 / 3)  # class probabilities for X


def _torch_sparse(shape: tuple[int, ...], dtype: str = "float32") -> Any:
    return _torch_ones(shape, dtype).to_sparse()


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
        (lambda: f(_torch_sparse((2, 3))), TypeError,
         rf"{fn} argument '{arg}' must be a dense tensor \(layout torch\.strided\), "
         r"got layout torch\.sparse_coo$",
         "torch-sparse"),
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


def _cross_entropy_rows() -> list[Any]:
    fn = re.escape("cross_entropy()")
    ce = cross_entropy
    bools = np.array([True, False])
    return [
        # class indices out of range; NumPy values can be read, so they raise
        (lambda: ce(X, np.array([0, 3])), ValueError,
         rf"{fn} target holds class index 3, which lies outside \[0, 3\)$",
         "index-too-large"),
        (lambda: ce(X, np.array([0, 2**40])), ValueError,
         rf"{fn} target holds class index 1099511627776, which lies outside "
         r"\[0, 3\)$",
         "index-far-too-large"),
        (lambda: ce(X, np.array([-1, 0])), ValueError,
         rf"{fn} target holds class index -1, which lies outside \[0, 3\)$",
         "index-negative"),
        (lambda: ce(X, np.array([-1, 0]), ignore_index=-100), ValueError,
         rf"{fn} target holds class index -1, which lies outside \[0, 3\) "
         r"and is not ignore_index=-100$",
         "index-negative-not-ignore-index"),
        # The ignored entry passes; the one beside it is still checked.
        (lambda: ce(X, np.array([-100, 5]), ignore_index=-100), ValueError,
         rf"{fn} target holds class index 5, which lies outside \[0, 3\) "
         r"and is not ignore_index=-100$",
         "index-too-large-beside-ignored"),
        # The masked 5 passes; the counted 4 is reported.
        (lambda: ce(X, np.array([5, 4]), where=np.array([False, True])),
         ValueError,
         rf"{fn} target holds class index 4, which lies outside \[0, 3\)$",
         "index-too-large-beside-masked"),
        # target dtype and shape
        (lambda: ce(X, bools), TypeError,
         rf"{fn} target must hold integer class indices or floating "
         r"probabilities, got dtype bool$",
         "target-bool"),
        (lambda: ce(X, np.array([1j, 0j])), TypeError,
         rf"{fn} target must hold integer class indices or floating "
         r"probabilities, got dtype complex128$",
         "target-complex"),
        (lambda: ce(X, np.array([0, 1, 2])), ValueError,
         rf"{fn} target of class indices must have the shape of logits without "
         r"axis -1, \(2,\); got \(3,\)$",
         "target-index-shape"),
        (lambda: ce(X, np.zeros((2, 3), dtype=np.int64)), ValueError,
         rf"{fn} target of class indices must have the shape of logits without "
         r"axis -1, \(2,\); got \(2, 3\)$",
         "target-index-shape-of-logits"),
        (lambda: ce(X, T, axis=0), ValueError,
         rf"{fn} target of class indices must have the shape of logits without "
         r"axis 0, \(3,\); got \(2,\)$",
         "target-index-shape-axis-0"),
        (lambda: ce(X, np.ones((3, 2))), ValueError,
         rf"{fn} target of probabilities must have the shape of logits, "
         r"\(2, 3\); got \(3, 2\)$",
         "target-probabilities-shape"),
        # Class labels stored as floats read as probabilities of the wrong
        # shape; the message gives both shapes.
        (lambda: ce(X, np.array([0.0, 2.0])), ValueError,
         rf"{fn} target of probabilities must have the shape of logits, "
         r"\(2, 3\); got \(2,\)$",
         "target-float-labels"),
        (lambda: ce(X, None), TypeError,
         rf"{fn} argument 'target' must be an array, not None$",
         "target-none"),
        # logits
        (lambda: ce(X + 1j, T), TypeError,
         rf"{fn} logits must be real, got dtype complex128$",
         "logits-complex"),
        (lambda: ce(np.array(1.0), np.array(0)), ValueError,
         rf"{fn} logits must have a class axis; got a 0-d array$",
         "logits-0d"),
        (lambda: ce(np.ones((2, 0)), T), ValueError,
         rf"{fn} logits of shape \(2, 0\) have no classes along axis -1$",
         "logits-no-classes"),
        (lambda: ce(np.ones((0, 2)), T, axis=0), ValueError,
         rf"{fn} logits of shape \(0, 2\) have no classes along axis 0$",
         "logits-no-classes-axis-0"),
        (lambda: ce(None, T), TypeError,
         rf"{fn} argument 'logits' must be an array, not None$",
         "logits-none"),
        (lambda: ce(np.array([["a"]]), np.array([0])), TypeError,
         rf"{fn} argument 'logits' must hold numbers, got dtype <U1$",
         "logits-str"),
        # weight
        (lambda: ce(X, T, weight=np.ones(4)), ValueError,
         rf"{fn} weight must have one entry per class, shape \(3,\); "
         r"got \(4,\)$",
         "weight-length"),
        (lambda: ce(X, T, weight=np.ones((1, 3))), ValueError,
         rf"{fn} weight must have one entry per class, shape \(3,\); "
         r"got \(1, 3\)$",
         "weight-2d"),
        (lambda: ce(X, T, weight=np.ones(3) + 0j), TypeError,
         rf"{fn} weight must be real, got dtype complex128$",
         "weight-complex"),
        (lambda: ce(X, T, weight=np.array(["a", "b", "c"])), TypeError,
         rf"{fn} argument 'weight' must hold numbers, got dtype <U1$",
         "weight-str"),
        # label_smoothing
        (lambda: ce(X, T, label_smoothing=-0.1), ValueError,
         rf"{fn} label_smoothing must lie in \[0, 1\], not -0\.1$",
         "label-smoothing-negative"),
        (lambda: ce(X, T, label_smoothing=1.5), ValueError,
         rf"{fn} label_smoothing must lie in \[0, 1\], not 1\.5$",
         "label-smoothing-above-1"),
        (lambda: ce(X, T, label_smoothing=float("nan")), ValueError,
         rf"{fn} label_smoothing must lie in \[0, 1\], not nan$",
         "label-smoothing-nan"),
        (lambda: ce(X, T, label_smoothing="0.1"), TypeError,
         rf"{fn} label_smoothing must be a float, not '0\.1'$",
         "label-smoothing-str"),
        (lambda: ce(X, T, label_smoothing=True), TypeError,
         rf"{fn} label_smoothing must be a float, not True$",
         "label-smoothing-bool"),
        # NumPy's bool is no more a fraction than Python's.
        (lambda: ce(X, T, label_smoothing=np.True_), TypeError,
         rf"{fn} label_smoothing must be a float, not np\.True_$",
         "label-smoothing-numpy-bool"),
        (lambda: ce(X, T, label_smoothing=None), TypeError,
         rf"{fn} label_smoothing must be a float, not None$",
         "label-smoothing-none"),
        # reduction
        (lambda: ce(X, T, reduction="avg"), ValueError,
         rf"{fn} reduction must be one of 'none', 'mean', 'sum', not 'avg'$",
         "reduction-avg"),
        (lambda: ce(X, T, reduction=None), ValueError,
         rf"{fn} reduction must be one of 'none', 'mean', 'sum', not None$",
         "reduction-none-object"),
        (lambda: ce(X, T, reduction="MEAN"), ValueError,
         rf"{fn} reduction must be one of 'none', 'mean', 'sum', not 'MEAN'$",
         "reduction-upper-case"),
        # ignore_index
        (lambda: ce(X, P, ignore_index=0), ValueError,
         rf"{fn} ignore_index=0 applies to class-index targets only; "
         r"mask probability targets with where=$",
         "ignore-index-with-probabilities"),
        (lambda: ce(X, T, ignore_index=1.5), TypeError,
         rf"{fn} ignore_index must be None or an int, not 1\.5$",
         "ignore-index-float"),
        (lambda: ce(X, T, ignore_index=True), TypeError,
         rf"{fn} ignore_index must be None or an int, not True$",
         "ignore-index-bool"),
        (lambda: ce(X, T, ignore_index="0"), TypeError,
         rf"{fn} ignore_index must be None or an int, not '0'$",
         "ignore-index-str"),
        # axis: one class axis, never several or all
        (lambda: ce(X, T, axis=(1,)), TypeError,
         rf"{fn} axis must be an int \(the class axis\), not \(1,\)$",
         "axis-tuple"),
        (lambda: ce(X, T, axis=(0, 1)), TypeError,
         rf"{fn} axis must be an int \(the class axis\), not \(0, 1\)$",
         "axis-tuple-of-two"),
        (lambda: ce(X, T, axis=None), TypeError,
         rf"{fn} axis must be an int \(the class axis\), not None$",
         "axis-none"),
        (lambda: ce(X, T, axis=1.0), TypeError,
         rf"{fn} axis must be .*, not 1\.0$",
         "axis-float"),
        (lambda: ce(X, T, axis=True), TypeError,
         rf"{fn} axis must be .*, not True$",
         "axis-bool"),
        (lambda: ce(X, T, axis=2), ValueError,
         rf"{fn} axis 2 is out of bounds for array of dimension 2$",
         "axis-out-of-bounds"),
        (lambda: ce(X, T, axis=-3), ValueError,
         rf"{fn} axis -3 is out of bounds for array of dimension 2$",
         "axis-negative-out-of-bounds"),
        # where: a mask of the examples, not of the logits
        (lambda: ce(X, T, where=np.ones(2, dtype=np.int64)), TypeError,
         rf"{fn} where must be a boolean array, got dtype int64$",
         "where-int"),
        (lambda: ce(X, T, where=np.ones(2)), TypeError,
         rf"{fn} where must be a boolean array, got dtype float64$",
         "where-float"),
        (lambda: ce(X, T, where=np.ones(3, dtype=bool)), ValueError,
         rf"{fn} where of shape \(3,\) does not broadcast against an array "
         r"of shape \(2,\)$",
         "where-shape-mismatch"),
        (lambda: ce(X, T, where=np.ones((2, 3), dtype=bool)), ValueError,
         rf"{fn} where of shape \(2, 3\) does not broadcast against an array "
         r"of shape \(2,\)$",
         "where-shape-of-logits"),
        (lambda: ce(X, T, where=np.ones((4, 2), dtype=bool)), ValueError,
         rf"{fn} where of shape \(4, 2\) would enlarge the examples' shape "
         r"\(2,\)$",
         "where-enlarges"),
        (lambda: ce(np.ones((1, 3)), np.array([0]), where=bools), ValueError,
         rf"{fn} where of shape \(2,\) would enlarge the examples' shape "
         r"\(1,\)$",
         "where-enlarges-length-1"),
        # two array libraries, two devices
        (lambda: ce(_torch_ones((2, 3)), T), TypeError,
         rf"{fn} got arrays from different libraries \(logits is torch\.Tensor, "
         r"target is numpy\.ndarray\)",
         "torch-logits-numpy-target"),
        (lambda: ce(X, T, weight=_torch_ones((3,))), TypeError,
         rf"{fn} got arrays from different libraries \(logits is numpy\.ndarray, "
         r"target is numpy\.ndarray, weight is torch\.Tensor\)",
         "numpy-logits-torch-weight"),
        (lambda: ce(_torch_ones((2, 3)), _torch_ones((2,), "int64", "meta")),
         ValueError,
         rf"{fn} got arrays on different devices \(logits on cpu, "
         r"target on meta\)",
         "torch-cpu-logits-meta-target"),
        (lambda: ce(_torch_sparse((2, 3)), _torch_ones((2,), "int64")), TypeError,
         rf"{fn} argument 'logits' must be a dense tensor \(layout "
         r"torch\.strided\), got layout torch\.sparse_coo$",
         "torch-sparse-logits"),
        (lambda: ce(_torch_ones((2, 3)), _torch_sparse((2,), "int64")), TypeError,
         rf"{fn} argument 'target' must be a dense tensor \(layout "
         r"torch\.strided\), got layout torch\.sparse_coo$",
         "torch-sparse-target"),
        # The options are keyword-only; Python itself refuses them by position.
        (lambda: ce(X, T, -1), TypeError,
         rf"{fn} takes 2 positional arguments but 3 were given$",
         "axis-positional"),
        (lambda: ce(X, T, -1, None, None, "sum"), TypeError,
         rf"{fn} takes 2 positional arguments but 6 were given$",
         "options-positional"),
    ]  # fmt: skip


def _logmatmulexp_rows() -> list[Any]:
    fn = re.escape("logmatmulexp()")
    lme = logmatmulexp
    return [
        # 0-d operands: matmul has no rule for them
        (lambda: lme(np.array(1.0), X), ValueError,
         rf"{fn} a must have at least one dimension$",
         "a-0d"),
        (lambda: lme(X, np.array(1.0)), ValueError,
         rf"{fn} b must have at least one dimension$",
         "b-0d"),
        (lambda: lme(2.0, X), ValueError,
         rf"{fn} a must have at least one dimension$",
         "a-python-scalar"),
        # inner dimensions; 1-D operands are named by their own shapes
        (lambda: lme(X, np.ones((2, 4))), ValueError,
         rf"{fn} inner dimensions differ: a of shape \(2, 3\) and b of shape "
         r"\(2, 4\)$",
         "inner-mismatch"),
        (lambda: lme(X, X), ValueError,
         rf"{fn} inner dimensions differ: a of shape \(2, 3\) and b of shape "
         r"\(2, 3\)$",
         "inner-mismatch-same-shape"),
        (lambda: lme(np.ones(3), np.ones(4)), ValueError,
         rf"{fn} inner dimensions differ: a of shape \(3,\) and b of shape "
         r"\(4,\)$",
         "inner-mismatch-vectors"),
        (lambda: lme(np.ones(3), np.ones((2, 4, 5))), ValueError,
         rf"{fn} inner dimensions differ: a of shape \(3,\) and b of shape "
         r"\(2, 4, 5\)$",
         "inner-mismatch-vector-a"),
        (lambda: lme(np.ones((2, 3, 4)), np.ones(5)), ValueError,
         rf"{fn} inner dimensions differ: a of shape \(2, 3, 4\) and b of shape "
         r"\(5,\)$",
         "inner-mismatch-vector-b"),
        (lambda: lme(np.ones((3, 0)), np.ones((2, 4))), ValueError,
         rf"{fn} inner dimensions differ: a of shape \(3, 0\) and b of shape "
         r"\(2, 4\)$",
         "inner-mismatch-empty"),
        # batch dimensions
        (lambda: lme(np.ones((2, 2, 3)), np.ones((3, 3, 4))), ValueError,
         rf"{fn} batch dimensions do not broadcast: a of shape \(2, 2, 3\) and "
         r"b of shape \(3, 3, 4\)$",
         "batch-mismatch"),
        (lambda: lme(np.ones((4, 2, 3)), np.ones((3, 2, 3, 5))), ValueError,
         rf"{fn} batch dimensions do not broadcast: a of shape \(4, 2, 3\) and "
         r"b of shape \(3, 2, 3, 5\)$",
         "batch-mismatch-ranks"),
        # the data
        (lambda: lme(X + 1j, X.T), TypeError,
         rf"{fn} a must be real, got dtype complex128$",
         "a-complex"),
        (lambda: lme(X, X.T.astype(np.complex64)), TypeError,
         rf"{fn} b must be real, got dtype complex64$",
         "b-complex"),
        (lambda: lme(np.array([["a", "b", "c"]]), X.T), TypeError,
         rf"{fn} argument 'a' must hold numbers, got dtype <U1$",
         "a-str"),
        (lambda: lme(X, np.array([["a"], ["b"], ["c"]])), TypeError,
         rf"{fn} argument 'b' must hold numbers, got dtype <U1$",
         "b-str"),
        (lambda: lme(np.array([[1.0, None, 2.0]], dtype=object), X.T), TypeError,
         rf"{fn} argument 'a' must hold numbers, got dtype object$",
         "a-object"),
        (lambda: lme([[1.0], [1.0, 2.0]], X), TypeError,
         rf"{fn} argument 'a' could not be converted to an array: "
         r"\[\[1\.0\], \[1\.0, 2\.0\]\]",
         "a-ragged-list"),
        (lambda: lme(None, X), TypeError,
         rf"{fn} argument 'a' must be an array, not None$",
         "a-none"),
        (lambda: lme(X, None), TypeError,
         rf"{fn} argument 'b' must be an array, not None$",
         "b-none"),
        # two array libraries, two devices
        (lambda: lme(X, _torch_ones((3, 2))), TypeError,
         rf"{fn} got arrays from different libraries \(a is numpy\.ndarray, "
         r"b is torch\.Tensor\)",
         "numpy-a-torch-b"),
        (lambda: lme(_torch_ones((2, 3)), X.T), TypeError,
         rf"{fn} got arrays from different libraries \(a is torch\.Tensor, "
         r"b is numpy\.ndarray\)",
         "torch-a-numpy-b"),
        (lambda: lme(_torch_ones((2, 3)), _torch_ones((3, 2), device="meta")),
         ValueError,
         rf"{fn} got arrays on different devices \(a on cpu, b on meta\)",
         "torch-cpu-a-meta-b"),
        (lambda: lme(_torch_ones((2, 3)), _torch_sparse((3, 2))), TypeError,
         rf"{fn} argument 'b' must be a dense tensor \(layout torch\.strided\), "
         r"got layout torch\.sparse_coo$",
         "torch-sparse-b"),
        # Both operands are positional-only, as in matmul.
        (lambda: lme(a=X, b=X.T), TypeError,
         rf"{fn} got some positional-only arguments passed as keyword "
         r"arguments: 'a, b'$",
         "keyword-operands"),
    ]  # fmt: skip


def _table() -> list[Any]:
    rows = []
    for name in FUNCS:
        specific = _logsumexp_rows() if name == "logsumexp" else _normalised_rows(name)
        for call, exc, pattern, ident in _common_rows(name) + specific:
            rows.append(pytest.param(call, exc, pattern, id=f"{name}-{ident}"))
    for call, exc, pattern, ident in _cross_entropy_rows():
        rows.append(pytest.param(call, exc, pattern, id=f"cross_entropy-{ident}"))
    for call, exc, pattern, ident in _logmatmulexp_rows():
        rows.append(pytest.param(call, exc, pattern, id=f"logmatmulexp-{ident}"))
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


# cross_entropy: class indices the check must let through ----------------------


@pytest.mark.parametrize(
    ("target", "options"),
    [
        pytest.param([-100, 2], {"ignore_index": -100}, id="negative-ignored"),
        pytest.param([7, 2], {"ignore_index": 7}, id="too-large-ignored"),
        pytest.param([5, 2], {"where": [False, True]}, id="too-large-masked"),
        pytest.param([-1, 2], {"where": [False, True]}, id="negative-masked"),
    ],
)
def test_cross_entropy_accepts_uncounted_bad_index(bk, target, options):
    x = bk.asarray(X)
    t = bk.asarray(np.array(target), dtype=None)
    if "where" in options:
        options = {"where": bk.asarray(np.array(options["where"]), dtype=None)}
    per_example = bk.to_numpy(cross_entropy(x, t, reduction="none", **options))
    mean = bk.to_numpy(cross_entropy(x, t, **options))
    assert np.all(np.isfinite(per_example)), per_example
    # The uncounted example costs exactly 0, and the mean is the other
    # example's loss: the bad index neither leaks a NaN nor counts in the
    # denominator. A few ulps of room, as exp and log1p differ by library.
    alone = cross_entropy(X[1:], T[1:])
    tight = 4 * np.finfo(np.float64).eps
    np.testing.assert_allclose(per_example, [0.0, alone], rtol=tight, atol=0)
    np.testing.assert_allclose(mean, alone, rtol=tight, atol=0)


# cross_entropy: the same rows on every backend --------------------------------


@pytest.mark.parametrize("bad", [3, -1])
def test_cross_entropy_index_out_of_range_on_every_backend(bk, bad):
    x = bk.asarray(X)
    t = bk.asarray(np.array([0, bad]), dtype=None)
    if not bk.manifest.lazy:
        pattern = re.escape(
            f"cross_entropy() target holds class index {bad}, which lies outside [0, 3)"
        )
        with pytest.raises(ValueError, match=pattern + "$"):
            cross_entropy(x, t)
        return
    # A lazy backend cannot look at the indices without computing them: the
    # call succeeds and the bad example's loss, and the mean, are NaN.
    assert bk.name == "dask", f"no lazy behaviour is specified for {bk.name}"
    per_example = bk.to_numpy(cross_entropy(x, t, reduction="none"))
    np.testing.assert_array_equal(per_example[0], cross_entropy(X[:1], T[:1]))
    assert np.isnan(per_example[1]), per_example
    assert np.isnan(bk.to_numpy(cross_entropy(x, t)))


@pytest.mark.parametrize(
    ("target", "dtype", "pattern"),
    [
        pytest.param(
            np.array([0, 1, 2]), None,
            "target of class indices must have the shape of logits without "
            "axis -1, (2,); got (3,)",
            id="indices",
        ),
        pytest.param(
            np.ones((3, 2)), "float64",
            "target of probabilities must have the shape of logits, (2, 3); "
            "got (3, 2)",
            id="probabilities",
        ),
    ],
)  # fmt: skip
def test_cross_entropy_target_shape_on_every_backend(bk, target, dtype, pattern):
    x, t = bk.asarray(X), bk.asarray(target, dtype=dtype)
    # Shapes are known without computing, so lazy backends raise too.
    with pytest.raises(ValueError, match=re.escape(f"cross_entropy() {pattern}")):
        cross_entropy(x, t)


def test_cross_entropy_numpy_mixed_with_another_backend(bk):
    if bk.name == "numpy":
        pytest.skip("the numpy backend's arrays are NumPy arrays")
    x = bk.asarray(X)
    kind = re.escape(f"{type(x).__module__}.{type(x).__qualname__}")
    with pytest.raises(TypeError, match=rf"logits is {kind}, target is numpy\.ndarray"):
        cross_entropy(x, T)


# logmatmulexp: the same rows on every backend ---------------------------------


@pytest.mark.parametrize(
    ("a_shape", "b_shape"),
    [((2, 3), (2, 4)), ((3,), (4,)), ((2, 3, 4), (5,)), ((3,), (2, 4, 5))],
    ids=str,
)
def test_logmatmulexp_inner_dimension_on_every_backend(bk, a_shape, b_shape):
    a, b = bk.asarray(np.ones(a_shape)), bk.asarray(np.ones(b_shape))
    # Shapes are known without computing, so lazy backends raise too, and
    # the message shows the shapes as tuples whatever the library's type.
    pattern = re.escape(
        f"logmatmulexp() inner dimensions differ: a of shape {a_shape} and b of "
        f"shape {b_shape}"
    )
    with pytest.raises(ValueError, match=pattern + "$"):
        logmatmulexp(a, b)


def test_logmatmulexp_batch_and_rank_on_every_backend(bk):
    a, b = bk.asarray(np.ones((2, 2, 3))), bk.asarray(np.ones((3, 3, 4)))
    pattern = re.escape(
        "logmatmulexp() batch dimensions do not broadcast: a of shape (2, 2, 3) "
        "and b of shape (3, 3, 4)"
    )
    with pytest.raises(ValueError, match=pattern + "$"):
        logmatmulexp(a, b)
    with pytest.raises(ValueError, match=r"a must have at least one dimension$"):
        logmatmulexp(bk.asarray(np.array(1.0)), b)


def test_logmatmulexp_complex_on_every_backend(bk):
    a = bk.asarray(X, "complex128")
    b = bk.asarray(X.T)
    pattern = re.escape("logmatmulexp() a must be real, got dtype ") + re.escape(
        str(a.dtype)
    )
    with pytest.raises(TypeError, match=pattern + "$"):
        logmatmulexp(a, b)


def test_logmatmulexp_numpy_mixed_with_another_backend(bk):
    if bk.name == "numpy":
        pytest.skip("the numpy backend's arrays are NumPy arrays")
    a = bk.asarray(X)
    kind = re.escape(f"{type(a).__module__}.{type(a).__qualname__}")
    with pytest.raises(TypeError, match=rf"a is {kind}, b is numpy\.ndarray"):
        logmatmulexp(a, X.T)
