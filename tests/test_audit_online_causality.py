"""Causality of every built-in temporal model through the evaluation path, as a property.

For each model plugin (found through the registry, so a new built-in plugin must be added to
``SMALL`` here), in float32 with trained running statistics, on videos of several lengths
stepped side by side: perturbing the features of frames t+1.. of every video leaves the class
probabilities of frames 0..t bit for bit unchanged, online and (causal models) offline; with a
look-ahead of L they leave frames 0..t-L unchanged and change frame t+1-L (the look-ahead is
exactly L, not L - 1 or L + 1). A video's predictions do not depend on the videos stepped
beside it. Non-causal models refuse the online pass and do look at the future offline. The
same holds end to end through ``evaluate_run`` on real Zarr stores.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actrec.data.labels import InputLayout, LabelSpace
from actrec.evaluate import predict_videos
from actrec.registry import BUILTIN_DIST, discover, plugin_class

D, K = 6, 5
SMALL = {  # small options for each built-in model plugin
    "lstm": {"hidden": 8, "layers": 2, "embed": 6},
    "bnlstm": {"hidden": 8, "layers": 2, "max_len": 6},
    "ddlstm": {"hidden": 8, "layers": 2, "max_len": 6, "input_projection": True},
    "rnn": {"hidden": 8, "layers": 2},
    "birnn": {"hidden": 8},
    "average": {"hidden": 8},
    "gru": {"hidden": 8, "fc": 6},
    "miniroad": {"hidden": 8, "embed": 10},
}
LENGTHS = (23, 9, 17)  # longer than max_len, and shorter than the cut points below
CUTS = (0, 4, 12)  # last unperturbed frame t
LABELS = LabelSpace((tuple(f"c{i}" for i in range(K)),))
LAYOUT = InputLayout((D,))


def builtin_models() -> list[str]:
    return sorted(r.name for r in discover().records
                  if r.kind == "models" and r.dist == BUILTIN_DIST)


def test_every_builtin_model_is_covered():
    assert builtin_models() == sorted(SMALL)


def _model(name: str):
    boundary = name.endswith("+boundary")  # the DDLSTM paper's pre-stage in front (Sec. 5.1)
    name = name.removesuffix("+boundary")
    cls = plugin_class("models", name)
    torch.manual_seed(0)
    options = {k: str(v) for k, v in SMALL[name].items()}
    model = cls(cls.Config.from_options(options)).build(D + 2 if boundary else D, K)
    if boundary:
        from actrec import boundary as pre_stage

        model = pre_stage.rebuild({"hidden": 5}, LAYOUT, model)
    model.train()  # running statistics that are not the initial ones
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(3):
            model(2 * torch.randn(6, 4, D, generator=g) + 1, torch.zeros(4, dtype=torch.long))
    return model.eval()


def _videos(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, D)).astype(np.float32) for n in LENGTHS]


def _probs(model, videos, **kw):
    out: list = []
    predict_videos(model, videos, 0, LABELS, LAYOUT, probabilities=out, **kw)
    return out


def _perturbed(videos, t, seed):
    rng = np.random.default_rng(seed)
    out = [v.copy() for v in videos]
    for v in out:
        v[t + 1:] = 5 * rng.normal(size=v[t + 1:].shape)
    return out


MODES = {"online": {"online": True}, "offline": {"online": False},
         "lookahead-3": {"online": True, "lookahead": 3}}


@pytest.mark.parametrize("name", [*sorted(SMALL), "ddlstm+boundary"])
def test_future_frames_never_change_the_past(name):
    model = _model(name)
    videos = _videos()
    causal = plugin_class("models", name.removesuffix("+boundary")).causal
    assert bool(model.causal) == causal
    if not causal:
        with pytest.raises(NotImplementedError, match="not causal"):
            _probs(model, videos, online=True)
        base = _probs(model, videos, online=False)
        changed = _probs(model, _perturbed(videos, 4, seed=9), online=False)
        assert any(not np.array_equal(a[:5], b[:5]) for a, b in zip(base, changed))
        return
    for mode, kw in MODES.items():
        ahead = kw.get("lookahead", 0)
        base = _probs(model, videos, **kw)
        for i, t in enumerate(CUTS):
            changed = _probs(model, _perturbed(videos, t, seed=10 + i), **kw)
            for v, (a, b) in enumerate(zip(base, changed)):
                kept = max(0, t + 1 - ahead)  # frames whose answer saw nothing after t
                assert np.array_equal(a[:kept], b[:kept]), (mode, t, v)
                if t + 1 < LENGTHS[v] and mode != "offline":  # exactly `ahead` frames ahead
                    assert not np.array_equal(a[kept], b[kept]), (mode, t, v)


@pytest.mark.parametrize("name", [n for n in sorted(SMALL) if plugin_class("models", n).causal])
def test_a_videos_predictions_do_not_depend_on_its_batch_neighbours(name):
    model = _model(name)
    videos = _videos()
    for kw in MODES.values():
        together = _probs(model, videos, **kw)
        alone = [_probs(model, [v], **kw)[0] for v in videos]
        neighbours = _probs(model, [videos[0], *_videos(seed=5)], **kw)[0]
        for a, b in zip(together, alone):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(together[0], neighbours, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # trains a tiny run and evaluates it four times (seconds)
def test_end_to_end_the_future_of_a_stored_video_never_changes_its_past(tmp_path):
    """``evaluate_run`` (store, standardisation, layout, batching, fused ops) on a store and
    on a copy whose test videos hold noise after frame t: online, and with a look-ahead of 2,
    the predictions of frames 0..t-L are the same, and frame t+1-L's differ."""
    from test_train_eval import make_store

    from actrec.evaluate import evaluate_run
    from actrec.io.features import FeatureStore
    from actrec.train import TrainSpec, train_model

    store = make_store(tmp_path / "a.zarr", dim=6, classes=3, n_train=4, n_test=3, seed=1)
    copy = make_store(tmp_path / "b.zarr", dim=6, classes=3, n_train=4, n_test=3, seed=1)
    run = tmp_path / "run"
    train_model(TrainSpec(model="ddlstm", d1=store, model_options={"hidden": 6, "layers": 2},
                          history=12, iterations=3, mix=(4, 0), seed=0), run)
    t = 11
    opened = FeatureStore.open(copy)
    rng = np.random.default_rng(3)
    for vid in opened.splits["1"]["test"]:
        x, y = opened.read(vid)
        x[t + 1:] = 5 * rng.normal(size=x[t + 1:].shape)
        opened.write_video(vid, x, y, fps=15.0, source=None)
    for lookahead in (0, 2):
        kept = t + 1 - lookahead
        probs = [evaluate_run(run, stores=(s,), lookahead=lookahead, keep_probabilities=True)
                 .probabilities["toy1"].probabilities for s in (store, copy)]
        for a, b in zip(*probs):
            assert a.shape[0] > t + 1
            assert np.array_equal(a[:kept], b[:kept]), lookahead
            assert not np.array_equal(a[kept], b[kept]), lookahead
