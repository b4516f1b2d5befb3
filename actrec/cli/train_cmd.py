"""``actrec train``: train a temporal model on one dataset's features, or two jointly."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import click

from actrec.cli.common import (
    emit,
    json_option,
    layered_assignments,
    layered_sources,
    make_progress,
)
from actrec.cli.storage import apply_storage_options, storage_option


def _mix(value: str) -> tuple[int, ...]:
    parts = str(value).split(":")
    try:
        mix = tuple(int(p) for p in parts) + ((0,) if len(parts) == 1 else ())
    except ValueError:
        raise click.BadParameter(f"expected N1:N2[:N3...] (for example 64:64), got {value!r}",
                                 param_hint="'--mix'") from None
    if mix[0] <= 0 or min(mix) < 0:
        raise click.BadParameter(f"expected N1 > 0 and the others >= 0, got {value!r}",
                                 param_hint="'--mix'")
    return mix


def _protocol_options(f):
    """Options of the training protocols, label arrangements, validation, schedules and the
    boundary pre-stage (``actrec.protocols``); they pass through as TrainSpec fields."""
    from actrec.cli.config import apply_preset

    opts = [
        click.option("--preset", default=None, is_eager=True, expose_value=True,
                     callback=apply_preset, metavar="NAME|PATH",
                     help="Settings of a paper from a TOML file: ddlstm, recassist, sign, "
                     "or a path (see actrec/presets/). Explicit options override it."),
        click.option("--protocol", type=click.Choice(["single", "joint", "transfer"]),
                     default=None, help="single (D1), joint (D1 + D2 ... per batch) or "
                     "transfer (pre-train on D2, fine-tune on D1) [default: joint with --d2]."),
        click.option("--data", "data_list", default=None, metavar="A,B,C",
                     help="Datasets D1,D2,D3,... in one option (instead of --d1/--d2): joint "
                     "training of any number with concatenated labels (not the DDLSTM)."),
        click.option("--pretrain-iters", type=int, default=0, show_default=True,
                     help="transfer: iterations on D2 before fine-tuning."),
        click.option("--finetune-iters", type=int, default=0, show_default=True,
                     help="transfer: iterations on D1 (0: --iterations)."),
        click.option("--init-from", default=None, metavar="RUN",
                     help="transfer: fine-tune from this run's selected weights instead."),
        click.option("--head", type=click.Choice(["auto", "keep", "reinit"]), default="auto",
                     show_default=True, help="The output layer when fine-tuning starts: kept "
                     "when its outputs mean the same classes (auto), or forced."),
        click.option("--labels", type=click.Choice(["concat", "merged", "random",
                                                    "multi-random"]),
                     default="concat", show_default=True,
                     help="Label arrangement across datasets (Recurrent Assistance eqs. 2-4)."),
        click.option("--label-maps", type=int, default=0, show_default=True,
                     help="multi-random: random maps per smaller dataset (0: 3)."),
        click.option("--score-inputs", type=click.Choice(["auto", "yes", "no"]), default="auto",
                     show_default=True, help="Inputs are per-class scores (softmax features) "
                     "and are arranged like the labels; auto: when every store's feature "
                     "dimension equals its number of classes."),
        click.option("--val-fraction", type=float, default=0.0, show_default=True,
                     help="Fraction of the training participants held out for validation."),
        click.option("--val-every", type=int, default=0, show_default=True,
                     help="Validate every N iterations (0: at every checkpoint)."),
        click.option("--select", type=click.Choice(["auto", "best-val", "last"]),
                     default="auto", show_default=True,
                     help="Checkpoint that `actrec eval` scores (auto: best-val when validating)."),
        click.option("--select-on-test", is_flag=True,
                     help="Select on the TEST split (recorded; every table shows it)."),
        click.option("--momentum", type=float, default=0.9, show_default=True,
                     help="SGD momentum."),
        click.option("--lr-schedule", type=click.Choice(["none", "step", "cosine", "plateau",
                                                         "sign"]),
                     default="none", show_default=True,
                     help="Learning-rate schedule per phase; plateau and sign watch the "
                     "validation loss (sign: then grow the batch, then stop early)."),
        click.option("--lr-step", type=int, default=0, show_default=True,
                     help="step: iterations between decays (0: a third of the phase)."),
        click.option("--lr-gamma", type=float, default=0.1, show_default=True,
                     help="Factor of each decay."),
        click.option("--lr-patience", type=int, default=3, show_default=True,
                     help="plateau/sign: validations without improvement before a decay."),
        click.option("--lr-min", type=float, default=0.0, show_default=True,
                     help="cosine: final lr; plateau/sign: the lowest lr."),
        click.option("--batch-growth", type=float, default=2.0, show_default=True,
                     help="sign: factor the batch grows by."),
        click.option("--max-batch-growths", type=int, default=2, show_default=True,
                     help="sign: batch growths before stopping early."),
        click.option("--early-stop", type=int, default=0, show_default=True,
                     help="Stop once this many validations in a row bring no better validation "
                     "loss, whatever the schedule (0: never)."),
        click.option("--boundary/--no-boundary", default=False, show_default=True,
                     help="DDLSTM Sec. 5.1 pre-stage: a 1-layer LSTM predicting the next action "
                     "boundary, its output concatenated to the features."),
        click.option("--boundary-iters", type=int, default=0, show_default=True,
                     help="Pre-stage iterations (0: a quarter of --iterations)."),
        click.option("--boundary-sigma", type=float, default=5.0, show_default=True,
                     help="Width in frames of the pre-stage's Gaussians."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _protocol_fields(ctx, more: dict) -> dict:
    """TrainSpec fields from the protocol options (``--data`` split into D1, D2, extras)."""
    from actrec.cli.config import PRESET_META

    fields = dict(more)
    data = fields.pop("data_list", None)
    if data:
        refs = [r.strip() for r in data.split(",") if r.strip()]
        if ctx.get_parameter_source("d1") == click.core.ParameterSource.COMMANDLINE or \
                ctx.params.get("d2"):
            raise click.UsageError("give the datasets with --data or with --d1/--d2, not both")
        fields["data_refs"] = refs
    fields["preset_record"] = ctx.meta.get(PRESET_META)
    return fields


@click.command()
@click.argument("model")
@click.option("--d1", default=None, help="First dataset: a reference (NAME[:key=value,...]) "
              "resolved to its feature store, or a store path.")
@click.option("--d2", default=None, help="Second dataset, for joint training.")
@click.option("--extractor", default=None,
              help="Whose features to use when --d1/--d2 are dataset references (default: "
              "the dataset's only store in the workspace, extracted or imported).")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A model option (repeatable); see `actrec plugins`.")
@click.option("--split", default=None, help="Split to train on (default: the store's first).")
@click.option("--history", type=int, default=128, show_default=True, help="Window length in frames.")
@click.option("--iterations", type=int, default=2000, show_default=True)
@click.option("--epochs", type=int, default=None,
              help="Train for N epochs of D1's windows instead of --iterations (see --windows).")
@click.option("--windows", default="stride:4", show_default=True,
              help="Training windows: 'random' (uniform video and start), 'stride:S' (every "
              "window ending at every S-th frame, shuffled per epoch) or 'uniform' (random "
              "among the windows whose frames all carry one label).")
@click.option("--loss-frames", default="last", show_default=True,
              help="Frames the loss covers: 'all' labelled frames, the 'last' real frame of each "
              "window, or 'after:K' (window positions K and later: a burn-in of K frames).")
@click.option("--mix", default="64:64", show_default=True,
              help="Windows per batch from D1:D2 (with one dataset only N1 counts).")
@click.option("--lr", type=float, default=0.001, show_default=True)
@click.option("--optimizer", type=click.Choice(["sgd", "adam", "adamw"]), default="adamw",
              show_default=True, help="SGD with momentum 0.9 (the DDLSTM paper), Adam, or AdamW "
              "(weight decay decoupled from the gradient step).")
@click.option("--grad-clip", type=float, default=None, help="Maximum gradient norm.")
@click.option("--d2-split", default=None, help="Split of D2 (default: its store's first).")
@click.option("--eval-every", type=int, default=0, show_default=True,
              help="Log an offline test evaluation every N iterations (monitoring only).")
@click.option("--checkpoint-every", type=int, default=500, show_default=True)
@click.option("--reestimate-batches", type=int, default=0, show_default=True,
              help="Re-estimate normalisation statistics over N batches after training.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              metavar="N", help="Torch threads while training (0: torch's own, one per core "
              "or OMP_NUM_THREADS). On a machine busy with other jobs 1 is often several "
              "times faster. Under torchrun the processes on a machine share the N. Recorded; "
              "a resumed run keeps its number unless given again.")
@click.option("--inputs", "input_arrangement", type=click.Choice(["blocks", "projection"]),
              default="blocks", show_default=True,
              help="Inputs of different dimensions: zero-filled blocks or per-domain projection.")
@click.option("--prediction", type=click.Choice(["block", "full"]), default="block",
              show_default=True, help="Argmax over the frame's dataset block, or the whole vector.")
@click.option("--allow-same-store", is_flag=True,
              help="Let --d1 and --d2 be the same feature store (otherwise an error).")
@click.option("--standardize/--no-standardize", default=True, show_default=True,
              help="Scale each dataset's features to zero mean and unit variance with its own "
              "training videos' statistics (saved with the run). Off: raw features, as the "
              "DDLSTM paper fed them (see docs/alpha-dynamics.md).")
@click.option("--weight-decay", type=float, default=0.05, show_default=True,
              help="Weight decay of weight matrices (biases, normalisation parameters and "
              "alphas are never decayed); decoupled with adamw, L2 with sgd/adam.")
@click.option("--streams", default=None, metavar="NAME[,NAME...]",
              help="Streams of each store to train on (default: the store's own); several "
              "are concatenated frame by frame (early fusion), e.g. rgb,flow.")
@click.option("--run-dir", type=click.Path(path_type=Path), default=None,
              help="Run directory (default: a new one under the workspace's runs/). "
              "An existing run resumes.")
@click.option("--delay", type=click.IntRange(min=0), default=0, show_default=True,
              metavar="K", help="Train the model to answer K frames late (the output at frame "
              "s is scored on frame s-K's label), for look-ahead evaluation (actrec eval uses "
              "--lookahead K). The DDLSTM paper's look-ahead: K = history // 2.")
@click.option("--tensorboard", is_flag=True,
              help="Also log to TensorBoard (RUN/tensorboard; the 'tensorboard' extra): the "
              "same numbers as metrics.jsonl, which is always written.")
@click.option("--all-splits", is_flag=True,
              help="Train one run per split of D1's store (RUN-split1, RUN-split2, ...; D2 on "
              "the split of the same name), for `actrec eval RUN-split1 --all-splits`.")
@click.option("--sync-bn", type=click.Choice(["on", "off"]), default="on", show_default=True,
              help="Under torchrun: batch statistics of the whole batch over all processes "
              "(on), or of each process's rows (off: a different model). See docs/scaling.md.")
@storage_option
@_protocol_options
@json_option
@click.pass_context
def train(ctx, model, d1, d2, extractor, options, split, history, iterations, epochs, windows,
          loss_frames, mix, lr, optimizer,
          grad_clip, d2_split, eval_every, checkpoint_every, reestimate_batches,
          seed, device, threads, input_arrangement, prediction, allow_same_store, standardize,
          weight_decay, streams, run_dir, delay, tensorboard, all_splits, sync_bn,
          storage_options, as_json, **more) -> None:
    """Train MODEL (a model plugin) on per-frame features and write a run directory.

    The defaults are actrec's online recipe (loss on the last frame of 128-frame windows taken
    at stride 4, AdamW lr 1e-3 weight decay 0.05; see docs/guide.md); --preset ddlstm gives the
    DDLSTM paper's setup. Under torchrun (``torchrun --nproc-per-node K -m actrec train ...``)
    every process trains its share of each batch and rank 0 writes the run (docs/scaling.md)."""
    from actrec.cli.config import value_sources
    from actrec.distributed import launched, session
    from actrec.pipeline import train_all_splits, train_from_refs

    both = [ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE
            for n in ("iterations", "epochs")]
    if all(both):
        raise click.UsageError("give --iterations or --epochs, not both")
    rank = {click.core.ParameterSource.COMMANDLINE: 2, click.core.ParameterSource.ENVIRONMENT: 1}
    if rank.get(ctx.get_parameter_source("iterations"), 0) > \
            rank.get(ctx.get_parameter_source("epochs"), 0):
        epochs = None  # an explicit --iterations beats epochs of a preset or config file
    if all_splits and split is not None:
        raise click.UsageError("--all-splits trains every split; drop --split")
    apply_storage_options(storage_options, [d1, d2, *(more.get("data_list") or "").split(",")],
                          "--d1, --d2 or --data")
    if ctx.get_parameter_source("sync_bn") == click.core.ParameterSource.COMMANDLINE \
            and not launched():  # recorded in the run, but one process has the whole batch
        click.echo(f"note: --sync-bn {sync_bn} only changes training under torchrun "
                   f"(docs/scaling.md); one process normalises with its whole batch", err=True)
    sources = value_sources(ctx)
    # -o KEY=VALUE merges its layers key by key: each model option records its own source
    sources.update({f"options.{key}": where for key, where in
                    layered_sources(ctx, "options", "--option").items()})
    with session(device) as main, make_progress() as progress, _spec_errors_as_options(ctx), \
            _option_origins(sources):
        result = (train_all_splits if all_splits else train_from_refs)(
            model, d1=d1, d2=d2, extractor=extractor,
            model_options=layered_assignments(ctx, "options", "--option"), split=split,
            history=history, iterations=iterations, epochs=epochs, windows=windows,
            loss_frames=loss_frames, mix=_mix(mix), lr=lr, optimizer=optimizer,
            grad_clip=grad_clip, d2_split=d2_split, eval_every=eval_every,
            checkpoint_every=checkpoint_every, reestimate_batches=reestimate_batches,
            seed=seed, device=device, threads=threads, input_arrangement=input_arrangement,
            prediction=prediction, allow_same_store=allow_same_store, standardize=standardize,
            weight_decay=weight_decay, run_dir=run_dir, sources=sources,
            streams=None if streams is None else tuple(
                n.strip() for n in streams.split(",") if n.strip()),
            delay=delay, progress=progress if main else None, tensorboard=tensorboard,
            sync_bn=sync_bn == "on", **_protocol_fields(ctx, more),
        )
    if not main:
        return  # rank 0 reports (torchrun)
    emit(SplitRuns(result) if all_splits else result, as_json,
         _render_splits if all_splits else _render)
    if not as_json:  # about the trained model, not part of the result: on stderr
        for res in (result if all_splits else [result]):
            for warning in getattr(res, "warnings", ()):
                click.secho(f"warning: {warning}", fg="yellow", err=True)


SPEC_PROBLEMS = "invalid training spec: "


@contextlib.contextmanager
def _option_origins(sources: dict[str, str]):
    """A model option the model does not know (``UnknownOptionError``), that the user did not
    type (a preset's, a config file's, the environment's), is named with where it came from:
    ``unknown option 'peepholes' for model 'gru'`` alone sent users looking for an option
    they never gave."""
    from actrec.errors import ConfigError, UnknownOptionError

    try:
        yield
    except UnknownOptionError as exc:
        origin = sources.get(f"options.{exc.key}") if exc.owner.startswith("model ") else None
        if not origin or origin == "command line":
            raise
        hint = ("the preset is made for another model: pick that model, or drop the option "
                "from a copy of the preset" if origin.startswith("preset") else
                "remove it there")
        raise ConfigError(f"option '{exc.key}' (from the {origin}) is not an option of "
                          f"{exc.owner}: {hint}. {exc}") from None


@contextlib.contextmanager
def _spec_errors_as_options(ctx: click.Context):
    """Name the command's options in the training spec's errors: ``windows: expected ...``
    (the ``TrainSpec`` field, right for Python callers) reads ``--windows: expected ...``."""
    from actrec.errors import ConfigError

    try:
        yield
    except ConfigError as exc:
        text = str(exc)
        if not text.startswith(SPEC_PROBLEMS):
            raise
        flags = {p.name: next((o for o in p.opts if o.startswith("--")), None)
                 for p in ctx.command.params if isinstance(p, click.Option)}

        # Field names inside a sentence too ("needs d2 with pretrain_iters > 0"), where they
        # cannot be English words: those with an underscore or a digit.
        inner = re.compile(r"(?<![\w-])([a-z]+(?:_[a-z0-9]+)+|[a-z]+[0-9]+)(?![\w-])")

        def as_option(problem: str) -> str:
            first = re.match(r"[a-z_0-9]+", problem)
            flag = flags.get(first.group(0)) if first else None
            head, rest = (flag, problem[first.end():]) if flag else ("", problem)
            return head + inner.sub(lambda m: flags.get(m.group(1)) or m.group(1), rest)

        problems = text[len(SPEC_PROBLEMS):].split("; ")
        raise ConfigError(SPEC_PROBLEMS + "; ".join(map(as_option, problems))) from None


class SplitRuns(list):
    """The ``TrainResult`` of each split, as ``--json`` writes them."""

    def to_dict(self) -> list:
        return [r.to_dict() for r in self]


def _render_splits(results):
    from rich.markup import escape
    from rich.table import Table

    # The runs share one folder: it goes in the title, whole (with the command that scores
    # them), so that the names stay whole in an 80-column terminal (full paths were cut "…").
    folder = Path(results[0].run_dir).parent if results else Path(".")
    title = f"one run per split in {folder}"
    if results:
        title += f"; scores: actrec eval {results[0].run_dir} --all-splits"
    table = Table(title=escape(title))  # folders as written: no markup
    for column in ("run", "iterations", "resumed from", "final loss"):
        table.add_column(column, justify="left" if column == "run" else "right",
                         overflow="fold")
    for r in results:
        table.add_row(escape(Path(r.run_dir).name), str(r.iterations), str(r.resumed_from),
                      f"{r.final_loss:.4f}")
    return table


def _render(result):
    """The finished run: its numbers (floats to 4 significant digits: a loss printed as
    0.010000250581651927 reads as noise) and the command that scores it."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    data = result.to_dict()
    table = Table(title=escape(f"run {data.get('run_dir')}"), show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for key, value in data.items():
        if key not in ("run_dir", "warnings"):
            table.add_row(key, f"{value:.4g}" if isinstance(value, float)
                          else escape(str(value)))
    offline = ""
    try:  # a non-causal model is scored offline only (eval's default, online, refuses it)
        from actrec.runs import read_json

        if read_json(Path(data["run_dir"]) / "config.json")["model"]["causal"] is False:
            offline = " --offline"
    except Exception:  # noqa: BLE001 - a hint only: no config, no hint to adjust
        pass
    return Group(table, Text(f"score it: actrec eval {data.get('run_dir')}{offline}",
                             style="dim"))
