"""Option defaults from a TOML file, validated against the commands they name."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import click

from actrec.errors import ConfigError


def load_config(path: Path, group: click.Group, ctx: click.Context) -> dict[str, Any]:
    """Read ``path`` into a Click ``default_map``: ``{command: {option: value}}``.

    Every table must name a command and every key one of its options (``-`` or ``_``);
    a typo is a ``ConfigError`` naming the file, the table and the key.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return _validate(data, group, ctx, path, prefix="")


def _validate(data: dict[str, Any], group: click.Group, ctx: click.Context, path: Path,
              prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for section, values in data.items():
        name = f"{prefix}{section}"
        cmd = group.get_command(ctx, section)
        if cmd is None:
            known = ", ".join(group.list_commands(ctx))
            raise ConfigError(f"{path}: unknown command table [{name}]; expected one of: {known}")
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: [{name}] must be a table of options")
        if isinstance(cmd, click.Group):
            out[section] = _validate(values, cmd, ctx, path, prefix=f"{name}.")
            continue
        # A key may be the option's long flag without dashes ("run-dir") or its parameter name.
        params: dict[str, str] = {}
        for p in cmd.params:
            if isinstance(p, click.Option) and p.name != "as_json":
                params[p.name] = p.name
                for opt in p.opts:
                    if opt.startswith("--"):
                        params[opt[2:].replace("-", "_")] = p.name
        table: dict[str, Any] = {}
        for key, value in values.items():
            pname = params.get(key.replace("-", "_"))
            if pname is None:
                flags = sorted({f"{o[2:]}" for p in cmd.params if isinstance(p, click.Option)
                                and p.name != "as_json" for o in p.opts if o.startswith("--")})
                raise ConfigError(
                    f"{path}: unknown option '{key}' in [{name}]; expected one of: "
                    f"{', '.join(flags)}"
                )
            table[pname] = value
        out[section] = table
    return out


def value_sources(ctx: click.Context) -> dict[str, str]:
    """Where each parameter of the running command got its value:
    ``command line``, ``environment``, ``config file`` or ``default``."""
    names = {
        click.core.ParameterSource.COMMANDLINE: "command line",
        click.core.ParameterSource.ENVIRONMENT: "environment",
        click.core.ParameterSource.DEFAULT_MAP: "config file",
        click.core.ParameterSource.DEFAULT: "default",
        click.core.ParameterSource.PROMPT: "prompt",
    }
    out = {}
    for param in ctx.command.params:
        src = ctx.get_parameter_source(param.name)
        out[param.name] = names.get(src, "default") if src is not None else "default"
    return out
