"""The shifted log-space matrix product against lsekit where maxima cross.

Top: ``a = [[-g, 0]]`` and ``b = [[0], [-g]]``, whose row and column maxima
sit at different ``k``; the exact product is ``-g + log 2``. Bottom: a
40 x 40 x 40 product whose rows and columns each carry one large entry,
at random positions, of random size; rows and columns are sorted by it.
Errors are in ulps of ``max(|exact|, 1)``, against mpmath.
"""

import matplotlib.pyplot as plt
import mpmath
import numpy as np
from matplotlib.colors import ListedColormap
from reference import exact_logsumexp, ulps

import lsekit


def shifted(a, b):
    """Row maxima of a, column maxima of b, one matrix product."""
    r = np.max(a, axis=1, keepdims=True)
    c = np.max(b, axis=0, keepdims=True)
    # It underflows on these inputs by design.
    with np.errstate(under="ignore", divide="ignore"):
        return r + c + np.log(np.exp(a - r) @ np.exp(b - c))


def error(got, a, b):
    """Each cell's error, in ulps of max(|exact|, 1)."""
    out = np.empty(got.shape)
    for i, j in np.ndindex(*got.shape):
        # Each term a[i, k] + b[k, j] exactly, not rounded to float64.
        terms = zip(a[i].tolist(), b[:, j].tolist(), strict=True)
        want = exact_logsumexp([mpmath.mpf(x) + mpmath.mpf(y) for x, y in terms])
        out[i, j] = ulps(got[i, j], want, max(abs(float(want)), 1.0))
    return out


gaps = np.linspace(600.0, 800.0, 401)
sweep = {"shifted product": [], "lsekit.logmatmulexp": []}
for g in gaps:
    a, b = np.array([[-g, 0.0]]), np.array([[0.0], [-g]])
    # -g + log 2, each of the two terms being -g exactly.
    want = exact_logsumexp([-g, -g])
    scale = max(abs(float(want)), 1.0)
    sweep["shifted product"].append(ulps(shifted(a, b)[0, 0], want, scale))
    sweep["lsekit.logmatmulexp"].append(
        ulps(lsekit.logmatmulexp(a, b)[0, 0], want, scale)
    )

rng = np.random.default_rng(1)
n = 40
a = rng.normal(scale=3.0, size=(n, n))
b = rng.normal(scale=3.0, size=(n, n))
row_peak = np.sort(rng.uniform(600.0, 900.0, n))
col_peak = np.sort(rng.uniform(600.0, 900.0, n))
a[np.arange(n), rng.integers(n, size=n)] += row_peak
b[rng.integers(n, size=n), np.arange(n)] += col_peak
cells = {
    "shifted product": error(shifted(a, b), a, b),
    "lsekit.logmatmulexp": error(lsekit.logmatmulexp(a, b), a, b),
}

FLOOR, NONFINITE = 0.1, 1e18
fig = plt.figure(figsize=(8.0, 6.4))
grid = fig.add_gridspec(2, 2, height_ratios=[1, 1.25], hspace=0.45, wspace=0.25)
top = fig.add_subplot(grid[0, :])
styles = {
    "shifted product": dict(color="C1", marker="o", ms=3),
    "lsekit.logmatmulexp": dict(color="C0", marker=".", ms=4),
}
for label, e in sweep.items():
    e = np.asarray(e)
    e = np.where(np.isfinite(e), np.maximum(e, FLOOR), NONFINITE)
    top.plot(gaps, e, ls="none", label=label, **styles[label])
top.set_yscale("log")
# A short panel: every third decade, the floor and the -inf row.
top.set_yticks(
    [FLOOR, 1e3, 1e6, 1e9, 1e12, 1e15, NONFINITE],
    ["≤ 0.1", "10³", "10⁶", "10⁹", "10¹²", "10¹⁵", "-inf"],
)
top.set_ylim(FLOOR / 2, NONFINITE * 5)
top.axhline(1.0, color="0.6", lw=0.8, ls="--")
top.text(601, 1.4, "1 ulp", color="0.4", fontsize=8, va="bottom")
top.set_xlabel("gap g: a = [[-g, 0]], b = [[0], [-g]], exact value -g + log 2")
top.set_ylabel("error (ulps)")
top.set_title("(a) crossed maxima, one cell", loc="left", fontsize=9)
top.legend(loc="upper left", frameon=False)

# log10 of the error in ulps; -inf cells get a colour of their own.
levels = ListedColormap(plt.get_cmap("viridis")(np.linspace(0, 1, 256)))
levels.set_bad("black")
for k, (label, e) in enumerate(cells.items()):
    ax = fig.add_subplot(grid[1, k])
    shown = np.log10(np.maximum(e, FLOOR))
    shown = np.ma.masked_invalid(np.where(np.isfinite(e), shown, np.nan))
    image = ax.imshow(shown, cmap=levels, vmin=-1, vmax=17, interpolation="nearest")
    bad = int(np.sum(~np.isfinite(e)))
    worst = float(np.max(e[np.isfinite(e)]))
    ax.set_title(
        f"({'bc'[k]}) {label}: {bad} cells -inf,\nworst finite cell {worst:.3g} ulps",
        loc="left",
        fontsize=9,
    )
    ax.set_xlabel("column j (by the size of b's peak)")
    ax.set_ylabel("row i (by the size of a's peak)")
bar = fig.colorbar(image, ax=fig.axes[1:], shrink=0.9, pad=0.03)
bar.set_label("log10 error (ulps); black: -inf")
