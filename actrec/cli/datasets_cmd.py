"""``actrec datasets info``: what a dataset plugin reads from its files, with repair counts."""

from __future__ import annotations

from pathlib import Path

import click

from actrec.cli.common import emit, json_option, parse_assignments


@click.group()
def datasets() -> None:
    """Inspect datasets."""


@datasets.command("info")
@click.argument("dataset")
@click.option("--root", type=click.Path(path_type=Path), default=None,
              help="The dataset's data folder (else ACTREC_DATA_<NAME> or the workspace).")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A dataset option (repeatable).")
@json_option
def info(dataset, root, options, as_json) -> None:
    """Summarise DATASET: videos, frames, classes, frames per class, splits, repairs, and
    which annotated videos have no video file."""
    from actrec.datasets_info import summarize
    from actrec.refs import dataset_from_ref

    opts = parse_assignments(options, "--option")
    if root is not None:
        opts["root"] = str(root)
    summary = summarize(dataset_from_ref(dataset, opts).load())
    emit(summary, as_json, _render)


def _render(summary):
    from rich.console import Group
    from rich.table import Table

    data = summary.to_dict()
    head = Table(title=f"dataset {data.get('name', '')}", show_header=False)
    head.add_column("what", style="bold")
    head.add_column("value")
    for key in ("videos", "frames", "classes", "background", "unlabelled_frames", "participants",
                "fps", "label_set"):
        if key in data:
            head.add_row(key, str(data[key]))
    if "video_files" in data:
        head.add_row("video files found", f"{data['video_files']} of {data.get('videos', '?')}")
    splits = Table(title="splits")
    for col in ("split", "train videos", "test videos", "train frames", "test frames"):
        splits.add_column(col, justify="left" if col == "split" else "right")
    for name, sizes in data.get("splits", {}).items():
        splits.add_row(name, *(str(sizes.get(k, "")) for k in
                               ("train", "test", "train_frames", "test_frames")))
    per_class = Table(title="frames per class")
    per_class.add_column("class")
    per_class.add_column("frames", justify="right")
    for name, count in data.get("frames_per_class", {}).items():
        per_class.add_row(name, str(count))
    parts = [head, splits, per_class]
    if data.get("repairs"):
        repairs = Table(title="dropped or repaired")
        repairs.add_column("what")
        repairs.add_column("count", justify="right")
        for what, count in data["repairs"].items():
            repairs.add_row(what, str(count))
        parts.append(repairs)
    missing = data.get("missing_videos") or {}
    if missing:
        shown = 10
        table = Table(title=f"videos without a video file: {len(missing)}")
        table.add_column("video")
        for vid in list(missing)[:shown]:
            table.add_row(vid)
        if len(missing) > shown:
            table.add_row(f"... and {len(missing) - shown} more (--json lists them all)")
        from rich.text import Text

        first = next(iter(missing.items()))
        parts += [table, Text(f"{first[0]}: {first[1]}")]  # paths are no rich markup
    return Group(*parts)
