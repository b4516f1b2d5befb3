"""The complete third-party dataset and model of docs/plugins.md, taken from the page as it is
(so the page cannot drift from what works), installed as a distribution and run through
`actrec plugins`, `datasets info`, `extract`, `train` and `eval --online` on mp4 videos this
test writes."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
FPS = 10


def doc_files() -> dict[str, str]:
    text = (REPO / "docs" / "plugins.md").read_text()
    blocks = re.findall(r"<!-- plugin-example: (\S+) -->\n```\w+\n(.*?)```", text, re.DOTALL)
    return dict(blocks)


def install(site: Path) -> None:
    files = doc_files()
    assert set(files) == {"actrec_shapes/dataset.py", "actrec_shapes/model.py", "pyproject.toml"}
    for name, body in files.items():
        if name.endswith(".py"):
            (site / name).parent.mkdir(parents=True, exist_ok=True)
            (site / name).write_text(body)
    (site / "actrec_shapes" / "__init__.py").write_text("")
    project = tomllib.loads(files["pyproject.toml"])["project"]
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\n"
                                   f"Version: {project['version']}\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items())
        for group, eps in project["entry-points"].items()))


def write_videos(root: Path) -> dict[str, np.ndarray]:
    """Four videos: a still grey scene (idle), a red disc moving right (circle), a blue square
    moving down (square); 1 s segments. Returns each video's labels at FPS."""
    import cv2

    (root / "videos").mkdir(parents=True)
    plans = {"ann_01": ["idle", "circle", "square", "idle"],
             "ann_02": ["circle", "idle", "square"],
             "bob_01": ["square", "circle", "idle", "circle"],
             "bob_02": ["idle", "square", "circle"]}
    classes = ("idle", "circle", "square")
    labels, rows = {}, []
    for vid, plan in plans.items():
        writer = cv2.VideoWriter(str(root / "videos" / f"{vid}.mp4"),
                                 cv2.VideoWriter_fourcc(*"mp4v"), FPS, (48, 32))
        for i, action in enumerate(plan):
            for k in range(FPS):
                img = np.full((32, 48, 3), 60, np.uint8)
                if action == "circle":
                    cv2.circle(img, (6 + 3 * k, 16), 5, (0, 0, 255), -1)
                elif action == "square":
                    cv2.rectangle(img, (20, 2 + 2 * k), (28, 10 + 2 * k), (255, 0, 0), -1)
                writer.write(img)
            rows.append((vid, float(i), float(i + 1), action))
        writer.release()
        labels[vid] = np.repeat([classes.index(a) for a in plan], FPS)
    with open(root / "labels.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["video", "start_s", "end_s", "label"])
        out.writerows(rows)
    (root / "split.txt").write_text("ann_01 train\nann_02 train\nbob_01 train\nbob_02 test\n")
    return labels


def test_the_documented_plugins_work_end_to_end(tmp_path: Path, monkeypatch):
    from click.testing import CliRunner

    from actrec.cli import cli as actrec_cli

    site = tmp_path / "site"
    install(site)
    monkeypatch.syspath_prepend(str(site))  # as `pip install -e .` would put it on the path
    data = tmp_path / "shapes"
    labels = write_videos(data)
    env = {"ACTREC_HOME": str(tmp_path / "home")}

    def cli(*args: str):
        out = CliRunner().invoke(actrec_cli, list(args), env=env)
        assert out.exit_code == 0, (out.output, out.exception)
        return out

    rows = {r["name"]: r for r in json.loads(cli("plugins", "--json").output)["plugins"]}
    assert rows["shapes"]["status"] == "ok" and rows["shapes"]["dist"] == "actrec-shapes"
    assert rows["shapes"]["options"] == ["root", "fps"]
    assert rows["running-average"]["status"] == "ok"
    assert rows["running-average"]["options"] == ["decay", "hidden"]

    info = json.loads(cli("datasets", "info", "shapes", "--root", str(data), "--json").output)
    every = np.concatenate(list(labels.values()))
    assert info["frames"] == every.size == 140
    assert info["frames_per_class"] == {"idle": int((every == 0).sum()),
                                        "circle": int((every == 1).sum()),
                                        "square": int((every == 2).sum())}
    assert info["background"] == "idle"

    cli("extract", "shapes", "--root", str(data), "--extractor", "colorgrad")
    run = tmp_path / "run"
    cli("train", "running-average", "--d1", "shapes", "--history", "16", "--iterations", "30",
        "--mix", "8:0", "--run-dir", str(run))
    result = json.loads(cli("eval", str(run), "--online", "--json").output)
    scored = result["datasets"]["shapes"]
    assert scored["videos"] == 1 and scored["frames"] == labels["bob_02"].size == 30
    predictions = np.load(run / "eval-online.predictions.npz")
    assert np.array_equal(predictions["y0_0"], labels["bob_02"])
    assert scored["frame_accuracy"] == pytest.approx(
        float((predictions["p0_0"] == labels["bob_02"]).mean()))
