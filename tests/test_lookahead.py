"""Look-ahead evaluation: online stepping with a delay of K frames (actrec.lookahead).

Golden model: the features of frame t are the one-hot code of frame t's label, and a
hand-made causal model answers at step s with the code it received at step s - K (a K-frame
delay line). Stepped with look-ahead K, frame t is answered at step t + K with frame t's own
code: 100 % on every frame (the last K frames through the end-of-video flush). With K - 1 or
K + 1 the answer is a neighbour's label: wrong exactly where the label changes.
"""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_train_eval import make_store

from actrec.cli import cli
from actrec.data.labels import InputLayout, LabelSpace
from actrec.errors import ActrecError, ConfigError
from actrec.evaluate import _step_through, evaluate_model, evaluate_run, predict_videos
from actrec.io.features import FeatureStore
from actrec.lookahead import delayed_inputs, resolve_lookahead, step_with_delay
from actrec.nn.base import SequenceModel
from actrec.train import TrainSpec, train_model

CLASSES = 4


class DelayLine(SequenceModel):
    """Causal: the logits of step s are 10 x the input of step s - K (zeros before that)."""

    causal = True

    def __init__(self, delay: int):
        super().__init__()
        self.delay = delay

    def forward(self, x, domain, mask=None):  # [T, N, D] -> [T, N, D]
        pad = x.new_zeros((self.delay, *x.shape[1:]))
        return 10 * torch.cat([pad, x])[: x.shape[0]]

    def init_state(self, batch, domain):
        return [torch.zeros(batch, CLASSES) for _ in range(self.delay)]

    def step(self, x_t, state):
        line = state + [x_t]
        return 10 * line[0], line[1:]


def one_hot(y):
    return np.eye(CLASSES, dtype=np.float32)[y]


# Two videos of different lengths, labels changing every few frames (hand-picked).
VIDEOS = [np.array([0, 0, 1, 1, 1, 2, 3, 3, 0, 0, 2]), np.array([3, 3, 3, 1, 0, 0, 2])]


def predict(model, k, videos=VIDEOS, batch_videos=32):
    labels, layout = LabelSpace((tuple(f"c{i}" for i in range(CLASSES)),)), InputLayout((CLASSES,))
    return predict_videos(model, [one_hot(y) for y in videos], 0, labels, layout, online=True,
                          batch_videos=batch_videos, lookahead=k)


@pytest.mark.parametrize("delay", [1, 2, 3])
@pytest.mark.parametrize("batch_videos", [1, 32])
def test_a_delayed_copy_scores_100_with_its_delay_and_not_with_one_less(delay, batch_videos):
    model = DelayLine(delay)
    exact = predict(model, delay, batch_videos=batch_videos)
    for p, y in zip(exact, VIDEOS):
        assert p.tolist() == y.tolist()  # every frame, the last `delay` ones included
    early = predict(model, delay - 1, batch_videos=batch_videos)
    # K - 1: frame t gets frame t-1's label; frame 0 gets the empty line's answer, class 0.
    for p, y in zip(early, VIDEOS):
        assert p.tolist() == [0] + y[:-1].tolist()
    hits = sum(int((p == y).sum()) for p, y in zip(early, VIDEOS))
    # By hand: video 0 has 5 frames that repeat their predecessor's label, and its frame 0 is
    # class 0; video 1 has 3 repeats and starts with class 3.
    assert hits == 6 + 3
    late = predict(model, delay + 1, batch_videos=batch_videos)
    # K + 1: frame t gets frame t+1's label, the last frame its own (the flush repeats it).
    for p, y in zip(late, VIDEOS):
        assert p.tolist() == y[1:].tolist() + [y[-1]]


def test_lookahead_zero_is_the_online_pass_exactly():
    torch.manual_seed(0)
    from actrec.registry import plugin_class

    cls = plugin_class("models", "lstm")
    plugin = cls(cls.Config(hidden=8))
    labels = LabelSpace((("a", "b", "c"),))
    model = plugin.build(5, 3).eval()
    x = torch.randn(9, 3, 5)
    dom = torch.zeros(3, dtype=torch.long)
    with torch.no_grad():
        online, p_online = _step_through(model, x, dom, labels, 0, "block", True)
        delayed, p_delayed = step_with_delay(model, x, [9, 9, 9], dom, 0, lambda z: (
            labels.predict(z, 0, "block"), z[:, :3].softmax(-1)))
    assert torch.equal(online, delayed)
    assert torch.allclose(p_online, p_delayed)


def test_predict_videos_refuses_a_lookahead_offline():
    labels, layout = LabelSpace((tuple("abc"),)), InputLayout((3,))
    with pytest.raises(ConfigError, match="delay of the online pass"):
        predict_videos(DelayLine(1), [np.eye(3, dtype=np.float32)], 0, labels, layout,
                       online=False, lookahead=2)


def test_flush_repeats_each_videos_last_frame():
    x = torch.arange(2 * 3 * 1, dtype=torch.float32).reshape(3, 2, 1) + 1  # [T=3, B=2, W=1]
    out = delayed_inputs(x, [3, 2], 2)
    assert out[:, 0, 0].tolist() == [1, 3, 5, 5, 5]  # video 0: 3 frames, then its last twice
    assert out[:, 1, 0].tolist() == [2, 4, 4, 4, 0]  # video 1: 2 real frames (row 2 padding)
    assert delayed_inputs(x, [3, 2], 0) is x


def test_resolve_lookahead():
    assert resolve_lookahead(None, 24) == (0, "0 frames (online)")
    assert resolve_lookahead("3", None)[0] == 3
    assert resolve_lookahead(5, None)[0] == 5
    k, rule = resolve_lookahead("half-history", 25)
    assert k == 12 and "25 // 2" in rule
    for bad in ("-1", "x", "1.5", ""):
        with pytest.raises(ConfigError, match="--lookahead"):
            resolve_lookahead(bad, 24)
    with pytest.raises(ConfigError, match="history"):
        resolve_lookahead("half-history", None)


def test_evaluate_model_on_a_real_store_scores_the_delay_line(tmp_path):
    """Through a Zarr store, the scoring and the recorded latency and predictions."""
    rng = np.random.default_rng(0)
    ids = [f"v{i}" for i in range(3)]
    store = FeatureStore.open_or_create(
        tmp_path / "s.zarr", dataset="codes", split_scheme="default",
        classes=[f"c{i}" for i in range(CLASSES)], splits={"1": {"train": [], "test": ids}},
        extractor="onehot", extractor_config={}, lookahead=0, dtype="float32")
    for vid in ids:
        y = np.repeat(rng.integers(0, CLASSES, size=12), rng.integers(1, 6, size=12))
        store.write_video(vid, one_hot(y), y, fps=15.0, source=None)
    labels = LabelSpace((tuple(store.classes),))
    latency, preds = {}, {}
    res = evaluate_model(DelayLine(2), [store], ["1"], labels, InputLayout((CLASSES,)),
                         online=True, lookahead=2, latency=latency, predictions=preds)
    assert res["codes"].frame_accuracy == 1.0 and res["codes"].edit == 1.0
    res1 = evaluate_model(DelayLine(2), [store], ["1"], labels, InputLayout((CLASSES,)),
                          online=True, lookahead=1)
    assert res1["codes"].frame_accuracy < 1.0
    ids_, p, y, _ = preds["codes"]
    assert ids_ == tuple(ids) and all((a == b).all() for a, b in zip(p, y))
    entry = latency["codes"]
    assert entry["delay_frames"] == 2 and entry["step_ms"]["median"] > 0
    assert entry["step_ms"]["p99"] >= entry["step_ms"]["median"] > 0
    assert entry["step_ms"]["max"] >= entry["step_ms"]["p99"]
    n = sum(store.num_frames(v) for v in ids)
    assert entry["timed_steps"] == min(n, 500) - entry["warmup_steps"]
    assert entry["frames_per_second_per_stream"] == pytest.approx(
        1000 / entry["step_ms"]["mean"])
    batched = entry["throughput"]
    assert batched["streams"] == 3 and batched["frames_per_second"] == pytest.approx(
        3 * batched["frames_per_second_per_stream"])


# --------------------------------------------------------------------------------------------
# Runs: results files, recorded mode and K, the command line


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("la")
    store = make_store(root / "a.zarr", dim=6, classes=3, n_train=6, n_test=3, seed=1)
    run_dir = root / "run"
    train_model(TrainSpec(model="lstm", d1=store, model_options={"hidden": 16}, history=24,
                          iterations=30, mix=(8, 0), lr=0.02, optimizer="adam", log_every=5,
                          seed=0), run_dir)
    return run_dir


@pytest.mark.slow
def test_each_lookahead_has_its_own_results_file_recording_mode_and_k(run):
    online = evaluate_run(run, online=True)
    zero = evaluate_run(run, online=True, lookahead=0)
    assert zero.protocol["mode"] == "online" and zero.protocol["lookahead"] == 0
    for name, ds in online.datasets.items():  # K = 0 is online, exactly
        assert zero.datasets[name].per_video == ds.per_video
    two = evaluate_run(run, online=True, lookahead=2)
    half = evaluate_run(run, online=True, lookahead="half-history")
    off = evaluate_run(run, online=False)
    files = {p.name for p in run.glob("eval-*.json")}
    assert files == {"eval-online.json", "eval-lookahead-2.json", "eval-lookahead-12.json",
                     "eval-offline.json"}
    saved = json.loads((run / "eval-lookahead-2.json").read_text())
    assert saved["protocol"]["mode"] == "lookahead-2" and saved["protocol"]["lookahead"] == 2
    assert saved["latency"]["toy1"]["delay_frames"] == 2
    assert saved["protocol"]["frames_ahead"] == 2  # causal features: the look-ahead alone
    assert online.protocol["frames_ahead"] == 0
    assert half.protocol["lookahead"] == 12 and "24 // 2" in half.protocol["lookahead_rule"]
    assert off.protocol["lookahead"] is None and off.latency == {}
    assert off.protocol["frames_ahead"] is None
    assert two.datasets["toy1"].per_video != online.datasets["toy1"].per_video
    # the per-frame predictions are readable by whoever can read the results beside them
    for name in files:
        npz = run / name.replace(".json", ".predictions.npz")
        assert npz.stat().st_mode & 0o777 == (run / name).stat().st_mode & 0o777
    with pytest.raises(ActrecError, match="offline"):
        evaluate_run(run, online=False, lookahead=2)


@pytest.mark.slow
def test_cli_lookahead_table_and_json(run):
    runner = CliRunner()
    out = runner.invoke(cli, ["eval", str(run), "--lookahead", "3", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output[out.output.index("{"):])
    assert data["protocol"]["lookahead"] == 3 and data["protocol"]["mode"] == "lookahead-3"
    lat = data["latency"]["toy1"]
    assert lat["step_ms"]["median"] > 0 and lat["frames_per_second_per_stream"] > 0
    table = runner.invoke(cli, ["eval", str(run), "--lookahead", "3"], terminal_width=200)
    assert table.exit_code == 0 and "look-ahead (3 frames)" in table.output
    # the run was not trained to answer late: the table says what the number means
    assert "trained to answer at once" in " ".join(table.output.split())
    assert "latency of the model's step" in table.output and "p99 ms" in table.output
    bad = runner.invoke(cli, ["eval", str(run), "--lookahead", "soon"])
    assert bad.exit_code != 0 and "--lookahead" in str(bad.exception or bad.output)


# --------------------------------------------------------------------------------------------
# Training to answer late (--delay K) and evaluating at that delay


def test_delay_targets_by_hand():
    from actrec.lookahead import delay_targets

    y = np.array([[0, 1], [2, 3], [4, -1]])
    assert delay_targets(y, 0) is y
    assert delay_targets(y, 1).tolist() == [[-1, -1], [0, 1], [2, 3]]
    assert delay_targets(torch.from_numpy(y), 2).tolist() == [[-1, -1], [-1, -1], [0, 1]]
    assert delay_targets(y, 5).tolist() == [[-1, -1]] * 3


def test_delay_targets_never_put_a_label_on_padding():
    """A batch of a 5-frame and a 3-frame video padded to 5 rows, delay 2: without the mask the
    short video's last two labels land on its padded rows 3 and 4 (outputs of zero inputs)."""
    from actrec.lookahead import delay_targets

    y = np.array([[0, 1], [1, 2], [2, 0], [0, -1], [1, -1]])  # [T=5, N=2]
    mask = np.array([[True, True]] * 3 + [[True, False]] * 2)
    want = [[-1, -1], [-1, -1], [0, 1], [1, -1], [2, -1]]
    assert delay_targets(y, 2, mask).tolist() == want
    assert delay_targets(torch.from_numpy(y), 2, torch.from_numpy(mask)).tolist() == want
    assert delay_targets(y, 2).tolist()[3:] == [[1, 2], [2, 0]]  # what an unmasked call gives
    assert delay_targets(y, 0, mask).tolist() == [[0, 1], [1, 2], [2, 0], [0, -1], [1, -1]]


@pytest.mark.slow
def test_a_run_trained_with_a_delay_is_evaluated_at_it(run, tmp_path):
    store = make_store(tmp_path / "a.zarr", dim=6, classes=3, n_train=6, n_test=3, seed=1)
    base = {"model": "lstm", "d1": store, "model_options": {"hidden": 16}, "history": 24,
            "iterations": 60, "mix": (8, 0), "lr": 0.02, "optimizer": "adam", "log_every": 10,
            "eval_every": 30, "seed": 0}
    with pytest.raises(ConfigError, match="delay must be"):
        TrainSpec(**base, delay=24)
    run_dir = tmp_path / "late"
    train_model(TrainSpec(**base, delay=3), run_dir)
    late = evaluate_run(run_dir)  # online: with the run's delay
    assert late.protocol["lookahead"] == 3 and late.protocol["trained_delay"] == 3
    assert late.protocol["mode"] == "lookahead-3"
    assert (run_dir / "eval-lookahead-3.json").is_file()
    # Trained to answer 3 frames late and read 3 frames late, it recognises the frames; a run
    # trained online and read 3 frames late answers for the wrong frames near every change.
    assert late.datasets["toy1"].frame_accuracy > 0.85  # chance is 1/3
    early = evaluate_run(run, lookahead=3).datasets["toy1"].frame_accuracy
    assert early < late.datasets["toy1"].frame_accuracy - 0.15
    for wrong in ({"lookahead": 0}, {"lookahead": 5}, {"online": False}):
        with pytest.raises(ActrecError, match="trained to answer 3 frame"):
            evaluate_run(run_dir, **wrong)
    # The periodic test accuracy of training was measured at the delay too.
    lines = [json.loads(t) for t in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["eval"]["toy1"] for line in lines if "eval" in line][-1] == pytest.approx(
        late.datasets["toy1"].frame_accuracy)


def test_validation_of_a_delayed_run_scores_real_steps_only(tmp_path):
    # Validation runs whole videos side by side, padded to the longest: a shorter video's last
    # `delay` labels move onto its padding steps and must not be scored there (the count would
    # depend on which videos share a batch).
    store = make_store(tmp_path / "a.zarr", dim=6, classes=3, n_train=6, n_test=2, seed=4)
    run_dir = tmp_path / "run"
    train_model(TrainSpec(model="lstm", d1=store, model_options={"hidden": 4}, history=12,
                          iterations=2, mix=(4, 0), seed=0, delay=3, val_fraction=0.5,
                          val_every=2), run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    held_out = config["validation"][0]["val_videos"]
    assert len(held_out) >= 2
    opened = FeatureStore.open(store)
    expected = sum(int((opened.read(v)[1][:-3] >= 0).sum()) for v in held_out)
    lines = [json.loads(t) for t in (run_dir / "metrics.jsonl").read_text().splitlines()]
    (val,) = [line["val"] for line in lines if "val" in line]
    assert val["D1"]["frames"] == expected


def test_frames_ahead_adds_the_features_own_lookahead(tmp_path):
    store = make_store(tmp_path / "f.zarr", dim=6, classes=3, n_train=3, n_test=2, seed=3,
                       lookahead=3)
    run_dir = tmp_path / "run"
    train_model(TrainSpec(model="lstm", d1=store, model_options={"hidden": 4}, history=12,
                          iterations=2, mix=(4, 0), seed=0), run_dir)
    result = evaluate_run(run_dir, lookahead=2, allow_noncausal_features=True)
    assert result.protocol["lookahead"] == 2 and result.protocol["frames_ahead"] == 2 + 3


@pytest.mark.slow
def test_cli_train_delay_then_eval_reads_it(tmp_path):
    store = make_store(tmp_path / "a.zarr", dim=6, classes=3, n_train=3, n_test=2, seed=1)
    run_dir = tmp_path / "run"
    runner = CliRunner()
    out = runner.invoke(cli, ["train", "lstm", "--d1", str(store), "--iterations", "2",
                              "--history", "8", "--mix", "4:0", "-o", "hidden=4", "--delay", "2",
                              "--run-dir", str(run_dir)])
    assert out.exit_code == 0, out.output
    assert json.loads((run_dir / "config.json").read_text())["spec"]["delay"] == 2
    out = runner.invoke(cli, ["eval", str(run_dir), "--json"])
    assert out.exit_code == 0, out.output
    protocol = json.loads(out.output[out.output.index("{"):])["protocol"]
    assert protocol["lookahead"] == 2 and protocol["trained_delay"] == 2
    bad = runner.invoke(cli, ["eval", str(run_dir), "--lookahead", "0"])
    assert bad.exit_code != 0 and "--lookahead 2" in str(bad.exception)
    # an explicit --online is delay 0: refused for this run, never silently read at its delay
    bad = runner.invoke(cli, ["eval", str(run_dir), "--online"])
    assert bad.exit_code != 0 and "--lookahead 2" in str(bad.exception)
    # two settings at once are refused, whichever order, never one silently winning
    for args in (["--online", "--offline"], ["--offline", "--online"],
                 ["--lookahead", "0", "--offline"], ["--online", "--lookahead", "2"]):
        bad = runner.invoke(cli, ["eval", str(run_dir), *args])
        assert bad.exit_code == 2 and "name different settings" in bad.output, args
    bad = runner.invoke(cli, ["train", "lstm", "--d1", str(store), "--history", "8",
                              "--delay", "8", "--run-dir", str(tmp_path / "r2")])
    assert bad.exit_code != 0 and "delay must be" in str(bad.exception)
