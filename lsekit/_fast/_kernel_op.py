"""The C kernel of ``_fused`` as a PyTorch operator, ``lsekit::rows``,
which ``torch.compile`` calls as it is: Inductor cannot fuse into it, and
needs not, as it reads each row from memory once, where the traced
kernels' float64 sums take passes of their own. The compiled loss,
``log_softmax`` and ``softmax`` take it (``torch.py``).

This module imports torch: ``torch.py`` imports it under ``torch.compile``
(an import is what Dynamo runs rather than traces), and it registers the
operator once, where the kernel was built (``ROWS``; None otherwise).
"""

import importlib
from typing import Any

from . import _fused

# Typed as Any: torch's annotations are there in some environments and not
# in others.
torch: Any = importlib.import_module("torch")

__all__ = ["KINDS", "ROWS"]

# The operator's kinds, by index: ``logsumexp`` gives no rows.
KINDS = ("logsumexp", "log_softmax", "softmax")


# The operator's library: kept for as long as the operator is registered.
_LIBRARY: Any = None


def _register() -> Any:
    """``lsekit::rows``, defined and implemented through the dispatcher's
    own registration: ``torch.library.custom_op`` wraps each call in
    Python layers of its own (autograd, the backend's lookup), which cost
    a small batch a good part of the call, for a function that autograd
    never records (its callers' ``autograd.Function`` does)."""
    global _LIBRARY
    ops = importlib.import_module(f"{__package__}.torch")
    _LIBRARY = torch.library.Library("lsekit", "DEF")
    _LIBRARY.define("rows(Tensor x, int kind) -> (Tensor, Tensor, Tensor)")

    def rows(x: Any, kind: int) -> tuple[Any, Any, Any]:
        """``(out, m, t)`` of the float32 rows ``x``, as ``_fused.rows``
        gives them (``out`` empty for ``logsumexp``)."""
        out, m, t, _, _ = _fused.run(ops, x.contiguous(), KINDS[kind])
        if out is None:
            out = x.new_empty((0,))
        return out, torch.from_numpy(m), torch.from_numpy(t)

    def fake(x: Any, kind: int) -> tuple[Any, Any, Any]:
        n = x.shape[0]
        out = x.new_empty((0,)) if kind == 0 else torch.empty_like(x)
        row = x.new_empty((n,), dtype=torch.float64)
        return out, row, torch.empty_like(row)

    _LIBRARY.impl("rows", rows, "CPU")
    torch.library.register_fake("lsekit::rows", fake, lib=_LIBRARY)
    return torch.ops.lsekit.rows


ROWS = None if _fused._load() is None else _register()
