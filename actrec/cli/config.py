"""Option defaults from a TOML file and the environment, validated against the commands.

Config file: one table per command (``[train]``, ``[import.mstcn]``), keys are long option
names. A repeatable ``KEY=VALUE`` option (``--option``, ``--extractor-option``) may be a table,
``[train.options]`` then ``hidden = 8``, or a list of strings, ``options = ["hidden=8"]``.

Environment: ``ACTREC_<COMMAND>_<PARAMETER>``, the option's parameter name upper-cased (the
name `--help` shows next to each option: ``--option`` is ``ACTREC_TRAIN_OPTIONS``; for a
subcommand ``ACTREC_IMPORT_MSTCN_FPS``). A repeatable option takes several values separated
by spaces. A variable with a command's prefix that names none of its options is an error
(``check_environment``), not ignored.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import tomllib

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
            table[pname] = _option_value(value, _param(cmd, pname), path, name, key)
        out[section] = table
    return out


def _param(cmd: click.Command, name: str) -> click.Parameter:
    return next(p for p in cmd.params if p.name == name)


def _option_value(value: Any, param: click.Parameter, path: Path, table: str, key: str) -> Any:
    """``value`` as Click's default for ``param``: a table given for a repeatable
    ``KEY=VALUE`` option becomes its list of ``"key=value"`` strings. A value of the wrong TOML
    type is a ``ConfigError`` naming the file and key: Click would turn ``true`` into 1 and
    ``16.7`` into 16 without a word."""
    if not isinstance(value, dict):
        if isinstance(value, list) and not getattr(param, "multiple", False):
            raise ConfigError(f"{path}: [{table}] '{key}' is a list, but it takes one value")
        for item in value if isinstance(value, list) else [value]:
            _check_scalar(item, param, path, table, key)
        return value
    if not getattr(param, "multiple", False):
        raise ConfigError(f"{path}: [{table}.{key}] is a table, but '{key}' takes one value")
    items = []
    for k, v in value.items():
        if isinstance(v, dict):
            raise ConfigError(f"{path}: [{table}.{key}] '{k}' is a table; expected a value")
        items.append(f"{k}={_text(v)}")
    return items


def _check_scalar(value: Any, param: click.Parameter, path: Path, table: str, key: str) -> None:
    kind = param.type
    where = f"{path}: [{table}] '{key}'"
    if isinstance(kind, (click.types.IntParamType, click.IntRange)):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)) or (
                isinstance(value, float) and not value.is_integer()) or (
                isinstance(value, str) and not _parses(value, int)):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
    elif isinstance(kind, (click.types.FloatParamType, click.FloatRange)):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)) or (
                isinstance(value, str) and not _parses(value, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
    elif isinstance(kind, click.types.BoolParamType):
        if not isinstance(value, (bool, str)):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
    elif isinstance(value, (dict, list)):
        raise ConfigError(f"{where} must be a single value, got {value!r}")


def _parses(text: str, kind: type) -> bool:
    try:
        kind(text.strip())
    except ValueError:
        return False
    return True


def _text(value: Any) -> str:
    """A TOML value as an option string: booleans ``true``/``false``, lists comma-joined."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_text(v) for v in value)
    return str(value)


def check_environment(group: click.Group, ctx: click.Context,
                      environ: Mapping[str, str] | None = None, prefix: str = "ACTREC",
                      only: str | None = None) -> None:
    """``ConfigError`` for a variable ``<prefix>_<COMMAND>_...`` (COMMAND a subcommand of
    ``group``, at any depth) that names none of that command's options, with the closest
    real name. Other ``<prefix>_`` variables (``ACTREC_HOME``, ``ACTREC_DATA_<NAME>``, ...)
    are not options and are left alone. ``only``: check that subcommand's variables alone."""
    environ = os.environ if environ is None else environ
    for name in group.list_commands(ctx):
        if only is not None and name != only:
            continue
        cmd = group.get_command(ctx, name)
        if cmd is not None:
            _check_command(cmd, f"{prefix}_{_upper(name)}", f"actrec {name}", ctx, environ)


def _check_command(cmd: click.Command, prefix: str, label: str, ctx: click.Context,
                   environ: Mapping[str, str]) -> None:
    known = envvar_names(cmd, prefix)
    subs = {}
    if isinstance(cmd, click.Group):
        for sub in cmd.list_commands(ctx):
            subs[f"{prefix}_{_upper(sub)}_"] = sub
    for var in sorted(environ):
        if not var.startswith(prefix + "_") or var in known:
            continue
        sub = next((s for p, s in subs.items() if var.startswith(p)), None)
        if sub is not None:
            continue  # checked against the subcommand below
        close = difflib.get_close_matches(var, sorted(known), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        listed = ", ".join(sorted(known)) or "(none)"
        raise ConfigError(f"environment variable {var} names no option of `{label}`{hint} "
                          f"(its variables: {listed})")
    for sub_prefix, sub in subs.items():
        sub_cmd = cmd.get_command(ctx, sub)  # type: ignore[union-attr]
        if sub_cmd is not None:
            _check_command(sub_cmd, sub_prefix[:-1], f"{label} {sub}", ctx, environ)


def envvar_names(cmd: click.Command, prefix: str) -> set[str]:
    """The environment variables Click reads for ``cmd``'s options under ``prefix``
    (``ACTREC_TRAIN``): each option's own ``envvar``, else ``<prefix>_<PARAMETER NAME>``."""
    names: set[str] = set()
    for p in cmd.params:
        if not isinstance(p, click.Option):
            continue
        if p.envvar:
            names.update([p.envvar] if isinstance(p.envvar, str) else p.envvar)
        elif p.allow_from_autoenv and p.name:
            names.add(f"{prefix}_{p.name.upper()}")
    return names


def show_envvars(cmd: click.Command) -> click.Command:
    """Make ``--help`` of ``cmd`` (and of its subcommands) show each option's environment
    variable, the real name Click reads."""
    for p in cmd.params:
        if isinstance(p, click.Option):
            p.show_envvar = True
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            show_envvars(sub)
    return cmd


def _upper(name: str) -> str:
    return name.upper().replace("-", "_")


PRESET_META = "actrec.preset"  # ctx.meta key: the applied preset (Preset.to_dict() + "keys")


def apply_preset(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Eager callback of a ``--preset NAME|PATH`` option: validate the preset's ``[train]``
    table like a config file's (``ConfigError`` naming the file and key) and lay it over the
    command's defaults, above the ``--config`` file's values and below the environment and
    the command line. Model options (``[train.options]``) merge key by key with the config
    file's. The preset is kept in ``ctx.meta[PRESET_META]``."""
    if value is None:
        return None
    from actrec.presets import load_preset

    preset = load_preset(value)
    root = ctx.find_root()
    name = ctx.info_name or "train"
    table = _validate({name: preset.train}, root.command, root, preset.path,  # type: ignore[arg-type]
                      prefix="")[name]
    table.pop(param.name, None)  # a preset naming a preset: ignored, not recursive
    current = dict(ctx.default_map or {})
    merged = {**current, **table}
    for key, value_ in table.items():
        if isinstance(value_, list) and isinstance(current.get(key), (list, tuple)):
            merged[key] = [*current[key], *value_]  # later KEY=VALUE items win
    ctx.default_map = merged
    ctx.meta[PRESET_META] = {**preset.to_dict(), "keys": sorted(table)}
    return preset.name


def value_sources(ctx: click.Context) -> dict[str, str]:
    """Where each parameter of the running command got its value:
    ``command line``, ``environment``, ``config file``, ``preset NAME`` or ``default``."""
    names = {
        click.core.ParameterSource.COMMANDLINE: "command line",
        click.core.ParameterSource.ENVIRONMENT: "environment",
        click.core.ParameterSource.DEFAULT_MAP: "config file",
        click.core.ParameterSource.DEFAULT: "default",
        click.core.ParameterSource.PROMPT: "prompt",
    }
    preset = ctx.meta.get(PRESET_META) or {}
    out = {}
    for param in ctx.command.params:
        src = ctx.get_parameter_source(param.name)
        out[param.name] = names.get(src, "default") if src is not None else "default"
        if src == click.core.ParameterSource.DEFAULT_MAP and param.name in preset.get("keys", ()):
            out[param.name] = f"preset {preset['name']}"
    return out
