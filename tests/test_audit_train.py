"""Audit of the training data path: numbers that came out silently wrong, each pinned by a test
that failed before its fix (real Zarr stores written here, real training runs)."""

from __future__ import annotations

import shutil

import pytest
import torch
from test_protocols import Kill
from test_train_eval import make_store

from actrec.runs import load_checkpoint
from actrec.train import TrainSpec, train_model


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    return {
        "a": make_store(root / "a.zarr", dim=6, classes=3, n_train=6, n_test=2, seed=11),
        "b": make_store(root / "b.zarr", dim=4, classes=2, n_train=6, n_test=2, seed=12),
    }


def spec(stores, **kw):
    base = dict(model="lstm", d1=stores["a"], model_options={"hidden": 8}, history=12,
                iterations=3, mix=(4, 4), lr=0.02, optimizer="adam", log_every=1, seed=5)
    base.update(kw)
    return TrainSpec(**base)


def test_transfer_finetuning_walks_the_stride_windows_from_the_first_epoch(stores, tmp_path):
    """Fine-tuning's stride windows start at D1's first epoch, as when fine-tuning starts a run
    (``init_from``): they used to start at stream position ``pretrain_iters * n1``, mid-epoch,
    so ``--epochs`` epochs of fine-tuning visited some windows once more than others."""
    s = spec(stores, d2=stores["b"], protocol="transfer", pretrain_iters=3, iterations=3,
             windows="stride:3", checkpoint_every=3)
    with pytest.raises(KeyboardInterrupt):  # stopped in fine-tuning's first step
        train_model(s, tmp_path / "run", progress=Kill(4))
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["iteration"] == 3
    shutil.copytree(tmp_path / "run", tmp_path / "pretrained")
    train_model(s, tmp_path / "run")  # fine-tuning from global iteration 3
    # The same pre-trained weights fine-tuned by a run that starts at global iteration 0.
    again = spec(stores, d2=stores["b"], protocol="transfer", iterations=3, windows="stride:3",
                 init_from=str(tmp_path / "pretrained"))
    train_model(again, tmp_path / "again")
    a = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "again" / "checkpoint.pt")["model"]
    for name in a:
        assert torch.equal(a[name], b[name]), name


def _store_with_background(path, classes, background, seed):
    """Two training videos and one test video over ``classes``, ``background`` recorded."""
    import numpy as np

    from actrec.io.features import FeatureStore

    rng = np.random.default_rng(seed)
    store = FeatureStore.open_or_create(
        path, dataset=f"bg{seed}", split_scheme="default", classes=list(classes),
        splits={"1": {"train": ["v0", "v1"], "test": ["v2"]}}, extractor="toy",
        extractor_config={"seed": seed}, lookahead=0, dtype="float32", background=background)
    for vid in ("v0", "v1", "v2"):
        y = rng.integers(0, len(classes), size=30)
        store.write_video(vid, rng.normal(size=(30, 3)).astype(np.float32), y, fps=15.0,
                          source=None)
    return path


def test_merged_labels_link_background_to_background(tmp_path):
    """Recurrent Assistance eq. 2 shares output 0 because background is class 0 by the papers'
    convention; a dataset whose background is elsewhere (GTEA: its last class) had its class 0
    ('take') merged with the other dataset's background, and its background with an action."""
    from actrec.data.label_maps import make_tables

    gtea = ("take", "open", "pour", "close", "background")
    big = ("SIL", "a", "b", "c", "d", "e", "f")
    d1 = _store_with_background(tmp_path / "big.zarr", big, [0], 1)
    d2 = _store_with_background(tmp_path / "gtea.zarr", gtea, [4], 2)
    s = TrainSpec(model="lstm", d1=d1, d2=d2, labels="merged", model_options={"hidden": 4},
                  history=8, iterations=0, mix=(2, 2))
    train_model(s, tmp_path / "run")
    space = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["label_space"]
    assert space["tables"][0] == [[0, 1, 2, 3, 4, 5, 6]]  # the largest keeps its indices
    assert space["tables"][1] == [[4, 1, 2, 3, 0]]  # background -> SIL, 'take' -> output 4
    # the larger dataset's background past the smaller one's classes: output 0 is left free
    assert make_tables("merged", [7, 3], background=[5, 0])[1][0].tolist() == [5, 1, 2]
    # background 0 on both (the papers' sets), or one side without one: eq. 2 as written
    assert make_tables("merged", [7, 3], background=[0, 0])[1][0].tolist() == [0, 1, 2]
    assert make_tables("merged", [7, 3], background=[None, 2])[1][0].tolist() == [0, 1, 2]


def test_a_resumed_run_keeps_the_label_maps_it_was_trained_with(tmp_path):
    """Label maps are rebuilt from the seed on resume; a run started by a version that built
    them otherwise (merged before its background link) switched maps mid-run, its outputs
    silently taking other classes' meaning. It keeps its recorded maps now."""
    gtea = ("take", "open", "pour", "close", "background")
    big = ("SIL", "a", "b", "c", "d", "e", "f")
    d1 = _store_with_background(tmp_path / "big.zarr", big, [0], 1)
    d2 = _store_with_background(tmp_path / "gtea.zarr", gtea, [4], 2)

    def s(iterations):
        return TrainSpec(model="lstm", d1=d1, d2=d2, labels="merged", iterations=iterations,
                         model_options={"hidden": 4}, history=8, mix=(2, 2), checkpoint_every=2)

    train_model(s(2), tmp_path / "run")
    path = tmp_path / "run" / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=False)
    ckpt["label_space"]["tables"][1] = [[0, 1, 2, 3, 4]]  # as the older version drew them
    torch.save(ckpt, path)
    train_model(s(4), tmp_path / "run")
    after = load_checkpoint(path)
    assert after["iteration"] == 4
    assert after["label_space"]["tables"][1] == [[0, 1, 2, 3, 4]]


def _same_videos_store(path, extractor, dim, source=True):
    """Features of one toy dataset's six videos by ``extractor``; split '2' swaps split '1'."""
    import numpy as np

    from actrec.io.features import FeatureStore

    rng = np.random.default_rng(dim)
    ids = [f"v{i}" for i in range(6)]
    src = {"dataset": "toy", "options": {"root": "/data/toy"}, "extractor": extractor,
           "extractor_config": {}} if source else None
    store = FeatureStore.open_or_create(
        path, dataset="toy", split_scheme="default", classes=["a", "b", "c"],
        splits={"1": {"train": ids[:4], "test": ids[4:]}, "2": {"train": ids[2:], "test": ids[:2]}},
        extractor=extractor, extractor_config={}, lookahead=0, dtype="float32", source=src)
    for vid in ids:
        store.write_video(vid, rng.normal(size=(20, dim)).astype(np.float32),
                          rng.integers(0, 3, size=20), fps=15.0, source=None)
    return path


@pytest.mark.parametrize("source", [True, False])
def test_a_second_store_of_the_same_videos_never_trains_on_the_first_ones_test_videos(
        tmp_path, source):
    """Two feature stores of one dataset (two extractors) under different splits -- `--split 2`
    with D2's default split 1 -- trained D2 on D1's test videos, silently: D1's scores came
    from videos the model had seen. Refused now, naming the option that makes them agree."""
    from actrec.errors import DataError

    d1 = _same_videos_store(tmp_path / "rgb.zarr", "rgb", 3, source)
    d2 = _same_videos_store(tmp_path / "flow.zarr", "flow", 2, source)
    base = dict(model="lstm", d1=d1, d2=d2, model_options={"hidden": 4}, history=8,
                iterations=1, mix=(2, 2))
    with pytest.raises(DataError, match=r"D2 .*split '1'\) trains on 2 video\(s\) that D1 .*"
                                        r"split '2'\) is tested on .*--d2-split 2"):
        train_model(TrainSpec(**base, split="2"), tmp_path / "leak")
    assert not (tmp_path / "leak").exists()
    with pytest.raises(DataError, match="--d2-split 1"):  # transfer pre-trains on D2 alike
        train_model(TrainSpec(**{**base, "d1": d2, "d2": d1}, d2_split="2", protocol="transfer",
                              pretrain_iters=1), tmp_path / "leak")
    train_model(TrainSpec(**base, split="2", d2_split="2"), tmp_path / "same")  # agreeing splits


def test_the_recorded_window_frames_count_every_phase(stores, tmp_path):
    """config.json's window_frames counted ``iterations x n1`` for a transfer run: fine-tuning
    alone, pre-training's D2 batches left out (4 x 4 x 12 = 192 here instead of 336)."""
    import json

    s = spec(stores, d2=stores["b"], protocol="transfer", pretrain_iters=2, iterations=4,
             mix=(4, 6))
    train_model(s, tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["protocol"]["window_frames"] == (2 * 6 + 4 * 4) * 12


def _sign_spec(stores, iterations=6):
    """Stride windows under the sign schedule, with a learning rate too small to move a weight:
    every validation loss equals the first, so the schedule decays twice then doubles the batch
    after iteration 4 (patience 1, validated every iteration)."""
    return spec(stores, iterations=iterations, mix=(4, 0), windows="stride:2", lr=1e-30,
                standardize=False, val_fraction=0.3, val_every=1, checkpoint_every=1,
                lr_schedule="sign", lr_patience=1, max_batch_growths=1)


def test_a_grown_batch_walks_on_from_where_the_window_stream_stands(stores, tmp_path):
    """When the sign schedule grew the batch from n to g*n windows, stride windows jumped to
    stream position iteration * g*n, skipping every window between; they go on from the
    windows drawn so far now, and a resumed run goes on from the position its checkpoint
    holds."""
    import json

    import numpy as np

    from actrec.components import resolve_model
    from actrec.data.labels import InputLayout, LabelSpace
    from actrec.data.sampling import StrideWindows
    from actrec.data.windows import VideoBank, two_domain_batch
    from actrec.io.features import FeatureStore
    from actrec.losses import frame_loss

    run = tmp_path / "run"
    train_model(_sign_spec(stores), run)
    log = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    grown = [x for x in log if x.get("schedule", {}).get("event") == "grow"]
    assert [x["iteration"] for x in grown] == [4] and grown[0]["schedule"]["mix"] == [8]
    # Iteration 5's loss, by hand: the model (its weights never moved) on the 8 windows from
    # stream position 4 x 4 = 16 on.
    ckpt = load_checkpoint(run / "checkpoint.pt")
    config = json.loads((run / "config.json").read_text())
    store = FeatureStore.open(stores["a"])
    held = set(config["validation"][0]["val_videos"])
    bank = VideoBank.from_store(store, [v for v in store.splits["1"]["train"] if v not in held])
    labels = LabelSpace.from_state(ckpt["label_space"])
    layout = InputLayout((bank.dim,), "blocks")
    _, model = resolve_model(ckpt, layout, labels, where="test")
    model.load_state_dict(ckpt["model"])
    sampler = StrideWindows(bank, 12, 2, seed=5)
    batch = two_domain_batch([bank], (8,), 12, np.random.default_rng(0), labels, layout,
                             samplers=[sampler], positions=[16])
    with torch.no_grad():
        model.train()
        loss = frame_loss(model(batch.x, batch.domain, mask=batch.mask), batch.y, batch.mask,
                          "all", batch.start)
    fifth = next(x for x in log if x.get("iteration") == 5 and "loss" in x)
    assert fifth["loss"] == pytest.approx(float(loss), rel=1e-5)
    assert fifth["epochs"]["D1"] == pytest.approx(sampler.epochs_done(24), abs=1e-4)
    # Stopped after the growth and resumed: the same windows, so the same logged losses.
    with pytest.raises(KeyboardInterrupt):
        train_model(_sign_spec(stores), tmp_path / "cut", progress=Kill(5))
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["iteration"] == 5
    train_model(_sign_spec(stores), tmp_path / "cut")
    again = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [x.get("loss") for x in again] == [x.get("loss") for x in log]


def test_fine_tuning_never_starts_from_a_run_that_trained_on_its_test_videos(tmp_path):
    """``--init-from`` a run of the same videos under another split (fine-tuning split 1 from
    a run of split 2) started from weights that had seen split 1's test videos."""
    from actrec.errors import DataError

    rgb = _same_videos_store(tmp_path / "rgb.zarr", "rgb", 3)
    base = dict(model="lstm", model_options={"hidden": 4}, history=8, iterations=1)
    train_model(TrainSpec(**base, d1=rgb, split="2", mix=(2, 0)), tmp_path / "source")
    again = dict(base, protocol="transfer", init_from=str(tmp_path / "source"), mix=(2, 0))
    with pytest.raises(DataError, match=r"--init-from .*source: that run trained on 2 video\(s\) "
                                        r"that D1 .*rgb.zarr, split '1'\) is tested on"):
        train_model(TrainSpec(**again, d1=rgb, split="1"), tmp_path / "leak")
    assert not (tmp_path / "leak").exists()
    train_model(TrainSpec(**again, d1=rgb, split="2"), tmp_path / "same")  # the same split


def test_the_first_line_logged_after_a_resume_averages_what_the_uninterrupted_run_does(
        stores, tmp_path):
    """With checkpoints between log lines, the first line after a resume averaged only the
    iterations since the checkpoint (iteration 3 alone instead of 1..3 here): the logged loss
    and training accuracy differed from the uninterrupted run's."""
    import json

    def s():
        return spec(stores, mix=(4, 0), iterations=6, log_every=3, checkpoint_every=2)

    def lines(run):
        return [{k: v for k, v in json.loads(x).items() if k != "elapsed_s"}
                for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]

    train_model(s(), tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        train_model(s(), tmp_path / "cut", progress=Kill(3))  # checkpoint at 2
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["iteration"] == 2
    train_model(s(), tmp_path / "cut")
    assert [x["iteration"] for x in lines("whole")] == [3, 6]
    assert lines("cut") == lines("whole")


def test_epochs_and_finetune_iterations_are_not_both_given(stores):
    """A transfer run given --epochs and --finetune-iters fine-tuned for finetune_iters and
    dropped the epochs without a word."""
    from actrec.errors import ConfigError

    with pytest.raises(ConfigError, match=r"give epochs \(2\) or finetune_iters \(5\), not both"):
        spec(stores, d2=stores["b"], protocol="transfer", pretrain_iters=2, finetune_iters=5,
             epochs=2)
    assert spec(stores, d2=stores["b"], protocol="transfer", pretrain_iters=2,
                epochs=2).finetune_iters == 0


def test_training_videos_without_any_label_are_refused(tmp_path):
    """A store whose training videos hold no label (all -1: extracted without labels) trained
    'successfully' with a loss of exactly 0 at every step and learnt nothing."""
    import numpy as np

    from actrec.errors import DataError
    from actrec.io.features import FeatureStore

    rng = np.random.default_rng(0)
    ids = [f"v{i}" for i in range(4)]
    store = FeatureStore.open_or_create(
        tmp_path / "s.zarr", dataset="t", split_scheme="default", classes=["a", "b"],
        splits={"1": {"train": ids[:3], "test": ids[3:]}}, extractor="x", extractor_config={},
        lookahead=0, dtype="float32")
    for vid in ids:
        store.write_video(vid, rng.normal(size=(20, 3)).astype(np.float32), np.full(20, -1),
                          fps=15.0, source=None)
    s = TrainSpec(model="lstm", d1=tmp_path / "s.zarr", history=8, iterations=2, mix=(2, 0))
    with pytest.raises(DataError, match=r"no training video of D1 \(split '1', 3 video\(s\)\) "
                                        r"has a labelled frame"):
        train_model(s, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_resume_never_stretches_a_schedule_laid_over_the_run(stores, tmp_path):
    """Resuming a cosine run with more --iterations rebuilt the schedule over the new length:
    the learning rate jumped back up at the resume (here from the floor, 0, to half the base
    rate), a curve neither run length trains with. Refused; a schedule that does not depend
    on the length resumes as before."""
    import json

    from actrec.errors import ConfigError

    s = spec(stores, mix=(4, 0), iterations=4, lr_schedule="cosine")
    train_model(s, tmp_path / "run")
    with pytest.raises(ConfigError, match=r"phases last \[4\] iterations and would last \[8\] "
                                          r"now, but --lr-schedule cosine"):
        train_model(spec(stores, mix=(4, 0), iterations=8, lr_schedule="cosine"),
                    tmp_path / "run")
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 4
    train_model(spec(stores, mix=(4, 0), iterations=4, lr_schedule="step", lr_step=2),
                tmp_path / "step")
    train_model(spec(stores, mix=(4, 0), iterations=6, lr_schedule="step", lr_step=2),
                tmp_path / "step")
    lrs = [json.loads(x)["lr"] for x in (tmp_path / "step" / "metrics.jsonl").read_text()
           .splitlines()]
    assert lrs == pytest.approx([0.02, 0.02, 0.002, 0.002, 0.0002, 0.0002])


def _store_with_v2_labelled(path, label: int) -> None:
    """Five 20-frame videos of classes a, b (v0..v3 train, v4 test), every frame class 1
    except video v2's, all ``label`` (seed 0's validation fifth holds out v2)."""
    import numpy as np

    from actrec.io.features import FeatureStore

    rng = np.random.default_rng(0)
    ids = [f"v{i}" for i in range(5)]
    store = FeatureStore.open_or_create(
        path, dataset="t", split_scheme="default", classes=["a", "b"],
        splits={"1": {"train": ids[:4], "test": ids[4:]}}, extractor="x", extractor_config={},
        lookahead=0, dtype="float32")
    for vid in ids:
        store.write_video(vid, rng.normal(size=(20, 3)).astype(np.float32),
                          np.full(20, label if vid == "v2" else 1), fps=15.0, source=None)


def test_a_validation_video_with_a_label_past_the_classes_is_a_clear_error(tmp_path):
    """Training videos' labels are checked against the classes; a held-out validation video's
    were not, and one past the classes crashed the first validation with an IndexError."""
    from actrec.errors import DataError

    _store_with_v2_labelled(tmp_path / "s.zarr", 5)
    s = TrainSpec(model="lstm", d1=tmp_path / "s.zarr", history=8, iterations=2, mix=(2, 0),
                  val_fraction=0.25, seed=0)  # seed 0 holds out v2
    with pytest.raises(DataError, match=r"selection video 'v2' has labels outside -1..1"):
        train_model(s, tmp_path / "run")


def test_a_validation_set_without_labels_is_a_clear_error(tmp_path):
    """Validation videos without a labelled frame scored None at every validation: best-val
    selection never wrote best.pt and evaluation fell back to the last iteration without a
    word."""
    from actrec.errors import DataError

    _store_with_v2_labelled(tmp_path / "s.zarr", -1)
    s = TrainSpec(model="lstm", d1=tmp_path / "s.zarr", history=8, iterations=2, mix=(2, 0),
                  val_fraction=0.25, seed=0, select="best-val")  # seed 0 holds out v2
    with pytest.raises(DataError, match=r"the validation videos of D1 \(1 video\(s\)\) hold no "
                                        r"labelled frame"):
        train_model(s, tmp_path / "run")


def test_standardisation_leaves_the_validation_videos_out(stores, tmp_path):
    """The scaler a run saves (and evaluation applies) holds the mean/std of the training
    videos it kept: never of the videos held out for validation, nor of the test split."""
    import json

    import numpy as np

    from actrec.data.scaling import FeatureScaler
    from actrec.io.features import FeatureStore

    run = tmp_path / "run"
    train_model(spec(stores, mix=(4, 0), iterations=1, val_fraction=0.3), run)
    held = set(json.loads((run / "config.json").read_text())["validation"][0]["val_videos"])
    assert held
    store = FeatureStore.open(stores["a"])
    kept = [v for v in store.splits["1"]["train"] if v not in held]
    expected = FeatureScaler.fit([store.read(v)[0] for v in kept])
    got = FeatureScaler.from_state(load_checkpoint(run / "checkpoint.pt")["input_scalers"][0])
    np.testing.assert_allclose(got.mean, expected.mean, rtol=1e-6)
    np.testing.assert_allclose(got.std, expected.std, rtol=1e-6)


def test_a_training_video_listed_twice_is_refused(tmp_path):
    """A split that lists a training video twice loaded it twice: random windows drew it twice
    as often as any other video, silently."""
    import numpy as np

    from actrec.errors import DataError
    from actrec.io.features import FeatureStore

    rng = np.random.default_rng(0)
    store = FeatureStore.open_or_create(
        tmp_path / "s.zarr", dataset="t", split_scheme="default", classes=["a", "b"],
        splits={"1": {"train": ["v0", "v1", "v0"], "test": ["v2"]}}, extractor="x",
        extractor_config={}, lookahead=0, dtype="float32")
    for vid in ("v0", "v1", "v2"):
        store.write_video(vid, rng.normal(size=(20, 3)).astype(np.float32), np.ones(20),
                          fps=15.0, source=None)
    s = TrainSpec(model="lstm", d1=tmp_path / "s.zarr", history=8, iterations=1, mix=(2, 0))
    with pytest.raises(DataError, match=r"split '1' lists 1 training video\(s\) more than once "
                                        r"\(e.g. 'v0'\)"):
        train_model(s, tmp_path / "run")


def test_reestimated_statistics_are_those_of_the_checkpoint_the_run_selects(stores, tmp_path):
    """--reestimate-batches re-estimated the statistics at the last iteration only: a run that
    selects its best validated checkpoint evaluated that one with momentum averages, and a run
    the sign schedule stopped early was never re-estimated. The first is refused; the second
    re-estimates where the schedule stops it."""
    from actrec.errors import ConfigError

    with pytest.raises(ConfigError, match="reestimate_batches re-estimates the statistics of "
                                          "the last iteration, but the run selects its best"):
        spec(stores, mix=(4, 0), val_fraction=0.3, reestimate_batches=2)
    spec(stores, mix=(4, 0), val_fraction=0.3, reestimate_batches=2, select="last")

    def stopped(reestimate):  # the sign schedule stops it after iteration 4 (of 10)
        return spec(stores, model="bnlstm", model_options={"hidden": 4}, iterations=10,
                    mix=(4, 0), lr=1e-30, val_fraction=0.3, val_every=1, lr_schedule="sign",
                    lr_patience=1, max_batch_growths=0, select="last",
                    reestimate_batches=reestimate)

    train_model(stopped(0), tmp_path / "plain")
    train_model(stopped(3), tmp_path / "exact")
    plain = load_checkpoint(tmp_path / "plain" / "checkpoint.pt")
    exact = load_checkpoint(tmp_path / "exact" / "checkpoint.pt")
    assert plain["iteration"] == exact["iteration"] == 4
    means = [k for k in plain["model"] if k.endswith("running_mean")]
    assert means and any(not torch.equal(plain["model"][k], exact["model"][k]) for k in means)
    weights = [k for k in plain["model"] if k.endswith("weight_ih") or k.endswith("weight")]
    assert all(torch.equal(plain["model"][k], exact["model"][k]) for k in weights)


BREAKFAST_GT = "/work/shared/data/breakfast/groundTruth"


@pytest.mark.skipif(not __import__("os").path.isdir(BREAKFAST_GT), reason="shared data absent")
def test_split_rules_keep_each_participant_and_every_camera_view_on_one_side():
    """k-fold by video over Breakfast's real video ids put camera views of one recording
    (``P03_cam01_P03_tea``, ``P03_webcam01_P03_tea``) on both sides of a split: the test scores
    measured recordings the model had trained on. Grouped by participant, no person (and so
    no recording) is on both sides."""
    from pathlib import Path

    from actrec.split_rules import make_splits, parse_split_rule

    ids = sorted(p.stem for p in Path(BREAKFAST_GT).glob("*.txt"))
    person = {v: v.split("_")[0] for v in ids}
    recording = {v: (v.split("_")[0], v.split("_")[-1]) for v in ids}
    by_video = make_splits(parse_split_rule("kfold:4"), ids)
    assert any({recording[v] for v in s.train} & {recording[v] for v in s.test}
               for s in by_video.values())  # the leak the groups close
    grouped = make_splits(parse_split_rule("kfold:4"), ids, groups=person)
    assert sorted(v for s in grouped.values() for v in s.test) == ids
    for s in grouped.values():
        assert not {person[v] for v in s.train} & {person[v] for v in s.test}
    loo = make_splits(parse_split_rule("loo"), ids, groups=person)
    assert len(loo) == len(set(person.values())) == 13  # P03 .. P15: leave-one-person-out


def test_selecting_on_test_holds_no_training_video_out_for_nothing(stores):
    """With --select-on-test and --val-fraction both, validation scored the test split while
    the held-out videos were still taken out of training: a smaller training set, silently."""
    from actrec.errors import ConfigError

    with pytest.raises(ConfigError, match="select_on_test scores the test split, so the videos "
                                          "val_fraction holds out"):
        spec(stores, mix=(4, 0), val_fraction=0.3, select_on_test=True)
    assert spec(stores, mix=(4, 0), select_on_test=True).validates
