"""``actrec export``: a run's online step as a self-contained ``torch.export`` program."""

from __future__ import annotations

from pathlib import Path

import click

from actrec.cli.common import emit, json_option
from actrec.cli.storage import apply_storage_options, run_stores, storage_option


@click.command("export")
@click.argument("run")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dataset", default=None, metavar="D",
              help="Which of the run's datasets (D1, D2, an index or the dataset's name; "
              "default: D1).")
@storage_option
@json_option
def export(run, out, dataset, storage_options, as_json) -> None:
    """Write RUN's online step (feature rounding, standardisation, model step, softmax) to
    OUT (.pt2, a torch.export program loadable with torch alone) and its metadata (labels,
    fps, extractor, initial state, a loader snippet) into it and beside it as OUT.json. The
    exported step is checked against the model's own before anything is written."""
    from actrec.export import export_run

    if storage_options:  # the run's stores at URLs: read for the extractor and frame rate
        from actrec.runs import resolve_run

        run_dir = resolve_run(run)
        apply_storage_options(storage_options, run_stores(run_dir),
                              f"the stores run {run_dir} was trained on, e.g.")
    report = export_run(run, out, dataset=dataset)
    emit(report, as_json, _render)


def _render(report):
    meta = report["meta"]
    heads = "".join(f" + frame head ({h['output']})" for h in meta.get("frame_heads") or ())
    rate = ", every frame at the file's rate" if meta.get("video_rate") else ""
    return (f"[bold]{report['program']}[/bold]: {meta['model']} step, {len(meta['classes'])} "
            f"classes, features of '{meta['extractor']}'{heads} at {meta['fps']:g} fps"
            f"{rate} ({meta['feature_dim']}-d), {len(meta['state_names'])} state inputs\n"
            f"metadata: {report['metadata']}\n\n[dim]load it with:[/dim]\n{meta['loader']}")
