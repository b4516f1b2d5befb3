"""``actrec check``: verify every video of a feature store (chunks, checksums, sources)."""

from __future__ import annotations

import click

from actrec.cli.common import emit, json_option, make_progress
from actrec.cli.storage import apply_storage_options, storage_option


@click.command()
@click.argument("store")  # a path or a store URL (s3://..., file://...)
@click.option("--sources/--no-sources", default=True, show_default=True,
              help="Also compare each video's source file (size, mtime) with the one recorded "
              "when it was extracted.")
@click.option("--drop-damaged", is_flag=True,
              help="After checking, remove each damaged video from the store, so that "
              "`actrec extract` for the store extracts exactly those again.")
@storage_option
@json_option
def check(store, sources, drop_damaged, storage_options, as_json) -> None:
    """Verify every video of the feature store STORE: each chunk file present with the size
    written, each array's checksum, and (with --sources) the source video unchanged. A store
    with several streams is checked stream by stream, and a video's streams must agree on its
    frames and labels.

    Lists every damaged video and every one whose source changed, and exits 1 if there is
    any. `actrec extract` redoes by itself the videos whose source changed or whose chunk
    files are missing or resized, but not one with a chunk altered in place: run `actrec check
    STORE --drop-damaged` (which removes the damaged videos, and nothing else) and then `actrec
    extract` again. Videos written before actrec recorded checksums are listed as unverified.
    """
    from actrec.io.features import FeatureStore
    from actrec.io.integrity import STATUSES, check_store
    from actrec.io.integrity import drop_damaged as drop

    apply_storage_options(storage_options, [store], "STORE")
    opened = FeatureStore.open(store)
    with make_progress() as progress:
        report = check_store(opened, sources=sources, progress=progress)
    if drop_damaged:
        report = drop(opened, report)
    emit(report, as_json, lambda r: _render(r, STATUSES, store, drop_damaged))
    if not report.ok:
        raise SystemExit(1)


def _render(report, statuses, store, dropping):
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    n = len(report.videos)
    counts = ", ".join(f"{report.count(s)} {s}" for s in statuses if report.count(s))
    verdict = "every video is intact" if report.ok else "damaged or changed videos found"
    if len(report.streams) > 1:
        videos = len({v.video for v in report.videos})
        what = f"{videos} videos in {len(report.streams)} streams " \
               f"({', '.join(report.streams)}), {n} stored copies"
    else:
        what = f"{n} videos"
    summary = Text(f"{report.store}: {what} ({counts or 'none'}): {verdict}",
                   style="green" if report.ok else "bold red")
    shown = [v for v in report.videos if v.status != "ok"]
    parts = [summary]
    if shown:
        table = Table(title=f"check {report.store}")
        table.add_column("video")
        if len(report.streams) > 1:
            table.add_column("stream")
        table.add_column("status")
        table.add_column("what")
        gone = {(v.video, v.stream) for v in report.dropped}
        for v in shown:
            table.add_row(v.video, *([v.stream] if len(report.streams) > 1 else []),
                          v.status + (" (removed)" if (v.video, v.stream) in gone else ""),
                          "\n".join(v.problems))
        parts.insert(0, table)
    parts.extend(Text(note, style="yellow") for note in report.notes)
    if report.dropped:
        names = ", ".join(v.video + (f" ({v.stream})" if v.stream else "")
                          for v in report.dropped)
        parts.append(Text(f"removed {len(report.dropped)} damaged video"
                          f"{'s' if len(report.dropped) > 1 else ''} from the store: {names}; "
                          f"`actrec extract` for this store extracts "
                          f"{'them' if len(report.dropped) > 1 else 'it'} again", style="yellow"))
    elif report.count("damaged") and not dropping:
        parts.append(Text(f"`actrec check {store} --drop-damaged` removes the damaged videos; "
                          f"`actrec extract` for this store then extracts them again",
                          style="yellow"))
    return Group(*parts)
