"""``actrec live``: classify every frame of files, frame folders, cameras or streams as it
arrives, with a trained run (``actrec.recognizer``, ``actrec.live``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from actrec.cli.storage import apply_storage_options, run_stores, storage_option


@click.command("live")
@click.argument("run")
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the JSON lines to this new file instead of stdout.")
@click.option("--frames/--no-frames", default=True, show_default=True,
              help="One JSON line per frame (--no-frames: only events and stream ends).")
@click.option("--min-duration", default="0s", show_default=True, metavar="DURATION",
              help="An action starts once predicted this long (0.5s, 500ms); shorter "
              "changes are flicker and belong to the action before.")
@click.option("--top-k", type=int, default=3, show_default=True,
              help="Most probable classes listed per frame.")
@click.option("--realtime", is_flag=True,
              help="Play files at their frame rate; frames that arrive while the model is "
              "busy are dropped and counted. Default: as fast as possible (cameras are "
              "always real time).")
@click.option("--display", is_flag=True,
              help="A live panel on stderr: action, confidence, latency, fps per stream.")
@click.option("--write-video", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="OUT.mp4", help="Write the video with the predicted action drawn on it "
              "(OUT-<i>.mp4 per stream for several sources).")
@click.option("--dataset", default=None, metavar="D",
              help="Which of the run's datasets to recognise (D1, D2, an index or the "
              "dataset's name; default: D1).")
@click.option("--folder-fps", type=float, default=None,
              help="Frame rate of frame-folder sources (default: the run's dataset's label "
              "rate, as extraction reads its folders).")
@click.option("--max-frames", type=click.IntRange(min=1), default=None,
              help="Stop each stream after this many frames (each is answered).")
@click.option("--store", "stores", multiple=True, metavar="PATH",
              help="Where the run's feature store is now, if it was moved or renamed (one per "
              "dataset the run trained on, D1 first; it must hold the data the run recorded).")
@storage_option
def live(run, sources, out, frames, min_duration, top_k, realtime, display, write_video,
         dataset, folder_fps, max_frames, stores, storage_options) -> None:
    """Recognise, frame by frame, the SOURCEs (video files, folders of frames, camera indices
    such as 0, or stream URLs) with RUN (a run folder or name): decode at the rate the run's
    features were made at, extract them with the run's own causal extractor, standardise,
    step the model with its state carried, and write one JSON line per frame (frame, time,
    label, score, top-k, latency_ms, stream) and per action event (start/end). A run trained
    with --delay K labels frame t once frame t+K has arrived (the line's "seen"), and its
    last K frames when the stream ends, as eval --online scores it. Several
    SOURCEs are stepped in one batch, each with its own state; one that ends or fails leaves
    the others running. The run's feature stores are read for the extractor's config and the
    frame rate: where they are at URLs, --storage-option reaches them."""
    from actrec.errors import ConfigError
    from actrec.live import run_live
    from actrec.live_events import parse_duration
    from actrec.live_output import DisplaySink, JsonLinesSink, VideoSink
    from actrec.recognizer import Recognizer

    min_seconds = parse_duration(min_duration)
    if out is not None and out.exists():
        raise ConfigError(f"--out: {out} exists; give a new file (nothing is overwritten)")
    if storage_options:
        from actrec.runs import resolve_run

        run_dir = resolve_run(run)
        apply_storage_options(storage_options, run_stores(run_dir),
                              f"the stores run {run_dir} was trained on, e.g.")
    recognizer = Recognizer.from_run(run, streams=len(sources), dataset=dataset, top_k=top_k,
                                     stores=list(stores) or None)
    sinks = []
    if write_video is not None:
        sinks.append(VideoSink(write_video, len(sources), recognizer.fps))
    handle = open(out, "x", encoding="utf-8") if out is not None else sys.stdout  # noqa: SIM115
    sinks.append(JsonLinesSink(handle, frames=frames, close=out is not None))
    if display:
        sinks.append(DisplaySink(list(sources), title=f"actrec live: {recognizer.run.run_dir.name}"))
    from actrec.live import LiveStopped

    stopped = None
    try:  # Ctrl-C and SIGTERM stop between two frames, every stream closed (run_live)
        report = run_live(recognizer, list(sources), sinks=sinks, realtime=realtime,
                          min_duration=min_seconds, folder_fps=folder_fps,
                          max_frames=max_frames)
    except LiveStopped as exc:
        report, stopped = exc.report, exc
    if not display:
        from actrec.cli.common import stderr_console

        stderr_console().print(_summary(report, recognizer.run))
    for status in report.failed:
        click.echo(f"Error: stream {status.stream}: {status.error}", err=True)
    if stopped is not None:
        import signal

        from actrec.errors import Interrupted

        if stopped.signum == signal.SIGTERM:
            sys.exit(128 + signal.SIGTERM)
        where = f"written to {out}" if out is not None else "written"
        raise Interrupted(f"live recognition stopped; every frame answered is {where} "
                          f"({', '.join(f'stream {s.stream}: {s.frames}' for s in report.streams)} "
                          f"frame(s))") from stopped
    if report.failed:
        sys.exit(1)


def _summary(report, run):
    from rich.table import Table

    table = Table(title=f"actrec live: {run.run_dir.name} on {run.dataset} (D{run.domain + 1}, "
                        f"{run.fps:g} fps), {report.seconds:.1f} s (warm-up "
                        f"{report.warmup_ms:.0f} ms before the first frame)")
    for col in ("stream", "source", "status", "frames", "dropped", "start-up skipped",
                "median ms", "p99 ms"):
        table.add_column(col)
    for s in report.streams:
        d = s.to_dict()
        lat = d.get("latency_ms", {})
        table.add_row(str(s.stream), s.source, s.status, str(s.frames), str(s.dropped),
                      str(s.startup_skipped), f"{lat['median']:.2f}" if lat else "-", f"{lat['p99']:.2f}" if lat else "-")
    return table
