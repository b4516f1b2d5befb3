"""``actrec info``: versions, and which DDBN backend is active and why."""

from __future__ import annotations

import click

from actrec.cli.common import emit, json_option


@click.command()
@json_option
def info(as_json: bool) -> None:
    """Show versions of actrec and its libraries, and the active DDBN backend."""
    from actrec.system_info import system_info

    emit(system_info(), as_json, _render)


def _render(data: dict):
    from rich.table import Table

    table = Table(title="actrec info", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for key, value in data["versions"].items():
        table.add_row(key, str(value))
    ext = data["ddbn_backend"]
    table.add_row("DDBN backend", f"{ext['backend']} ({ext['reason']})")
    for key, value in ext.get("compiled_with", {}).items():
        table.add_row(f"  extension {key}", str(value))
    table.add_row("workspace", data["workspace"])
    return table
