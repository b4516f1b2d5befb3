"""``actrec runs``: a table of the runs in the workspace."""

from __future__ import annotations

from pathlib import Path

import click

from actrec.cli.common import emit, json_option


@click.command("runs")
@click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None,
              help="Folder of run folders (default: the workspace's runs/).")
@json_option
def runs(root, as_json) -> None:
    """List the runs: model, data, protocol, label arrangement, iterations, best validation
    score, and the test scores of every evaluation written so far."""
    from actrec.runs import runs_root, summarize_runs

    rows = summarize_runs(root)
    emit(rows, as_json, render_runs)
    if not rows and not as_json:
        where = root if root is not None else runs_root()
        click.echo(f"no runs in {where}; runs trained with --run-dir elsewhere (the demo's are "
                   "in its cache's demo/runs): pass that folder with --root", err=True)


def render_runs(rows):
    """The runs as a table that reads at 80 columns: run names whole (what `actrec eval RUN`
    takes), long dataset references as ``NAME [k]`` with the whole reference listed under the
    table, each dataset with the streams read and its transfer role, and each evaluation's
    mode above its scores (broken after a hyphen, not inside a word)."""
    from rich import box
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from actrec.cli.eval_cmd import table_dataset_names

    # one dataset name read from several data folders: each named by its folder
    data = [_by_root(row, rows) for row in rows]
    names = list(dict.fromkeys(d for shown in data for d in shown))
    labels, caption, legend = table_dataset_names(names, width=13)
    if caption:  # the options every reference shares, said once below the table
        legend = [caption, *legend]
    # No vertical rules: seven columns of whole words fit 80 columns that way, where boxed
    # they folded every cell ("synthe/tic", "onli/ne:").
    table = Table(title="runs", box=box.SIMPLE_HEAD, show_edge=False, padding=0)
    # The run name is what `actrec eval RUN` takes: kept whole on one line (the other columns
    # fold around it in a narrow terminal).
    longest = max((len(str(row["run"])) for row in rows), default=3)
    table.add_column("run", no_wrap=True, min_width=min(longest, 40))
    for name, width in (("model", 6), ("data", 13), ("protocol", 8), ("iters", 5),
                        ("best val", 7), ("test frame accuracy", 10)):
        table.add_column(name, overflow="fold", min_width=width,
                         justify="right" if name in ("iters", "best val") else "left")
    for row, shown in zip(rows, data):
        run = escape(str(row["run"]))  # as written: a folder name is no markup
        if "problem" in row:
            table.add_row(run, "", "", "", "", "", f"[red]{escape(row['problem'])}[/]")
            continue
        best = "-" if row["best_val"] is None else f"{100 * row['best_val']:.2f} %"
        if row["best_val"] is not None and row["selected_on_test"]:
            best += " [bold red](on TEST)[/]"
        scores = []
        for mode, datasets in row["evaluations"].items():  # datasets in D1, D2, ... order
            scores.append(f"{mode}:")
            scores += [f"D{k + 1} {'-' if v is None else f'{100 * v:.2f} %'}"
                       for k, v in enumerate(datasets.values())]
        table.add_row(run, escape(str(row["model"])), _data_cell(row, shown, labels),
                      f"{row['protocol']}\n{row['labels']}", str(row["iterations"] or 0), best,
                      _Hyphenated(scores or ["-"]))
    return Group(table, *(Text(line, style="dim") for line in legend))


def _by_root(row, rows) -> list[str]:
    """``row``'s dataset names, each that the table shows read from more than one data folder
    given as the reference naming its folder (``mstcn:root=/data/a``; `actrec train` takes
    it), so that two such datasets read apart."""
    folders: dict[str, set] = {}
    for other in rows:
        for name, root in zip(other.get("data") or (), other.get("roots") or ()):
            folders.setdefault(name, set()).add(root)
    return [f"{name}:root={root}" if root and len(folders.get(name, ())) > 1 and ":" not in name
            else name for name, root in zip(row.get("data") or (), row.get("roots") or
                                             [None] * len(row.get("data") or ()))]


def _data_cell(row, data, labels) -> str:
    """The run's datasets, D1 first (as the scores): each with the streams the run read from
    it (``mstcn [motion]``: runs on two streams of one store read apart) and, in a transfer
    run, its role (``(target)``, ``(source)``), as `actrec eval` marks them."""
    from rich.markup import escape

    streams = row.get("streams")
    roles = row.get("roles") or []
    lines = []
    for k, name in enumerate(data):
        text = labels[name] + (f" [{'+'.join(streams)}]" if streams else "")
        if k < len(roles):
            text += f" ({roles[k]})"
        lines.append(escape(text))
    return "\n".join(lines)


class _Hyphenated:
    """Lines that a narrow column breaks at spaces and after a hyphen, folding inside a word
    only when a piece alone is wider than the column: an evaluation's mode
    (``online-features-ahead-unknown:``) reads ``online-features-`` / ``ahead-unknown:``, not
    ``online-featu`` / ``res-ahead-un`` / ``known:``."""

    def __init__(self, lines) -> None:
        self.lines = list(lines)

    def __rich_measure__(self, console, options):
        import re

        from rich.measure import Measurement

        pieces = [len(p) for line in self.lines for p in re.findall(r"[^\s-]*-+|\S+", line)]
        widest = max((len(line) for line in self.lines), default=1)
        return Measurement(min(max(pieces, default=1), widest), widest).clamp(
            max_width=options.max_width)

    def __rich_console__(self, console, options):
        import textwrap

        from rich.text import Text

        width = max(1, options.max_width)
        for line in self.lines:
            for part in textwrap.wrap(line, width, break_on_hyphens=True) or [""]:
                yield Text(part)
