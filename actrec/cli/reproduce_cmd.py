"""``actrec reproduce``: rerun a paper's table and print it beside the paper's numbers."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from actrec.cli.common import emit, json_option, make_progress, parse_assignments
from actrec.cli.storage import apply_storage_options, storage_option


@click.command("reproduce")
@click.argument("table", required=False)
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder the grid lives in (ROOT/reproduce/TABLE/...); default: the "
              "workspace.")
@click.option("--preset", type=click.Choice(["paper", "tiny"]), default="paper",
              show_default=True, help="paper: the table's training preset on your stores; "
              "tiny: the whole grid in a minute on synthetic kitchens, or with tiny models on the "
              "--dataset stores (a check, not the paper).")
@click.option("--dataset", "datasets", multiple=True, metavar="KEY=REF",
              help="The store of one of the table's datasets (a dataset reference, a store "
              "path or a store URL such as s3://bucket/salads.zarr), e.g. "
              "salads=mstcn:name=50salads (repeatable; default: the workspace's store of the "
              "table's reference; with --preset tiny: its synthetic kitchen).")
@click.option("--extractor", default=None,
              help="Whose features to use for dataset references (default: the only store).")
@click.option("--inputs", type=click.Choice(["head", "store"]), default="head",
              show_default=True, help="head: a frame classifier per split feeds the temporal "
              "models its softmax/logits (the papers); store: the stores as they are.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Cells run in N processes, each with cores/N threads.")
@click.option("--allow-noncausal-features", is_flag=True,
              help="Score the cells online although their features look at future frames "
              "(the public MS-TCN I3D features: 10 frames); recorded with every result and "
              "named in the table's notes.")
@click.option("--list", "list_tables", is_flag=True, help="List the tables and exit.")
@storage_option
@json_option
def reproduce(table, root, preset, datasets, extractor, inputs, jobs, allow_noncausal_features,
              list_tables, storage_options, as_json) -> None:
    """Run the protocol grid of a paper TABLE over every split and print actrec's numbers
    beside the paper's, with the differences. Writes table.md, table.csv and table.json;
    running again finishes a partly run grid. Exit code 1 when any cell failed."""
    if list_tables:
        from actrec.reproduce import list_tables as listing

        emit(listing(), as_json, _render_list)
        return
    if table is None:
        raise click.UsageError("give a TABLE (actrec reproduce --list shows them)")
    from actrec.reproduce import reproduce as run
    from actrec.workspace import home

    datasets = parse_assignments(datasets, "--dataset")
    apply_storage_options(storage_options, datasets.values(), "--dataset KEY=")
    with make_progress() as progress:
        # Without a terminal the bars are not drawn: a line per unit started and finished
        # on stderr shows that a grid of hours is moving, and where it stands.
        log = None if progress.console.is_terminal else _stderr_line
        result = run(table, root if root is not None else home(), preset=preset,
                     datasets=datasets, extractor=extractor,
                     inputs=inputs, jobs=jobs, progress=progress,
                     allow_noncausal_features=allow_noncausal_features, log=log)
    if as_json:
        emit(result, as_json, _render)
    else:  # the table is wide: never squeezed to 80 columns when piped to a file
        from rich.console import Console

        Console(file=sys.stdout, soft_wrap=True,
                width=None if sys.stdout.isatty() else 240).print(_render(result))
    if result["failures"]:
        sys.exit(1)


def _stderr_line(line: str) -> None:
    click.echo(line, err=True)


def _render(result):
    from rich.console import Group
    from rich.text import Text

    from actrec.reproduce_report import cell_reasons, rich_table

    parts = [rich_table(result)]
    parts += [Text(f"[{i}] {text}", style="red" if text.startswith("failed") else "yellow")
              for i, text in enumerate(cell_reasons(result), 1)]
    parts += [Text(f"- {n}", style="dim") for n in result["notes"]]
    parts.append(Text("written: " + ", ".join(result["files"]), style="dim"))
    return Group(*parts)


def _render_list(rows):
    from rich.table import Table

    table = Table(title="paper tables (actrec reproduce TABLE)")
    for name in ("table", "paper", "cells", "title"):
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(row["id"], f"{row['paper']} {row['table']}", str(row["cells"]),
                      row["title"])
    return table
