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
@click.option("--sweep", is_flag=True,
              help="First remove what dead writers left: uncommitted generations of videos "
              "at a URL older than --older-than, temp folders of dead writers in a folder; "
              "never a committed copy or a video another process is extracting.")
@click.option("--older-than", default="1d", show_default=True, metavar="AGE",
              help="With --sweep: remove only generations older than this (2d, 12h, 30m, "
              "90s); a younger one may be a live writer's, about to commit.")
@storage_option
@json_option
def check(store, sources, drop_damaged, sweep, older_than, storage_options, as_json) -> None:
    """Verify every video of the feature store STORE: each chunk file present with the size
    written, each array's checksum, and (with --sources) the source video unchanged. A store
    with several streams is checked stream by stream, and a video's streams must agree on its
    frames and labels.

    Lists every damaged video and every one whose source changed, and exits 1 if there is
    any. `actrec extract` redoes by itself the videos whose source changed or whose chunk
    files are missing or resized, but not one with a chunk altered in place: run `actrec check
    STORE --drop-damaged` (which removes the damaged videos, and nothing else) and then `actrec
    extract` again (for imported features, the `actrec import` command it prints). Videos written before actrec recorded checksums are listed as unverified.
    --sweep first removes what dead writers left (uncommitted generations at a URL, temp
    folders in a folder), never a committed copy.
    """
    from actrec.io.features import FeatureStore
    from actrec.io.integrity import STATUSES, check_store
    from actrec.io.integrity import drop_damaged as drop

    apply_storage_options(storage_options, [store], "STORE")
    swept = None
    if sweep:
        from actrec.io.leftovers import parse_age, sweep_store

        age = parse_age(older_than)
    elif older_than != "1d":
        raise click.UsageError("--older-than applies to --sweep")
    opened = FeatureStore.open(store)
    with make_progress() as progress:
        if sweep:
            swept = sweep_store(opened, older_than=age, progress=progress)
        report = check_store(opened, sources=sources, progress=progress)
    if swept is not None:
        from dataclasses import replace

        report = replace(report, swept=swept)
    if drop_damaged:
        report = drop(opened, report)
    redo = redo_command(opened)
    emit(report, as_json, lambda r: _render(r, STATUSES, store, drop_damaged, redo))
    if not report.ok:
        raise SystemExit(1)


def redo_command(store) -> str | None:
    """The `actrec import ...` command that writes again the videos removed from ``store``
    when it holds imported features (its recorded layout, root, name and options), or None
    for an extracted store (`actrec extract` for the store redoes those)."""
    import shlex

    source = store.source or {}
    config = source.get("extractor_config") or {}
    layout = config.get("layout")
    if source.get("extractor") != f"{layout}-import" or layout not in ("mstcn", "lstr"):
        return None
    options = dict(source.get("options") or {})
    root = options.pop("root", config.get("source"))
    words = ["actrec", "import", layout, str(root), "--name", str(source.get("dataset")),
             "--out", str(store.path)]
    if config.get("lookahead") not in (None, "unknown"):
        words += ["--lookahead", str(config["lookahead"])]
    for flag, key in (("--rgb-dir", "rgb"), ("--flow-dir", "flow")):
        if layout == "lstr" and config.get(key):
            words += [flag, str(config[key])]
    for key, value in sorted(options.items()):
        if value is not None:  # the options it was imported with: another is refused
            words += [f"--{key.replace('_', '-')}", str(value)]
    return shlex.join(words)


def _render(report, statuses, store, dropping, redo=None):
    from rich.console import Group
    from rich.markup import escape
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
        table = Table(title=escape(f"check {report.store}"))
        table.add_column("video")
        if len(report.streams) > 1:
            table.add_column("stream")
        table.add_column("status")
        table.add_column("what")
        gone = {(v.video, v.stream) for v in report.dropped}
        for v in shown:
            table.add_row(escape(str(v.video)),  # ids, paths and messages as written: no markup
                          *([escape(v.stream)] if len(report.streams) > 1 else []),
                          v.status + (" (removed)" if (v.video, v.stream) in gone else ""),
                          escape("\n".join(v.problems)))
        parts.insert(0, table)
    parts.extend(Text(note, style="yellow") for note in report.notes)
    if report.dropped:
        names = ", ".join(v.video + (f" ({v.stream})" if v.stream else "")
                          for v in report.dropped)
        parts.append(Text(f"removed {len(report.dropped)} damaged video"
                          f"{'s' if len(report.dropped) > 1 else ''} from the store: {names}; "
                          + (f"`{redo}` imports " if redo else
                             "`actrec extract` for this store extracts ")
                          + f"{'them' if len(report.dropped) > 1 else 'it'} again", style="yellow"))
    elif report.count("damaged") and not dropping:
        parts.append(Text(f"`actrec check {store} --drop-damaged` removes the damaged videos; "
                          + (f"`{redo}` then imports them again" if redo else
                             "`actrec extract` for this store then extracts them again"),
                          style="yellow"))
    if report.swept is not None:
        parts.append(_render_sweep(report.swept))
    return Group(*parts)


def _duration(seconds: float) -> str:
    """``seconds`` in the largest unit --older-than takes that writes it whole (2d, 12h, 30m,
    90s), else in seconds: 30 minutes read as "0.5 h", 90 s as "0.025 h"."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _render_sweep(swept):
    from rich.markup import escape
    from rich.table import Table

    def age(x):
        if x.age is None:
            return "?"
        return f"{x.age / 3600:.1f} h" if x.age >= 3600 else f"{x.age:.0f} s"

    table = Table(title=escape(f"sweep of {swept.store}: {len(swept.removed)} removed, "
                               f"{len(swept.restored)} restored, {len(swept.left)} left"),
                  caption="removed: what dead writers left (older than "
                  f"{_duration(swept.older_than)} where it is a generation)")
    for column in ("video", "what", "age", "done", "path"):
        table.add_column(column)
    for done, items in (("removed", swept.removed), ("restored", swept.restored)):
        for x in items:
            table.add_row(escape(str(x.video)), x.kind, age(x), done, escape(str(x.path)))
    for x in swept.left:
        table.add_row(escape(str(x.video)), x.kind, age(x), escape(f"left: {x.why}"),
                      escape(str(x.path)))
    return table
