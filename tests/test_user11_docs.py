"""What a new user reads in docs/ and then sees: the guide's own-data note on clips shorter
than the default history (quoted from the real refusal), and docs/reproduce.md's account of
what `--preset tiny` sets over a table's preset file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_own_dataset import run, write_own_dataset

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.slow
def test_the_guides_short_clip_note_quotes_trains_refusal(tmp_path, write_mp4):
    """The own-data videos (54 frames each) are shorter than the default history (128): the
    guide's command refuses, naming the longest training video, as the guide quotes it."""
    write_own_dataset(tmp_path / "mydata", write_mp4)
    assert run(["extract", "mstcn", "--root", "mydata"], tmp_path).returncode == 0
    done = run(["train", "lstm", "--d1", "mstcn:root=mydata", "--iterations", "1",
                "--run-dir", "runs/mine"], tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    message = " ".join(done.stderr.split())
    assert "--history 128 is longer than every training video of D1" in message
    assert re.search(r"the longest, '(alice_1|alice_2|bob_1)', has 54 frames", message), message
    assert not (tmp_path / "runs" / "mine" / "checkpoint.pt").exists()

    guide = " ".join((DOCS / "guide.md").read_text().split())
    assert "`--history 128 is longer than every training video of D1" in guide
    assert "`--history` frames long, 128 by default (8.5 s at 15 fps)" in guide
    assert abs(128 / 15 - 8.5) < 0.05


def test_reproduce_md_names_what_tiny_sets_over_a_preset_file():
    from actrec.reproduce import PRESETS, TINY_ITERATIONS

    tiny = PRESETS["tiny"]
    text = " ".join((DOCS / "reproduce.md").read_text().split())
    assert ("(8 units in 1 layer, history 16, 30 iterations, Adam at lr 0.01, each cell's "
            "batches cut to a sixteenth)") in text
    assert tiny.model_options == {"hidden": "8", "layers": "1"}
    assert tiny.train["history"] == 16 and tiny.train["iterations"] == TINY_ITERATIONS == 30
    assert tiny.train["optimizer"] == "adam" and tiny.train["lr"] == 0.01
    assert tiny.mix_scale == 1 / 16
    # everything else of the training preset (a file's loss-frames, windows, standardize...)
    # is left to the file: tiny sets no more than the doc lists (and its own bookkeeping)
    assert set(tiny.train) == {"history", "iterations", "pretrain_iters", "optimizer", "lr",
                               "boundary_iters", "reestimate_batches"}


def test_readme_layout_names_every_module_of_the_package():
    """README.md's layout is where a newcomer looks for a module: every actrec/*.py is named
    there (``reproduce*.py`` covers the reproduce modules)."""
    readme = (DOCS.parent / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    package = DOCS.parent / "actrec"
    missing = []
    for path in sorted(package.glob("*.py")):
        name = path.name
        if name in ("__init__.py", "__main__.py"):
            continue
        if name.startswith("reproduce") and "actrec/reproduce*.py" in layout:
            continue
        if not re.search(rf"(?<![\w.]){re.escape(name)}\b", layout):
            missing.append(name)
    assert missing == []


def test_the_guides_account_of_runs_dataset_names():
    """docs/guide.md: references of one dataset differing in a few options show only those,
    the rest said once under the table, as `actrec runs` (and `actrec eval`) name them."""
    from actrec.cli.eval_cmd import table_dataset_names

    a = "synthetic:folds=4,frames_mean=40,kitchen=a,participants=4,size=32"
    b = "synthetic:folds=4,frames_mean=40,kitchen=b,participants=4,size=32"
    shown, caption, legend = table_dataset_names([a, b], width=13)
    assert shown == {a: "kitchen=a", b: "kitchen=b"} and legend == []
    assert caption == "each dataset is synthetic:<row>,folds=4,frames_mean=40,participants=4,size=32"
    guide = " ".join((DOCS / "guide.md").read_text().split())
    assert ("differ in a few options show only those (`kitchen=a`, `kitchen=b`), the rest said "
            "once under the table (`each dataset is synthetic:<row>,folds=4,...`)") in guide
