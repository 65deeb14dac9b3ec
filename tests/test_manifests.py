"""The manifests in ``backends/`` are complete and the README agrees with them."""

from __future__ import annotations

import pathlib
import re

import pytest

import backends

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_manifest_loads():
    found = backends.load()
    assert {"numpy", "torch", "jax", "dask", "array_api_strict"} <= set(found)
    assert {n for n, b in found.items() if b.gpu} == {"cupy", "torch_cuda"}
    for name, b in found.items():
        assert b.install, name
        assert b.devices, name
        assert b.convert in {"asarray", "torch", "dask", "cupy"}, name
        for path in b.cluster_tests:
            assert (ROOT / path).is_file(), (name, path)
        # --dask-cluster changes the scheduler of Dask graphs only.
        assert not b.cluster_tests or b.convert == "dask", name


def test_readme_support_table_lists_every_manifest():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text[text.index("## Support") :]
    listed = re.findall(r"^\| (\w+) \| ([^|]+) \| ([^|]+) \|", table, re.M)
    rows = {name: (devices.strip(), dtypes.strip()) for name, devices, dtypes in listed}
    for name, b in backends.load().items():
        assert name in rows, f"README support table lacks {name}"
        assert rows[name] == (", ".join(b.devices), ", ".join(b.dtypes)), name


def test_unknown_manifest_key_is_rejected(tmp_path, monkeypatch):
    bad = tmp_path / "x.toml"
    bad.write_text('name = "x"\nsurprise = 1\n', encoding="utf-8")
    with pytest.raises(ValueError, match="surprise"):
        backends._read(bad)
