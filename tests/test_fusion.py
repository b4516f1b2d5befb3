"""Training on streams (one, or several side by side) and late fusion of per-stream runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from actrec.cli import cli
from actrec.errors import ActrecError, ConfigError, DataError
from actrec.evaluate import evaluate_run
from actrec.fusion import fuse_runs
from actrec.io.features import FeatureStore
from actrec.train import TrainSpec, train_model

CLASSES = ["c0", "c1", "c2"]
TRAIN = [f"tr{i}" for i in range(6)]
TEST = [f"te{i}" for i in range(3)]


def _open(path, stream, lookahead=0, classes=CLASSES, dataset="toy"):
    return FeatureStore.open_or_create(
        path, dataset=dataset, split_scheme="default", classes=classes,
        splits={"1": {"train": TRAIN, "test": TEST}, "2": {"train": TEST, "test": TRAIN}},
        extractor=f"toy-{stream}", extractor_config={"stream": stream}, lookahead=lookahead,
        dtype="float32", stream=stream)


def make_two_stream_store(path, lookahead_b=0, seed=0):
    """Streams ``a`` (4-d) and ``b`` (3-d) of the same labelled frames: each stream sees the
    class through its own noisy class centres."""
    rng = np.random.default_rng(seed)
    a, b = _open(path, "a"), _open(path, "b", lookahead_b)
    ca, cb = rng.normal(size=(3, 4)), rng.normal(size=(3, 3))
    for vid in TRAIN + TEST:
        t = int(rng.integers(20, 50))
        y = np.repeat(rng.integers(0, 3, size=t // 5 + 1), 5)[:t]
        a.write_video(vid, ca[y] + 0.8 * rng.normal(size=(t, 4)), y, fps=15.0, source=None)
        b.write_video(vid, cb[y] + 0.8 * rng.normal(size=(t, 3)), y, fps=15.0, source=None)
    return path


def _train(store, run_dir, streams, **kw):
    spec = TrainSpec(model="lstm", d1=store, model_options={"hidden": 8}, history=16,
                     iterations=25, mix=(6, 0), lr=0.03, optimizer="adam", log_every=25, seed=0,
                     streams=streams, **kw)
    train_model(spec, run_dir)
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fusion")
    store = make_two_stream_store(root / "s.zarr")
    return {
        "store": store,
        "a": _train(store, root / "run-a", ("a",)),
        "b": _train(store, root / "run-b", ("b",)),
        "ab": _train(store, root / "run-ab", ("a", "b")),
    }


def test_runs_record_and_read_their_streams(runs):
    config = json.loads((runs["ab"] / "config.json").read_text())
    assert config["spec"]["streams"] == ["a", "b"]
    from actrec.runs import load_checkpoint

    # The early-fusion run reads both streams side by side: 4 + 3 inputs.
    dims = {k: list(load_checkpoint(runs[k] / "checkpoint.pt")["input_dims"]) for k in runs
            if k != "store"}
    assert dims == {"a": [4], "b": [3], "ab": [7]}
    for key in ("a", "b", "ab"):
        result = evaluate_run(runs[key], online=True, keep_probabilities=True)
        assert result.protocol["streams"] == list(key)
        probs = result.probabilities["toy"]
        assert probs.ids == tuple(TEST) and probs.probabilities[0].shape[1] == 3


def test_probabilities_agree_with_the_predictions(runs):
    # The block softmax's argmax is the run's own prediction: frame accuracy from the kept
    # probabilities equals the evaluation's.
    result = evaluate_run(runs["a"], online=False, keep_probabilities=True)
    probs = result.probabilities["toy"]
    correct = labelled = 0
    for p, y in zip(probs.probabilities, probs.targets):
        np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
        keep = y >= 0
        correct += int((p.argmax(axis=1)[keep] == y[keep]).sum())
        labelled += int(keep.sum())
    assert correct / labelled == pytest.approx(result.datasets["toy"].frame_accuracy)


def test_late_fusion_averages_the_runs_probabilities(runs):
    fused = fuse_runs([runs["a"], runs["b"]], online=True)
    members = [evaluate_run(runs[k], online=True, keep_probabilities=True) for k in "ab"]
    pa, pb = (m.probabilities["toy"] for m in members)
    correct = labelled = 0
    for x, y, t in zip(pa.probabilities, pb.probabilities, pa.targets):
        pred = ((x.astype(np.float64) + y) / 2).argmax(axis=1)
        keep = t >= 0
        correct += int((pred[keep] == t[keep]).sum())
        labelled += int(keep.sum())
    assert fused.datasets["toy"].frame_accuracy == pytest.approx(correct / labelled)
    assert fused.protocol["mode"] == "online" and fused.weights == (1.0, 1.0)
    assert [r["streams"] for r in fused.protocol["runs"]] == [["a"], ["b"]]
    # All the weight on one run gives exactly that run's scores.
    only_a = fuse_runs([runs["a"], runs["b"]], weights=[1, 0])
    own = members[0].datasets["toy"]
    assert only_a.datasets["toy"].frame_accuracy == own.frame_accuracy
    assert only_a.datasets["toy"].per_video == own.per_video
    only_b = fuse_runs([runs["a"], runs["b"]], weights=[0, 2])
    assert only_b.datasets["toy"].per_video == members[1].datasets["toy"].per_video


def test_fusion_refuses_runs_that_did_not_score_the_same_videos(runs, tmp_path):
    with pytest.raises(ConfigError, match="at least two runs"):
        fuse_runs([runs["a"]])
    with pytest.raises(ConfigError, match="with itself"):
        fuse_runs([runs["a"], runs["a"]])
    with pytest.raises(ConfigError, match="weights"):
        fuse_runs([runs["a"], runs["b"]], weights=[1, -1])
    # A run of another dataset (other classes) cannot be fused with these.
    other = make_two_stream_store(tmp_path / "o.zarr", seed=1)
    other_run = _train(other, tmp_path / "run-o", ("a",), split="2")
    with pytest.raises(ConfigError, match="different splits|different test videos"):
        fuse_runs([runs["a"], other_run])
    relabelled = tmp_path / "c.zarr"
    store = _open(relabelled, "a", classes=["x", "y", "z"], dataset="toy")
    src = FeatureStore.open(runs["store"])
    for vid in TRAIN + TEST:
        x, y = src.read(vid)
        store.write_video(vid, x, y, fps=15.0, source=None)
    with pytest.raises(ConfigError, match="different classes"):
        fuse_runs([runs["a"], _train(relabelled, tmp_path / "run-c", None)])


def test_online_fusion_refuses_a_stream_that_looks_ahead(tmp_path):
    store = make_two_stream_store(tmp_path / "s.zarr", lookahead_b=2)
    run_a = _train(store, tmp_path / "a", ("a",))
    run_b = _train(store, tmp_path / "b", ("b",))
    run_ab = _train(store, tmp_path / "ab", ("a", "b"))
    with pytest.raises(ActrecError, match="look.* 2 frame"):
        fuse_runs([run_a, run_b])
    # Early fusion inherits the look-ahead of its furthest stream.
    with pytest.raises(ActrecError, match="non-causal features"):
        evaluate_run(run_ab, online=True)
    offline = fuse_runs([run_a, run_b], online=False)
    assert offline.protocol["mode"] == "offline"
    allowed = fuse_runs([run_a, run_b], allow_noncausal_features=True)
    assert allowed.protocol["noncausal_features_used"] is True


def test_fusion_records_the_look_ahead_of_its_members(runs, tmp_path):
    # A run trained to answer 2 frames late is evaluated with a look-ahead of 2: the fused
    # decision waits for it, so the fusion is not "online" and says how far it looks.
    delayed = _train(runs["store"], tmp_path / "run-b-delay2", ("b",), delay=2)
    fused = fuse_runs([runs["a"], delayed])
    assert [m.protocol["lookahead"] for m in fused.members] == [0, 2]
    assert fused.protocol["mode"] == "lookahead-2"
    assert fused.protocol["lookahead"] == 2 and fused.protocol["frames_ahead"] == 2
    plain = fuse_runs([runs["a"], runs["b"]])
    assert (plain.protocol["mode"], plain.protocol["lookahead"],
            plain.protocol["frames_ahead"]) == ("online", 0, 0)
    # Features that look ahead (allowed explicitly) add to how far the fused result looks.
    store = make_two_stream_store(tmp_path / "s.zarr", lookahead_b=3)
    run_a = _train(store, tmp_path / "a", ("a",))
    run_b = _train(store, tmp_path / "b", ("b",), delay=1)
    allowed = fuse_runs([run_a, run_b], allow_noncausal_features=True)
    assert allowed.protocol["mode"] == "lookahead-1-features-ahead-3"
    assert allowed.protocol["frames_ahead"] == 4
    offline = fuse_runs([runs["a"], runs["b"]], online=False)
    assert offline.protocol["lookahead"] is None and offline.protocol["frames_ahead"] is None
    result = CliRunner().invoke(cli, ["fuse", str(runs["a"]), str(delayed)])
    assert result.exit_code == 0, result.output
    assert "lookahead-2 late fusion" in result.output


def test_training_refuses_missing_streams(runs, tmp_path):
    with pytest.raises(DataError, match="no stream 'flow'; it holds: a, b"):
        _train(runs["store"], tmp_path / "x", ("flow",))
    with pytest.raises(ConfigError, match="distinct"):
        _train(runs["store"], tmp_path / "y", ("a", "a"))


def test_cli_train_streams_and_fuse(runs, tmp_path):
    runner = CliRunner(env={"ACTREC_HOME": str(tmp_path / "home")})
    run_dir = tmp_path / "cli-ab"
    res = runner.invoke(cli, ["train", "lstm", "--d1", str(runs["store"]), "--streams", "a,b",
                              "--iterations", "3", "--history", "8", "--mix", "4:0",
                              "-o", "hidden=4", "--run-dir", str(run_dir), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads((run_dir / "config.json").read_text())["spec"]["streams"] == ["a", "b"]
    out = tmp_path / "fused.json"
    res = runner.invoke(cli, ["fuse", str(runs["a"]), str(runs["b"]), "--offline",
                              "--weights", "1,3", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert payload["weights"] == [1.0, 3.0] and payload["protocol"]["mode"] == "offline"
    assert json.loads(out.read_text())["datasets"]["toy"]["videos"] == len(TEST)
    table = runner.invoke(cli, ["fuse", str(runs["a"]), str(runs["b"])])
    text = " ".join(table.output.split())
    assert table.exit_code == 0
    assert any(line.split()[:1] == ["fused"] for line in table.output.splitlines())
    assert "online late fusion on toy" in text and str(runs["a"].name) in text
    bad = runner.invoke(cli, ["fuse", str(runs["a"]), str(runs["b"]), "--weights", "x"])
    assert bad.exit_code == 2 and "--weights" in bad.output
