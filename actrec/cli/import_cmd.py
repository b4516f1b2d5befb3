"""``actrec import``: public pre-extracted features into an actrec feature store."""

from __future__ import annotations

from pathlib import Path

import click

from actrec.cli.common import emit, json_option, make_progress


@click.group("import")
def import_() -> None:
    """Import public pre-extracted features (no extraction needed afterwards)."""


def _common(fn):
    fn = click.argument("root", type=click.Path(path_type=Path))(fn)
    fn = click.option("--name", required=True, help="Dataset name recorded in the store.")(fn)
    fn = click.option("--out", type=click.Path(path_type=Path), default=None,
                      help="Store path (default: the workspace's store for NAME).")(fn)
    fn = click.option("--overwrite", is_flag=True, help="Redo videos already in the store.")(fn)
    return json_option(fn)


@import_.command("mstcn")
@_common
def mstcn(root, name, out, overwrite, as_json) -> None:
    """Import ROOT in the MS-TCN layout (features/*.npy as D x T, groundTruth, splits, mapping)."""
    _run("mstcn", root, name, out, overwrite, as_json)


@import_.command("lstr")
@_common
def lstr(root, name, out, overwrite, as_json) -> None:
    """Import ROOT in the LSTR / MiniROAD layout (T x D features, T x C targets, data_info.json)."""
    _run("lstr", root, name, out, overwrite, as_json)


def _run(layout, root, name, out, overwrite, as_json) -> None:
    from actrec import importers
    from actrec.workspace import default_store_path

    store = out if out is not None else default_store_path(name, f"{layout}-import")
    fn = importers.import_mstcn if layout == "mstcn" else importers.import_lstr
    with make_progress() as progress:
        report = fn(root, store, name=name, overwrite=overwrite, progress=progress)
    emit(report, as_json, lambda r: _render(r, store))


def _render(report, store):
    from rich.table import Table

    table = Table(title=f"imported -> {store}", show_header=False)
    for key, value in report.to_dict().items():
        table.add_row(str(key), str(value))
    return table
