"""``actrec demo``: generate, extract, train, evaluate online, print the table."""

from __future__ import annotations

from pathlib import Path

import click

from actrec.cli.common import emit, json_option, make_progress


@click.command()
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="Folder for everything the demo makes (default: the workspace's demo/).")
@json_option
def demo(cache, as_json) -> None:
    """Run the whole pipeline on the built-in synthetic kitchen (two domains), online.

    Re-running reuses the videos, features and finished runs. Progress on stderr: a bar of
    the stages and the running stage's own bars (none with --json).
    """
    from actrec.demo import run_demo

    if as_json:  # machines read stdout; nothing on stderr either
        result = run_demo(cache)
    else:
        with make_progress() as progress:
            result = run_demo(cache, progress=progress)
    emit(result, as_json, _render)


def _render(result):
    from rich.table import Table

    table = Table(title="actrec demo: online frame accuracy", caption=f"cache: {result.cache}")
    table.add_column("run")
    table.add_column("test set")
    for col in ("videos", "frames", "frame acc."):
        table.add_column(col, justify="right")
    table.add_column("learned alpha1, alpha2 (layers apart by |)")
    for row in result.rows:
        alphas = " | ".join(f"{a[0]:.2f}, {a[1]:.2f}" for a in row["alphas"].values())
        table.add_row(row["run"], row["dataset"], str(row["videos"]), str(row["frames"]),
                      f"{100 * row['frame_accuracy']:.1f} %", alphas)
    return table
