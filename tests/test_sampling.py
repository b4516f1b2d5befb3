"""Training windows at a stride, in shuffled epochs (``--windows stride:S``, ``--epochs``), and
exact resumption of such runs."""

import json

import numpy as np
import pytest
import torch

from actrec.data.sampling import (
    RandomWindows,
    StrideWindows,
    UniformLabelWindows,
    iterations_for_epochs,
    parse_windows,
)
from actrec.data.windows import VideoBank, sample_windows
from actrec.errors import ConfigError
from actrec.io.features import FeatureStore
from actrec.train import TrainSpec, train_model


def _bank(lengths=(7, 3, 12)):
    """Videos whose feature at frame t of video v is (v, t) and whose label is t."""
    videos = []
    for v, t in enumerate(lengths):
        x = np.stack([np.full(t, v), np.arange(t)], 1).astype(np.float32)
        videos.append((f"v{v}", x, np.arange(t)))
    return VideoBank.from_arrays(videos, name="toy")


def _ends(sampler, epoch):
    video, end = sampler.epoch(epoch)
    return sorted(zip(video.tolist(), end.tolist()))


def test_an_epoch_is_every_window_ending_at_every_stride_th_frame_from_a_per_video_offset():
    bank = _bank()
    s = StrideWindows(bank, history=4, stride=3, seed=5)
    for epoch in range(4):
        ends = _ends(s, epoch)
        assert len(ends) == s.epoch_size(epoch)
        for v, t in enumerate((7, 3, 12)):
            mine = [e for vv, e in ends if vv == v]
            assert mine, f"video {v} has no window in epoch {epoch}"
            o = mine[0]
            assert 0 <= o < 3 and mine == list(range(o, t, 3))  # every third frame from o


def test_windows_hold_the_frames_up_to_their_end_and_short_ones_start_at_the_video_start():
    bank = _bank()
    s = StrideWindows(bank, history=4, stride=1, seed=0)
    w = s.draw(0, s.epoch_size(0))  # one whole epoch: every frame ends one window
    assert w.features.shape == (4, 22, 2)
    for i in range(22):
        v, start = int(w.video[i]), int(w.start[i])
        real = int(w.mask[:, i].sum())
        end = start + real - 1
        assert start == max(0, end - 3)  # the 4 frames up to the end, or from frame 0
        assert w.features[:real, i, 1].tolist() == list(range(start, end + 1))
        assert (w.features[:real, i, 0] == v).all()
        assert w.labels[:real, i].tolist() == list(range(start, end + 1))
        assert (w.labels[real:, i] == -1).all() and not w.mask[real:, i].any()
        assert (w.features[real:, i] == 0).all()
    got = sorted(zip(w.video.tolist(), (w.start + w.mask.sum(0) - 1).tolist()))
    assert got == [(v, e) for v, t in enumerate((7, 3, 12)) for e in range(t)]


def test_epochs_are_shuffled_differently_and_reproducible_from_the_seed():
    bank = _bank((40, 50, 60))
    a, b = StrideWindows(bank, 8, 2, seed=1), StrideWindows(bank, 8, 2, seed=1)
    first = a.epoch(0)
    assert not np.array_equal(first[0], a.epoch(1)[0])  # a new order (and offsets) per epoch
    assert np.array_equal(first[0], b.epoch(0)[0]) and np.array_equal(first[1], b.epoch(0)[1])
    c = StrideWindows(bank, 8, 2, seed=2)
    assert not np.array_equal(first[1], c.epoch(0)[1])


def test_iterations_walk_the_epochs_as_one_stream_and_depend_on_the_iteration_only():
    bank = _bank((40, 50, 60))
    s = StrideWindows(bank, 8, 2, seed=1)
    n = 7
    size0 = s.epoch_size(0)
    stream = np.concatenate([np.stack(s.epoch(e), 1) for e in range(3)])  # [W, 2]
    for it in (0, 5, size0 // n, size0 // n + 1, 20):
        w = StrideWindows(bank, 8, 2, seed=1).draw(it, n)  # a fresh sampler: no history
        ends = w.start + w.mask.sum(0) - 1
        want = stream[it * n : (it + 1) * n]
        assert w.video.tolist() == want[:, 0].tolist() and ends.tolist() == want[:, 1].tolist()


def test_iterations_for_epochs_cover_the_epochs_in_whole_batches():
    bank = _bank((40, 50, 60))
    s = StrideWindows(bank, 8, 2, seed=1)
    total = s.epoch_size(0) + s.epoch_size(1)
    assert iterations_for_epochs(s, 2, 16) == -(-total // 16)
    r = RandomWindows(bank, 10)
    assert r.epoch_size() == 15  # 150 frames / 10 per window
    assert iterations_for_epochs(r, 3, 4) == 12  # ceil(45 / 4)


def test_random_windows_are_the_old_sampler():
    bank = _bank((40, 50, 60))
    a = RandomWindows(bank, 8).draw(3, 5, np.random.default_rng(4))
    b = sample_windows(bank, 5, 8, np.random.default_rng(4))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_uniform_windows_are_the_one_label_windows_by_hand():
    """Labels 0 0 0 0 1 1 1 -1 -1 -1 2 2 2 and a 2-frame video, history 3: the one-label
    windows start at 0, 1 (class 0), 4 (class 1) and 10 (class 2), never across a change or
    an unlabelled frame; an epoch is the 3 non-overlapping ones."""
    labels = np.array([0, 0, 0, 0, 1, 1, 1, -1, -1, -1, 2, 2, 2])
    bank = VideoBank.from_arrays([("a", np.arange(13, dtype=np.float32)[:, None], labels),
                                  ("b", np.zeros((2, 1), np.float32), np.array([5, 5]))])
    sampler = UniformLabelWindows(bank, 3)
    assert sampler.video.tolist() == [0, 0, 0, 0] and sampler.start.tolist() == [0, 1, 4, 10]
    assert sampler.epoch_size() == 3
    w = sampler.draw(0, 200, np.random.default_rng(0))
    assert w.mask.all() and set(w.start.tolist()) == {0, 1, 4, 10}
    assert (w.labels == w.labels[:1]).all()  # every window one label
    assert np.array_equal(w.features[:, :, 0], w.start[None] + np.arange(3)[:, None])
    assert UniformLabelWindows(bank, 4).start.tolist() == [0]
    with pytest.raises(ConfigError, match="no window of 5 frames .* carries one label"):
        UniformLabelWindows(bank, 5)
    assert str(parse_windows(" Uniform")) == "uniform"


def test_parsing_and_clear_errors():
    assert str(parse_windows("Stride:4")) == "stride:4"
    assert str(parse_windows("random")) == "random"
    for bad in ("stride", "stride:0", "stride:x", "every:4", "strided:2"):
        with pytest.raises(ConfigError, match="windows"):
            parse_windows(bad)
    with pytest.raises(ConfigError, match="longer than every training video"):
        StrideWindows(_bank(), 4, 13, seed=0)


# --------------------------------------------------------------------------------------------
# Training in epochs, and resuming it exactly


def _store(path):
    rng = np.random.default_rng(3)
    ids = [f"v{i}" for i in range(5)]
    store = FeatureStore.open_or_create(
        path, dataset="toy", split_scheme="default", classes=["a", "b", "c"],
        splits={"1": {"train": ids[:4], "test": ids[4:]}}, extractor="toy",
        extractor_config={}, lookahead=0, dtype="float32")
    centres = rng.normal(size=(3, 4))
    for vid in ids:
        t = int(rng.integers(20, 40))
        y = np.repeat(rng.integers(0, 3, size=t // 4 + 1), 4)[:t]
        x = centres[y] + 0.5 * rng.normal(size=(t, 4))
        store.write_video(vid, x.astype(np.float32), y, fps=15.0, source=None)
    return path


def _spec(store, **kw):
    base = {"model": "lstm", "d1": store,
            "model_options": {"hidden": 8, "embed": 8, "input_dropout": 0.1},
            "history": 12, "mix": (6, 0), "lr": 0.01, "optimizer": "adamw",
            "weight_decay": 0.05, "windows": "stride:2", "loss_frames": "after:3", "epochs": 3,
            "seed": 7, "checkpoint_every": 4, "log_every": 1}
    return TrainSpec(**{**base, **kw})


@pytest.mark.slow
def test_epochs_set_the_iterations_and_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    store = _store(tmp_path / "s.zarr")
    full = train_model(_spec(store), tmp_path / "full")
    sizes = StrideWindows(_bank_of(store), 12, 2, seed=7)
    want = -(-sum(sizes.epoch_size(e) for e in range(3)) // 6)
    assert full.iterations == want
    config = json.loads((tmp_path / "full" / "config.json").read_text())
    assert config["spec"]["epochs"] == 3 and config["spec"]["iterations"] == want
    assert config["spec"]["windows"] == "stride:2" and config["spec"]["loss_frames"] == "after:3"
    # "killed" after one epoch: a run of 1 epoch, then resumed to 3 epochs in the same folder
    part = train_model(_spec(store, epochs=1), tmp_path / "part")
    assert part.iterations < want
    resumed = train_model(_spec(store), tmp_path / "part")
    assert resumed.resumed_from == part.iterations and resumed.iterations == want
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=False)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    def losses(run):
        logged = [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [line["loss"] for line in logged if "loss" in line]

    assert losses("full") == losses("part")


def _bank_of(store):
    s = FeatureStore.open(store)
    return VideoBank.from_store(s, s.splits["1"]["train"], name="toy")
