"""A user's own videos and labels, as docs/guide.md ("Your own videos and labels") describes
them: the documented layout read by the `mstcn` dataset, and the guide's commands run as
written on real mp4 files (only the iteration count is cut)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide.md"
CLASSES = ["background", "red_right", "blue_down"]


def run(args, cwd: Path, home: Path | None = None):
    env = {**os.environ, "ACTREC_HOME": str(home or cwd / "home")}
    return subprocess.run([sys.executable, "-m", "actrec", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600, check=False)


def _clip(labels: list[int], seed: int) -> np.ndarray:
    """RGB frames [T, 32, 32, 3]: grey for background, a red square moving right for class 1,
    a blue square moving down for class 2."""
    rng = np.random.default_rng(seed)
    frames = np.full((len(labels), 32, 32, 3), 90, np.uint8)
    for t, c in enumerate(labels):
        p = 2 + (t * 3) % 20
        if c == 1:
            frames[t, 12:20, p:p + 8] = (230, 20, 20)
        elif c == 2:
            frames[t, p:p + 8, 12:20] = (20, 20, 230)
    noise = rng.integers(-6, 7, frames.shape)
    return np.clip(frames.astype(int) + noise, 0, 255).astype(np.uint8)


def write_own_dataset(root: Path, write_mp4, with_splits: bool = True) -> dict[str, list[int]]:
    """The guide's layout: mapping.txt, groundTruth/<video>.txt, splits/*.bundle, <video>.mp4;
    four videos of two participants (``alice_...``, ``bob_...``), 15 fps."""
    (root / "groundTruth").mkdir(parents=True)
    (root / "mapping.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(CLASSES)))
    videos = {}
    for k, name in enumerate(["alice_1", "alice_2", "bob_1", "bob_2"]):
        labels = [0] * 10 + [1 + k % 2] * 20 + [0] * 8 + [2 - k % 2] * 16
        videos[name] = labels
        write_mp4(root / f"{name}.mp4", _clip(labels, k))
        (root / "groundTruth" / f"{name}.txt").write_text(
            "".join(CLASSES[c] + "\n" for c in labels))
    if with_splits:
        add_splits(root)
    return videos


def add_splits(root: Path) -> None:
    (root / "splits").mkdir()
    (root / "splits" / "train.split1.bundle").write_text("alice_1.txt\nalice_2.txt\nbob_1.txt\n")
    (root / "splits" / "test.split1.bundle").write_text("bob_2.txt\n")


def guide_commands() -> list[list[str]]:
    """The commands of the guide's own-data block, comments dropped."""
    text = GUIDE.read_text()
    block = re.search(r"<!-- own-data-commands -->\n```bash\n(.*?)```", text, re.DOTALL)
    assert block, "docs/guide.md lost its <!-- own-data-commands --> block"
    return [shlex.split(line, comments=True) for line in block.group(1).splitlines()
            if line.strip()]


def test_the_guide_documents_the_layout_the_mstcn_dataset_reads():
    text = GUIDE.read_text()
    section = text[text.index("## Your own videos and labels"):]
    section = section[:section.index("\n## ", 3)]
    for path in ("mydata/mapping.txt", "mydata/groundTruth/<video>.txt",
                 "mydata/splits/train.split1.bundle", "mydata/splits/test.split1.bundle",
                 "mydata/<video>.mp4"):
        assert path in section


def test_datasets_info_reads_the_documented_layout(tmp_path, write_mp4):
    videos = write_own_dataset(tmp_path / "mydata", write_mp4)
    info = run(["datasets", "info", "mstcn", "--root", "mydata", "--json"], tmp_path)
    assert info.returncode == 0, info.stderr
    got = json.loads(info.stdout)
    assert got["videos"] == 4 and got["frames"] == sum(map(len, videos.values()))
    assert list(got["frames_per_class"]) == CLASSES and got["background"] == "background"
    assert got["frames_per_class"]["blue_down"] == 2 * 20 + 2 * 16
    assert got["participants"] == 2 and got["video_files"] == 4 and got["missing_videos"] == {}
    assert got["splits"] == {"1": {"train": 3, "test": 1, "train_frames": 162,
                                   "test_frames": 54}}


@pytest.mark.slow
def test_the_guides_own_data_commands_run_as_written(tmp_path, write_mp4):
    """Every command of the guide's block, in order, on a dataset in the documented layout:
    datasets info, extract --workers 2, train, eval --online, plot, live."""
    write_own_dataset(tmp_path / "mydata", write_mp4)
    commands = guide_commands()
    assert [c[:2] for c in commands] == [["actrec", "datasets"], ["actrec", "extract"],
                                         ["actrec", "train"], ["actrec", "eval"],
                                         ["actrec", "runs"], ["actrec", "plot"],
                                         ["actrec", "live"]]
    for command in commands:
        args = command[1:]
        if args[0] == "train":
            args[args.index("--iterations") + 1] = "6"
            args += ["--history", "16", "--mix", "4", "-o", "hidden=8"]
        if args[0] == "live":
            args[-1] = "mydata/bob_2.mp4"  # the guide's new_video.mp4: a video of our own
        done = run(args, tmp_path)
        assert done.returncode == 0, (command, done.stderr)
        assert "Traceback" not in done.stderr
        if args[0] == "runs":
            # the run, and its online score of D1 (mode and datasets on lines of their own)
            assert "mine" in done.stdout and "online:" in done.stdout
            assert re.search(r"D1 \d+\.\d\d %", done.stdout), done.stdout
    assert (tmp_path / "runs" / "mine" / "plots" / "timeline-online.png").stat().st_size > 0
    lines = [json.loads(x) for x in done.stdout.splitlines()]
    frames = [x for x in lines if "frame" in x and "event" not in x]
    assert len(frames) == 54 and {f["label"] for f in frames} <= set(CLASSES)


@pytest.mark.slow
def test_a_store_without_splits_says_how_to_add_them(tmp_path, write_mp4):
    """A dataset without splits/ extracts, but training says what to add; after adding the
    bundles, `actrec extract` again records them (extracting nothing) and training runs."""
    write_own_dataset(tmp_path / "mydata", write_mp4, with_splits=False)
    assert run(["extract", "mstcn", "--root", "mydata"], tmp_path).returncode == 0
    train = ["train", "lstm", "--d1", "mstcn", "--iterations", "1", "--history", "8",
             "--mix", "2", "-o", "hidden=4", "--run-dir", "runs/r"]
    refused = run(train, tmp_path)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "records no splits" in refused.stderr
    assert "splits/train.split1.bundle" in refused.stderr
    assert "run `actrec extract` again" in refused.stderr
    add_splits(tmp_path / "mydata")
    again = run(["extract", "mstcn", "--root", "mydata", "--json"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["written"] == []
    trained = run(train, tmp_path)
    assert trained.returncode == 0, trained.stderr


@pytest.mark.slow
def test_a_reference_matching_no_store_or_several_says_which_root_and_options(
        tmp_path, write_mp4, monkeypatch):
    """Stores of one dataset from two data folders, and one extracted with `-o fps=14`: the
    errors of `--d1 mstcn` name each store's root and options, and say how to choose."""
    from actrec.errors import ConfigError, DataError
    from actrec.refs import existing_store

    write_own_dataset(tmp_path / "mydata", write_mp4)
    write_own_dataset(tmp_path / "other", write_mp4)
    for args in (["--root", "mydata"], ["--root", "other"]):
        done = run(["extract", "mstcn", *args], tmp_path)
        assert done.returncode == 0, done.stderr
    monkeypatch.setenv("ACTREC_HOME", str(tmp_path / "home"))
    with pytest.raises(ConfigError) as several:
        existing_store("mstcn")
    message = str(several.value)
    assert f"(root {tmp_path / 'mydata'})" in message and f"(root {tmp_path / 'other'})" in message
    assert "mstcn:root=DIR" in message
    assert existing_store(f"mstcn:root={tmp_path / 'other'}").parent.name.startswith("mstcn@")

    home = tmp_path / "home2"  # only a store made with another fps
    monkeypatch.setenv("ACTREC_HOME", str(home))
    done = run(["extract", "mstcn", "--root", "mydata", "-o", "fps=14"], tmp_path, home)
    assert done.returncode == 0, done.stderr
    (store,) = home.glob("features/*/colorgrad.zarr")
    with pytest.raises(DataError) as other:
        existing_store("mstcn")
    message = str(other.value)
    assert "made with other dataset options" in message
    assert f"{store} (root {tmp_path / 'mydata'}, fps=14.0)" in message
    assert existing_store("mstcn:fps=14") == store


def test_the_readmes_layout_names_every_module_and_benchmark():
    """A new user finds each top-level module of actrec/ in the README's layout, and every
    benchmark `python -m actrec.bench` has (it named neither `live` nor the live modules)."""
    import fnmatch

    from actrec.bench.__main__ import BENCHMARKS

    text = (GUIDE.parents[1] / "README.md").read_text()
    block = text[text.index("## Layout"):]
    block = block[block.index("```") + 3:]
    block = block[:block.index("```")]
    named = set(re.findall(r"([\w*]+)\.py", block))
    modules = sorted(p.stem for p in (GUIDE.parents[1] / "actrec").glob("*.py")
                     if not p.stem.startswith("__"))
    assert [m for m in modules if not any(fnmatch.fnmatch(m, n) for n in named)] == []
    assert "python -m actrec.bench {" + ",".join(BENCHMARKS) + "}" in block


def test_the_guides_segment_snippet_writes_labels_the_dataset_reads(tmp_path, write_mp4,
                                                                   monkeypatch):
    """The guide's segments -> groundTruth/<video>.npy snippet, run as written: the frames
    between the segments are unlabelled (-1), the others carry the segments' classes."""
    write_own_dataset(tmp_path / "mydata", write_mp4)
    text = GUIDE.read_text()
    snippet = re.search(r"<!-- own-data-segments -->\n```python\n(.*?)```", text, re.DOTALL)
    assert snippet, "docs/guide.md lost its <!-- own-data-segments --> block"
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet.group(1), "guide.md", "exec"), {})  # noqa: S102 - the guide's code
    labels = np.load(tmp_path / "mydata" / "groundTruth" / "kitchen_01.npy")
    assert labels.tolist() == [0] * 38 + [-1] * 7 + [1] * 48 + [-1] * 27  # 2.5 s = 37.5 -> 38
    write_mp4(tmp_path / "mydata" / "kitchen_01.mp4", _clip([0] * 120, 9))
    info = run(["datasets", "info", "mstcn", "--root", "mydata", "--json"], tmp_path)
    assert info.returncode == 0, info.stderr
    got = json.loads(info.stdout)
    assert got["videos"] == 5 and got["unlabelled_frames"] == 34
