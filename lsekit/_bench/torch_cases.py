"""The PyTorch cases, shared by eager CPU (calls and training steps),
``torch.compile`` and CUDA.

The library peers are ``torch.logsumexp`` and ``torch.nn.functional``'s
``softmax``, ``log_softmax`` and ``cross_entropy``; the max-shift formulas
are written here in PyTorch's own spelling.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any

from .suite import Library

__all__ = ["available", "library", "versions"]


def _torch() -> Any:
    # Typed as Any: torch's annotations vary between versions.
    return importlib.import_module("torch")


def available(device: str) -> str | None:
    """Why PyTorch on ``device`` ("cpu" or "cuda") cannot run, or None."""
    try:
        torch = _torch()
    except ImportError as exc:
        return f"torch is not installed ({exc})"
    if device == "cuda" and not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    return None


def versions(device: str) -> dict[str, str]:
    """torch's version, threads, and the GPU on ``device`` "cuda"."""
    torch = _torch()
    out = {"torch": f"{torch.__version__} ({torch.get_num_threads()} threads)"}
    if device == "cuda":
        out["gpu"] = str(torch.cuda.get_device_name())
        out["cuda"] = str(torch.version.cuda)
    return out


def _logsumexp(x: Any) -> Any:
    m = x.amax(-1, keepdim=True)
    return (x - m).exp().sum(-1).log() + m.squeeze(-1)


def _softmax(x: Any) -> Any:
    e = (x - x.amax(-1, keepdim=True)).exp()
    return e / e.sum(-1, keepdim=True)


def _log_softmax(x: Any) -> Any:
    s = x - x.amax(-1, keepdim=True)
    return s - s.exp().sum(-1, keepdim=True).log()


def _cross_entropy(x: Any, y: Any) -> Any:
    return (_logsumexp(x) - x.gather(-1, y[:, None]).squeeze(-1)).mean()


def _logmatmulexp(a: Any, b: Any) -> Any:
    ma = a.amax(-1, keepdim=True)
    mb = b.amax(-2, keepdim=True)
    return ((a - ma).exp() @ (b - mb).exp()).log() + ma + mb


@contextlib.contextmanager
def _fresh_compile() -> Iterator[None]:
    torch = _torch()
    # Dynamo caches compiled code per code object, up to a limit: the same
    # lambda compiled for many shapes and functions would pass it and fall
    # back to eager. Each case starts from an empty cache instead.
    torch._dynamo.reset()
    yield


def _training(f: Any) -> Any:
    """``f`` as a training step: its first argument requires a gradient, and
    a fixed random gradient of the output (one per shape, made on the
    first call) is propagated back to it, whose gradient is the result."""
    torch = _torch()
    grads: dict[tuple[int, ...], Any] = {}

    def step(x: Any, *rest: Any) -> Any:
        x = x.detach().requires_grad_(True)
        out = f(x, *rest)
        shape = tuple(out.shape)
        if shape not in grads:
            seeded = torch.Generator(device=out.device).manual_seed(0)
            grads[shape] = torch.randn(
                shape, generator=seeded, dtype=out.dtype, device=out.device
            )
        out.backward(grads[shape])
        return x.grad

    return step


def library(device: str, *, compiled: bool = False, trained: bool = False) -> Library:
    """The PyTorch `Library` on ``device``, eager or under ``torch.compile``,
    calls or training steps (``trained``: forward and backward)."""
    torch = _torch()
    fn = torch.nn.functional

    def asarray(a: Any) -> Any:
        return torch.asarray(a, device=device)

    def sync(r: Any) -> Any:
        if device == "cuda":
            torch.cuda.synchronize()
        return r

    def copier(src: Any) -> Any:
        dst = torch.empty_like(src)
        return lambda: dst.copy_(src)

    def wrap(f: Any) -> Any:
        if compiled:
            f = torch.compile(f, dynamic=False)
        return _training(f) if trained else f

    return Library(
        asarray=asarray,
        own={
            "logsumexp": ("torch.logsumexp", lambda x: torch.logsumexp(x, -1)),
            "softmax": ("F.softmax", lambda x: fn.softmax(x, -1)),
            "log_softmax": ("F.log_softmax", lambda x: fn.log_softmax(x, -1)),
            "cross_entropy": ("F.cross_entropy", lambda x, y: fn.cross_entropy(x, y)),
        },
        by_hand={
            "logsumexp": _logsumexp,
            "softmax": _softmax,
            "log_softmax": _log_softmax,
            "cross_entropy": _cross_entropy,
            "logmatmulexp": _logmatmulexp,
        },
        wrap=wrap,
        sync=sync,
        to_numpy=lambda r: r.detach().cpu().numpy(),
        first_call=_fresh_compile if compiled else contextlib.nullcontext,
        copier=copier if device == "cuda" else None,
    )
