"""``actrec export`` of a run trained on a frame head's outputs (``extract --head``): the
metadata names the BACKBONE extractor and its config (the head store's own "extractor",
``colorgrad-logits-split1``, is no plugin anyone can rebuild), the program holds the head, and
the description is complete: the features rebuilt from OUT.json alone (extractor, config, frame
rate, how the file's frames are taken, the rounding, the head's weights by their recorded
names) equal the head store's, and the program's probabilities equal live recognition's. Real
30 fps mp4 files under 15 fps labels, real stores, a real run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_audit_live import _clip

pytestmark = pytest.mark.slow  # a frame head, a tiny run and an export

CLASSES = ["background", "red_right", "blue_down"]


@pytest.fixture(scope="module")
def head_run(tmp_path_factory):
    """(backbone store, head store, run) for split 1 of a 4-video mstcn dataset."""
    from conftest import _write_mp4

    from actrec.frame_head import HeadConfig, extract_head_features
    from actrec.pipeline import extract_dataset, train_from_refs

    root = tmp_path_factory.mktemp("export-head")
    data = root / "mydata"
    (data / "groundTruth").mkdir(parents=True)
    (data / "mapping.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(CLASSES)))
    for k, name in enumerate(["alice_1", "alice_2", "bob_1", "bob_2"]):
        labels = [0] * 10 + [1 + k % 2] * 20 + [0] * 8 + [2 - k % 2] * 16
        _write_mp4(data / f"{name}.mp4", _clip(labels, k, 2), fps=30.0)
        (data / "groundTruth" / f"{name}.txt").write_text("".join(f"{CLASSES[c]}\n"
                                                                  for c in labels))
    (data / "splits").mkdir()
    (data / "splits" / "train.split1.bundle").write_text("alice_1.txt\nalice_2.txt\n")
    (data / "splits" / "test.split1.bundle").write_text("bob_1.txt\nbob_2.txt\n")
    store = root / "s.zarr"
    extract_dataset("mstcn", dataset_options={"root": str(data)}, out=store)
    head = extract_head_features(store, "1", output="logits",
                                 config=HeadConfig(model="mlp", hidden=16, epochs=2,
                                                   min_steps=20))
    run = train_from_refs("lstm", d1=str(head.store), model_options={"hidden": "8"},
                          run_dir=root / "run", history=16, iterations=10, mix=(4, 0),
                          optimizer="adam", lr=0.01).run_dir
    return store, head.store, run


def test_the_export_of_a_frame_head_run_rebuilds_the_stored_features(head_run, tmp_path):
    import torch

    from actrec import Recognizer, registry
    from actrec.export import export_run
    from actrec.io.features import FeatureStore
    from actrec.live_sources import open_source
    from actrec.plugin_api import ExtractRuntime

    store, head_store, run = head_run
    backbone, heads = FeatureStore.open(store), FeatureStore.open(head_store)
    out = tmp_path / "step.pt2"
    meta = export_run(run, out)["meta"]
    assert json.loads(out.with_suffix(".json").read_text()) == meta
    assert meta["extractor"] == "colorgrad"  # not "colorgrad-logits-split1"
    assert meta["extractor_config"] == backbone.attrs["extractor_config"]
    assert meta["feature_dim"] == backbone.dim and meta["feature_dtypes"] == ["float16"]
    assert (meta["fps"], meta["label_fps"], meta["labels_by_time"], meta["video_rate"]) == \
        (15.0, 15.0, False, False)
    (head,) = meta["frame_heads"]
    assert (head["stream"], head["output"], head["input_rounding"], head["input_dim"]) == \
        (0, "logits", "float16", backbone.dim)
    assert head["classes"] == CLASSES and head["config"]["model"] == "mlp"
    assert head["head_store_extractor"] == "colorgrad-logits-split1"
    assert head["head_digest"] == heads.attrs["extractor_config"]["head_digest"]

    # The features, from the description alone: the extractor, decoding, rounding, head.
    extractor = registry.create("extractors", meta["extractor"], meta["extractor_config"])
    extractor.setup(ExtractRuntime())
    weights = {k: v for k, v in torch.export.load(str(out)).state_dict.items()}
    assert sorted(k for k in weights if k.startswith("heads.")) == head["weights"]
    w = {k.removeprefix("heads.0."): weights[k] for k in head["weights"]}
    vid = "bob_2"
    path = backbone.video_attrs(vid)["source"]["path"]
    frames = np.stack([f for _, f in open_source(
        path, meta["fps"], nominal_fps=meta["label_fps"], by_time=meta["labels_by_time"],
        video_rate=meta["video_rate"]).frames()])
    x = np.concatenate(list(extractor.extract(iter([frames]))))
    x = torch.from_numpy(x.astype(head["input_rounding"]).astype(np.float32))
    with torch.no_grad():
        h = torch.relu(((x - w["mean"]) / w["std"]) @ w["net.0.weight"].T + w["net.0.bias"])
        logits = h @ w["net.3.weight"].T + w["net.3.bias"]
    rebuilt = logits.numpy().astype(meta["feature_dtypes"][0]).astype(np.float32)
    stored, _ = heads.read(vid)
    assert rebuilt.shape == stored.shape == (54, 3)
    np.testing.assert_allclose(rebuilt, stored, rtol=2e-3, atol=1e-3)  # float16 ulps at most
    assert (rebuilt == stored).mean() > 0.9

    # The program, fed the backbone's rows, answers what live recognition answers.
    extra = {"actrec.json": ""}
    step = torch.export.load(str(out), extra_files=extra).module()
    assert json.loads(extra["actrec.json"]) == meta
    state = [torch.zeros(s, dtype=getattr(torch, d)) for s, d in
             zip(meta["state_shapes"], meta["state_dtypes"])]
    rec = Recognizer.from_run(run, top_k=99)
    for t, row in enumerate(np.concatenate(list(extractor.extract(iter([frames]))))):
        with torch.no_grad():
            probs, *state = step(torch.from_numpy(row)[None], *state)
        top = dict(rec.push(frames[t]).top)
        np.testing.assert_allclose(probs[0].numpy(), [top[c] for c in CLASSES], atol=1e-5)


def test_the_command_names_the_backbone_and_the_head(head_run, tmp_path, capsys):
    from actrec.cli import main

    _, _, run = head_run
    try:
        main(["export", str(run), str(tmp_path / "s.pt2")])
    except SystemExit as exc:
        assert not exc.code
    out = " ".join(capsys.readouterr().out.split())
    assert "features of 'colorgrad' + frame head (logits) at 15 fps (" in out
