"""Error of three logsumexp formulas in float64, in ulps of the exact result.

Left: ``x = c + v`` for ten fixed standard normal values ``v``, the offset
``c`` across the range of ``exp``. Right: ``x = [0, -d]``, one term above
the other by ``d``.
"""

import matplotlib.pyplot as plt
import numpy as np
from reference import exact_logsumexp, ulps

import lsekit


def naive(x):
    return np.log(np.sum(np.exp(x)))


def max_shift(x):
    m = np.max(x)
    return m + np.log(np.sum(np.exp(x - m)))


METHODS = [
    ("naive log(sum(exp(x)))", naive, dict(color="C3", marker="x", ms=4)),
    (
        "max-shift m + log(sum(exp(x - m)))",
        max_shift,
        dict(color="C1", marker="o", ms=3),
    ),
    ("lsekit.logsumexp", lsekit.logsumexp, dict(color="C0", marker=".", ms=4)),
]
FLOOR, NONFINITE = 0.1, 1e18


def errors(rows):
    """Each method's error on each row, clipped for the log scale."""
    want = [exact_logsumexp(x) for x in rows]
    out = {}
    # The naive formula overflows and underflows here by design.
    with np.errstate(over="ignore", under="ignore", divide="ignore"):
        for label, f, _ in METHODS:
            e = np.array([ulps(f(x), w) for x, w in zip(rows, want, strict=True)])
            out[label] = np.where(np.isfinite(e), np.maximum(e, FLOOR), NONFINITE)
    return out


v = np.random.default_rng(0).standard_normal(10)
offsets = np.linspace(-800.0, 800.0, 321)
gaps = np.linspace(0.0, 60.0, 241)
panels = [
    (offsets, [c + v for c in offsets], "offset c of x = c + v (10 terms)"),
    (gaps, [np.array([0.0, -d]) for d in gaps], "gap d of x = [0, -d]"),
]

fig, axes = plt.subplots(1, 2, figsize=(8.0, 3.4), sharey=True)
for ax, (t, rows, xlabel) in zip(axes, panels, strict=True):
    err = errors(rows)
    for label, _, style in METHODS:
        ax.plot(t, err[label], ls="none", label=label, **style)
    ax.axhline(1.0, color="0.6", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
# Where the naive formula's exponentials leave float64: exp(x) overflows
# above log(max) = 709.78 and underflows to 0 below log(smallest) = -745.13.
for edge, side in (
    (np.log(np.finfo(float).max) - v.max(), "right"),
    (np.log(np.finfo(float).smallest_subnormal) - v.max(), "left"),
):
    axes[0].axvline(edge, color="C3", lw=0.8, ls=":")
    axes[0].text(
        edge + (30 if side == "right" else -30),
        1e6,
        "exp overflows" if side == "right" else "exp underflows",
        rotation=90,
        ha="center",
        va="center",
        color="C3",
        fontsize=8,
    )
axes[0].set_ylabel("error (ulps of the exact result)")
ticks = [FLOOR, 1, 1e3, 1e6, 1e9, 1e12, 1e15, NONFINITE]
labels = ["≤ 0.1", "1", "10³", "10⁶", "10⁹", "10¹²", "10¹⁵", "±inf"]
axes[0].set_yticks(ticks, labels)
axes[0].set_ylim(FLOOR / 2, NONFINITE * 5)
axes[0].set_xlim(-830, 830)
axes[0].set_title("(a) range: large and small terms", loc="left", fontsize=9)
axes[1].set_title("(b) precision: one dominant term", loc="left", fontsize=9)
fig.legend(
    *axes[0].get_legend_handles_labels(),
    loc="lower center",
    ncol=3,
    bbox_to_anchor=(0.5, -0.02),
    frameon=False,
)
fig.subplots_adjust(bottom=0.27, wspace=0.08)
