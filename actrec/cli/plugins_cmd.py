"""``actrec plugins``: every registered plugin, loaded and validated, broken ones with their error."""

from __future__ import annotations

import click

from actrec.cli.common import emit, json_option


@click.command()
@json_option
@click.option("--verbose", "-v", is_flag=True, help="Show the full traceback of broken plugins.")
def plugins(as_json: bool, verbose: bool) -> None:
    """List dataset, extractor and model plugins and whether they load."""
    from actrec.plugin_listing import list_plugins

    listing = list_plugins()
    emit(listing, as_json, lambda d: _render(d, verbose))


def _render(listing, verbose: bool):
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title="actrec plugins")
    for col in ("kind", "name", "distribution", "status", "options / error"):
        table.add_column(col)
    for row in listing.rows:
        style = {"ok": "green", "skipped": "dim"}.get(row.status, "red")
        table.add_row(row.kind, row.name, f"{row.dist} {row.version}", Text(row.status, style=style),
                      row.error or ", ".join(row.options))
    parts = [table]
    if verbose:
        parts += [Text(f"\n{row.name}:\n{row.details}") for row in listing.rows if row.details]
    return Group(*parts)
