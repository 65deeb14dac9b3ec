"""The run's results as CSV, markdown and a PNG plot.

``bench.csv`` has one row per case and peer; ``environment.json`` the
machine, the versions and the sizes; ``bench.md`` the same rows as tables,
one per backend, headed by the machine; ``bench.png`` each ratio against
its target, where matplotlib is installed.
"""

from __future__ import annotations

import csv
import importlib
import json
import math
import pathlib
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from .case import shape_text
from .runner import Outcome, Row

__all__ = ["COLUMNS", "csv_rows", "markdown", "plot", "write"]

COLUMNS = (
    "backend",
    "function",
    "peer",
    "peer_kind",
    "shape",
    "dtype",
    "lsekit_ms",
    "peer_ms",
    "ratio",
    "target",
    "met",
    "lsekit_mem_x",
    "peer_mem_x",
    "repeats",
    "note",
)
DASH = "—"


def _finite(v: float | None, fmt: str) -> str:
    return "" if v is None or not math.isfinite(v) else format(v, fmt)


def _met(r: Row) -> str:
    return {None: "", True: "yes", False: "no"}[r.met]


def csv_rows(rows: Sequence[Row]) -> list[dict[str, str]]:
    """The CSV's records, one per row, keyed by `COLUMNS`.

    Numbers keep four significant digits or more; a value that does not
    apply (memory off NumPy, a target where there is none) is empty.
    """
    return [
        {
            "backend": r.backend,
            "function": r.function,
            "peer": r.peer,
            "peer_kind": r.kind,
            "shape": shape_text(r.shape),
            "dtype": r.dtype,
            "lsekit_ms": _finite(r.lsekit_ms, ".4g"),
            "peer_ms": _finite(r.peer_ms, ".4g"),
            "ratio": _finite(r.ratio, ".4f"),
            "target": "" if r.target is None else str(r.target),
            "met": _met(r),
            "lsekit_mem_x": _finite(r.lsekit_mem_x, ".3f"),
            "peer_mem_x": _finite(r.peer_mem_x, ".3f"),
            "repeats": str(r.repeats) if r.repeats else "",
            "note": r.note,
        }
        for r in rows
    ]


def _ms(v: float) -> str:
    """Milliseconds, three significant digits or whole ones.

    Examples
    --------
    >>> _ms(1234.5), _ms(12.345), _ms(1.0), _ms(0.012345), _ms(float("nan"))
    ('1234', '12.3', '1.00', '0.0123', '—')
    """
    if not math.isfinite(v):
        return DASH
    if v >= 100:
        return f"{v:.0f}"
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}" if v >= 1 else f"{v:.3g}"


def _target(r: Row) -> str:
    if r.target is None:
        return DASH
    return f"{'≤' if r.target.at_most else '≥'} {r.target.value:g}"


def _table(rows: Sequence[Row], memory: bool) -> list[str]:
    header = ["function", "peer", "shape", "dtype", "lsekit ms", "peer ms", "ratio"]
    header += ["target", "met"]
    if memory:
        header += ["lsekit mem", "peer mem"]
    notes = any(r.note for r in rows)
    if notes:
        header.append("note")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        met = {None: DASH, True: "yes", False: "**no**"}[r.met]
        cells = [
            r.function,
            r.peer,
            shape_text(r.shape),
            r.dtype,
            _ms(r.lsekit_ms),
            _ms(r.peer_ms),
            "failed" if r.failed else f"{r.ratio:.2f}",
            _target(r),
            met,
        ]
        if memory:
            cells += [
                DASH if m is None else f"{m:.2f}x"
                for m in (r.lsekit_mem_x, r.peer_mem_x)
            ]
        if notes:
            cells.append(r.note.replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _summary(rows: Sequence[Row]) -> str:
    targeted = [r for r in rows if r.target is not None]
    met = sum(1 for r in targeted if r.met)
    failed = sum(1 for r in rows if r.failed)
    text = f"Targets met: {met} of {len(targeted)}."
    if failed:
        text += f" Failed rows: {failed}."
    return text


def markdown(outcome: Outcome, machine: dict[str, str]) -> str:
    """The report as markdown: the run, the machine, one table per backend."""
    s = outcome.sizes
    how = f"median of {s.repeats} timed calls (or batches of calls) per side"
    stopped = "" if outcome.interrupted is None else f" ({outcome.interrupted})"
    lines = [
        f"Run: {outcome.mode}, {how}, {outcome.seconds:.0f} s{stopped}.",
        "",
        f"Machine: {machine['platform']}; {machine['cpu']}; {machine['cpus']} "
        f"CPUs; {machine['memory']}; load average at start "
        f"{machine['load average']}.",
        "",
        "Versions: "
        + ", ".join(
            f"{k} {v}"
            for k, v in {
                "python": machine["python"],
                "lsekit": machine["lsekit"],
                "array-api-compat": machine["array-api-compat"],
                **outcome.versions,
            }.items()
        )
        + ".",
        "",
        "ratio: lsekit's median time over the peer's (below 1, lsekit is "
        "faster); in bandwidth rows, lsekit's bytes per second over a "
        "device copy's. mem: peak extra memory of one call over the input's "
        "bytes (NumPy). " + _summary(outcome.rows),
    ]
    for backend in outcome.backends:
        rows = [r for r in outcome.rows if r.backend == backend]
        if not rows:
            continue
        memory = any(r.lsekit_mem_x is not None for r in rows)
        lines += ["", f"### {backend}", "", *_table(rows, memory)]
    if outcome.skipped:
        lines += [
            "",
            "Skipped: "
            + ", ".join(f"{n} ({why})" for n, why in outcome.skipped.items())
            + ".",
        ]
    return "\n".join(lines) + "\n"


def plot(outcome: Outcome, path: pathlib.Path) -> str | None:
    """Draw each ratio against its target into ``path`` (PNG).

    Returns
    -------
    str or None
        Why no plot was drawn (matplotlib missing, nothing timed), or None.
    """
    try:
        # Typed as Any: matplotlib is optional, and its annotations vary.
        mpl: Any = importlib.import_module("matplotlib")
        mpl.use("Agg")
        plt: Any = importlib.import_module("matplotlib.pyplot")
        lines: Any = importlib.import_module("matplotlib.lines")
        ticker: Any = importlib.import_module("matplotlib.ticker")
    except ImportError as exc:
        return f"matplotlib is not installed ({exc})"
    rows = [
        r for r in outcome.rows if r.failed or (math.isfinite(r.ratio) and r.ratio > 0)
    ]
    if not any(not r.failed for r in rows):
        return "no case was timed"
    backends = list(dict.fromkeys(r.backend for r in rows))
    labels = {
        b: list(
            dict.fromkeys(f"{r.function} vs {r.peer}" for r in rows if r.backend == b)
        )
        for b in backends
    }
    inputs = list(dict.fromkeys(f"{shape_text(r.shape)} {r.dtype}" for r in rows))
    cmap = plt.get_cmap("tab10" if len(inputs) <= 10 else "tab20")
    colour = {k: cmap(i % cmap.N) for i, k in enumerate(inputs)}
    heights = [len(labels[b]) + 1 for b in backends]
    fig, axes = plt.subplots(
        len(backends),
        1,
        figsize=(10, 1.2 + 0.28 * sum(heights)),
        gridspec_kw={"height_ratios": heights},
        sharex=True,
        squeeze=False,
    )
    for ax, backend in zip(axes[:, 0], backends, strict=True):
        names = labels[backend]
        for r in rows:
            if r.backend != backend:
                continue
            y = names.index(f"{r.function} vs {r.peer}")
            key = f"{shape_text(r.shape)} {r.dtype}"
            if r.failed:
                # Past the right edge: a failed case has no ratio to place.
                ax.text(
                    1.01,
                    y,
                    f"failed: {key}",
                    transform=ax.get_yaxis_transform(),
                    color=colour[key],
                    fontsize=7,
                    va="center",
                )
                continue
            ax.scatter(r.ratio, y, color=colour[key], s=22, zorder=3)
            if r.target is not None:
                ax.plot([r.target.value] * 2, [y - 0.4, y + 0.4], color="red", lw=2)
        ax.axvline(1.0, color="grey", ls="--", lw=0.8, zorder=1)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_ylim(len(names) - 0.5, -0.5)
        ax.set_title(backend, loc="left", fontsize=10)
        ax.grid(axis="x", which="both", alpha=0.3)
        ax.set_xscale("log")
    bottom = axes[-1, 0]
    bottom.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    bottom.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    bottom.xaxis.set_minor_formatter(ticker.FormatStrFormatter(""))
    bottom.set_xlabel(
        "lsekit time / peer time (log scale; GPU bandwidth rows: lsekit's "
        "bandwidth / a device copy's)"
    )
    handles = [
        lines.Line2D([], [], ls="", marker="o", color=colour[k], label=k)
        for k in inputs
    ]
    handles.append(lines.Line2D([], [], color="red", lw=2, label="target"))
    fig.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.9)
    fig.suptitle(f"lsekit against each library: {outcome.mode}", x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 0.84, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def write(
    outcome: Outcome, directory: pathlib.Path, machine: dict[str, str]
) -> tuple[list[pathlib.Path], str | None]:
    """Write ``bench.csv``, ``environment.json``, ``bench.md``, ``bench.png``.

    Returns
    -------
    paths : list of pathlib.Path
        The files written.
    skipped_plot : str or None
        Why the plot was not drawn, or None.
    """
    directory.mkdir(parents=True, exist_ok=True)
    table = directory / "bench.csv"
    with table.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows(outcome.rows))
    env = directory / "environment.json"
    env.write_text(
        json.dumps(
            {
                "mode": outcome.mode,
                "seconds": round(outcome.seconds, 1),
                "interrupted": outcome.interrupted,
                "machine": machine,
                "versions": outcome.versions,
                "skipped": outcome.skipped,
                "sizes": asdict(outcome.sizes),
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    md = directory / "bench.md"
    md.write_text(markdown(outcome, machine), encoding="utf-8")
    paths = [table, env, md]
    png = directory / "bench.png"
    why = plot(outcome, png)
    if why is None:
        paths.append(png)
    return paths, why
