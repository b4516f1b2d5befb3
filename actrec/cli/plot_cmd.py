"""``actrec plot``: figures of a run (timeline, alphas, curves, confusion, per-class)."""

from __future__ import annotations

import click

from actrec.cli.common import emit, json_option

FIGURES = ("timeline", "alphas", "curves", "confusion", "per-class")  # actrec.plots.FIGURES


def _frames(ctx, param, value):
    if value is None:
        return None
    start, sep, stop = value.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(start or 0), int(stop)
    except ValueError:
        raise click.BadParameter(f"expected START:STOP frame numbers, got {value!r}") from None


@click.command("plot")
@click.argument("run")
@click.argument("what", type=click.Choice(FIGURES))
@click.option("--video", "videos", multiple=True, metavar="ID",
              help="timeline: a test video to draw (repeatable; default: the first ones).")
@click.option("--frames", default=None, metavar="START:STOP", callback=_frames,
              help="timeline: only these frames of each video (the DDLSTM paper shows 1000).")
@click.option("--eval", "setting", default=None, metavar="SETTING",
              help="timeline/confusion/per-class: which evaluation (online, offline, "
              "lookahead-12, ...; default online, else the run's only one).")
@click.option("--compare", multiple=True, metavar="RUN",
              help="curves: other runs drawn on the same axes (repeatable).")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Output folder (default: RUN/plots).")
@json_option
def plot(run, what, videos, frames, setting, compare, out_dir, as_json) -> None:
    """Draw figure WHAT of RUN (a run folder or name) as PNG and SVG. timeline, confusion and
    per-class read an evaluation (run `actrec eval` first); alphas and curves read the
    training log."""
    from pathlib import Path

    from actrec.plots import plot_run
    from actrec.runs import resolve_run

    written = plot_run(resolve_run(run), what, out_dir=Path(out_dir) if out_dir else None,
                       videos=videos, setting=setting, frames=frames,
                       compare=[resolve_run(r) for r in compare])
    emit({"figure": what, "files": [str(p) for p in written]}, as_json,
         lambda data: "\n".join(data["files"]))
