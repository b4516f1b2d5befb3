"""Training and evaluation end to end on real Zarr feature stores written here.

The stores hold features that encode each frame's label (a fixed random vector per class plus
noise) in segments of 5 frames, so a tiny LSTM learns them in a few dozen iterations.
"""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from actrec.data.labels import InputLayout, LabelSpace
from actrec.data.windows import VideoBank, sample_windows
from actrec.errors import ActrecError, ConfigError, DataError, PluginError
from actrec.evaluate import evaluate_run, predict_videos, score_dataset
from actrec.io.features import FeatureStore
from actrec.registry import plugin_class
from actrec.runs import load_checkpoint
from actrec.train import TrainSpec, train_model


def make_store(path, dim, classes, n_train, n_test, seed, lookahead=0, short=0):
    """A store of ``n_train + n_test`` videos of 20..90 frames (``short`` extra training
    videos of 6 frames), split '1'; the first two frames of every video are unlabelled."""
    rng = np.random.default_rng(seed)
    train = [f"tr{i}" for i in range(n_train + short)]
    test = [f"te{i}" for i in range(n_test)]
    store = FeatureStore.open_or_create(
        path, dataset=f"toy{seed}", split_scheme="default",
        classes=[f"c{k}" for k in range(classes)],
        splits={"1": {"train": train, "test": test}, "2": {"train": test, "test": train}},
        extractor="toy", extractor_config={"seed": seed}, lookahead=lookahead, dtype="float32",
    )
    centres = rng.normal(size=(classes, dim))
    for i, vid in enumerate(train + test):
        t = 6 if i >= n_train and i < n_train + short else int(rng.integers(20, 90))
        y = np.repeat(rng.integers(0, classes, size=t // 5 + 1), 5)[:t]
        x = centres[y] + 0.5 * rng.normal(size=(t, dim))
        y = y.copy()
        y[:2] = -1
        store.write_video(vid, x.astype(np.float32), y, fps=15.0, source=None)
    return path


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    return {
        "a": make_store(root / "a.zarr", dim=6, classes=3, n_train=6, n_test=3, seed=1, short=1),
        "b": make_store(root / "b.zarr", dim=4, classes=2, n_train=6, n_test=3, seed=2),
        "future": make_store(root / "f.zarr", dim=6, classes=3, n_train=3, n_test=2, seed=3,
                             lookahead=3),
    }


def spec(d1, **kw):
    base = dict(model="lstm", d1=d1, model_options={"hidden": 16}, history=24, iterations=40,
                mix=(8, 0), lr=0.02, optimizer="adam", log_every=5, seed=0)
    base.update(kw)
    return TrainSpec(**base)


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(stores, tmp_path_factory):
    """One single-dataset lstm run, shared by the evaluation tests."""
    run_dir = tmp_path_factory.mktemp("runs") / "lstm"
    result = train_model(spec(stores["a"]), run_dir, sources={"lr": "command line"})
    return run_dir, result


# --------------------------------------------------------------------------------------------
# Spec


def test_spec_json_round_trip_and_validation(tmp_path):
    s = spec(tmp_path / "a.zarr", d2=tmp_path / "b.zarr", mix=(4, 2), grad_clip=1.0)
    again = TrainSpec.from_dict(json.loads(json.dumps(s.to_dict())))
    assert again == s
    coerced = TrainSpec.from_dict({"model": "gru", "d1": "x.zarr", "history": "50",
                                   "mix": "8,8", "grad_clip": "none"})
    assert coerced.history == 50 and coerced.mix == (8, 8) and coerced.grad_clip is None
    with pytest.raises(ConfigError, match="unknown field 'histroy'"):
        TrainSpec.from_dict({"model": "lstm", "d1": "x", "histroy": 3})
    with pytest.raises(ConfigError, match="field 'history'"):
        TrainSpec.from_dict({"model": "lstm", "d1": "x", "history": "long"})
    with pytest.raises(ConfigError, match="optimizer"):
        spec(tmp_path, optimizer="rmsprop")
    with pytest.raises(ConfigError, match="n2 = 0"):
        spec(tmp_path, d2=tmp_path, mix=(8, 0))
    # one mistake, one message: no follow-on complaints about options left at their defaults
    for bad, message in (({"lr": 0}, "invalid training spec: lr must be > 0, got 0"),
                         ({"history": 0}, "invalid training spec: history must be > 0, got 0")):
        with pytest.raises(ConfigError) as info:
            spec(tmp_path, **bad)
        assert str(info.value) == message


# --------------------------------------------------------------------------------------------
# Training


def test_training_learns_and_writes_the_run(trained, stores):
    run_dir, result = trained
    assert result.iterations == 40 and result.resumed_from == 0
    lines = metrics(run_dir)
    assert [m["iteration"] for m in lines] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert lines[-1]["loss"] < 0.5 * lines[0]["loss"]
    assert lines[-1]["loss"] == pytest.approx(result.final_loss)
    # The checkpoint is plain data: it loads with weights_only=True.
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["iteration"] == 40 and ckpt["classes"] == [["c0", "c1", "c2"]]
    assert ckpt["input_dims"] == [6] and ckpt["model_name"] == "lstm"
    assert set(ckpt["model"]) and all(isinstance(v, torch.Tensor) for v in ckpt["model"].values())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["spec"]["lr"] == 0.02 and config["sources"] == {"lr": "command line"}
    (info,) = config["stores"]
    assert info["lookahead"] == 0 and info["causal"] is True and info["dataset"] == "toy1"
    assert info["train_videos"] == 7 and info["split"] == "1"
    assert "torch" in config["versions"]


def test_first_loss_is_the_cross_entropy_by_hand(stores, tmp_path):
    """Rebuild the first joint batch and the initial model independently; the logged loss of
    iteration 1 must be the mean cross-entropy over its labelled frames in the concatenated
    label space (D2 labels + 3), with D1's features in columns 0..5 and D2's in 6..9."""
    s = spec(stores["a"], d2=stores["b"], mix=(3, 2), iterations=1, log_every=1, seed=5,
             standardize=False)  # the by-hand loss below uses the raw features
    train_model(s, tmp_path / "run")
    logged = metrics(tmp_path / "run")[0]["loss"]

    banks = []
    for path in (stores["a"], stores["b"]):
        store = FeatureStore.open(path)
        banks.append(VideoBank.from_store(store, store.splits["1"]["train"]))
    rng = np.random.default_rng(5)
    w1 = sample_windows(banks[0], 3, 24, rng)
    w2 = sample_windows(banks[1], 2, 24, rng)
    x = np.zeros((24, 5, 10), dtype=np.float32)
    x[:, :3, :6], x[:, 3:, 6:] = w1.features, w2.features
    y = np.concatenate([w1.labels, np.where(w2.labels >= 0, w2.labels + 3, -1)], axis=1)
    assert (y == -1).any()  # the unlabelled first frames (and padding) are in there
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        cls = plugin_class("models", "lstm")
        model = cls(cls.Config(hidden=16)).build(10, 5)
    model.train()
    logp = torch.log_softmax(model(torch.from_numpy(x), torch.tensor([0, 0, 0, 1, 1])), -1)
    total, count = 0.0, 0
    for t in range(24):
        for n in range(5):
            if y[t, n] >= 0:
                total -= float(logp[t, n, y[t, n]].detach())
                count += 1
    assert logged == pytest.approx(total / count, rel=1e-5)
    # The logged training accuracy, by hand: each frame's argmax over its own dataset's block
    # (D1: outputs 0..2, D2: 3..4) against its local label.
    right = 0
    for t in range(24):
        for n in range(5):
            if y[t, n] >= 0:
                block = slice(0, 3) if n < 3 else slice(3, 5)
                right += int(int(logp[t, n, block].argmax()) + block.start == y[t, n])
    accuracy = metrics(tmp_path / "run")[0]["train_frame_accuracy"]
    assert accuracy == pytest.approx(right / count)


def test_resume_continues_exactly(stores, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train_model(spec(stores["a"], iterations=30), straight)
    first = train_model(spec(stores["a"], iterations=20), split)
    assert first.iterations == 20
    scored = evaluate_run(split, online=True).to_dict()  # results of iteration 20
    (split / "eval.json").write_text('{"protocol": {"iteration": 20}}')  # as runs before had
    # An interrupted run may have logged past its checkpoint, even half a line.
    with open(split / "metrics.jsonl", "a") as handle:
        handle.write('{"iteration": 25, "loss": 9.0}\n{"iteration": 2')
    second = train_model(spec(stores["a"], iterations=30), split)
    assert second.resumed_from == 20 and second.iterations == 30
    # The iteration-20 results are kept, set aside, never beside the iteration-30 checkpoint.
    assert not list(split.glob("eval*.json"))
    assert json.loads((split / "earlier" / "eval-it20.json").read_text())["protocol"] == {
        "iteration": 20}
    kept = json.loads((split / "earlier" / "eval-online-it20.json").read_text())
    assert kept["protocol"]["iteration"] == 20
    assert kept["datasets"]["toy1"]["frames"] == scored["datasets"]["toy1"]["frames"]
    assert [m["iteration"] for m in metrics(split)] == [5, 10, 15, 20, 25, 30]
    a = load_checkpoint(straight / "checkpoint.pt")
    b = load_checkpoint(split / "checkpoint.pt")
    assert b["iteration"] == 30
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert metrics(straight)[-1]["loss"] == pytest.approx(metrics(split)[-1]["loss"], rel=1e-6)
    config = json.loads((split / "config.json").read_text())
    assert config["resumed"][0]["at_iteration"] == 20
    # Nothing left to do: the run is returned as it is.
    again = train_model(spec(stores["a"], iterations=30), split)
    assert again.resumed_from == 30 and len(metrics(split)) == 6
    with pytest.raises(ConfigError, match="lr"):
        train_model(spec(stores["a"], iterations=40, lr=0.1), split)


def test_periodic_eval_clipping_and_progress(stores, tmp_path):
    import io

    from rich.console import Console
    from rich.progress import Progress

    run = tmp_path / "periodic"
    clip, lr = 1e-3, 0.01
    with Progress(console=Console(file=io.StringIO(), force_terminal=False)) as progress:
        result = train_model(spec(stores["a"], iterations=4, log_every=0, eval_every=2,
                                  grad_clip=clip, optimizer="sgd", lr=lr), run,
                             progress=progress)
        assert not progress.tasks  # every task it added is removed again
    # Clipping bounds the move: SGD with momentum 0.9 moves step k by lr * |v_k| with
    # |v_k| <= clip * (1 + 0.9 + ...) < k * clip, so 4 steps move all parameters together by
    # less than lr * clip * (1 + 2 + 3 + 4). Unclipped gradients here have norms ~1.
    train_model(spec(stores["a"], iterations=0, optimizer="sgd", lr=lr), tmp_path / "init")
    before = load_checkpoint(tmp_path / "init" / "checkpoint.pt")["model"]
    after = load_checkpoint(run / "checkpoint.pt")["model"]
    moved = torch.sqrt(sum(((after[k] - before[k]) ** 2).sum() for k in before
                           if before[k].is_floating_point()))
    assert 0 < float(moved) <= lr * clip * 10 * 1.001
    lines = metrics(run)
    evals = [m for m in lines if "eval" in m]
    assert [m["iteration"] for m in evals] == [2, 4]
    assert 0.0 <= evals[-1]["eval"]["toy1"] <= 1.0
    # With logging off, only the last iteration is logged (besides the evaluations).
    assert [m["iteration"] for m in lines if "loss" in m] == [4]
    (last,) = [m for m in lines if "loss" in m]
    assert result.final_loss == pytest.approx(last["loss"])


def test_reestimated_statistics(stores, tmp_path):
    """With reestimate_batches, the final running statistics are the exact averages over the
    batches drawn from default_rng([seed, iteration]): re-estimating again on those same
    batches changes nothing, while the momentum statistics of a plain run differ."""
    from actrec.data.windows import two_domain_batch
    from actrec.nn.reestimate import reestimate_statistics

    opts = {"hidden": 8, "layers": 1, "fc": 8, "dropout": 0.0, "recurrent_dropout": 0.0}
    s = spec(stores["a"], d2=stores["b"], mix=(4, 4), model="gru", model_options=opts,
             iterations=3, reestimate_batches=2,
             standardize=False)  # the batches are rebuilt from raw features below
    train_model(s, tmp_path / "re")
    train_model(dataclasses.replace(s, reestimate_batches=0), tmp_path / "plain")
    re = load_checkpoint(tmp_path / "re" / "checkpoint.pt")["model"]
    plain = load_checkpoint(tmp_path / "plain" / "checkpoint.pt")["model"]
    stats = [k for k in re if "running_var" in k]
    assert stats and not all(torch.equal(re[k], plain[k]) for k in stats)
    for k in re:  # the weights are the same: re-estimation draws no training batch
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(re[k], plain[k]), k

    banks = [VideoBank.from_store(FeatureStore.open(p), FeatureStore.open(p).splits["1"]["train"])
             for p in (stores["a"], stores["b"])]
    labels = LabelSpace((("c0", "c1", "c2"), ("c0", "c1")))
    layout = InputLayout((6, 4))
    rng = np.random.default_rng([0, 3])
    batches = [two_domain_batch(banks, (4, 4), 24, rng, labels, layout) for _ in range(2)]
    cls = plugin_class("models", "gru")
    model = cls(cls.Config(**opts)).build(10, 5)
    model.load_state_dict(re)
    reestimate_statistics(model, [(b.x, b.domain, b.mask) for b in batches])
    for k in stats:
        torch.testing.assert_close(model.state_dict()[k], re[k])


def test_bad_inputs_are_user_errors(stores, tmp_path):
    with pytest.raises(ConfigError, match="no split 'nine'"):
        train_model(spec(stores["a"], split="nine"), tmp_path / "r1")
    with pytest.raises(PluginError):
        train_model(spec(stores["a"], model="no-such-model"), tmp_path / "r2")
    with pytest.raises(ConfigError, match="hidden"):
        train_model(spec(stores["a"], model_options={"hiden": 3}), tmp_path / "r3")
    with pytest.raises(ActrecError, match="no feature store"):
        train_model(spec(tmp_path / "nowhere.zarr"), tmp_path / "r4")
    with pytest.raises(ConfigError, match="input projection"):
        train_model(spec(stores["a"], model="rnn", input_arrangement="projection",
                         model_options={}), tmp_path / "r5")


# --------------------------------------------------------------------------------------------
# Evaluation


def test_online_equals_offline_and_each_setting_keeps_its_results(trained):
    run_dir, _ = trained
    online = evaluate_run(run_dir, online=True)
    saved = json.loads((run_dir / "eval-online.json").read_text())
    offline = evaluate_run(run_dir, online=False)
    (res_on,) = online.datasets.values()
    (res_off,) = offline.datasets.values()
    assert res_on.per_video == res_off.per_video
    assert res_on.frame_accuracy == res_off.frame_accuracy > 0.8  # chance is 1/3
    assert res_on.videos == 3 and res_on.split == "1"
    assert saved["online"] is True and saved["protocol"]["noncausal_features_allowed"] is False
    assert saved["datasets"]["toy1"]["frame_accuracy"] == pytest.approx(res_on.frame_accuracy)
    # The offline result did not overwrite the online one: each setting has its own file.
    assert json.loads((run_dir / "eval-offline.json").read_text())["online"] is False
    assert json.loads((run_dir / "eval-online.json").read_text()) == saved
    # Another split of the same store: its test side is split 1's training videos, which is
    # refused unless allowed explicitly, and then recorded.
    with pytest.raises(DataError, match=r"tests 7 video\(s\) that run .* trained on"):
        evaluate_run(run_dir, online=True, split="2")
    other = evaluate_run(run_dir, online=True, split="2", allow_train_overlap=True)
    assert other.datasets["toy1"].videos == 7
    assert other.protocol["train_overlap_allowed"] is True
    assert list(other.protocol["train_videos_scored"].values()) == [7]
    assert json.loads((run_dir / "eval-online-split-2.json").read_text())["protocol"][
        "splits"] == ["2"]
    assert json.loads((run_dir / "eval-online.json").read_text()) == saved


def test_evaluate_on_other_stores(trained, stores):
    run_dir, _ = trained
    # Same classes and dimension (different features): evaluated, under its own name.
    other = evaluate_run(run_dir, online=False, stores=(stores["future"],))
    assert set(other.datasets) == {"toy3"} and other.datasets["toy3"].videos == 2
    with pytest.raises(DataError, match="other classes"):
        evaluate_run(run_dir, online=False, stores=(stores["b"],))
    with pytest.raises(ActrecError, match="1 dataset"):
        evaluate_run(run_dir, online=False, stores=(stores["a"], stores["b"]))


def test_full_vector_prediction(stores, tmp_path):
    """prediction='full' argmaxes over every output, 'block' over the frame's own dataset's.
    With D2's outputs pushed far above D1's, every D1 frame is lost to D2's block under 'full'
    and none under 'block'."""
    run = tmp_path / "full"
    train_model(spec(stores["a"], d2=stores["b"], mix=(4, 4), iterations=30,
                     prediction="full"), run)
    ckpt = load_checkpoint(run / "checkpoint.pt")
    ckpt["model"]["head.bias"][3:] += 1e4  # D2's block (outputs 3, 4) wins every argmax
    torch.save(ckpt, run / "checkpoint.pt")
    full = evaluate_run(run, online=True)
    assert full.protocol["prediction"] == "full"
    assert full.datasets["toy1"].frame_accuracy == 0.0
    ckpt["spec"]["prediction"] = "block"
    torch.save(ckpt, run / "checkpoint.pt")
    block = evaluate_run(run, online=True)
    assert block.protocol["prediction"] == "block"
    assert block.datasets["toy1"].frame_accuracy > 0.5  # chance 1/3


def test_stepping_matches_forward_and_batching_is_independent():
    """Online (step) and offline (forward) predictions agree, whatever the batching, for
    videos of different lengths (padding after a video cannot change it)."""
    rng = np.random.default_rng(0)
    videos = [rng.normal(size=(t, 4)).astype(np.float32) for t in (13, 40, 7, 25)]
    labels = LabelSpace((tuple("abc"),))
    layout = InputLayout((4,))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        cls = plugin_class("models", "lstm")
        model = cls(cls.Config(hidden=8, layers=2)).build(4, 3)
    base = predict_videos(model, videos, 0, labels, layout, online=True, batch_videos=1)
    assert [p.shape[0] for p in base] == [13, 40, 7, 25]
    for online, size in ((True, 3), (False, 1), (False, 4)):
        got = predict_videos(model, videos, 0, labels, layout, online=online, batch_videos=size)
        for a, b in zip(base, got):
            np.testing.assert_array_equal(a, b)


def test_noncausal_model_refused_online(stores, tmp_path):
    run = tmp_path / "birnn"
    train_model(spec(stores["a"], model="birnn", model_options={"hidden": 8}, iterations=3), run)
    with pytest.raises(ActrecError, match=r"'birnn' is not causal.*--offline"):
        evaluate_run(run, online=True)
    assert not list(run.glob("eval*.json"))
    result = evaluate_run(run, online=False)
    assert result.online is False and result.datasets["toy1"].frames > 0


def test_noncausal_features_refused_online_unless_allowed(stores, tmp_path):
    run = tmp_path / "future"
    train_model(spec(stores["future"], iterations=3), run)
    config = json.loads((run / "config.json").read_text())
    assert config["stores"][0]["lookahead"] == 3 and config["stores"][0]["causal"] is False
    with pytest.raises(ActrecError, match="non-causal features.*re-extract with a causal"):
        evaluate_run(run, online=True)
    evaluate_run(run, online=True, allow_noncausal_features=True)
    assert not (run / "eval-online.json").exists()  # never filed as online
    protocol = json.loads((run / "eval-online-features-ahead-3.json").read_text())["protocol"]
    assert protocol["noncausal_features_used"] is True
    assert protocol["mode"] == "online-features-ahead-3" and protocol["frames_ahead"] == 3
    assert protocol["features"][0]["lookahead"] == 3
    evaluate_run(run, online=False)  # offline needs no permission
    off = json.loads((run / "eval-offline.json").read_text())["protocol"]
    assert off["noncausal_features_used"] is False


def test_scores_by_hand():
    # Video p: frames 1..3 labelled, all right. Video q: one labelled frame, wrong.
    res = score_dataset("d", "s", "1", ["p", "q"],
                        [np.array([5, 0, 1, 1]), np.array([0, 0])],
                        [np.array([-1, 0, 1, 1]), np.array([1, -1])], classes=("a", "b", "c"))
    assert res.frames == 4
    assert res.frame_accuracy == pytest.approx(3 / 4)  # micro
    assert res.mean_video_accuracy == pytest.approx(1 / 2)  # macro
    assert res.per_video["q"]["accuracy"] == 0.0
    # Class a: 1 of 1 frames right; b: 2 of 3 (q's frame predicted a); c: no frame.
    assert res.per_class["a"] == 1.0 and res.per_class["b"] == pytest.approx(2 / 3)
    assert math.isnan(res.per_class["c"])
    # p: segments [0, 1] vs target [0, 1]: the prediction 5 at the unlabelled frame is dropped
    # with it -> edit 1; q: [0] vs [1] -> 0.
    assert res.edit == pytest.approx(0.5)
    # F1@10 over both videos: p has (0,1,2)~(0,1,2) tp, (1,2,3)~(1,2,3) tp; q fp + fn.
    assert res.f1["10"] == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))


def test_precision_per_class_by_hand():
    """Of the labelled frames predicted as each class, the share that is that class, pooled
    over the videos; the mean over the classes predicted (the sign-language paper's)."""
    res = score_dataset("d", "s", "1", ["p", "q"],
                        [np.array([5, 0, 1, 1]), np.array([0, 2])],
                        [np.array([-1, 0, 1, 1]), np.array([1, -1])], classes=("a", "b", "c"))
    # a: predicted on p's frame 1 (a) and q's frame 0 (b): 1/2; b: twice, right: 1; c: only
    # on q's unlabelled frame, and 5 on p's: neither counts -> never predicted.
    assert res.per_class_precision["a"] == 0.5 and res.per_class_precision["b"] == 1.0
    assert math.isnan(res.per_class_precision["c"])
    assert res.mean_class_precision == pytest.approx(0.75)
    out = res.to_dict()
    assert out["mean_class_precision"] == pytest.approx(0.75)
    assert out["per_class_precision"]["b"] == 1.0


# --------------------------------------------------------------------------------------------
# Joint training


def test_joint_training_with_different_classes_and_dims(stores, tmp_path):
    run = tmp_path / "joint"
    s = spec(stores["a"], d2=stores["b"], mix=(6, 6), iterations=40)
    train_model(s, run)
    config = json.loads((run / "config.json").read_text())
    assert config["inputs"] == {"arrangement": "blocks", "dims": [6, 4], "width": 10,
                                "shared_columns": False}
    assert config["labels"]["offsets"] == [0, 3] and config["labels"]["num_classes"] == 5
    assert config["labels"]["arrangement"] == "concat"
    result = evaluate_run(run, online=True).to_dict()["datasets"]
    assert set(result) == {"toy1", "toy2"}
    assert result["toy1"]["frame_accuracy"] > 0.6  # chance 1/3
    assert result["toy2"]["frame_accuracy"] > 0.7  # chance 1/2
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["classes"] == [["c0", "c1", "c2"], ["c0", "c1"]]


def test_joint_training_with_input_projection(stores, tmp_path):
    """Per-domain projections (6-d D1 and 4-d D2 features, no zero-filled blocks) are trained
    and used at evaluation: both datasets are learnt well above chance."""
    run = tmp_path / "proj"
    train_model(spec(stores["a"], d2=stores["b"], mix=(6, 6), iterations=40,
                     input_arrangement="projection"), run)
    config = json.loads((run / "config.json").read_text())
    assert config["inputs"]["width"] == 6 and config["model"]["config"]["input_projection"]
    weights = load_checkpoint(run / "checkpoint.pt")["model"]
    shapes = sorted(tuple(v.shape) for k, v in weights.items()
                    if k.startswith("input_projection") and v.dim() == 2)
    assert shapes == [(16, 6), (16, 6)]  # one projection per domain, to the hidden size
    res = evaluate_run(run, online=True).datasets
    assert res["toy1"].frame_accuracy > 0.6  # chance 1/3
    assert res["toy2"].frame_accuracy > 0.7  # chance 1/2


@pytest.mark.slow
def test_ddlstm_joint_alphas_and_online_equals_offline(stores, tmp_path):
    run = tmp_path / "ddlstm"
    s = spec(stores["a"], d2=stores["b"], model="ddlstm", mix=(4, 4), iterations=6,
             log_every=2, model_options={"hidden": 8, "layers": 2, "max_len": 24})
    train_model(s, run)
    lines = metrics(run)
    assert len(lines) == 3
    for line in lines:
        alphas = line["alphas"]
        assert len(alphas) == 2  # one (alpha1, alpha2) pair per layer
        for pair in alphas.values():
            assert len(pair) == 2 and all(0.5 - 1e-6 <= a <= 1 + 1e-6 for a in pair)
    on = evaluate_run(run, online=True)
    off = evaluate_run(run, online=False)
    for name in on.datasets:
        assert on.datasets[name].per_video == off.datasets[name].per_video


def test_standardisation_is_fitted_on_training_videos_and_reused_at_evaluation(tmp_path, stores):
    """The checkpoint holds the mean/std of exactly the training videos' features."""
    import numpy as np

    from actrec.data.scaling import FeatureScaler
    from actrec.io.features import FeatureStore
    from actrec.train import train_model

    run = tmp_path / "run"
    train_model(spec(stores["a"], iterations=3, seed=1), run)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    store = FeatureStore.open(stores["a"])
    train_ids = store.splits[sorted(store.splits)[0]]["train"]
    expected = FeatureScaler.fit([store.read(v)[0] for v in train_ids])
    got = FeatureScaler.from_state(ckpt["input_scalers"][0])
    np.testing.assert_allclose(got.mean, expected.mean, rtol=1e-6)
    np.testing.assert_allclose(got.std, expected.std, rtol=1e-6)


def test_a_split_without_training_videos_names_its_scheme(tmp_path):
    # e.g. Breakfast's official split on a subset of the persons: say so, not "no videos"
    path = tmp_path / "s.zarr"
    store = FeatureStore.open_or_create(
        path, dataset="toy", split_scheme="official", classes=["a", "b"],
        splits={"1": {"train": [], "test": ["v0"]}}, extractor="toy", extractor_config={},
        lookahead=0, dtype="float32")
    store.write_video("v0", np.zeros((20, 3), np.float32), np.zeros(20, np.int64), fps=15.0,
                      source=None)
    spec = TrainSpec(model="lstm", d1=path, history=8, iterations=1, mix=(2, 0))
    with pytest.raises(DataError, match=r"split '1' \(split scheme 'official'\) lists no "
                                        r"training videos"):
        train_model(spec, tmp_path / "run")
    assert not (tmp_path / "run").exists()
