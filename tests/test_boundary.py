"""The boundary pre-stage of DDLSTM Sec. 5.1: targets and loss by hand, online = offline,
training lowers the KL, and a run with it trains, evaluates and resumes exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from actrec import boundary
from actrec.runs import load_checkpoint
from actrec.train import TrainSpec, train_model


def test_next_boundary_distance_by_hand():
    y = np.array([0, 0, 1, 1, 1, 2])
    # boundaries at frames 2 and 5; after the last one: the video's end (6)
    assert boundary.next_boundary_distance(y).tolist() == [2, 1, 3, 2, 1, 1]
    assert boundary.next_boundary_distance(np.array([4, 4, 4])).tolist() == [3, 2, 1]
    # an unlabelled stretch is a segment too: its start and end are boundaries
    assert boundary.next_boundary_distance(np.array([1, -1, -1, 1])).tolist() == [1, 2, 1, 1]


def test_kl_between_gaussians_by_hand():
    mu = torch.tensor([[0.5]])
    log_sigma = torch.tensor([[math.log(0.2)]])
    target = torch.tensor([[0.3]])
    keep = torch.tensor([[True]])
    # log(0.2/0.1) + (0.01 + 0.04) / (2 * 0.04) - 0.5
    expected = math.log(2.0) + 0.05 / 0.08 - 0.5
    assert float(boundary.kl_loss(mu, log_sigma, target, 0.1, keep)) == pytest.approx(expected)
    same = boundary.kl_loss(target, torch.tensor([[math.log(0.1)]]), target, 0.1, keep)
    assert float(same) == pytest.approx(0.0, abs=1e-7)


def test_wrapped_model_steps_online_like_forward():
    from actrec.nn.models import TorchRNNClassifier as RNNClassifier

    torch.manual_seed(0)
    pre = boundary.BoundaryLSTM(5, 8)
    main = RNNClassifier(5 + boundary.OUTPUTS, 3, 6, 1, kind="lstm")
    model = boundary.BoundaryAugmented(pre, main).eval()
    x = torch.randn(7, 2, 5)
    dom = torch.zeros(2, dtype=torch.long)
    whole = model(x, dom)
    state = model.init_state(2, dom)
    steps = []
    for t in range(7):
        out, state = model.step(x[t], state)
        steps.append(out)
    assert torch.allclose(torch.stack(steps), whole, atol=1e-5)
    assert not any(p.requires_grad for p in model.pre.parameters())  # frozen


def _store(path, seed, dim=4):
    from actrec.io.features import FeatureStore

    rng = np.random.default_rng(seed)
    ids = [f"v{i}" for i in range(6)]
    store = FeatureStore.open_or_create(
        path, dataset="toyb", split_scheme="default", classes=["a", "b", "c"],
        splits={"1": {"train": ids[:4], "test": ids[4:]}}, extractor="toy",
        extractor_config={"seed": seed}, lookahead=0, dtype="float32")
    centres = rng.normal(size=(3, dim))
    for vid in ids:
        y = np.repeat(rng.integers(0, 3, size=8), rng.integers(4, 9, size=8))[:48]
        x = centres[y] + 0.3 * rng.normal(size=(len(y), dim))
        store.write_video(vid, x.astype(np.float32), y, fps=15.0, source=None)
    return path


@pytest.mark.slow
def test_pre_stage_learns_and_a_run_with_it_resumes_exactly(tmp_path):
    store = _store(tmp_path / "s.zarr", 0)
    from actrec.data.labels import InputLayout
    from actrec.data.windows import VideoBank
    from actrec.io.features import FeatureStore

    fs = FeatureStore.open(store)
    bank = VideoBank.from_store(fs, fs.splits["1"]["train"])
    _, losses = boundary.train_boundary([bank], InputLayout((4,)), (8,), 24, 60, 3.0, 0, "cpu")
    assert np.mean(losses[-10:]) < np.mean(losses[:10])  # it learns where boundaries are

    spec = TrainSpec(model="lstm", d1=store, model_options={"hidden": 8}, history=24,
                     iterations=6, mix=(4, 0), lr=0.01, optimizer="adam", log_every=1,
                     checkpoint_every=2, seed=1, boundary=True, boundary_iters=5)
    train_model(spec, tmp_path / "whole")
    first = train_model(TrainSpec.from_dict({**spec.to_dict(), "iterations": 3}),
                        tmp_path / "cut")
    assert first.iterations == 3
    train_model(spec, tmp_path / "cut")  # resumes from iteration 2 (its last checkpoint)
    a = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert a["boundary"]["iterations"] == 5 and any(k.startswith("pre.") for k in a["model"])
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    from actrec.evaluate import evaluate_run

    result = evaluate_run(tmp_path / "whole", online=True)
    offline = evaluate_run(tmp_path / "whole", online=False)
    (ds,) = result.datasets.values()
    (off,) = offline.datasets.values()
    assert ds.frame_accuracy == pytest.approx(off.frame_accuracy)


def test_transfer_pre_stage_learns_from_the_source_dataset_too(tmp_path):
    """Transfer pre-trains the main model on D2, so the pre-stage must have seen D2: with
    features of other dimensions (D2 in its own input columns), the pre-stage's input weights
    of D2's columns moved away from their initial values."""
    a = _store(tmp_path / "a.zarr", 0)
    b = _store(tmp_path / "b.zarr", 1, dim=5)
    spec = TrainSpec(model="lstm", d1=a, d2=b, protocol="transfer", pretrain_iters=2,
                     model_options={"hidden": 8}, history=16, iterations=1, mix=(3, 2),
                     lr=0.01, optimizer="adam", seed=2, boundary=True, boundary_iters=3)
    train_model(spec, tmp_path / "run")
    trained = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["model"]["pre.lstm.weight_ih_l0"]
    with torch.random.fork_rng():
        torch.manual_seed(spec.seed + boundary.BOUNDARY_STREAM)  # the pre-stage's first weights
        initial = boundary.BoundaryLSTM(4 + 5, boundary.HIDDEN).lstm.weight_ih_l0.detach()
    assert trained.shape == initial.shape
    assert not torch.equal(trained[:, :4], initial[:, :4])  # D1's columns learnt
    assert not torch.equal(trained[:, 4:], initial[:, 4:])  # and D2's


def test_a_resumed_run_records_the_pre_stage_it_trained(tmp_path):
    """The pre-stage's default length is a quarter of the iterations: a run resumed with more
    iterations (allowed) keeps the pre-stage it trained, and its checkpoint says so."""
    store = _store(tmp_path / "s.zarr", 0)
    spec = TrainSpec(model="lstm", d1=store, model_options={"hidden": 8}, history=16,
                     iterations=4, mix=(2, 0), lr=0.01, optimizer="adam", seed=1,
                     boundary=True)
    train_model(spec, tmp_path / "run")
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["boundary"]["iterations"] == 1
    train_model(TrainSpec.from_dict({**spec.to_dict(), "iterations": 8}), tmp_path / "run")
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ckpt["iteration"] == 8 and ckpt["boundary"]["iterations"] == 1
