"""Build-time pieces of the lsekit documentation.

``backend-table``
    The support table, generated from the manifests in ``backends/`` (the
    files the nox sessions and the test fixture read), so that it cannot
    drift from what is installed and tested.

The API check
    Every name in ``lsekit.__all__`` must be documented by the API
    reference; a missing one is a warning, and so fails the build.
"""

from __future__ import annotations

from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

import backends
import lsekit

logger = logging.getLogger(__name__)

# The libraries whose own autodiff and transformations the test suite runs,
# keyed by the manifest's top-level module (tests/test_grad.py,
# tests/test_transforms.py and tests/test_lazy.py pick them the same way).
TRANSFORMS = {
    "torch": "gradients to second order, torch.func, torch.compile",
    "jax": "gradients to second order, jax.jit, jax.vmap",
}

COLUMNS = ("Backend", "Devices", "Dtypes", "Tested by", "Known gaps")
WIDTHS = (14, 8, 18, 28, 32)


def _session(b: backends.Backend) -> str:
    if b.gpu:
        return f'nox -s "tests_gpu({b.name})"'
    return f'nox -s "tests({b.name})"'


def _literals(items: tuple[str, ...] | list[str]) -> nodes.paragraph:
    para = nodes.paragraph()
    for i, item in enumerate(items):
        if i:
            para += nodes.Text(", ")
        para += nodes.literal(text=item)
    return para


def _tested(b: backends.Backend) -> list[nodes.Node]:
    session = nodes.paragraph()
    session += nodes.literal(text=_session(b))
    if b.env:
        session += nodes.Text(" with ")
        env = [f"{k}={v}" for k, v in sorted(b.env.items())]
        for i, item in enumerate(env):
            if i:
                session += nodes.Text(", ")
            session += nodes.literal(text=item)
    where = "Needs a CUDA device; not run by CI." if b.gpu else "Run by nox and CI."
    installed = nodes.paragraph(text="Installed as ")
    installed += _literals(b.install).children
    installed += nodes.Text(".")
    out: list[nodes.Node] = [session, nodes.paragraph(text=where), installed]
    extra = TRANSFORMS.get(b.module.split(".")[0])
    if extra:
        out.append(nodes.paragraph(text=f"Also: {extra}."))
    if b.lazy:
        out.append(nodes.paragraph(text="Also: lazy graphs, each computed once."))
    if b.cluster_tests:
        out.append(
            nodes.paragraph(
                text="Also: on a dask.distributed LocalCluster of worker processes."
            )
        )
    return out


def _gaps(b: backends.Backend) -> list[nodes.Node]:
    if not b.gaps:
        return [nodes.paragraph(text="None known.")]
    items = nodes.bullet_list()
    for gap in b.gaps:
        items += nodes.list_item("", nodes.paragraph(text=gap))
    return [items]


def _row(cells: list[list[nodes.Node]]) -> nodes.row:
    row = nodes.row()
    for content in cells:
        entry = nodes.entry()
        entry.extend(content)
        row += entry
    return row


class BackendTable(SphinxDirective):
    """The support table, one row per manifest, CPU backends first."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        # A manifest edited after the last build makes this page stale.
        for path in sorted(backends.HERE.glob("*.toml")):
            self.env.note_dependency(str(path))
        table = nodes.table(classes=["lsekit-backends"])
        group = nodes.tgroup(cols=len(COLUMNS))
        table += group
        for width in WIDTHS:
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        head += _row([[nodes.paragraph(text=c)] for c in COLUMNS])
        group += head
        body = nodes.tbody()
        for b in backends.load().values():
            name = nodes.paragraph()
            name += nodes.strong(text=b.title)
            name += nodes.Text(" ")
            name += nodes.literal(text=b.name)
            body += _row(
                [
                    [name],
                    [_literals(b.devices)],
                    [_literals(b.dtypes)],
                    _tested(b),
                    _gaps(b),
                ]
            )
        group += body
        return [table]


def check_api(app: Sphinx, env: Any) -> None:
    """Warn about every public function the API reference leaves out."""
    documented = set(env.get_domain("py").objects)
    for name in lsekit.__all__:
        if name.startswith("__"):
            continue
        if f"lsekit.{name}" not in documented:
            logger.warning(
                "lsekit.%s is public (in lsekit.__all__) but the API reference "
                "does not document it: add it to docs/api.md",
                name,
            )


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("backend-table", BackendTable)
    app.connect("env-check-consistency", check_api)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
