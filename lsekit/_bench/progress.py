"""A progress bar on a terminal, one line per step elsewhere."""

from __future__ import annotations

import shutil
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Reports each step of a run on ``stream``.

    On a terminal, one line redrawn in place: ``[#####-----] 12/40 12s
    label``. Elsewhere (a log, a pipe), one plain line per step, so that a
    log shows how far a run got.

    Parameters
    ----------
    stream : file
        Where to write, usually ``sys.stderr``.
    total : int
        Steps in the run; may be set later, before the first `start`.

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> p = Progress(out, total=2)
    >>> p.start("numpy logsumexp")
    >>> p.start("numpy softmax")
    >>> p.close()
    >>> print(out.getvalue(), end="")
    [1/2 0s] numpy logsumexp
    [2/2 0s] numpy softmax
    """

    WIDTH = 24

    def __init__(self, stream: TextIO, total: int = 0) -> None:
        self.stream = stream
        self.total = total
        self.done = 0
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._start = time.perf_counter()
        self._drawn = False

    def start(self, label: str) -> None:
        """Report that the step called ``label`` begins."""
        self.done += 1
        elapsed = time.perf_counter() - self._start
        if not self.tty:
            self.stream.write(f"[{self.done}/{self.total} {elapsed:.0f}s] {label}\n")
            self.stream.flush()
            return
        filled = self.WIDTH * (self.done - 1) // max(self.total, 1)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        line = f"[{bar}] {self.done}/{self.total} {elapsed:.0f}s {label}"
        columns = shutil.get_terminal_size().columns
        # \r returns to the line's start, \x1b[K clears what a longer
        # previous line left.
        self.stream.write("\r" + line[: max(columns - 1, 1)] + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Draw the bar full and end its line, on a terminal."""
        if self.tty and self._drawn:
            elapsed = time.perf_counter() - self._start
            bar = "#" * self.WIDTH
            line = f"[{bar}] {self.done}/{self.total} {elapsed:.0f}s done"
            self.stream.write("\r" + line + "\x1b[K\n")
            self.stream.flush()
            self._drawn = False
