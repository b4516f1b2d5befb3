"""An unknown model option the user did not type is named with where it came from."""

from __future__ import annotations

from click.testing import CliRunner
from test_train_eval import make_store

from actrec.cli import cli


def _said(result) -> str:
    """The error a command stopped with (the CLI's entry point prints it as ``Error: ...``)."""
    return str(result.exception) if result.exception is not None else result.output


def test_a_presets_option_unknown_to_the_model_names_the_preset(tmp_path):
    store = make_store(tmp_path / "a.zarr", dim=6, classes=3, n_train=4, n_test=2, seed=3)
    env = {"ACTREC_HOME": str(tmp_path / "home")}
    base = ["train", "gru", "--d1", str(store), "--iterations", "1", "--history", "16"]
    out = CliRunner().invoke(cli, base + ["--preset", "recassist", "--run-dir",
                                          str(tmp_path / "r1")], env=env)
    assert out.exit_code != 0
    assert ("option 'peepholes' (from the preset recassist) is not an option of model 'gru': "
            "the preset is made for another model") in _said(out)
    typed = CliRunner().invoke(cli, base + ["-o", "peepholes=true", "--run-dir",
                                            str(tmp_path / "r2")], env=env)
    assert _said(typed).startswith("unknown option 'peepholes' for model 'gru'; expected one of:")
    envd = CliRunner().invoke(cli, base + ["--run-dir", str(tmp_path / "r3")],
                              env={**env, "ACTREC_TRAIN_OPTIONS": "peepholes=true"},
                              auto_envvar_prefix="ACTREC")  # as the actrec command reads them
    assert "option 'peepholes' (from the environment) is not an option of model 'gru'" \
        in _said(envd)
