"""Where the loss counts (``--loss-frames``): checked on gradients, by hand, and end to end.

Gradients of the loss with respect to the logits are non-zero exactly on the frames the rule
selects (every class's logit of a scored frame gets gradient ``softmax - onehot``, never all
zero), so the set of frames with a non-zero gradient row is the set of frames in the loss.
"""

import numpy as np
import pytest
import torch

from actrec.errors import ConfigError
from actrec.io.features import FeatureStore
from actrec.losses import LossFrames, frame_loss, loss_frame_mask, parse_loss_frames
from actrec.train import TrainSpec, train_model

T, N, K = 6, 4, 3


def _batch():
    """Labels [T, N] and mask: row 0 full, row 1 padded after 3 frames, row 2 with its last
    real frame unlabelled and an unlabelled frame inside, row 3 unlabelled throughout."""
    y = torch.tensor([
        [0, 1, 2, -1],
        [1, 2, 0, -1],
        [2, 0, -1, -1],
        [0, -1, 1, -1],
        [1, -1, 2, -1],
        [2, -1, -1, -1],
    ])
    mask = torch.ones(T, N, dtype=torch.bool)
    mask[3:, 1] = False  # row 1: 3 real frames, then padding (label -1 there)
    return y, mask


def _scored_frames(rule):
    """Frames (t, n) whose logits receive a gradient from ``frame_loss`` under ``rule``."""
    y, mask = _batch()
    logits = torch.randn(T, N, K, generator=torch.Generator().manual_seed(0), requires_grad=True)
    frame_loss(logits, y, mask, rule).backward()
    rows = logits.grad.abs().sum(-1) > 0  # [T, N]
    return {(int(t), int(n)) for t, n in rows.nonzero()}


def test_all_scores_every_real_labelled_frame_and_never_padding_or_label_minus_one():
    assert _scored_frames("all") == {
        (0, 0), (1, 0), (2, 0), (3, 0), (4, 0), (5, 0),
        (0, 1), (1, 1), (2, 1),
        (0, 2), (1, 2), (3, 2), (4, 2),
    }


def test_last_scores_the_last_real_labelled_frame_of_each_window_only():
    # row 0: frame 5; row 1 (padded after 3 frames): its last real frame 2; row 2: frame 5 is
    # unlabelled, so its last labelled frame 4; row 3: nothing.
    assert _scored_frames("last") == {(5, 0), (2, 1), (4, 2)}


def test_last_ignores_labels_put_on_padded_frames():
    y, mask = _batch()
    y[3:, 1] = 1  # a label on padding must not make a padded frame "last"
    keep = loss_frame_mask(y, mask, "last")
    assert keep[:, 1].nonzero().flatten().tolist() == [2]


def test_after_k_scores_window_positions_k_and_later():
    assert _scored_frames("after:3") == {(3, 0), (4, 0), (5, 0), (3, 2), (4, 2)}
    assert _scored_frames("after:0") == _scored_frames("all")
    assert _scored_frames("after:5") == {(5, 0)}


def test_after_k_spares_windows_that_start_at_their_videos_first_frame():
    """Rows 0 and 2 start at frame 0 of their videos (cold state = online's): no burn-in."""
    y, mask = _batch()
    start = torch.tensor([0, 7, 0, 3])
    keep = loss_frame_mask(y, mask, "after:3", start)
    got = {(int(t), int(n)) for t, n in keep.nonzero()}
    assert got == {(0, 0), (1, 0), (2, 0), (3, 0), (4, 0), (5, 0), (0, 2), (1, 2), (3, 2), (4, 2)}
    assert torch.equal(loss_frame_mask(y, mask, "after:3", torch.tensor([5, 7, 1, 3])),
                       loss_frame_mask(y, mask, "after:3"))
    logits = torch.randn(T, N, K, generator=torch.Generator().manual_seed(0))
    assert torch.isclose(frame_loss(logits, y, mask, "after:3", start),
                         torch.nn.functional.cross_entropy(logits[keep], y[keep]))


def test_the_loss_is_the_mean_cross_entropy_of_the_selected_frames_by_hand():
    y, mask = _batch()
    logits = torch.randn(T, N, K, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lp = torch.log_softmax(logits, -1).numpy()
    frames = [(5, 0), (2, 1), (4, 2)]
    want = -np.mean([lp[t, n, y[t, n]] for t, n in frames])
    assert float(frame_loss(logits, y, mask, "last")) == pytest.approx(want, rel=1e-12)
    frames = [(3, 0), (4, 0), (5, 0), (3, 2), (4, 2)]
    want = -np.mean([lp[t, n, y[t, n]] for t, n in frames])
    assert float(frame_loss(logits, y, mask, "after:3")) == pytest.approx(want, rel=1e-12)


def test_no_selected_frame_gives_a_zero_loss_with_zero_gradients():
    y = torch.full((T, N), -1)
    logits = torch.randn(T, N, K, requires_grad=True)
    loss = frame_loss(logits, y, None, "last")
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(logits.grad.abs().sum()) == 0.0


def test_parsing_and_clear_errors():
    assert parse_loss_frames(" After:12 ") == LossFrames("after", 12)
    assert str(parse_loss_frames("last")) == "last"
    for bad in ("first", "after:", "after:-1", "after:x", "last:3"):
        with pytest.raises(ConfigError, match="loss_frames"):
            parse_loss_frames(bad)
    with pytest.raises(ConfigError, match="no frame of a 8-frame window"):
        parse_loss_frames("after:8", history=8)


def test_the_spec_normalises_and_checks_loss_frames(tmp_path):
    assert TrainSpec(model="lstm", d1=tmp_path, loss_frames="AFTER:4").loss_frames == "after:4"
    with pytest.raises(ConfigError, match="burn-in K=20 leaves no frame"):
        TrainSpec(model="lstm", d1=tmp_path, history=20, loss_frames="after:20")


# --------------------------------------------------------------------------------------------
# End to end: frames outside the loss cannot change what is learnt


def _store(path, labels):
    """Four training videos of exactly 10 frames (the windows are whole videos)."""
    rng = np.random.default_rng(0)
    ids = [f"v{i}" for i in range(4)]
    store = FeatureStore.open_or_create(
        path, dataset="toy", split_scheme="default", classes=["a", "b", "c"],
        splits={"1": {"train": ids, "test": ["t"]}}, extractor="toy", extractor_config={},
        lookahead=0, dtype="float32")
    for i, vid in enumerate(ids + ["t"]):
        y = labels[i] if i < len(ids) else labels[0]
        store.write_video(vid, rng.normal(size=(10, 5)).astype(np.float32), y,
                          fps=15.0, source=None)
    return path


def _train(tmp_path, name, labels, rule, model="lstm"):
    store = _store(tmp_path / f"{name}.zarr", labels)
    spec = TrainSpec(model=model, d1=store, model_options={"hidden": 8}, history=10,
                     iterations=3, mix=(4, 0), lr=0.05, optimizer="adam", seed=0,
                     loss_frames=rule, standardize=False)
    run = tmp_path / name
    train_model(spec, run)
    return torch.load(run / "checkpoint.pt", weights_only=False)["model"]


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["lstm", "ddlstm"])
def test_labels_outside_the_loss_frames_do_not_change_training(tmp_path, model):
    base = np.tile(np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0]), (4, 1))
    early = base.copy()
    early[:, :4] = (early[:, :4] + 1) % 3  # frames 0..3: window positions 0..3
    final = base.copy()
    final[:, 9] = (final[:, 9] + 1) % 3  # the last frame: inside both
    ref = _train(tmp_path, "ref", base, "after:4", model)
    # every window here is a whole video, starting at its first frame: its cold state is the
    # online one, so "after:4" burns nothing in and the early labels count (the trainer passes
    # each window's start to the loss)
    assert not _same(ref, _train(tmp_path, "early", early, "after:4", model))
    assert not _same(ref, _train(tmp_path, "final", final, "after:4", model))
    middle4 = base.copy()
    middle4[:, 4:9] = (middle4[:, 4:9] + 1) % 3  # inside "after:4", outside "last"
    ref = _train(tmp_path, "ref_last", base, "last", model)
    middle = base.copy()
    middle[:, :9] = (middle[:, :9] + 1) % 3
    assert _same(ref, _train(tmp_path, "middle_last", middle, "last", model))
    assert _same(ref, _train(tmp_path, "middle4_last", middle4, "last", model))
    assert not _same(ref, _train(tmp_path, "final_last", final, "last", model))
    # and "all" sees the early frames
    assert not _same(_train(tmp_path, "ref_all", base, "all", model),
                     _train(tmp_path, "early_all", early, "all", model))
