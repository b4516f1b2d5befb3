"""``actrec train``: train a temporal model on one dataset's features, or two jointly."""

from __future__ import annotations

from pathlib import Path

import click

from actrec.cli.common import emit, json_option, layered_assignments, make_progress


def _mix(value: str) -> tuple[int, int]:
    n1, sep, n2 = str(value).partition(":")
    try:
        mix = (int(n1), int(n2) if sep else 0)
    except ValueError:
        raise click.BadParameter(f"expected N1:N2 (for example 64:64), got {value!r}",
                                 param_hint="'--mix'") from None
    if mix[0] <= 0 or mix[1] < 0:
        raise click.BadParameter(f"expected N1 > 0 and N2 >= 0, got {value!r}",
                                 param_hint="'--mix'")
    return mix


@click.command()
@click.argument("model")
@click.option("--d1", required=True, help="First dataset: a reference (NAME[:key=value,...]) "
              "resolved to its feature store, or a store path.")
@click.option("--d2", default=None, help="Second dataset, for joint training.")
@click.option("--extractor", default=None,
              help="Whose features to use when --d1/--d2 are dataset references (default: "
              "the dataset's only store in the workspace, extracted or imported).")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A model option (repeatable); see `actrec plugins`.")
@click.option("--split", default=None, help="Split to train on (default: the store's first).")
@click.option("--history", type=int, default=200, show_default=True, help="Window length in frames.")
@click.option("--iterations", type=int, default=2000, show_default=True)
@click.option("--mix", default="64:64", show_default=True,
              help="Windows per batch from D1:D2 (with one dataset only N1 counts).")
@click.option("--lr", type=float, default=0.01, show_default=True)
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default="sgd", show_default=True,
              help="SGD with momentum 0.9 (the DDLSTM paper) or Adam.")
@click.option("--grad-clip", type=float, default=None, help="Maximum gradient norm.")
@click.option("--d2-split", default=None, help="Split of D2 (default: its store's first).")
@click.option("--eval-every", type=int, default=0, show_default=True,
              help="Log an offline test evaluation every N iterations (monitoring only).")
@click.option("--checkpoint-every", type=int, default=500, show_default=True)
@click.option("--reestimate-batches", type=int, default=0, show_default=True,
              help="Re-estimate normalisation statistics over N batches after training.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--inputs", "input_arrangement", type=click.Choice(["blocks", "projection"]),
              default="blocks", show_default=True,
              help="Inputs of different dimensions: zero-filled blocks or per-domain projection.")
@click.option("--prediction", type=click.Choice(["block", "full"]), default="block",
              show_default=True, help="Argmax over the frame's dataset block, or the whole vector.")
@click.option("--allow-same-store", is_flag=True,
              help="Let --d1 and --d2 be the same feature store (otherwise an error).")
@click.option("--weight-decay", type=float, default=0.0, show_default=True,
              help="L2 weight decay of weight matrices (biases, normalisation parameters and "
              "alphas are never decayed).")
@click.option("--streams", default=None, metavar="NAME[,NAME...]",
              help="Streams of each store to train on (default: the store's own); several "
              "are concatenated frame by frame (early fusion), e.g. rgb,flow.")
@click.option("--run-dir", type=click.Path(path_type=Path), default=None,
              help="Run directory (default: a new one under the workspace's runs/). "
              "An existing run resumes.")
@json_option
@click.pass_context
def train(ctx, model, d1, d2, extractor, options, split, history, iterations, mix, lr, optimizer,
          grad_clip, d2_split, eval_every, checkpoint_every, reestimate_batches,
          seed, device, input_arrangement, prediction, allow_same_store, weight_decay, streams,
          run_dir, as_json) -> None:
    """Train MODEL (a model plugin) on per-frame features and write a run directory."""
    from actrec.cli.config import value_sources
    from actrec.pipeline import train_from_refs

    with make_progress() as progress:
        result = train_from_refs(
            model, d1=d1, d2=d2, extractor=extractor,
            model_options=layered_assignments(ctx, "options", "--option"), split=split,
            history=history, iterations=iterations, mix=_mix(mix), lr=lr, optimizer=optimizer,
            grad_clip=grad_clip, d2_split=d2_split, eval_every=eval_every,
            checkpoint_every=checkpoint_every, reestimate_batches=reestimate_batches,
            seed=seed, device=device, input_arrangement=input_arrangement,
            prediction=prediction, allow_same_store=allow_same_store,
            weight_decay=weight_decay, run_dir=run_dir, sources=value_sources(ctx),
            streams=None if streams is None else tuple(
                n.strip() for n in streams.split(",") if n.strip()),
            progress=progress,
        )
    emit(result, as_json, _render)


def _render(result):
    from rich.table import Table

    data = result.to_dict()
    table = Table(title=f"run {data.get('run_dir')}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for key, value in data.items():
        if key != "run_dir":
            table.add_row(key, str(value))
    return table
