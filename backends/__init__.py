"""Backend manifests: one TOML file per array library lsekit runs on.

The manifests are the single source of truth for which backends exist, how
each is installed, which environment it needs, its devices and its known
gaps. ``noxfile.py``, ``tests/conftest.py`` and the documentation all read
them through :func:`load`.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Backend", "load", "names"]

HERE = pathlib.Path(__file__).parent


@dataclasses.dataclass(frozen=True)
class Backend:
    """One backend's manifest."""

    name: str
    title: str
    module: str
    install: tuple[str, ...]
    env: dict[str, str]
    devices: tuple[str, ...]
    gpu: bool
    dtypes: tuple[str, ...]
    flush_subnormals: bool
    lazy: bool
    convert: str
    # Tests run again on a dask.distributed LocalCluster (--dask-cluster).
    cluster_tests: tuple[str, ...]
    gaps: tuple[str, ...]


def _read(path: pathlib.Path) -> Backend:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    fields = {f.name for f in dataclasses.fields(Backend)}
    unknown = set(data) - fields
    missing = fields - set(data)
    if unknown or missing:
        raise ValueError(
            f"{path.name}: unknown keys {sorted(unknown)}, "
            f"missing keys {sorted(missing)}"
        )
    for key in ("install", "devices", "dtypes", "cluster_tests", "gaps"):
        data[key] = tuple(data[key])
    return Backend(**data)


def load() -> dict[str, Backend]:
    """Every manifest, by name, CPU backends first."""
    found = [_read(p) for p in sorted(HERE.glob("*.toml"))]
    found.sort(key=lambda b: (b.gpu, b.name))
    return {b.name: b for b in found}


def names(*, gpu: bool | None = None) -> list[str]:
    """Backend names, optionally only the GPU (or only the CPU) ones."""
    return [n for n, b in load().items() if gpu is None or b.gpu == gpu]
