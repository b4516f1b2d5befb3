"""``actrec eval``: frame accuracy of a trained run, online (frame by frame) or offline."""

from __future__ import annotations

import math

import click

from actrec.cli.common import emit, json_option, make_progress
from actrec.cli.storage import apply_storage_options, run_stores, storage_option


@click.command("eval")
@click.argument("run", required=False)
@click.option("--online", is_flag=True,
              help="Each test video frame by frame with the state carried, as a live system "
              "sees it (the default, except for a run trained with --delay K, which is scored "
              "at its delay).")
@click.option("--offline", is_flag=True,
              help="Whole videos at once (allows non-causal models).")
@click.option("--lookahead", default=None, metavar="K|half-history",
              help="Online with a delay: frame t is answered by the step that has seen frame "
              "t+K (the last K frames by flushing with the last frame repeated). "
              "'half-history' is the run's history // 2, the DDLSTM paper's look-ahead. "
              "0 is --online. Recorded; each K has its own results file.")
@click.option("--split", default=None, help="Split to evaluate (default: the run's).")
@click.option("--allow-noncausal-features", is_flag=True,
              help="Evaluate online even though the features look at future frames (recorded).")
@click.option("--segment-background", type=click.Choice(["exclude", "include"]),
              default="exclude", show_default=True,
              help="Leave each dataset's background classes out of the edit score and F1 "
              "(as MS-TCN's evaluation does), or keep them. Recorded with the result.")
@click.option("--allow-train-overlap", is_flag=True,
              help="Evaluate a split whose test videos the run trained on (recorded).")
@click.option("--all-splits", is_flag=True,
              help="Evaluate every run of RUN's split sweep (the runs beside it trained like it "
              "on another split) and report each metric per split with its mean and sample "
              "standard deviation; splits of the store without a run are named.")
@click.option("--store", "stores", multiple=True, metavar="PATH|URL",
              help="Evaluate on this feature store instead of the one the run recorded "
              "(repeatable: one per dataset, D1 first), e.g. a store that was moved or renamed; "
              "a store of the same data is checked against what the run trained on.")
@storage_option
@json_option
def eval_(run, online, offline, lookahead, split, allow_noncausal_features, segment_background,
          allow_train_overlap, all_splits, stores, storage_options, as_json) -> None:
    """Evaluate RUN (a run directory, or a run name in the workspace; default: the latest
    run). Each setting's result is kept in its own file in the run folder."""
    from actrec.evaluate import evaluate_run
    from actrec.runs import latest_run, resolve_run

    given = [name for name, on in (("--online", online), ("--offline", offline),
                                   ("--lookahead", lookahead is not None)) if on]
    if len(given) > 1:  # each names another setting: never let one silently win
        raise click.UsageError(f"{' and '.join(given)} name different settings; give one")
    if online:
        lookahead = 0  # explicitly no delay (a run trained with --delay refuses it)
    online = not offline

    run_dir = resolve_run(run) if run else latest_run()
    if storage_options:
        apply_storage_options(storage_options, run_stores(run_dir),
                              f"the stores run {run_dir} was trained on, e.g.")
    if all_splits:
        if stores:
            raise click.UsageError("--all-splits evaluates each run on its own stores; "
                                   "drop --store")
        if split is not None:
            raise click.UsageError("--all-splits evaluates each run on its own split; "
                                   "drop --split")
        from actrec.sweep import evaluate_splits

        with make_progress() as progress:
            summary = evaluate_splits(run_dir, online=online, progress=progress,
                                      allow_noncausal_features=allow_noncausal_features,
                                      segment_background=segment_background,
                                      allow_train_overlap=allow_train_overlap,
                                      lookahead=lookahead)
        emit(summary, as_json, render_splits)
        return
    with make_progress() as progress:
        result = evaluate_run(run_dir, online=online, split=split, progress=progress,
                              stores=tuple(stores) or None, verify_stores=True,
                              allow_noncausal_features=allow_noncausal_features,
                              segment_background=segment_background,
                              allow_train_overlap=allow_train_overlap,
                              lookahead=lookahead)
    emit(result, as_json, render_eval)


def render_eval(result):
    """The per-dataset score table of an evaluation (also used by ``actrec demo``): which run,
    in which mode, frame accuracies and MS-TCN's segment scores."""
    from rich.markup import escape
    from rich.table import Table

    data = result.to_dict()
    mode = data.get("protocol", {}).get("mode") or ("online" if data.get("online", True)
                                                     else "offline")
    protocol = data.get("protocol", {})
    note = ""
    if protocol.get("selected_on_test"):
        note = " [bold red](checkpoint selected on the TEST split)[/]"
    elif (protocol.get("selected") or {}).get("select") == "best-val":
        note = f" (checkpoint of iteration {protocol.get('iteration')}, best on validation)"
    if protocol.get("lookahead"):
        mode = f"look-ahead ({protocol.get('lookahead_rule') or protocol['lookahead']})"
        if not protocol.get("trained_delay"):
            note += (" [yellow](this run was trained to answer at once, not "
                     f"{protocol['lookahead']} frame(s) late: train with --delay "
                     f"{protocol['lookahead']} to score a look-ahead model)[/]")
    names, caption, legend = table_dataset_names(list(data["datasets"]))
    roles = protocol.get("roles") or {}
    if roles:  # a transfer run: the score it is for is the target's
        note += " (transfer run: fine-tuned on the target, pre-trained on the source)"
    # the run's folder as written (no markup), the notes styled
    table = Table(title=f"{mode} evaluation of {escape(str(data.get('run_dir')))}{note}")
    table.add_column("dataset", overflow="fold")
    table.add_column("videos", justify="right")
    table.add_column("frames", justify="right")
    table.add_column("frame accuracy", justify="right")
    table.add_column("mean video accuracy", justify="right")
    table.add_column("edit", justify="right")
    table.add_column("F1@10/25/50", justify="right", min_width=11)
    for name, ds in data["datasets"].items():
        # no labelled test frame: no segment was scored, so no F1 (not 0.00)
        f1 = (ds.get("f1") or {}) if ds.get("frames") else {}
        shown = f"{names[name]}\n({roles[name]})" if name in roles else names[name]
        table.add_row(escape(shown), str(ds["videos"]), str(ds["frames"]),
                      pct(ds["frame_accuracy"]), pct(ds["mean_video_accuracy"]),
                      pct(ds.get("edit")),
                      " / ".join(pct(f1.get(k), unit="") for k in ("10", "25", "50")))
    from rich.console import Group
    from rich.text import Text

    # Below the table, not its caption: a caption is cut to the table's width.
    parts = [table] + [Text(line, style="dim") for line in ([caption] if caption else [])
                       + legend]
    latency = data.get("latency") or {}
    if latency:
        parts.append(render_latency(latency))  # the same rows, named as above
    return Group(*parts)


def table_dataset_names(names: list[str], width: int = 16
                        ) -> tuple[dict[str, str], str | None, list[str]]:
    """Row names of the evaluation tables: ``short_dataset_names``, then any still longer
    than ``width`` as ``NAME [k]`` (``actrec.cli.common.dataset_labels``). Returns ``(name ->
    shown, caption or None, legend lines giving each keyed name whole)``."""
    from actrec.cli.common import dataset_labels

    short, caption = short_dataset_names(names)
    keyed, legend = dataset_labels([n for n in names if len(short[n]) > width], width=width)
    return {n: keyed.get(n, short[n]) for n in names}, caption, legend


def short_dataset_names(names: list[str]) -> tuple[dict[str, str], str | None]:
    """Names for table rows that stay apart at 80 columns: with several datasets, the dataset
    name and ``key=value`` options every one of them shares are left out of each
    (``synthetic:folds=4,kitchen=a`` and ``synthetic:folds=4,kitchen=b`` read ``kitchen=a``
    and ``kitchen=b``). Returns ``(name -> shown, caption)``, the caption giving the whole
    reference (``each dataset is synthetic:<row>,folds=4``); a single dataset, or names
    that are not ``NAME:key=value,...`` references, are shown whole (caption None)."""
    whole = ({n: n for n in names}, None)
    parsed = {}
    for name in names:
        base, _, rest = name.partition(":")
        pairs = rest.split(",") if rest else []
        if not all("=" in p for p in pairs):
            return whole
        parsed[name] = (base, pairs)
    if len(names) < 2:
        return whole
    shared = [p for p in parsed[names[0]][1] if all(p in parsed[n][1] for n in names)]
    one_base = len({base for base, _ in parsed.values()}) == 1
    shown = {}
    for name, (base, pairs) in parsed.items():
        kept = ",".join(p for p in pairs if p not in shared)
        shown[name] = (kept or base) if one_base else (f"{base}:{kept}" if kept else base)
    if not shared and not one_base or len(set(shown.values())) < len(shown):
        return whole
    if one_base:
        caption = f"each dataset is {parsed[names[0]][0]}:" + ",".join(["<row>", *shared])
    else:
        caption = f"every dataset also has {','.join(shared)}"
    if all(shown[n] == n for n in names):
        return whole
    return shown, caption


def render_splits(summary):
    """Per dataset a table of a split sweep (``actrec.sweep.summarize_splits``): one row per
    metric, a column per split (``missing`` where no run covers a split of the store), then
    mean ± sample std; below it, which run scored each split (names kept whole: they are what
    ``actrec eval RUN`` takes)."""
    from pathlib import Path

    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table

    from actrec.sweep import split_order

    missing = summary["missing"]
    splits = sorted([*summary["splits"], *missing], key=split_order)
    tables = []
    for name, entry in summary["datasets"].items():
        # A dataset scored on one split in every run (D2 of a sweep with --d2-split): its
        # columns are the runs, named by D1's split ("1, 1" read as two splits of its own).
        own = [entry["splits"].get(s) for s in splits if s not in missing]
        fixed = len(set(own)) < len(own)
        # a transfer sweep: which dataset the runs are for (``roles``, where the summary
        # carries the runs' protocol.roles)
        role = (summary.get("roles") or {}).get(name)
        shown = escape(f"{name} ({role})" if role else name)  # a reference as written
        title = (f"{summary['mode']} evaluation of {shown}, its split "
                 f"{', '.join(sorted(set(map(str, own))))} in every run, by D1's split (%)"
                 if fixed else f"{summary['mode']} evaluation over the splits of {shown} (%)")
        if missing:
            title += (f" [bold red](INCOMPLETE: no run for split {', '.join(missing)}; "
                      f"the mean is over {len(summary['splits'])} split(s) only)[/]")
        if summary.get("lookahead_without_delay"):
            title += (" [yellow](the runs of split "
                      f"{', '.join(summary['lookahead_without_delay'])} were trained to answer "
                      "at once, not late: train with --delay K to score a look-ahead model)[/]")
        # Metrics as rows, splits as columns: a paper's 4-5 splits fit an 80-column terminal,
        # where a column per metric (7 of them) folded every cell.
        table = Table(title=title, caption="± sample standard deviation (ddof=1)")
        table.add_column("metric \\ D1 split" if fixed else "metric \\ split", overflow="fold")
        for split in splits:
            label = str(split if fixed else entry["splits"].get(split, split))
            table.add_column(f"[bold red]{label} missing[/]" if split in missing else label,
                             justify="right")
        table.add_column(f"mean ± std ({len(summary['splits'])})", justify="right", no_wrap=True)
        for key, stats in entry["metrics"].items():
            table.add_row(key.replace("_", " "),
                          *("-" if split in missing else pct(stats["per_split"].get(split), "")
                            for split in splits),
                          _mean_std(stats, ""))
        tables.append(table)
    runs = Table(title="runs")
    runs.add_column("split")
    runs.add_column("run", no_wrap=True)
    for split in splits:
        runs.add_row(escape(str(split)), "[bold red]missing[/]" if split in missing
                     else escape(Path(summary["runs"][split]).name))
    return Group(*tables, runs)


def _mean_std(stats, unit: str = " %") -> str:
    if stats.get("mean") is None:
        return "-"
    std = stats.get("std")
    return pct(stats["mean"], unit) + ("" if std is None else f" ± {100 * std:.2f}")


def render_latency(latency):
    """The latency table of an online or look-ahead evaluation (``actrec.latency``): per
    dataset the step time of one stream (median, p99), the frames per second one stream gets
    alone and each of the batched streams gets, and the look-ahead's delay."""
    from rich.table import Table

    names, _, _ = table_dataset_names(list(latency))  # the keys of the table above
    table = Table(title="latency of the model's step")
    # the longest word of a name: "synthetic [1]" may wrap at its space, never inside a word
    width = max((len(w) for n in names.values() for w in n.split()), default=7)
    for column in ("dataset", "median ms", "p99 ms", "fps (1 stream)", "streams",
                   "fps per stream", "delay frames", "device"):
        # names whole where they fit beside the numbers (up to 12 columns at 80)
        table.add_column(column, justify="left" if column == "dataset" else "right",
                         overflow="fold", min_width=min(width, 12) if column == "dataset"
                         else None)
    for name, entry in latency.items():
        if not entry:
            table.add_row(names[name], *["-"] * 7)
            continue
        batched = entry.get("throughput") or {}
        table.add_row(names[name], f"{entry['step_ms']['median']:.3f}",
                      f"{entry['step_ms']['p99']:.3f}",
                      f"{entry['frames_per_second_per_stream']:.0f}",
                      str(batched.get("streams", "-")),
                      f"{batched.get('frames_per_second_per_stream', float('nan')):.0f}",
                      str(entry.get("delay_frames", 0)), str(entry.get("device", "")))
    return table


def pct(value, unit: str = " %") -> str:
    """A fraction as a percentage; ``-`` where there is none (NaN, no frames)."""
    if value is None or math.isnan(value):
        return "-"
    return f"{100 * value:.2f}{unit}"
