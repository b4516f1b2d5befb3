"""Snippets of docs/guide.md run as a new user copies them: the export loader (torch alone)
gives, frame by frame over a stored test video, the classes `actrec eval --online` saved."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # one tiny training, an export

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide.md"
KITCHEN = {"participants": "3", "videos_per_participant": "1", "frames_mean": "40",
           "size": "32"}
STEP_LINE = "probs, *state = step(x, *state)"


def _loader_snippet() -> str:
    """The guide's python block that loads ``step.pt2`` (after "Loading needs torch alone")."""
    text = GUIDE.read_text()
    found = re.search(r"Loading needs torch alone:\n\n```python\n(.*?)```", text, re.DOTALL)
    assert found, "docs/guide.md lost the export loader snippet ('Loading needs torch alone:')"
    return found.group(1)


def test_the_guides_export_loader_gives_the_online_evaluations_classes(tmp_path, monkeypatch):
    import torch

    from actrec.evaluate import evaluate_run
    from actrec.export import export_run
    from actrec.io.features import FeatureStore
    from actrec.pipeline import extract_dataset, train_from_refs

    store = tmp_path / "a.zarr"
    extract_dataset("synthetic:kitchen=a",
                    dataset_options={**KITCHEN, "root": str(tmp_path / "d")}, out=store)
    # a DDLSTM: its step counter is the snippet's "int" state (past the trained history too)
    run = train_from_refs("ddlstm", d1=str(store), model_options={"hidden": "8", "layers": "2"},
                          run_dir=tmp_path / "run", history=8, iterations=10, mix=(4, 0),
                          optimizer="adam", lr=0.01).run_dir
    evaluate_run(run, online=True)
    saved = np.load(run / "eval-online.predictions.npz")
    header = saved["header"].tobytes().decode()
    ids = re.search(r'"ids": \[(.*?)\]', header).group(1).replace('"', "").split(", ")
    video, expected = ids[0], saved["p0_0"]

    monkeypatch.chdir(tmp_path)  # the snippet loads "step.pt2" from the working directory
    export_run(run, Path("step.pt2"))
    snippet = _loader_snippet()
    assert snippet.count(STEP_LINE) == 1, snippet
    head, tail = snippet.split(STEP_LINE)
    env: dict = {}
    exec(head, env)  # noqa: S102 - the guide's code: imports, load, metadata, start state
    rows, _ = FeatureStore.open(store).read(video)
    assert len(rows) == len(expected) > 8  # past the 8 per-timestep slots trained
    got, labels = [], []
    for row in rows:
        env["x"] = torch.from_numpy(np.asarray(row, dtype=np.float32))[None]
        exec(STEP_LINE + tail, env)  # noqa: S102 - the step, then the label line as written
        got.append(int(env["probs"][0].argmax()))
        labels.append(env["label"])
    np.testing.assert_array_equal(np.array(got), expected)
    assert labels == [env["meta"]["classes"][i] for i in expected]
