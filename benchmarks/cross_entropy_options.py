"""cross_entropy's options against PyTorch's, same run: what each costs.

``python -m lsekit bench`` times the plain loss (class indices, mean over
the batch). This times the options that users of ``F.cross_entropy`` turn
on, on eager PyTorch (CPU, default thread count), as a call and as a
training step (the logits require a gradient; the loss is propagated
back)::

    python benchmarks/cross_entropy_options.py [--shapes 64x600,512x8192]
        [--repeats 7] [--compiled] [--quick]

One markdown table: for each shape, option and mode, lsekit's median time,
``F.cross_entropy``'s with the same option, and the ratio. The options:

- ``plain``: class indices, ``reduction="mean"``;
- ``weight``: a weight per class, drawn from [0.5, 1.5);
- ``where``: a mask of examples (one in ten masked); PyTorch's side marks
  the masked examples with ``ignore_index=-100``;
- ``ignore_index``: one example in ten has the ignored class;
- ``label_smoothing``: 0.1.

``--compiled``: both sides under ``torch.compile(dynamic=False)`` (the
training step: the forward pass compiled, its backward by AOTAutograd).
Runs alternate lsekit and PyTorch on the same input, after one warm-up call
of each (which compiles them), and report the median of the repeats (the
protocol of ``lsekit._bench.timing``). ``--quick``: the first shape, 3
repeats.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

import lsekit
from lsekit._bench import timing

OPTIONS = ("plain", "weight", "where", "ignore_index", "label_smoothing")
MODES = ("call", "training step")


def _calls(
    option: str, x: Any, y: Any, w: Any, mask: Any
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """lsekit's loss and PyTorch's of logits ``x``, with ``option``."""
    if option == "weight":
        return (
            lambda x: lsekit.cross_entropy(x, y, weight=w),
            lambda x: F.cross_entropy(x, y, weight=w),
        )
    if option == "where":
        masked = torch.where(mask, y, -100)
        return (
            lambda x: lsekit.cross_entropy(x, y, where=mask),
            lambda x: F.cross_entropy(x, masked),
        )
    if option == "ignore_index":
        ignored = torch.where(mask, y, -100)
        return (
            lambda x: lsekit.cross_entropy(x, ignored, ignore_index=-100),
            lambda x: F.cross_entropy(x, ignored),
        )
    if option == "label_smoothing":
        return (
            lambda x: lsekit.cross_entropy(x, y, label_smoothing=0.1),
            lambda x: F.cross_entropy(x, y, label_smoothing=0.1),
        )
    return (lambda x: lsekit.cross_entropy(x, y), lambda x: F.cross_entropy(x, y))


def _step(loss: Callable[..., Any], x: Any) -> Callable[[], None]:
    """A training step of ``loss`` at a fresh leaf of ``x``'s values."""

    def step() -> None:
        leaf = x.detach().requires_grad_(True)
        loss(leaf).backward()

    return step


def _row(
    shape: tuple[int, int], option: str, mode: str, repeats: int, compiled: bool
) -> str:
    gen = torch.Generator().manual_seed(0)
    n, c = shape
    x = torch.randn(shape, generator=gen) * 3.0
    y = torch.randint(0, c, (n,), generator=gen)
    w = torch.rand(c, generator=gen) + 0.5
    mask = torch.rand(n, generator=gen) >= 0.1
    ours, peer = _calls(option, x, y, w, mask)
    if compiled:
        ours, peer = (torch.compile(f, dynamic=False) for f in (ours, peer))
    torch.testing.assert_close(ours(x), peer(x), rtol=1e-4, atol=1e-5)
    if mode == "call":
        calls = [lambda: ours(x), lambda: peer(x)]
    else:
        calls = [_step(ours, x), _step(peer, x)]
    for call in calls:
        call()  # the warm-up
    first = [timing.time_once(call, time.perf_counter) for call in calls]
    inner = [timing.batch_size(s) for s in first]
    times = timing.alternate(calls, repeats, inner)
    a, b = (timing.median(t) for t in times)
    size = f"{n}x{c}"
    how = f"compiled {mode}" if compiled else mode
    return (
        f"| {size} | {option} | {how} | {a * 1e3:.3f} | {b * 1e3:.3f} "
        f"| {timing.ratio(a, b):.2f} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="64x600,512x8192")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--compiled",
        action="store_true",
        help="both sides under torch.compile(dynamic=False)",
    )
    args = parser.parse_args(argv)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",") if s]
    repeats = args.repeats
    if args.quick:
        shapes, repeats = shapes[:1], 3
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; "
        f"{repeats} repeats, float32\n"
    )
    print("| shape | option | mode | lsekit ms | torch ms | ratio |")
    print("|---|---|---|---|---|---|")
    for shape in shapes:
        for option in OPTIONS:
            for mode in MODES:
                row = _row(shape, option, mode, repeats, args.compiled)
                print(row, flush=True)


if __name__ == "__main__":
    main()
