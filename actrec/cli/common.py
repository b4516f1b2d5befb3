"""Helpers shared by the commands: option parsing, output (stdout) and progress (stderr)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import click

from actrec.errors import ConfigError

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def parse_assignments(pairs: Iterable[str], flag: str) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``; ``ConfigError`` naming ``flag`` otherwise."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def layered_assignments(ctx: click.Context, name: str, flag: str) -> dict[str, str]:
    """The ``KEY=VALUE`` option ``name`` merged key by key across its sources: the config
    file's values, then the environment's, then the command line's, each overriding the
    previous ones only for the keys it names (Click alone would let ``-o hidden=20`` drop
    every option the config file set)."""
    from click.core import ParameterSource

    param = next(p for p in ctx.command.params if p.name == name)
    given = ctx.params.get(name) or ()
    source = ctx.get_parameter_source(name)
    layers: list[Iterable[str]] = [ctx.lookup_default(name) or ()]
    from_env = param.value_from_envvar(ctx)  # split into values for a repeatable option
    if from_env:
        layers.append(from_env)
    if source == ParameterSource.COMMANDLINE:
        layers.append(given)
    out: dict[str, str] = {}
    for layer in layers:
        if isinstance(layer, str):
            layer = [layer]
        out.update(parse_assignments(layer, flag))
    return out


def layered_sources(ctx: click.Context, name: str, flag: str) -> dict[str, str]:
    """For the ``KEY=VALUE`` option ``name``, where each key's value came from, as
    ``layered_assignments`` merges them (the last layer naming a key wins): ``command line``,
    ``environment``, ``preset NAME`` or ``config file``."""
    from click.core import ParameterSource

    from actrec.cli.config import PRESET_META

    param = next(p for p in ctx.command.params if p.name == name)
    preset = ctx.meta.get(PRESET_META) or {}
    from_preset = (preset.get("values") or {}).get(name) or ()
    preset_keys = set(from_preset) if isinstance(from_preset, Mapping) else set(
        parse_assignments([from_preset] if isinstance(from_preset, str) else from_preset, flag))
    out: dict[str, str] = {}
    defaults = ctx.lookup_default(name) or ()
    for key in parse_assignments([defaults] if isinstance(defaults, str) else defaults, flag):
        out[key] = f"preset {preset['name']}" if key in preset_keys else "config file"
    from_env = param.value_from_envvar(ctx)
    for key in parse_assignments([from_env] if isinstance(from_env, str) else from_env or (),
                                 flag):
        out[key] = "environment"
    if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
        for key in parse_assignments(ctx.params.get(name) or (), flag):
            out[key] = "command line"
    return out


def stdout_console():
    from rich.console import Console

    return Console(file=sys.stdout, soft_wrap=True)


def stderr_console():
    from rich.console import Console

    return Console(file=sys.stderr)


LOG_EVERY_S = 30.0  # without a terminal: a line per bar that has run this long, this often


def make_progress():
    """A rich progress display on stderr (results stay alone on stdout). Without a terminal
    (a batch job, ``2> log``) rich draws no bar until the end: there, a bar that has run for
    ``LOG_EVERY_S`` seconds writes a line (``videos: 120/1,712 (7 %), 0:05:12``) every
    ``LOG_EVERY_S`` seconds and one when it completes, so long work shows that it moves."""
    import time

    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    from rich.text import Text

    class _Progress(Progress):
        def update(self, task_id, **kwargs) -> None:  # type: ignore[override]
            super().update(task_id, **kwargs)
            self._log_line(task_id)

        def advance(self, task_id, advance: float = 1) -> None:
            super().advance(task_id, advance)
            self._log_line(task_id)

        def _log_line(self, task_id) -> None:
            if self.console.is_terminal or self.disable:
                return
            task = self._tasks.get(task_id)
            if task is None or task.start_time is None:
                return
            now = self.get_time()
            last = self.__dict__.setdefault("_logged", {}).get(task_id)  # inf: completed
            done = task.total is not None and task.completed >= task.total
            due = now - (task.start_time if last is None else last) >= LOG_EVERY_S
            if last == float("inf") or not (due or (done and last is not None)):
                return
            self._logged[task_id] = float("inf") if done else now
            total = f"/{task.total:,.0f} ({100 * task.completed / task.total:.0f} %)" \
                if task.total else ""
            elapsed = time.strftime("%H:%M:%S", time.gmtime(now - task.start_time))
            self.console.print(Text(f"{Text.from_markup(str(task.description)).plain}: "
                                    f"{task.completed:,.0f}{total}, {elapsed}"),
                               highlight=False, soft_wrap=True)

        def __exit__(self, exc_type, exc, tb) -> None:
            if exc_type is not None and not self.console.is_terminal:
                # a command that failed: its error says what happened; the bars' last state
                # printed above it ("videos 0/9") was noise in the log
                self._failed = True
            super().__exit__(exc_type, exc, tb)

        def stop(self) -> None:
            if getattr(self, "_failed", False) and not self.disable:
                self.live.transient = True
                self.live.stop()
                return
            # Without a terminal the bars are printed once, at the end, and rich adds an empty
            # line: with no bar left that line alone went to stderr (before the "Error: ..."
            # of every command that failed)
            if self.console.is_terminal or any(t.visible for t in self.tasks):
                super().stop()
            elif not self.disable:
                self.live.transient = True
                self.live.stop()

    return _Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr_console(),
        transient=False,
    )


def emit(data: Any, as_json: bool, render: Callable[[Any], Any]) -> None:
    """Print ``data`` as JSON (``data.to_dict()`` when it has one) or as ``render(data)``."""
    if as_json:
        from actrec.runs import json_safe

        payload = data.to_dict() if hasattr(data, "to_dict") else data
        # Strict JSON for machines: NaN (e.g. the accuracy of a class with no frame) is null.
        click.echo(json.dumps(json_safe(payload), indent=2, default=str, allow_nan=False))
    else:
        stdout_console().print(render(data))


def dataset_labels(names: Iterable[str], width: int = 16) -> tuple[dict[str, str], list[str]]:
    """Labels for dataset references in a narrow table column, each on one line: a name up to
    ``width`` characters is itself; a longer one (``synthetic:kitchen=a,participants=3,...``,
    which a column folded into a dozen unreadable lines) is its dataset name with a key,
    ``synthetic [1]``, and the legend line ``[1] synthetic:kitchen=a,...`` gives it whole.
    Returns ``(name -> label, legend lines)``; the same name always gets the same key."""
    shown: dict[str, str] = {}
    legend: list[str] = []
    for name in dict.fromkeys(names):
        if len(name) <= width:
            shown[name] = name
            continue
        base = name.partition(":")[0]
        if len(base) > width - 4:
            base = base[:width - 5] + "…"
        shown[name] = f"{base} [{len(legend) + 1}]"
        legend.append(f"[{len(legend) + 1}] {name}")
    return shown, legend
