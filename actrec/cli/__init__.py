"""The ``actrec`` command line: a lazy Click group.

Each subcommand lives in its own module, imported only when that command runs (or when help
text is needed); command modules import only click at top level, so ``actrec --help`` stays
free of torch, zarr and decord.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import click

from actrec import __version__
from actrec.errors import ActrecError

# command name -> "module:attribute" under actrec.cli
COMMANDS = {
    "plugins": "plugins_cmd:plugins",
    "info": "info_cmd:info",
    "datasets": "datasets_cmd:datasets",
    "extract": "extract_cmd:extract",
    "import": "import_cmd:import_",
    "train": "train_cmd:train",
    "eval": "eval_cmd:eval_",
    "runs": "runs_cmd:runs",
    "fuse": "fuse_cmd:fuse",
    "plot": "plot_cmd:plot",
    "demo": "demo_cmd:demo",
    "check": "check_cmd:check",
    "reproduce": "reproduce_cmd:reproduce",
    "live": "live_cmd:live",
    "export": "export_cmd:export",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        from actrec.cli.config import show_envvars

        module, _, attr = target.partition(":")
        return show_envvars(getattr(importlib.import_module(f"actrec.cli.{module}"), attr))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="actrec")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="ACTREC_CONFIG",
    help="TOML file of option defaults, one table per command ([train], [extract], ...).",
)
@click.pass_context
def cli(ctx: click.Context, config_file: Path | None) -> None:
    """Online action recognition: extract per-frame features, train temporal models, evaluate
    them frame by frame as a live system would.

    Options come, in order of precedence, from the command line, ACTREC_<COMMAND>_<PARAMETER>
    environment variables (the names each command's --help shows), the --config file, and the
    defaults; every run records which. A variable that names no option is an error.
    """
    from actrec.cli.config import check_environment, load_config

    # Variables of the command being run are checked (a stray variable of another command
    # must not break this one); only then is the command imported.
    name = ctx.invoked_subcommand
    if name in COMMANDS and any(k.startswith(f"ACTREC_{name.upper()}_") for k in os.environ):
        check_environment(cli, ctx, only=name)
    ctx.obj = {"config_file": config_file}
    if config_file is not None:
        ctx.default_map = load_config(config_file, cli, ctx)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors become one message and a non-zero exit."""
    try:
        cli.main(args=argv, prog_name="actrec", auto_envvar_prefix="ACTREC", standalone_mode=False)
    except click.exceptions.Abort as exc:  # Click's form of Ctrl-C
        from actrec.errors import Interrupted

        cause = exc.__cause__
        # Work that resumes says what it kept and how to go on (actrec.errors.Interrupted).
        click.echo(f"Interrupted: {cause}" if isinstance(cause, Interrupted) else "Aborted.",
                   err=True)
        sys.exit(130)
    except click.exceptions.NoSuchOption as exc:
        sub = exc.ctx.info_name if exc.ctx is not None and exc.ctx.parent is not None else None
        if exc.option_name == "--config" and sub:  # the group's option, given after a command
            exc.message += (f" --config is actrec's own option: it goes before the command "
                            f"(actrec --config FILE {sub} ...).")
        exc.show()
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ActrecError as exc:
        # under torchrun every process fails: only the first writes the JSON (stdout stays one document)
        if "--json" in (sys.argv[1:] if argv is None else argv) and os.environ.get("RANK", "0") == "0":
            # a machine asked for JSON: it gets the error as JSON too (stdout), besides stderr
            click.echo(json.dumps({"error": {"type": type(exc).__name__, "message": str(exc)}}))
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:  # a path that is a file, a folder we may not write: no traceback
        where = f": {exc.filename}" if exc.filename else ""
        click.echo(f"Error: {exc.strerror or exc}{where}", err=True)
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted; finished work is kept and resumes on the next run.", err=True)
        sys.exit(130)
