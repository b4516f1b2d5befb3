"""`actrec extract ... --extractor cnn --head softmax` end to end on the synthetic kitchen,
with a small exported backbone: softmax features for every video from a classifier trained on
split 1's training videos, then `actrec train` on them (the issue's acceptance, small)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from actrec.io.features import FeatureStore

from test_backbones import small_resnet

TINY = "synthetic:participants=3,videos_per_participant=1,frames_mean=40,size=32"


def run(args, home):
    env = {**os.environ, "ACTREC_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "actrec", *args], capture_output=True,
                          text=True, env=env, timeout=600)


@pytest.mark.slow
def test_extract_cnn_head_softmax_then_train(tmp_path):
    model = small_resnet(seed=2)
    program = torch.export.export(model, (torch.randn(2, 3, 32, 32),), dynamic_shapes=(
        {0: torch.export.Dim("batch", min=1, max=4096)},))
    torch.export.save(program, tmp_path / "backbone.pt2")
    args = ["extract", TINY, "--split", "1", "--root", str(tmp_path / "data"),
            "--extractor", "cnn", "-x", f"model={tmp_path / 'backbone.pt2'}", "-x", "resize=32",
            "-x", "crop=32", "--head", "softmax", "--head-option", "epochs=5", "--json"]
    done = run(args, tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    backbone = FeatureStore.open(report["store"])
    head = report["head"]
    assert head["trained"] and head["split"] == "1" and head["output"] == "softmax"
    store = FeatureStore.open(head["store"])
    assert store.path.name == "cnn-softmax-split1.zarr" and store.path.parent == backbone.path.parent
    split = backbone.splits["1"]
    recorded = store.attrs["extractor_config"]
    assert recorded["train_videos"] == split["train"] and head["train_videos"] == 2
    assert store.splits == {"1": split}  # the other splits tested this head's training videos
    assert recorded["backbone_config"]["sha256"] == backbone.attrs["extractor_config"]["sha256"]
    assert store.videos() == backbone.videos() == sorted(split["train"] + split["test"])
    for vid in store.videos():
        probs, labels = store.read(vid)
        assert probs.shape == (backbone.num_frames(vid), len(store.classes))
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=2e-3)  # float16 storage
        np.testing.assert_array_equal(labels, backbone.read(vid)[1])

    again = run(args, tmp_path)  # everything done: the classifier is reused, nothing redone
    assert again.returncode == 0, again.stderr
    rerun = json.loads(again.stdout)
    assert not rerun["head"]["trained"] and rerun["head"]["written"] == []

    # `actrec train` finds the head's store from the dataset reference and the store's name.
    run_dir = tmp_path / "run"
    trained = run(["train", "lstm", "--d1", f"{TINY},root={tmp_path / 'data'}",
                   "--extractor", "cnn-softmax-split1", "--iterations", "3", "--history", "8",
                   "--mix", "2:0", "-o", "hidden=8", "--run-dir", str(run_dir), "--json"],
                  tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["iterations"] == 3
    config = json.loads((run_dir / "config.json").read_text())
    assert "cnn-softmax-split1.zarr" in json.dumps(config)

    leaky = run(["train", "lstm", "--d1", str(store.path), "--split", "2", "--iterations", "1",
                 "--history", "8", "--mix", "2:0", "--run-dir", str(tmp_path / "leak")], tmp_path)
    assert leaky.returncode == 1 and "has no split '2'; expected one of: 1" in leaky.stderr

    # A training video breaks: the extraction is reported, the classifier is not trained on
    # what is left (the command says how to allow that), the exit status says it failed.
    broken = split["train"][0]
    next((tmp_path / "data").rglob(f"{broken}.mp4")).write_bytes(b"")
    failed = run(args, tmp_path)
    assert failed.returncode == 1
    assert [f["video"] for f in json.loads(failed.stdout)["failed"]] == [broken]
    assert "frame classifier not trained" in failed.stderr and "allow_missing=true" in \
        failed.stderr

    no_split = run(["extract", TINY, "--root", str(tmp_path / "data"), "--extractor", "cnn",
                    "-x", f"model={tmp_path / 'backbone.pt2'}", "--head", "logits"], tmp_path)
    assert no_split.returncode == 2 and "--head needs --split" in no_split.stderr
