"""``actrec extract``: per-frame features of a dataset's videos into a Zarr store."""

from __future__ import annotations

from pathlib import Path

import click

from actrec.cli.common import emit, json_option, make_progress, parse_assignments


@click.command()
@click.argument("dataset")
@click.option("--split", default=None, help="Only the videos of this split (train and test).")
@click.option("--root", type=click.Path(path_type=Path), default=None,
              help="The dataset's data folder (else ACTREC_DATA_<NAME> or the workspace).")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A dataset option (repeatable); see `actrec plugins`.")
@click.option("--extractor", default="colorgrad", show_default=True, help="Feature extractor plugin.")
@click.option("-x", "--extractor-option", "extractor_options", multiple=True, metavar="KEY=VALUE",
              help="An extractor option (repeatable).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Feature store path (default: in the workspace, named after the dataset).")
@click.option("--overwrite", is_flag=True, help="Redo videos that are already in the store.")
@click.option("--trust-store", is_flag=True,
              help="Skip stored videos without comparing their source files' size and mtime "
              "with those recorded (by default a changed source is extracted again).")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float16",
              show_default=True, help="Storage type of the features.")
@json_option
def extract(dataset, split, root, options, extractor, extractor_options, out, overwrite,
            trust_store, dtype, as_json) -> None:
    """Extract features of DATASET (a plugin name, or NAME:key=value,... with options).

    Finished videos are skipped, so an interrupted run resumes where it stopped; a stored
    video whose chunk files are damaged, or whose source file changed since, is redone.
    """
    from actrec.pipeline import extract_dataset

    dataset_options = parse_assignments(options, "--option")
    if root is not None:
        dataset_options["root"] = str(root)
    with make_progress() as progress:
        report = extract_dataset(
            dataset, dataset_options=dataset_options, extractor=extractor,
            extractor_options=parse_assignments(extractor_options, "--extractor-option"),
            split=split, out=out, overwrite=overwrite, dtype=dtype, progress=progress,
            trust_store=trust_store,
        )
    emit(report, as_json, _render)
    if report.failed:
        raise SystemExit(1)


def _render(report):
    from rich.console import Group
    from rich.table import Table

    table = Table(title=f"features -> {report.store}")
    table.add_column("written", justify="right")
    table.add_column("skipped (already done)", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("redone: damaged", justify="right")
    table.add_column("redone: source changed", justify="right")
    table.add_row(str(len(report.written)), str(len(report.skipped)), str(len(report.failed)),
                  str(len(report.redone_damaged)), str(len(report.redone_changed)))
    rows = [(v, "failed", e) for v, e in report.failed]
    rows += [(v, "redone: damaged", d) for v, d in report.redone_damaged]
    rows += [(v, "redone: source changed", c) for v, c in report.redone_changed]
    if not rows:
        return table
    details = Table(show_header=True)
    for column in ("video", "what", "why"):
        details.add_column(column)
    for row in rows:
        details.add_row(*row)
    return Group(table, details)
