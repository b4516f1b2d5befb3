"""``actrec extract``: per-frame features of a dataset's videos into a Zarr store."""

from __future__ import annotations

from pathlib import Path

import click

from actrec.cli.common import emit, json_option, make_progress, parse_assignments
from actrec.cli.storage import apply_storage_options, storage_option


@click.command()
@click.argument("dataset", required=False)
@click.option("--split", default=None, help="Only the videos of this split (train and test).")
@click.option("--root", type=click.Path(path_type=Path), default=None,
              help="The dataset's data folder (else ACTREC_DATA_<NAME> or the workspace).")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A dataset option (repeatable); see `actrec plugins`.")
@click.option("--extractor", default="colorgrad", show_default=True, help="Feature extractor plugin.")
@click.option("-x", "--extractor-option", "extractor_options", multiple=True, metavar="KEY=VALUE",
              help="An extractor option (repeatable).")
@click.option("--out", default=None, metavar="PATH|URL",
              help="Feature store path, or URL (file://..., s3://bucket/..., gs://...; needs "
              "the fsspec backend) (default: in the workspace, named after the dataset).")
@storage_option
@click.option("--claim-lease", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS", help="Take over a video claimed by a process of another host "
              "after this long without a heartbeat (default 120; ACTREC_CLAIM_LEASE). A dead "
              "process's claims on this host are taken over at once.")
@click.option("--status", "status_store", default=None, metavar="STORE",
              help="Show the progress of the (sharded) runs filling STORE (path or URL): "
              "done, failed (why), claimed (by whom, stale?) and pending videos, per shard; "
              "then exit. Takes no DATASET.")
@click.option("--overwrite", is_flag=True, help="Redo videos that are already in the store.")
@click.option("--trust-store", is_flag=True,
              help="Skip stored videos without comparing their source files' size and mtime, "
              "or their labels, with those recorded (by default a changed source or changed "
              "labels are extracted again).")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float16",
              show_default=True, help="Storage type of the features.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Extraction processes on this machine, each with its share of the cores.")
@click.option("--shard", default=None, metavar="I/N",
              help="Only shard I of N (1 <= I <= N) of the videos, split by video id, so that "
              "N machines can fill one store (or N stores) without overlap.")
@click.option("--device", default="cpu", show_default=True,
              help="Where the extractor computes: cpu, cuda, cuda:N or auto.")
@click.option("--length-policy", type=click.Choice(["truncate", "error"]), default="truncate",
              show_default=True, help="When a video and its labels differ in length: cut both "
              "to the shorter (counted in the summary), or fail that video.")
@click.option("--max-length-gap", type=click.FloatRange(min=0), default=5.0,
              show_default=True, metavar="SECONDS",
              help="A video and labels differing by more than this fail under any policy.")
@click.option("--max-length-share", type=click.FloatRange(0, 1), default=0.2,
              show_default=True, metavar="FRACTION",
              help="Likewise for a difference above this share of the longer length (labels "
              "at another frame rate than the video's), beyond 5 frames.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Frames decoded and given to the extractor at a time.")
@click.option("--stream", default=None, metavar="NAME",
              help="Write these features as the named stream (rgb, flow, ...) of the store, "
              "beside its other streams (default store: the dataset's streams.zarr).")
@click.option("--head", type=click.Choice(["softmax", "logits"]), default=None,
              help="Then train a frame classifier on the features of the --split's training "
              "videos and store its per-frame softmax or logits for every video (a second "
              "store beside the first, the classifier saved with it).")
@click.option("--head-option", "head_options", multiple=True, metavar="KEY=VALUE",
              help="A frame classifier option (repeatable): model=linear|mlp, hidden, epochs, "
              "lr, seed, ...; see the guide.")
@json_option
def extract(dataset, split, root, options, extractor, extractor_options, out, storage_options,
            claim_lease, status_store, overwrite, trust_store, dtype, workers, shard, device,
            length_policy, max_length_gap, max_length_share, batch_size, stream, head,
            head_options, as_json) -> None:
    """Extract features of DATASET (a plugin name, or NAME:key=value,... with options).

    Frames are decoded at the dataset's label rate (or the extractor's fps option) in a
    background thread while the extractor computes. Finished videos are skipped, so an
    interrupted run resumes where it stopped and a second run retries only the failed ones; a
    stored video whose chunk files are damaged, or whose source file changed since, is redone.
    Exits with status 1 when any video failed. A store that cannot be written (a full disk)
    stops the run: the summary says what was done, and a second run does the rest. So does
    Ctrl-C or SIGTERM (exit status 130 or 143; with --json, "interrupted" names the signal):
    finished videos are kept whole, the ones in progress are listed as not done.

    Several runs (machines, --shard I/N) may fill one store, also at a URL: each video is
    claimed before it is extracted, a video another process is extracting is waited for, and
    a claim whose holder died is taken over. `--status STORE` shows where they stand.
    """
    import os

    from actrec.extract import ExtractInterrupted, ExtractStopped
    from actrec.io.remote import StoreURL, store_location
    from actrec.pipeline import extract_dataset

    if claim_lease is not None:  # worker processes inherit it
        os.environ["ACTREC_CLAIM_LEASE"] = repr(float(claim_lease))
    target = status_store if status_store is not None else out
    location = store_location(target) if target is not None else None
    apply_storage_options(storage_options, [target], "--out or --status")
    if status_store is not None:
        if dataset is not None:
            raise click.UsageError("--status STORE takes no DATASET")
        from actrec.extract_status import store_status

        emit(store_status(location), as_json, _render_status)
        return
    if dataset is None:
        raise click.UsageError("Missing argument 'DATASET' (or give --status STORE)")
    if head is not None and isinstance(location, StoreURL):
        raise click.UsageError("--head writes the classifier's store beside a local store "
                               "only; extract into a local --out (or file://) for --head")

    head_config = None
    if head is not None:  # checked before the long extraction
        from actrec.frame_head import HeadConfig

        if split is None:
            raise click.UsageError("--head needs --split: the frame classifier is trained on "
                                   "that split's training videos")
        head_config = HeadConfig.from_options(parse_assignments(head_options, "--head-option"),
                                              owner="--head-option")
    dataset_options = parse_assignments(options, "--option")
    if root is not None:
        dataset_options["root"] = str(root)
    stopped = interrupted = None
    with make_progress() as progress:
        try:
            report = extract_dataset(
                dataset, dataset_options=dataset_options, extractor=extractor,
                extractor_options=parse_assignments(extractor_options, "--extractor-option"),
                split=split, out=location, overwrite=overwrite, dtype=dtype, progress=progress,
                trust_store=trust_store, workers=workers, shard=shard, device=device,
                length_policy=length_policy, max_length_gap=max_length_gap,
                max_length_share=max_length_share, batch_size=batch_size, stream=stream,
            )
        except ExtractStopped as exc:  # a full disk: the summary of what was done, then why
            report, stopped = exc.report, exc
        except ExtractInterrupted as exc:  # Ctrl-C, SIGTERM: the same, then the signal's status
            report, interrupted = exc.report, exc
        head_report = head_error = None
        if head_config is not None and stopped is None and interrupted is None:
            from actrec.errors import ActrecError
            from actrec.frame_head import extract_head_features

            try:  # e.g. training videos that failed above: report the extraction first
                head_report = extract_head_features(
                    report.store, split, output=head, config=head_config, stream=stream,
                    overwrite=overwrite, progress=progress)
            except ActrecError as exc:
                head_error = exc
    if head_report is None:
        emit(report, as_json, _render)
    else:
        emit({**report.to_dict(), "head": head_report.to_dict()}, as_json,
             lambda _: _render_with_head(report, head_report))
    if stopped is not None:
        click.echo(f"Error: {stopped}", err=True)
    if interrupted is not None:
        click.echo(str(interrupted), err=True)
        raise SystemExit(interrupted.exit_code)
    if head_error is not None:
        click.echo(f"Error: frame classifier not trained: {head_error}", err=True)
    if report.busy:
        click.echo(f"Error: {len(report.busy)} video(s) were left to other processes still "
                   f"extracting them ({', '.join(report.busy[:5])}"
                   f"{' ...' if len(report.busy) > 5 else ''}); run this command again when "
                   f"they finish (`actrec extract --status {report.store}` shows them)", err=True)
    if not report.ok or head_error is not None or report.busy:
        raise SystemExit(1)


_NOT_STARTED_ROWS = 5  # videos a stopped run had not started, listed in the table


def _render(report):
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table

    shard = f" (shard {report.shard[0]}/{report.shard[1]})" if report.shard else ""
    rate = f", {report.frames / report.seconds:,.0f} frames/s" if report.seconds > 0 else ""
    table = Table(title=escape(f"features -> {report.store}{shard}"),
                  caption=f"{report.frames:,} frames in {report.seconds:.1f} s{rate}, "
                  f"{report.workers} worker(s)")
    table.add_column("written", justify="right")
    table.add_column("skipped (already done)", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("redone: damaged", justify="right")
    table.add_column("redone: source changed", justify="right")
    table.add_column("labels rewritten", justify="right")
    table.add_column("frames cut (videos)", justify="right")
    cut = sum(report.frames_cut.values())
    row = [str(len(report.written)), str(len(report.skipped)), str(len(report.failed)),
           str(len(report.redone_damaged)), str(len(report.redone_changed)),
           str(len(report.relabelled)), f"{cut} ({len(report.cut)})"]
    if report.stopped:
        table.add_column("not done (run stopped)", justify="right")
        row.append(str(len(report.not_done)))
    table.add_row(*row)
    if report.frames_cut:
        table.caption += "; length policy " + report.length_policy + ": " + ", ".join(
            f"{n} {what}" for what, n in report.frames_cut.items())
    rows = [(v, "failed", e) for v, e in report.failed]
    rows += [(v, "redone: damaged", d) for v, d in report.redone_damaged]
    rows += [(v, "redone: source changed", c) for v, c in report.redone_changed]
    rows += [(v, "labels rewritten (features kept)", c) for v, c in report.relabelled]
    rows += [(v, "left to another process", "another `actrec extract` was extracting it")
             for v in report.busy]
    # The videos cut off first; the others were not started (all of them: --json).
    cut_off = [(v, "not done: was being extracted", report.stopped) for v in report.in_progress]
    waiting = [v for v in report.not_done if v not in set(report.in_progress)]
    rows += cut_off + [(v, "not done: not started", report.stopped)
                       for v in waiting[:_NOT_STARTED_ROWS]]
    if len(waiting) > _NOT_STARTED_ROWS:
        rows.append((f"... {len(waiting) - _NOT_STARTED_ROWS} more", "not done: not started",
                     "--json lists every video"))
    if report.stopped:
        table.caption += f"; STOPPED: {escape(str(report.stopped))}"
    if not rows:
        return table
    details = Table(show_header=True)
    for column in ("video", "what", "why"):
        details.add_column(column)
    for row in rows:  # ids and messages as written: no markup
        details.add_row(*(escape(str(cell)) for cell in row))
    return Group(table, details)


def _render_with_head(report, head):
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"frame classifier ({head.output}, split {head.split}) -> "
                               f"{head.store}"),
                  caption=f"classifier: {head.head} ({'trained' if head.trained else 'reused'})")
    for column in ("training videos", "training frames", "training accuracy", "written",
                   "skipped (already done)", "training videos missing"):
        table.add_column(column, justify="right")
    table.add_row(str(head.train_videos), str(head.train_frames), f"{head.train_accuracy:.3f}",
                  str(len(head.written)), str(len(head.skipped)),
                  str(len(head.missing_train_videos)))
    return Group(_render(report), table)


def _render_status(status):
    import time

    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"extraction of {status.store}"),
                  caption=f"{status.planned} video(s) planned by {len(status.runs)} recorded "
                  f"run(s)" + (f"; {status.extra_done} more stored outside them"
                               if status.extra_done else ""))
    for column in ("shard", "planned", "done", "failed", "claimed", "pending"):
        table.add_column(column, justify="right" if column != "shard" else "left")
    for s in status.shards:
        table.add_row(s.shard, str(s.planned), str(s.done), str(s.failed), str(s.claimed),
                      str(s.pending))
    counts = status.to_dict()["counts"]
    if len(status.shards) != 1:
        table.add_row("total", str(status.planned), *(str(counts[k]) for k in
                                                      ("done", "failed", "claimed", "pending")),
                      style="bold")
    parts = [table]
    if status.failed:
        failed = Table(title="failed")
        for column in ("video", "host", "why"):
            failed.add_column(column)
        for vid, error, host in status.failed:
            failed.add_row(escape(str(vid)), escape(str(host)), escape(str(error)))
        parts.append(failed)
    if status.claimed:
        claimed = Table(title="claimed")
        for column in ("video", "host", "pid", "shard", "claimed for", "last heartbeat",
                       "stale"):
            claimed.add_column(column)
        now = time.time()
        for c in status.claimed:
            held = f"{now - c.since:.0f} s" if c.since else "?"
            claimed.add_row(escape(str(c.video)), escape(str(c.host)), str(c.pid),
                            escape(c.shard or "-"), held, f"{c.age:.0f} s ago",
                            escape(f"yes: {c.why} (the next run takes it over)")
                            if c.stale else "no")
        parts.append(claimed)
    if status.runs:
        runs = Table(title="runs")
        for column in ("host", "pid", "shard", "videos", "state", "written", "failed"):
            runs.add_column(column)
        for r in status.runs:
            runs.add_row(escape(str(r["host"])), str(r["pid"]), escape(r["shard"] or "-"),
                         str(r["videos"]), escape(str(r["state"])),
                         "-" if r["written"] is None else str(r["written"]),
                         "-" if r["failed"] is None else str(r["failed"]))
        parts.append(runs)
    return Group(*parts)
