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
                      help="Store path (default: in the workspace, named after NAME and "
                      "ROOT).")(fn)
    fn = click.option("--overwrite", is_flag=True, help="Redo videos already in the store.")(fn)
    fn = click.option(
        "--lookahead", type=click.IntRange(min=0), default=None,
        help="Future frames each feature depends on, when known: recorded in the store "
        "(0 = causal). The public MS-TCN I3D features use t-10..t+10: 10. Default: unknown "
        "(recorded as not causal).")(fn)
    fn = click.option(
        "--splits", default=None, metavar="RULE",
        help="Make the splits by a rule over the imported videos instead of the shipped "
        "ones (required when there are none): 'loo' (leave one video out) or "
        "'kfold:K[:seed=S]' (seeded shuffle, K folds; seed 0 by default); ':by=participant' "
        "holds out people instead of videos; recorded in the store.")(fn)
    return json_option(fn)


@import_.command("mstcn")
@_common
@click.option("--fps", type=float, default=15.0, show_default=True, help="Frame rate of the features.")
@click.option("--background", default="auto", show_default=True,
              help="Name of the background class, left out of segment metrics by default; "
              "'auto': the class named 'background' if there is one (MS-TCN's convention); "
              "'none': no background class.")
@click.option("--length-policy", type=click.Choice(["truncate", "error"]), default="truncate",
              show_default=True, help="Ground truth and features of different lengths: labels "
              "cut to the feature length or padded as unlabelled (-1), counted in the report; "
              "or stop with an error.")
@click.option("--max-length-share", type=click.FloatRange(0.0, 1.0), default=0.2,
              show_default=True, help="Ground truth and features differing by more than this "
              "share of the longer (and more than 5 frames) are refused under either policy: "
              "features at another frame rate than the labels.")
def mstcn(root, name, out, overwrite, lookahead, splits, as_json, fps, background,
          length_policy, max_length_share) -> None:
    """Import ROOT in the MS-TCN layout (features/*.npy as D x T, groundTruth, splits, mapping)."""
    _run("mstcn", root, name, out, overwrite, as_json,
         dict(fps=fps, background=background, length_policy=length_policy,
              lookahead=lookahead, splits=splits, max_length_share=max_length_share))


@import_.command("lstr")
@_common
@click.option("--dataset-key", default=None, help="Key of the dataset in data_info.json.")
@click.option("--rgb-dir", default="rgb_kinetics_resnet50", show_default=True)
@click.option("--flow-dir", default=None, help="Flow feature folder, concatenated after RGB.")
@click.option("--target-dir", default="target_perframe", show_default=True)
@click.option("--fps", type=float, default=None, help="Frame rate (default: data_info.json's).")
@click.option("--background", default="auto", show_default=True,
              help="Name of the background class, left out of segment metrics by default; "
              "'auto': the class named 'background' (any case) if there is one; 'none': none.")
def lstr(root, name, out, overwrite, lookahead, splits, as_json, dataset_key, rgb_dir,
         flow_dir, target_dir, fps, background) -> None:
    """Import ROOT in the LSTR / MiniROAD layout (T x D features, T x C targets, data_info.json)."""
    _run("lstr", root, name, out, overwrite, as_json,
         dict(dataset_key=dataset_key, rgb_dir=rgb_dir, flow_dir=flow_dir, target_dir=target_dir,
              fps=fps, background=background, lookahead=lookahead, splits=splits))


def _run(layout, root, name, out, overwrite, as_json, options) -> None:
    from actrec import importers
    from actrec.workspace import default_store_path

    # The import root is part of the default path: two roots never share a store.
    store = out if out is not None else default_store_path(name, f"{layout}-import", root)
    fn = importers.import_mstcn if layout == "mstcn" else importers.import_lstr
    with make_progress() as progress:
        report = fn(root, store, name=name, overwrite=overwrite, progress=progress, **options)
    emit(report, as_json, lambda r: _render(r, store))


def _render(report, store):
    from rich.table import Table

    table = Table(title=f"imported -> {store}", show_header=False)
    for key, value in report.to_dict().items():
        table.add_row(str(key), str(value))
    return table
