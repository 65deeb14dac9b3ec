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


def _register() -> Any:
    @torch.library.custom_op("lsekit::rows", mutates_args=())  # type: ignore[untyped-decorator]
    def rows(
        x: torch.Tensor, kind: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(out, m, t)`` of the float32 rows ``x``, as ``_fused.rows``
        gives them (``out`` empty for ``logsumexp``)."""
        ops = importlib.import_module(f"{__package__}.torch")
        out, m, t, _, _ = _fused.rows(ops, x.contiguous(), KINDS[kind], False)
        if out is None:
            out = x.new_empty((0,))
        return out, torch.from_numpy(m), torch.from_numpy(t)

    @rows.register_fake  # type: ignore[untyped-decorator]
    def _(
        x: torch.Tensor, kind: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        out = x.new_empty((0,)) if kind == 0 else torch.empty_like(x)
        row = x.new_empty((n,), dtype=torch.float64)
        return out, row, torch.empty_like(row)

    return rows


ROWS = None if _fused._load() is None else _register()
