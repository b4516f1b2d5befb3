"""``actrec fuse``: late fusion of runs (one per stream) by averaging class probabilities."""

from __future__ import annotations

from pathlib import Path

import click

from actrec.cli.common import emit, json_option, make_progress


@click.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("--online/--offline", default=True, show_default=True,
              help="Online: each run steps through every test video frame by frame, as a live "
              "system sees it (refused for runs whose features look ahead). Offline: whole "
              "videos at once.")
@click.option("--split", default=None, help="Split to evaluate (default: each run's).")
@click.option("--weights", default=None, metavar="W1,W2,...",
              help="One weight per run for the mean of probabilities (default: equal).")
@click.option("--allow-noncausal-features", is_flag=True,
              help="Fuse online even though some run's features look at future frames "
              "(recorded).")
@click.option("--segment-background", type=click.Choice(["exclude", "include"]),
              default="exclude", show_default=True,
              help="Leave each dataset's background classes out of the edit score and F1.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the fused result as JSON to this file.")
@json_option
def fuse(runs, online, split, weights, allow_noncausal_features, segment_background, out,
         as_json) -> None:
    """Score RUNS (two or more run folders or names, e.g. an RGB run and a flow run of the
    same dataset and split) together: per frame, the mean of their class probabilities.

    Each run is also evaluated on its own (its results file is written as by `actrec eval`);
    runs that scored different videos, classes or labels are refused.
    """
    from actrec.fusion import fuse_runs
    from actrec.runs import atomic_write_json, json_safe, resolve_run

    try:
        parsed = None if weights is None else [float(w) for w in weights.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected numbers separated by commas, got {weights!r}",
                                 param_hint="--weights") from None
    with make_progress() as progress:
        result = fuse_runs([resolve_run(r) for r in runs], online=online, split=split,
                           weights=parsed, progress=progress,
                           allow_noncausal_features=allow_noncausal_features,
                           segment_background=segment_background)
    if out is not None:
        atomic_write_json(out, json_safe(result.to_dict()))
    emit(result, as_json, _render)


def _render(result):
    """One table per dataset: each run (with its streams and weight), then the fused row."""
    from rich import box
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table

    from actrec.cli.eval_cmd import pct

    mode = result.protocol.get("mode") or ("online" if result.online else "offline")
    streams = ["+".join(m.protocol.get("streams") or ["own"]) for m in result.members]
    caption = "fused: per frame, the weighted mean of the runs' class probabilities"
    if "own" in streams:  # explained only where a row shows it
        caption += "; streams 'own': the store's own"
    tables = []
    for name, fused in result.datasets.items():
        # No vertical rules (as `actrec runs`): a run name of a sweep (27 characters) and the
        # five score columns fit 80 columns, where boxed the scores were cut off.
        table = Table(title=escape(f"{mode} late fusion on {name}"), box=box.SIMPLE_HEAD,
                      show_edge=False, padding=0, caption=caption)
        # Run names whole on one line, as `actrec runs` shows them (they are what `actrec
        # eval RUN` takes); the other columns fold around them at 80 columns.
        longest = max((len(m.run_dir.name) for m in result.members), default=5)
        for column in ("run", "streams", "weight", "frame accuracy", "edit", "F1@10/25/50"):
            table.add_column(column, justify="left" if column in ("run", "streams")
                             else "right", overflow="fold", no_wrap=column == "run",
                             min_width=min(longest, 40) if column == "run"
                             else 11 if column == "F1@10/25/50" else None)

        rows = [(m.run_dir.name, shown, f"{w:g}", m.datasets[name], None)
                for m, shown, w in zip(result.members, streams, result.weights)]
        rows.append(("fused", "", "", fused, "bold"))
        for label, shown, weight, ds, style in rows:
            f1 = ds.f1 or {}
            table.add_row(escape(label), escape(shown), weight, pct(ds.frame_accuracy),
                          pct(ds.edit), " / ".join(pct(f1.get(k), unit="")
                                                    for k in ("10", "25", "50")), style=style)
        tables.append(table)
    return Group(*tables)
