"""Adversarial input families for the accuracy tests and the accuracy report.

Each family is a list of 1-D float64 rows; rows are exact in float32 too
when a family is generated for float32 (they are rounded first), so the
exact reference is that of the very values the function receives.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Row = np.ndarray


def _normal(seed: int) -> list[Row]:
    rng = np.random.default_rng(seed)
    return [
        rng.normal(scale=scale, size=n) + shift
        for scale in (0.1, 1.0, 10.0, 100.0)
        for n in (2, 16, 256)
        for shift in (0.0, 50.0, -50.0)
    ]


def _dominant(seed: int) -> list[Row]:
    rng = np.random.default_rng(seed)
    rows = []
    for gap in (1.0, 5.0, 17.0, 20.0, 36.0, 40.0, 80.0, 100.0, 700.0):
        for offset in (0.0, 3.0, -2.5, 1000.0, -1000.0):
            rest = -gap - rng.exponential(2.0, size=5)
            rows.append(np.concatenate([[0.0], rest]) + offset)
    return rows


def _dominant_far(seed: int) -> list[Row]:
    # The maximum a few binades above the other terms: x - max rounds in
    # float64, by as many ulps of exp(x - max) as |x - max| is large.
    rng = np.random.default_rng(seed)
    return [
        np.concatenate([[top], base + rng.normal(scale=4.0, size=n)])
        for top, base in ((30.0, 0.0), (60.0, 1.0), (25.0, -10.0), (-20.0, -55.0))
        for n in (5, 50)
    ]


def _seed_examples(seed: int) -> list[Row]:
    del seed
    return [
        np.array(r, dtype=np.float64)
        for r in (
            [1000.0] * 3,
            [-1000.0] * 3,
            [1.0, 1.0, 1.0],
            [1000.0, 1.0, 2.0, 3.0],
            [-1000.0, 1.0, 2.0, 3.0],
            [1000.0, 1e-5, 1e-10],
            [1000.0, 1001.0, 1002.0],
            [-1000.0, -999.0, -998.0],
            [-1000.0, 1000.0, -1000.0, 5.0, 10.0, 0.001],
            [11.0, 12.0, -1000.0, 5.0, 10.0, 0.001],
            [0.0, -40.0],
        )
    ]


def _many_tiny(seed: int) -> list[Row]:
    rng = np.random.default_rng(seed)
    return [
        np.concatenate([[0.0], -depth + rng.normal(scale=0.5, size=n)])
        for depth in (10.0, 30.0, 60.0)
        for n in (100, 1000, 4000)
    ]


def _ties(seed: int) -> list[Row]:
    rng = np.random.default_rng(seed)
    return [
        np.concatenate([[top] * k, top - 3.0 - rng.exponential(5.0, size=7)])
        for top in (0.0, 7.0, -7.0, 300.0)
        for k in (2, 3, 10)
    ]


FAMILIES: dict[str, Callable[[int], list[Row]]] = {
    "normal": _normal,
    "dominant": _dominant,
    "dominant-far": _dominant_far,
    "seed-examples": _seed_examples,
    "many-tiny": _many_tiny,
    "ties": _ties,
}


def rows(family: str, dtype: type, seed: int = 0) -> list[Row]:
    """The family's rows, rounded to ``dtype`` (and held in float64)."""
    return [r.astype(dtype).astype(np.float64) for r in FAMILIES[family](seed)]
