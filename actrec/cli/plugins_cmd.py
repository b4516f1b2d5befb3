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


def _option(name: str, default) -> str:
    """``name=default`` as typed on the command line (``-o hidden=32``); ``name`` alone for
    an option whose default is unset (None)."""
    if default is None:
        return name
    if isinstance(default, bool):
        return f"{name}={str(default).lower()}"
    if isinstance(default, list):
        return f"{name}={','.join(map(str, default))}"
    return f"{name}={default}"


def _render(listing, verbose: bool):
    """One table per kind (datasets, extractors, models): name, distribution, status and the
    options with their defaults as typed (``-o hidden=128``), or the error."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts = []
    for kind in dict.fromkeys(row.kind for row in listing.rows):
        table = Table(title=f"{kind} (actrec plugins)" if not parts else kind)
        for col in ("name", "distribution", "status", "options / error"):
            table.add_column(col, overflow="fold", ratio=3 if col == "options / error" else None)
        for row in listing.rows:
            if row.kind != kind:
                continue
            style = {"ok": "green", "skipped": "dim"}.get(row.status, "red")
            table.add_row(row.name, f"{row.dist} {row.version}", Text(row.status, style=style),
                          row.error or ", ".join(_option(k, (row.defaults or {}).get(k))
                                                 for k in row.options))
        parts.append(table)
    if verbose:
        parts += [Text(f"\n{row.name}:\n{row.details}") for row in listing.rows if row.details]
    return Group(*parts)
