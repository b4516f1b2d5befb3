"""`actrec reproduce` leftovers: without a terminal its stderr is in the order things ran (the
tiny kitchens' extraction before the units, no bars printed at the end), and a copied table
can name a preset file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_reproduce import breakfast_table

from actrec.errors import ConfigError
from actrec.paper_tables import load_table

ROOT = Path(__file__).resolve().parents[1]

CNN_ONLY = breakfast_table(
    "cnn-only", "the frame classifier of one split",
    '[methods.cnn]\nkind = "frame-classifier"\n\n',
    '[[columns]]\nlabel = "CNN"\nmethod = "cnn"\n\n'
    '[[rows]]\nlabels = ["0"]\nsplit = 0\npaper = [22.0]\n')


def _reproduce(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "actrec", "reproduce", *args], env=env,
                          capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
def test_without_a_terminal_stderr_is_chronological(tmp_path):
    table = tmp_path / "cnn-only.toml"
    table.write_text(CNN_ONLY)
    root = tmp_path / "root"
    done = _reproduce(str(table), "--preset", "tiny", "--root", str(root))
    assert done.returncode == 0, done.stderr[-3000:]
    store, = (root / "reproduce" / "tiny" / "features").glob("synthetic-kitchen-a-*.zarr")
    head = r"head-breakfast-[0-9a-f]{8}-softmax-split1"
    expected = [
        (rf"Breakfast is played by synthetic:kitchen=a: 8 video\(s\) extracted in [0-9.]+ s "
         rf"\({re.escape(str(store))}\)"),
        rf"started 1/2: head {head}", rf"finished 1/2: {head} done in [0-9.]+ s",
        r"started 2/2: frame classifier classifier-breakfast-split1",
        r"finished 2/2: classifier-breakfast-split1 done in [0-9.]+ s"]
    lines = done.stderr.splitlines()
    assert len(lines) == len(expected), done.stderr  # no bar printed at the end
    assert all(re.fullmatch(e, line) for e, line in zip(expected, lines)), done.stderr

    again = _reproduce(str(table), "--preset", "tiny", "--root", str(root))
    assert again.returncode == 0, again.stderr[-3000:]
    expected[0] = (rf"Breakfast is played by synthetic:kitchen=a: 8 video\(s\) already "
                   rf"extracted \({re.escape(str(store))}\)")
    expected = [e.replace(" done in", " skipped in") for e in expected]
    lines = again.stderr.splitlines()
    assert len(lines) == len(expected), again.stderr
    assert all(re.fullmatch(e, line) for e, line in zip(expected, lines)), again.stderr


def _table_with_preset(folder: Path, preset: str) -> Path:
    path = folder / "mine.toml"
    path.write_text(CNN_ONLY.replace('preset = "recassist"', f'preset = "{preset}"'))
    return path


def test_a_table_names_a_preset_file_beside_it_or_absolute(tmp_path):
    from actrec.presets import PRESET_DIR

    (tmp_path / "presets").mkdir()
    fast = tmp_path / "presets" / "fast.toml"
    fast.write_text((PRESET_DIR / "recassist.toml").read_text().replace(
        "peepholes = true", "peepholes = false"))
    table = load_table(_table_with_preset(tmp_path, "presets/fast.toml"))
    assert table.preset == str(fast)  # relative to the table's folder, not the cwd
    assert load_table(_table_with_preset(tmp_path, str(fast))).preset == str(fast)
    assert load_table(_table_with_preset(tmp_path, "recassist")).preset == "recassist"

    from actrec.reproduce import _preset_fields

    fields, options = _preset_fields(table.preset)
    assert options == {"hidden": "128", "layers": "1", "peepholes": "False"}
    assert fields["history"] == 300 and fields["mix"] == (80, 48)


def test_a_missing_preset_file_is_named_with_the_table_and_the_key(tmp_path):
    path = _table_with_preset(tmp_path, "presets/nowhere.toml")
    with pytest.raises(ConfigError) as err:
        load_table(path)
    assert str(err.value) == (
        f"paper table {path}: preset: no preset file {tmp_path / 'presets' / 'nowhere.toml'} "
        f"(a path is read relative to the table's folder); or a shipped preset: ddlstm, "
        f"miniroad, recassist, sign")
    with pytest.raises(ConfigError, match=r"paper table .*mine.toml: preset: expected a "
                                          r"shipped preset \(ddlstm, miniroad, recassist, "
                                          r"sign\) or a \.toml file, got 'recasist'"):
        load_table(_table_with_preset(tmp_path, "recasist"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    with pytest.raises(ConfigError, match=rf"paper table {path}: preset: preset file {bad} "
                                          r"is not valid TOML"):
        load_table(_table_with_preset(tmp_path, str(bad)))


@pytest.mark.slow
def test_a_tables_preset_file_trains_its_cells(tmp_path):
    from actrec.presets import PRESET_DIR
    from actrec.reproduce import reproduce

    fast = tmp_path / "fast.toml"
    fast.write_text((PRESET_DIR / "recassist.toml").read_text().replace(
        "peepholes = true", "peepholes = false"))
    path = tmp_path / "lstm.toml"
    path.write_text(breakfast_table(
        "lstm-fast", "an LSTM of a copied preset",
        '[methods.lstm]\nkind = "train"\nmodel = "lstm"\nprotocol = "single"\n\n',
        '[[columns]]\nlabel = "LSTM"\nmethod = "lstm"\n\n'
        '[[rows]]\nlabels = ["0"]\nsplit = 0\npaper = [30.0]\n').replace(
        'preset = "recassist"', 'preset = "fast.toml"'))
    out = reproduce(path, tmp_path / "root", preset="tiny")
    assert out["complete"] and out["training_preset"] == str(fast)
    run, = (tmp_path / "root" / "reproduce" / "tiny" / "lstm-fast" / "runs").iterdir()
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["config"]["peepholes"] is False  # the copy's, not recassist's
    assert config["spec"]["history"] == 16 and config["model"]["config"]["hidden"] == 8  # tiny


@pytest.mark.slow
def test_tiny_bn_cells_evaluate_with_reestimated_statistics(tmp_path):
    """30 iterations leave 4 % of the start (variance 1) in the running variances, far above
    the batches' own: the tiny preset re-estimates them, so a BNLSTM cell is scored with its
    weights' statistics, as the papers' 50,000-iteration runs are."""
    from actrec.reproduce import reproduce
    from actrec.runs import load_checkpoint

    path = tmp_path / "bn.toml"
    path.write_text(breakfast_table(
        "bn-tiny", "a BNLSTM cell",
        '[methods.bn]\nkind = "train"\nmodel = "bnlstm"\nprotocol = "single"\n\n',
        '[[columns]]\nlabel = "BNLSTM"\nmethod = "bn"\n\n'
        '[[rows]]\nlabels = ["0"]\nsplit = 0\npaper = [30.0]\n').replace(
        'preset = "recassist"', 'preset = "ddlstm"'))  # recassist's peepholes are lstm's
    out = reproduce(path, tmp_path / "root", preset="tiny")
    assert out["complete"], out["failures"]
    assert any(n.startswith("tiny: each trained cell re-estimates its batch-norm statistics "
                            "over 20 batches") for n in out["notes"])
    run, = (tmp_path / "root" / "reproduce" / "tiny" / "bn-tiny" / "runs").iterdir()
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["spec"]["reestimate_batches"] == 20 and ckpt["iteration"] == 30
    # bn_h normalises W_h h_{t-1}; at t = 0 every window's h_{-1} is 0, so the batches'
    # variance there is 0: momentum averages leave 0.9^30 of the start (1) there, re-estimated
    # statistics hold the 0 measured.
    var_h = ckpt["model"]["rnn.layers.0.bn_h.running_var"]  # [T, 4 * hidden]
    assert var_h.shape == (16, 32) and float(var_h[0].abs().max()) == 0.0
