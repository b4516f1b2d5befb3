"""``actrec export``: the exported online step, loaded with torch alone in a fresh process,
gives the Recognizer's probabilities on a real synthetic-kitchen video (past the DDLSTM's
per-timestep statistics), and bad requests are refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # two tiny trainings

KITCHEN = {"participants": "3", "videos_per_participant": "1", "frames_mean": "40",
           "size": "32"}

# Runs the loader snippet the export writes, in a process that never imports actrec.
_LOAD = """
import json, sys
import numpy as np, torch
x_all = np.load(sys.argv[2])
code = json.loads(open(sys.argv[3]).read())["loader"]
head, tail = code.split("probs, *state = step(x, *state)")
env = {}
exec(head, env)
rows = []
for row in x_all:
    env["x"] = torch.from_numpy(row)[None]
    exec("probs, *state = step(x, *state)", env)
    rows.append(env["probs"][0].detach().numpy())
np.save(sys.argv[4], np.stack(rows))
assert not [m for m in sys.modules if m.split(".")[0] in ("actrec", "actrec_plugins")]
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from actrec.pipeline import extract_dataset, train_from_refs

    root = tmp_path_factory.mktemp("export")
    store = root / "a.zarr"
    extract_dataset("synthetic:kitchen=a", dataset_options={**KITCHEN, "root": str(root / "d")},
                    out=store)
    out = {}
    for model, options in (("ddlstm", {"hidden": "8", "layers": "2"}), ("lstm", {"hidden": "8"})):
        out[model] = train_from_refs(model, d1=str(store), model_options=options,
                                     run_dir=root / model, history=16, iterations=10,
                                     mix=(4, 0), optimizer="adam", lr=0.01).run_dir
    return store, out


@pytest.mark.parametrize("model", ["ddlstm", "lstm"])
def test_exported_step_equals_the_recognizer(runs, model, tmp_path):
    from actrec import Recognizer
    from actrec.export import export_run
    from actrec.io.features import FeatureStore
    from actrec.live_sources import open_source
    from actrec.ops.ddbn import extension_ops
    from actrec.recognizer import ExtractorFeed, build_extractor

    store, run_dirs = runs
    out = tmp_path / f"{model}.pt2"
    extension_ops()  # where the compiled DDBN op loads, the traced step holds it: replaced
    report = export_run(run_dirs[model], out)
    meta = report["meta"]
    assert json.loads(Path(report["metadata"]).read_text()) == meta
    rec = Recognizer.from_run(run_dirs[model], top_k=99)
    assert meta["classes"] == list(rec.classes) and meta["fps"] == rec.fps
    assert meta["extractor"] == "colorgrad" and meta["feature_dtypes"] == ["float16"]
    assert meta["delay"] == rec.delay == 0  # a run trained with --delay K records K
    spec = rec.run.features[0]
    feed = ExtractorFeed(build_extractor(spec, "test", 1), spec.dim, "test")
    s = FeatureStore.open(store)
    video = max((s.video_attrs(v)["source"]["path"] for v in s.videos()),
                key=lambda p: open_source(p, 15.0).num_frames)
    rows, expected = [], []
    for _, frame in open_source(video, rec.fps).frames():
        rows.append(feed.push(frame))
        top = dict(rec.push(frame).top)
        expected.append([top[c] for c in rec.classes])
    assert len(rows) > 16 + 8  # past the 16 per-timestep statistics the DDLSTM trained
    np.save(tmp_path / "x.npy", np.stack(rows))
    done = subprocess.run([sys.executable, "-c", _LOAD, str(out), str(tmp_path / "x.npy"),
                           report["metadata"], str(tmp_path / "p.npy")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), np.array(expected), rtol=0,
                               atol=1e-5)


def test_export_refuses_what_it_cannot_write(runs, tmp_path):
    from actrec.errors import ConfigError
    from actrec.export import export_run

    _, run_dirs = runs
    with pytest.raises(ConfigError, match="must be a .pt2 file"):
        export_run(run_dirs["lstm"], tmp_path / "step.onnx")
    (tmp_path / "taken.json").write_text("{}")
    with pytest.raises(ConfigError, match="taken.json exists"):
        export_run(run_dirs["lstm"], tmp_path / "taken.pt2")
    assert (tmp_path / "taken.json").read_text() == "{}" and not (tmp_path / "taken.pt2").exists()
