"""Exact references and ulp counts for the figures of the documentation.

The references are computed by mpmath from the float64 inputs themselves,
so the error they measure is that of the formula, not of the input.
"""

from __future__ import annotations

from collections.abc import Iterable

import mpmath
import numpy as np

mpmath.mp.dps = 50


def exact_logsumexp(row: Iterable[float | mpmath.mpf]) -> mpmath.mpf:
    """``log(sum(exp(row)))`` to 50 digits; ``row`` holds floats or mpf.

    The sum is taken relative to the maximum and finished by ``log1p``: a
    plain ``log`` of the sum would spend the digits on the leading 1 and
    leave too few for a tiny result such as ``log(1 + exp(-40))``.
    """
    values = [v if isinstance(v, mpmath.mpf) else mpmath.mpf(float(v)) for v in row]
    top = max(range(len(values)), key=values.__getitem__)
    m = values[top]
    rest = mpmath.fsum(mpmath.exp(v - m) for i, v in enumerate(values) if i != top)
    return m + mpmath.log1p(rest)


def ulps(got: float, want: mpmath.mpf, scale: float | None = None) -> float:
    """``|got - want|`` in units in the last place of ``scale`` (by default
    ``want`` rounded to float64); ``inf`` where ``got`` is not finite."""
    got = float(got)
    if not np.isfinite(got):
        return np.inf
    unit = np.spacing(abs(float(want) if scale is None else scale))
    return float(abs(mpmath.mpf(got) - want) / mpmath.mpf(float(unit)))
