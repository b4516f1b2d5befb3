"""The command line: help everywhere, lazy imports, config files, env vars, error messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from actrec.errors import ConfigError

from actrec.cli import COMMANDS, cli


def all_command_paths() -> list[list[str]]:
    ctx = click.Context(cli)
    paths = []
    for name in COMMANDS:
        cmd = cli.get_command(ctx, name)
        paths.append([name])
        if isinstance(cmd, click.Group):
            paths += [[name, sub] for sub in cmd.list_commands(ctx)]
    return paths


@pytest.mark.parametrize("path", all_command_paths(), ids=lambda p: " ".join(p))
def test_help_of_every_command(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and "--help" in result.output


def test_help_imports_no_heavy_library():
    code = ("import sys, runpy\nsys.argv = ['actrec', '--help']\n"
            "try:\n    runpy.run_module('actrec', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'zarr', 'decord', 'cv2', 'numpy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert "HEAVY []" in out, out
    for sub in all_command_paths():
        code2 = code.replace("['actrec', '--help']", repr(["actrec", *sub, "--help"]))
        out = subprocess.run([sys.executable, "-c", code2], capture_output=True, text=True).stdout
        assert "HEAVY []" in out, (sub, out)


def run(args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "actrec", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=300)


def test_config_file_typo_is_named(tmp_path: Path):
    cfg = tmp_path / "actrec.toml"
    cfg.write_text("[train]\nhistroy = 10\n")
    result = run(["--config", str(cfg), "train", "lstm", "--d1", "x"])
    assert result.returncode != 0
    assert str(cfg) in result.stderr and "unknown option 'histroy' in [train]" in result.stderr
    assert "history" in result.stderr
    cfg.write_text("[trian]\nlr = 1\n")
    result = run(["--config", str(cfg), "plugins"])
    assert result.returncode != 0 and "unknown command table [trian]" in result.stderr
    cfg.write_text("[train\n")
    result = run(["--config", str(cfg), "plugins"])
    assert result.returncode != 0 and "is not valid TOML" in result.stderr


def test_value_sources_are_recorded(tmp_path: Path):
    """Command line > environment > config file > default, and each value says where it came from."""
    from actrec.cli.config import value_sources

    seen = {}

    @click.command()
    @click.option("--a", default=1)
    @click.option("--b", default=2)
    @click.option("--c", default=3)
    @click.option("--d", default=4)
    @click.pass_context
    def probe(ctx, a, b, c, d):
        seen.update(values=(a, b, c, d), sources=value_sources(ctx))

    result = CliRunner().invoke(probe, ["--a", "10"], auto_envvar_prefix="ACTREC",
                                default_map={"b": 20, "c": 30}, env={"ACTREC_C": "300"})
    assert result.exit_code == 0, result.output
    assert seen["values"] == (10, 20, 300, 4)
    assert seen["sources"] == {"a": "command line", "b": "config file", "c": "environment",
                               "d": "default"}


def test_unknown_plugin_and_bad_option_exit_nonzero_with_message():
    result = run(["train", "nosuchmodel", "--d1", "x"])
    assert result.returncode == 1
    assert "unknown model 'nosuchmodel'" in result.stderr and "Traceback" not in result.stderr
    result = run(["train", "lstm", "--d1", "x", "--mix", "a:b"])
    assert result.returncode == 2 and "expected N1:N2" in result.stderr
    result = run(["extract", "synthetic", "-o", "nokey"])
    assert result.returncode == 1 and "--option expects KEY=VALUE" in result.stderr


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not (SHARED / "50salads").is_dir(), reason="shared/data not present")
def test_datasets_info_on_real_50_salads():
    import json

    result = run(["datasets", "info", "salads", "--root", str(SHARED / "50salads"), "--json"])
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["videos"], data["frames"], data["classes"]) == (50, 577595, 19)
    table = run(["datasets", "info", "salads", "--root", str(SHARED / "50salads")])
    assert "577595" in table.stdout and "frames per class" in table.stdout


def test_missing_dataset_root_is_named(tmp_path: Path):
    result = run(["datasets", "info", "breakfast", "--root", str(tmp_path / "nope")])
    assert result.returncode == 1
    assert str(tmp_path / "nope") in result.stderr and "Traceback" not in result.stderr


def test_info_reports_versions_and_why_the_reference_is_used():
    import json

    result = run(["info", "--json"], env={"ACTREC_DISABLE_EXT": "1"})
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["versions"]["actrec"] and data["versions"]["torch"]
    assert data["ddbn_backend"] == {"active": False, "backend": "reference",
                                    "reason": "ACTREC_DISABLE_EXT is set", "compiled_with": {}}


def _mstcn_layout(root: Path) -> Path:
    """A tiny MS-TCN layout folder: classes bg, a; two videos; one split."""
    (root / "groundTruth").mkdir(parents=True)
    (root / "splits").mkdir()
    (root / "mapping.txt").write_text("0 bg\n1 a\n")
    (root / "groundTruth" / "v1.txt").write_text("bg\na\na\n")
    (root / "groundTruth" / "v2.txt").write_text("a\nbg\n")
    (root / "splits" / "train.split1.bundle").write_text("v1.txt\n")
    (root / "splits" / "test.split1.bundle").write_text("v2.txt\n")
    return root


def test_plugin_options_in_a_config_file_as_a_table_or_a_list(tmp_path: Path):
    from actrec.cli.config import load_config

    root = _mstcn_layout(tmp_path / "data")
    cfg = tmp_path / "actrec.toml"
    for text in ('[datasets.info.options]\nbackground = "bg"\n',  # a table, as users write
                 '[datasets.info]\noption = ["background=bg"]\n'):  # the list syntax
        cfg.write_text(text)
        result = run(["--config", str(cfg), "datasets", "info", "mstcn", "--root", str(root),
                      "--json"])
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["background"] == "bg"
    # Values of every TOML type become option strings; a nested table is refused by name.
    cfg.write_text("[train.options]\nhidden = 8\ndropout = 0.5\nbidirectional = true\n"
                   'sizes = [1, 2]\nname = "x"\n')
    defaults = load_config(cfg, cli, click.Context(cli))
    assert defaults == {"train": {"options": ["hidden=8", "dropout=0.5", "bidirectional=true",
                                              "sizes=1,2", "name=x"]}}
    cfg.write_text("[train.options.hidden]\nx = 1\n")
    with pytest.raises(ConfigError, match=r"actrec\.toml: \[train\.options\] 'hidden' is a "
                       r"table"):
        load_config(cfg, cli, click.Context(cli))
    cfg.write_text("[train.lr]\nx = 1\n")
    with pytest.raises(ConfigError, match=r"\[train\.lr\] is a table, but 'lr' takes one"):
        load_config(cfg, cli, click.Context(cli))


def test_documented_environment_variable_names_are_the_real_ones(tmp_path: Path):
    """ACTREC_<COMMAND>_<PARAMETER>: the repeatable --option is ACTREC_..._OPTIONS (values
    separated by spaces), and --help shows each option's variable."""
    from actrec.cli.config import show_envvars

    root = _mstcn_layout(tmp_path / "data")
    result = run(["datasets", "info", "mstcn", "--root", str(root), "--json"],
                 env={"ACTREC_DATASETS_INFO_OPTIONS": "background=bg length_policy=error"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["background"] == "bg"
    ctx = click.Context(cli)
    train = show_envvars(cli.get_command(ctx, "train"))
    help_text = CliRunner().invoke(cli, ["train", "--help"], auto_envvar_prefix="ACTREC").output
    assert train.params and "ACTREC_TRAIN_OPTIONS" in help_text
    assert "ACTREC_TRAIN_HISTORY" in help_text and "ACTREC_TRAIN_OPTION]" not in help_text
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "ACTREC_TRAIN_OPTIONS" in readme and "ACTREC_<COMMAND>_<OPTION>" not in readme


def test_an_environment_variable_naming_no_option_is_an_error():
    from actrec.cli.config import check_environment

    ctx = click.Context(cli)
    fine = {"ACTREC_TRAIN_OPTIONS": "hidden=8", "ACTREC_TRAIN_HISTORY": "64",
            "ACTREC_IMPORT_MSTCN_FPS": "15", "ACTREC_DATASETS_INFO_ROOT": "/d",
            "ACTREC_HOME": "/h", "ACTREC_DATA_GTEA": "/g", "ACTREC_CONFIG": "a.toml",
            "ACTREC_PLUGINS": "x", "ACTREC_DISABLE_EXT": "1", "OTHER_TRAIN_X": "1"}
    check_environment(cli, ctx, fine)
    with pytest.raises(ConfigError, match=r"environment variable ACTREC_TRAIN_OPTION names no "
                       r"option of `actrec train`; did you mean ACTREC_TRAIN_OPTIONS\?"):
        check_environment(cli, ctx, {**fine, "ACTREC_TRAIN_OPTION": "hidden=8"})
    with pytest.raises(ConfigError, match=r"ACTREC_IMPORT_MSTCN_FSP names no option of "
                       r"`actrec import mstcn`; did you mean ACTREC_IMPORT_MSTCN_FPS\?"):
        check_environment(cli, ctx, {"ACTREC_IMPORT_MSTCN_FSP": "15"})
    with pytest.raises(ConfigError, match=r"ACTREC_IMPORT_NOSUCH_X names no option of "
                       r"`actrec import`"):
        check_environment(cli, ctx, {"ACTREC_IMPORT_NOSUCH_X": "1"})


def test_the_command_line_reports_a_misspelt_variable_and_shows_the_real_names():
    wrong = run(["train", "lstm", "--d1", "x.zarr"], env={"ACTREC_TRAIN_OPTION": "hidden=8"})
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    assert "ACTREC_TRAIN_OPTION names no option of `actrec train`; did you mean " \
           "ACTREC_TRAIN_OPTIONS?" in wrong.stderr
    # A stray variable of `train` does not break another command.
    other = run(["plugins", "--json"], env={"ACTREC_TRAIN_OPTION": "hidden=8"})
    assert other.returncode == 0, other.stderr
    right = run(["plugins", "--json"], env={"ACTREC_TRAIN_OPTIONS": "hidden=8"})
    assert right.returncode == 0, right.stderr
    shown = run(["train", "--help"])
    assert "env var: ACTREC_TRAIN_OPTIONS]" in shown.stdout
    assert "ACTREC_<COMMAND>_<OPTION>" not in run(["--help"]).stdout


def test_python_m_and_the_console_script_see_the_same_plugins(tmp_path):
    """A distribution lying in the current folder is not imported by ``python -m actrec``,
    just as the console script ignores it."""
    import shutil

    (tmp_path / "cwd_plugin-1.0.dist-info").mkdir()
    (tmp_path / "cwd_plugin-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: cwd-plugin\nVersion: 1.0\n")
    (tmp_path / "cwd_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        "[actrec.models]\ncwdmodel = cwd_plugin:Model\n")
    (tmp_path / "cwd_plugin.py").write_text(
        "open(__file__ + '.imported', 'w').close()\nraise RuntimeError('imported from cwd')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    outputs = []
    script = shutil.which("actrec")
    for argv in ([sys.executable, "-m", "actrec", "plugins"], [script, "plugins"]):
        proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, env=env,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout)
    assert "cwdmodel" not in outputs[0] and "cwdmodel" not in outputs[1]
    assert not (tmp_path / "cwd_plugin.py.imported").exists()


@pytest.mark.parametrize("value, message", [
    ("true", r"'history' must be an integer, got True"),
    ("16.7", r"'history' must be an integer, got 16.7"),
    ("[16, 32]", r"'history' is a list, but it takes one value"),
    ('"abc"', r"'history' must be an integer, got 'abc'"),
])
def test_config_values_of_the_wrong_type_are_named_not_converted(tmp_path, value, message):
    """Click alone would train with history 1 for `true` and 16 for `16.7`."""
    from actrec.cli.config import load_config

    cfg = tmp_path / "actrec.toml"
    cfg.write_text(f"[train]\nhistory = {value}\nlr = 0.5\n")
    with pytest.raises(ConfigError, match=message):
        load_config(cfg, cli, click.Context(cli))
    cfg.write_text("[train]\nhistory = 16.0\nlr = 1\nallow-same-store = true\n")
    assert load_config(cfg, cli, click.Context(cli))["train"]["history"] == 16.0
    cfg.write_text("[train]\nlr = true\n")
    with pytest.raises(ConfigError, match=r"'lr' must be a number, got True"):
        load_config(cfg, cli, click.Context(cli))


def test_json_output_is_strict_json_with_null_for_nan():
    from actrec.cli.common import emit

    class Result:
        def to_dict(self):
            return {"accuracy": float("nan"), "per_class": {"a": 1.0, "b": float("inf")}}

    runner = CliRunner()

    @click.command()
    def show():
        emit(Result(), True, lambda r: "")

    out = runner.invoke(show, [])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output, parse_constant=lambda c: pytest.fail(f"non-JSON {c}")) == {
        "accuracy": None, "per_class": {"a": 1.0, "b": None}}


def test_json_mode_reports_a_user_error_as_json_on_stdout(tmp_path: Path):
    result = run(["eval", str(tmp_path / "no-such-run"), "--json"])
    assert result.returncode == 1
    payload = json.loads(result.stdout)
    assert payload["error"]["type"] == "DataError"
    assert "no-such-run" in payload["error"]["message"]
    assert "no-such-run" in result.stderr  # people reading stderr still see it
    plain = run(["eval", str(tmp_path / "no-such-run")])
    assert plain.returncode == 1 and plain.stdout == ""
    # under torchrun each process fails the same way; only rank 0 writes the JSON document
    other_rank = run(["eval", str(tmp_path / "no-such-run"), "--json"], env={"RANK": "1"})
    assert other_rank.returncode == 1 and other_rank.stdout == "" and "no-such-run" in other_rank.stderr


def test_info_names_the_decoder_whichever_distribution_installed_it():
    pytest.importorskip("decord")  # decord 0.6 or the decord2 fork: both install `decord`
    from actrec.system_info import versions

    assert versions()["decord"] != "not installed"


def test_an_empty_runs_listing_says_where_it_looked_and_how_to_look_elsewhere(tmp_path: Path):
    result = run(["runs", "--root", str(tmp_path)])
    assert result.returncode == 0
    assert f"no runs in {tmp_path}" in result.stderr and "--root" in result.stderr


def test_config_after_the_command_says_where_it_goes(capsys):
    from actrec.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["train", "lstm", "--config", "c.toml"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert ("No such option '--config'. --config is actrec's own option: it goes before the "
            "command (actrec --config FILE train ...).") in err
    with pytest.raises(SystemExit):
        main(["train", "lstm", "--configx", "c.toml"])
    assert "actrec's own option" not in capsys.readouterr().err  # other unknown options as before


def test_check_sweep_says_the_age_limit_as_given():
    """--older-than 30m captioned "0.5 h", 90s "0.025 h": the limit reads as the user wrote it."""
    from actrec.cli.check_cmd import _duration

    assert [_duration(s) for s in (2 * 86400, 43200, 1800, 90, 5400, 0)] == \
        ["2d", "12h", "30m", "90s", "90m", "0s"]
