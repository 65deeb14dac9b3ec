"""The machine a run ran on, and the versions outside any backend."""

from __future__ import annotations

import os
import platform

__all__ = ["describe"]


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory() -> str:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 2**20:.0f} GiB"
    except OSError:
        pass
    return "unknown"


def _cores() -> str:
    total = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        return str(total)
    return str(usable) if usable == total else f"{usable} of {total}"


def _load() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def describe() -> dict[str, str]:
    """The machine, Python, lsekit and array-api-compat, as text.

    Examples
    --------
    >>> sorted(describe())  # doctest: +NORMALIZE_WHITESPACE
    ['array-api-compat', 'cpu', 'cpus', 'load average', 'lsekit', 'memory',
     'platform', 'python']
    """
    import array_api_compat

    import lsekit
    from lsekit._fast import _fused

    return {
        "platform": platform.platform(),
        "cpu": _cpu(),
        "cpus": _cores(),
        "memory": _memory(),
        "load average": _load(),
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "lsekit": f"{lsekit.__version__} ({_fused.status()})",
        "array-api-compat": str(array_api_compat.__version__),
    }
