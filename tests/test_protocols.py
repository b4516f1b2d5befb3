"""Training protocols (single, joint, transfer), label arrangements, validation and selection,
on feature stores of three generated synthetic kitchens (real videos, real colorgrad features,
real Zarr stores)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from actrec.data.validation import carve_validation
from actrec.errors import ConfigError
from actrec.evaluate import evaluate_run
from actrec.io.features import FeatureStore
from actrec.protocols import weights_digest
from actrec.runs import load_checkpoint
from actrec.schedules import Schedule
from actrec.train import TrainSpec, train_model

TINY = "participants=4,videos_per_participant=1,frames_mean=40,size=32,folds=4"


@pytest.fixture(scope="module")
def kitchens(tmp_path_factory):
    """Feature stores of kitchens a, b and c (4 people each; split 1 trains on 3 of them)."""
    from actrec.pipeline import extract_dataset

    root = tmp_path_factory.mktemp("kitchens")
    out = {}
    for k in "abc":
        out[k] = extract_dataset(f"synthetic:kitchen={k},root={root / 'data'},{TINY}",
                                 out=root / f"{k}.zarr").store
    return out


def spec(kitchens, **kw):
    base = dict(model="lstm", d1=kitchens["a"], model_options={"hidden": 8}, history=16,
                iterations=6, mix=(2, 2), lr=0.01, optimizer="adam", log_every=1,
                checkpoint_every=2, seed=3)
    base.update(kw)
    return TrainSpec(**base)


def lines(run_dir):
    return [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


class Kill:
    """A progress display that interrupts training after ``after`` iterations, like Ctrl-C."""

    def __init__(self, after):
        self.left = after

    def add_task(self, description, *a, **k):
        return 0 if description.split()[0] in ("train", "pretrain", "finetune") else 1

    def update(self, *a, **k):
        pass

    def remove_task(self, *a, **k):
        pass

    def advance(self, task, n=1):
        if task == 0 and n == 1:
            self.left -= 1
            if self.left == 0:
                raise KeyboardInterrupt


# --------------------------------------------------------------------------------------------
# Every protocol and label arrangement trains and evaluates


CASES = [
    {"protocol": "single", "mix": (2, 0)},
    {"protocol": "joint", "labels": "concat"},
    {"protocol": "joint", "labels": "merged"},
    {"protocol": "joint", "labels": "random"},
    {"protocol": "transfer", "pretrain_iters": 4, "labels": "concat"},
    {"protocol": "transfer", "pretrain_iters": 4, "labels": "random"},
]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['protocol']}-{c.get('labels', '')}")
def test_every_protocol_and_arrangement_trains_and_evaluates(kitchens, tmp_path, case):
    d2 = None if case["protocol"] == "single" else kitchens["b"]
    s = spec(kitchens, d2=d2, val_fraction=0.3, val_every=2, **case)
    result = train_model(s, tmp_path / "run")
    total = 6 + case.get("pretrain_iters", 0)
    assert result.iterations == total
    log = lines(tmp_path / "run")
    vals = [x for x in log if "val" in x]
    assert vals and all(0.0 <= x["val"]["score"] <= 1.0 for x in vals)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["labels"]["arrangement"] == case.get("labels", "concat")
    assert config["validation"][0]["val_participants"]  # one of the 3 training people
    if case["protocol"] == "transfer":
        assert {x["phase"] for x in log if "loss" in x} == {"pretrain", "finetune"}
        start = next(x for x in log if x.get("event") == "start")
        assert start["iteration"] == 5 and start["head"] == "kept"  # fine-tuning's first
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    final_vals = [x for x in vals if x["phase"] != "pretrain"]
    top = max(final_vals, key=lambda x: x["val"]["score"])
    assert best["iteration"] == top["iteration"]  # the first of the best on validation
    assert best["selected"] == {"select": "best-val", "on": "validation",
                                "iteration": top["iteration"], "score": top["val"]["score"]}
    ev = evaluate_run(tmp_path / "run", online=True)
    assert ev.protocol["checkpoint"] == "best.pt" and ev.protocol["iteration"] == top["iteration"]
    assert ev.protocol["labels"] == case.get("labels", "concat")
    for ds in ev.datasets.values():
        assert ds.videos == 1 and 0.0 <= ds.frame_accuracy <= 1.0


def test_multi_random_is_refused_on_features_that_are_not_class_scores(kitchens, tmp_path):
    # kitchen features are colour gradients, not one column per class: a window's map cannot
    # be told from its inputs, so the maps would contradict each other
    with pytest.raises(ConfigError, match="multi-random needs per-class score inputs"):
        train_model(spec(kitchens, d2=kitchens["b"], protocol="joint", labels="multi-random",
                         label_maps=3), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_evaluation_maps_predictions_back_through_random_maps(kitchens, tmp_path):
    """An evaluation under a random map scores what the model predicts, mapped back: the
    per-class recalls from eval match predictions computed by hand through the table."""
    s = spec(kitchens, d2=kitchens["b"], protocol="joint", labels="random", iterations=4)
    train_model(s, tmp_path / "run")
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    tables = ckpt["label_space"]["tables"]
    assert sorted(tables[1][0]) == list(range(len(tables[1][0])))  # b maps onto the first l
    assert tables[1][0] != list(range(len(tables[1][0]))) or tables[0][0] != list(
        range(len(tables[0][0])))
    ev = evaluate_run(tmp_path / "run", online=False)
    from actrec.components import resolve_model
    from actrec.data.labels import InputLayout, LabelSpace
    from actrec.data.scaling import FeatureScaler

    labels = LabelSpace.from_state(ckpt["label_space"])
    layout = InputLayout(tuple(ckpt["input_dims"]), ckpt["input_arrangement"])
    _, model = resolve_model(ckpt, layout, labels, where="t")
    model.load_state_dict(ckpt["model"])
    model.eval()
    for k, (name, ds) in enumerate(ev.datasets.items()):
        store = FeatureStore.open(ckpt["stores"][k])
        vid = store.splits["1"]["test"][0]
        x, y = store.read(vid)
        x = FeatureScaler.from_state(ckpt["input_scalers"][k])(x)
        xt = torch.from_numpy(layout.arrange(x, k))[:, None]
        logits = model(xt, torch.tensor([k]))[:, 0]  # [T, K]
        table = np.asarray(tables[k][0])
        # the best of the dataset's own outputs, output table[j] read back as local class j
        by_hand = logits[:, table].argmax(-1).numpy()
        keep = y >= 0
        assert ds.frame_accuracy == pytest.approx(float((by_hand[keep] == y[keep]).mean()))


# --------------------------------------------------------------------------------------------
# Transfer: starts from the pre-trained weights; resumes exactly in either phase


def test_transfer_finetuning_starts_from_the_pretrained_weights(kitchens, tmp_path):
    s = spec(kitchens, d2=kitchens["b"], protocol="transfer", pretrain_iters=4, iterations=2,
             checkpoint_every=4)
    with pytest.raises(KeyboardInterrupt):
        train_model(s, tmp_path / "run", progress=Kill(5))  # killed in fine-tuning's 1st step
    pretrained = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert pretrained["iteration"] == 4 and pretrained["phase"] == "pretrain"
    train_model(s, tmp_path / "run")
    start = next(x for x in lines(tmp_path / "run") if x.get("event") == "start")
    assert start["start_weights_sha256"] == weights_digest(pretrained["model"])
    # and by value: a run from those weights with a vanishing learning rate keeps them
    again = spec(kitchens, d2=kitchens["b"], protocol="transfer", init_from=str(tmp_path / "run"),
                 iterations=1, lr=1e-30, optimizer="sgd", momentum=0.0)
    train_model(again, tmp_path / "again")
    final = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["model"]
    started = load_checkpoint(tmp_path / "again" / "checkpoint.pt")["model"]
    for name, value in final.items():
        assert torch.allclose(started[name].float(), value.float(), atol=1e-6), name


def test_init_from_a_run_with_other_outputs_reinitialises_the_head(kitchens, tmp_path):
    source = spec(kitchens, d1=kitchens["b"], protocol="single", mix=(2, 0), iterations=3)
    train_model(source, tmp_path / "src")
    before = (tmp_path / "src" / "checkpoint.pt").read_bytes()
    # a vanishing learning rate: the run's final weights are the ones fine-tuning started from
    s = spec(kitchens, d2=kitchens["b"], protocol="transfer", init_from=str(tmp_path / "src"),
             iterations=2, lr=1e-30, optimizer="sgd", momentum=0.0)
    train_model(s, tmp_path / "run")
    start = next(x for x in lines(tmp_path / "run") if x.get("event") == "start")
    assert start["head"] == "reinitialised" and start["copied"] > 0
    assert any(n.startswith("head.") for n in start["reinitialised"])
    theirs = load_checkpoint(tmp_path / "src" / "checkpoint.pt")["model"]
    mine = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["model"]
    body = [n for n in mine if not n.startswith("head.")]
    assert body and all(torch.allclose(mine[n], theirs[n], atol=1e-6) for n in body)
    assert mine["head.weight"].shape[0] > theirs["head.weight"].shape[0]  # a + b outputs now
    with pytest.raises(ConfigError, match="head keep"):
        train_model(spec(kitchens, d2=kitchens["b"], protocol="transfer", head="keep",
                         init_from=str(tmp_path / "src"), iterations=1), tmp_path / "keep")
    assert (tmp_path / "src" / "checkpoint.pt").read_bytes() == before  # the source untouched


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [3, 5, 7])  # pre-training, fine-tuning: 1st step, later
def test_transfer_resumes_to_the_uninterrupted_result(kitchens, tmp_path, kill_after):
    s = spec(kitchens, d2=kitchens["b"], protocol="transfer", pretrain_iters=4, iterations=4,
             val_fraction=0.3, val_every=2, lr_schedule="cosine", checkpoint_every=2)
    whole = train_model(s, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        train_model(s, tmp_path / "cut", progress=Kill(kill_after))
    resumed = train_model(s, tmp_path / "cut")
    assert resumed.resumed_from == kill_after - 1 and resumed.iterations == whole.iterations == 8
    a = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    strip = [{k: v for k, v in x.items() if k != "elapsed_s"} for x in lines(tmp_path / "whole")]
    again = [{k: v for k, v in x.items() if k != "elapsed_s"} for x in lines(tmp_path / "cut")]
    assert strip == again
    assert load_checkpoint(tmp_path / "whole" / "best.pt")["iteration"] == \
        load_checkpoint(tmp_path / "cut" / "best.pt")["iteration"]


# --------------------------------------------------------------------------------------------
# More than two datasets


def test_three_datasets_joint_lstm_and_ddlstm_refuses(kitchens, tmp_path):
    s = spec(kitchens, d2=kitchens["b"], extra_data=(str(kitchens["c"]),), mix=(2, 1, 1),
             iterations=3)
    train_model(s, tmp_path / "run")
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    sizes = [len(c) for c in ckpt["classes"]]
    assert len(sizes) == 3 and ckpt["model"]["head.weight"].shape[0] == sum(sizes)
    assert len(evaluate_run(tmp_path / "run", online=True).datasets) == 3
    with pytest.raises(ConfigError, match="two-domain"):
        train_model(spec(kitchens, model="ddlstm", d2=kitchens["b"],
                         extra_data=(str(kitchens["c"]),), mix=(2, 1, 1)), tmp_path / "dd")
    assert not (tmp_path / "dd").exists()
    with pytest.raises(ConfigError, match="one per dataset"):
        spec(kitchens, d2=kitchens["b"], extra_data=(str(kitchens["c"]),), mix=(2, 2))


# --------------------------------------------------------------------------------------------
# Validation carve, selection on test, schedules


def test_validation_is_carved_by_participant_and_seeded():
    videos = [f"P{p}_{i}" for p in range(1, 6) for i in range(2)]
    who = {v: v.split("_")[0] for v in videos}
    a = carve_validation(videos, who, 0.2, [1, 2])
    assert len(a.val_participants) == 1 and len(a.val) == 2
    assert {who[v] for v in a.val} == set(a.val_participants)
    assert not {who[v] for v in a.train} & set(a.val_participants)  # no person on both sides
    assert carve_validation(videos, who, 0.2, [1, 2]) == a
    assert len(carve_validation(videos, who, 0.5, 0).val_participants) == 3  # ceil(2.5)
    assert len(carve_validation(videos, who, 0.99, 0).val_participants) == 4  # never all
    solo = carve_validation(["x", "y", "z"], {}, 0.3, 0)
    assert solo.grouping == "video" and len(solo.val) == 1
    with pytest.raises(ConfigError, match="at least two"):
        carve_validation(["a", "b"], {"a": "P1", "b": "P1"}, 0.5, 0)


def test_select_on_test_is_recorded_and_shown(kitchens, tmp_path):
    from actrec.cli.eval_cmd import render_eval

    s = spec(kitchens, mix=(2, 0), select_on_test=True, iterations=4, val_every=2)
    train_model(s, tmp_path / "run")
    assert all(x["val"]["on"] == "test" for x in lines(tmp_path / "run") if "val" in x)
    ev = evaluate_run(tmp_path / "run")
    assert ev.protocol["selected_on_test"] is True
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(render_eval(ev))
    assert "TEST split" in console.export_text()
    with pytest.raises(ConfigError, match="needs a validation set"):
        spec(kitchens, select="best-val")


def test_schedules_by_hand():
    step = Schedule("step", 0.1, 9, step=3, gamma=0.5)
    assert [step.lr_at(i) for i in (0, 2, 3, 8)] == pytest.approx([0.1, 0.1, 0.05, 0.025])
    cos = Schedule("cosine", 0.1, 10, lr_min=0.0)
    assert [cos.lr_at(i) for i in (0, 5, 10)] == pytest.approx([0.1, 0.05, 0.0])
    plateau = Schedule("plateau", 0.1, 100, gamma=0.5, patience=2)
    events = [plateau.on_validation(v) for v in (1.0, 0.9, 0.95, 0.95, 0.95, 0.95)]
    assert events == ["", "", "", "decay", "", "decay"] and plateau.lr == pytest.approx(0.025)
    sign = Schedule("sign", 0.1, 100, gamma=0.5, patience=1, growth=2.0, max_growths=1)
    events = [sign.on_validation(v) for v in (1.0, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9)]
    # two decays without a new best, then the batch grows back at the best lr, then stop
    assert events == ["", "", "decay", "decay", "grow", "decay", "decay"]
    assert sign.batch_scale == 2.0
    assert [sign.on_validation(0.9)] == ["stop"] and sign.stopped
    assert math.isclose(Schedule("none", 0.3, 5).lr_at(4), 0.3)


def test_early_stop_by_hand_under_any_schedule_and_across_a_resume():
    """N validations in a row without a new best loss stop the run, whatever the schedule;
    an improvement starts the count again, and the count survives a checkpoint."""
    none = Schedule("none", 0.1, 100, early_stop=3)
    events = [none.on_validation(v) for v in (1.0, 1.0, 0.9, 0.95, 0.92, 0.91)]
    assert events == ["", "", "", "", "", "stop"] and none.stopped
    assert none.on_validation(0.1) == ""  # stopped for good
    sign = Schedule("sign", 0.1, 100, gamma=0.5, patience=1, max_growths=5, early_stop=4)
    events = [sign.on_validation(v) for v in (1.0, 0.9, 0.9, 0.9, 0.9)]
    assert events == ["", "", "decay", "decay", "grow"]
    resumed = Schedule("sign", 0.1, 100, gamma=0.5, patience=1, max_growths=5, early_stop=4)
    resumed.load_state_dict(sign.state_dict())
    assert resumed.on_validation(0.9) == "stop" and resumed.batch_scale == 2.0
    assert [Schedule("none", 0.1, 9).on_validation(v) for v in (1.0, 2.0, 3.0)] == ["", "", ""]


def test_early_stop_stops_a_training_run_and_needs_validation(kitchens, tmp_path):
    s = spec(kitchens, mix=(2, 0), iterations=40, val_fraction=0.3, val_every=1,
             checkpoint_every=0, lr=1e-9, early_stop=2)  # lr ~0: the loss never improves
    result = train_model(s, tmp_path / "run")
    log = lines(tmp_path / "run")
    assert [x["iteration"] for x in log if "val" in x] == [1, 2, 3]
    assert result.iterations == 3
    assert [x["schedule"]["event"] for x in log if "schedule" in x] == ["stop"]
    with pytest.raises(ConfigError, match="early_stop watches the validation loss"):
        spec(kitchens, early_stop=3)
    with pytest.raises(ConfigError, match="early_stop must be >= 0"):
        spec(kitchens, early_stop=-1, val_fraction=0.3)


def test_sign_schedule_decays_grows_the_batch_and_stops_a_run_for_good(kitchens, tmp_path):
    s = spec(kitchens, mix=(2, 0), iterations=40, val_fraction=0.3, val_every=1,
             lr_schedule="sign", lr_patience=1, lr_gamma=0.5, max_batch_growths=1,
             checkpoint_every=0, lr=0.05)
    result = train_model(s, tmp_path / "run")
    log = lines(tmp_path / "run")
    events = [x["schedule"] for x in log if "schedule" in x]
    kinds = [e["event"] for e in events]
    assert "decay" in kinds and kinds[-1] == "stop" and "grow" in kinds
    grow = next(e for e in events if e["event"] == "grow")
    assert grow["mix"] == [4]  # the batch of D1 windows doubled
    stop = next(x for x in log if x.get("schedule", {}).get("event") == "stop")
    assert result.iterations == stop["iteration"] < 40
    decayed = next(x for x in log if x.get("schedule", {}).get("event") == "decay")
    after = next(x for x in log if "loss" in x and x["iteration"] == decayed["iteration"] + 1)
    assert after["lr"] == pytest.approx(decayed["schedule"]["lr"])  # the optimiser uses it
    again = train_model(s, tmp_path / "run")  # a stopped run stays stopped
    assert again.iterations == result.iterations and again.resumed_from == result.iterations
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["iteration"] == result.iterations
    assert max(x["iteration"] for x in lines(tmp_path / "run")) == result.iterations


def test_select_last_keeps_validating_but_evaluates_the_last_checkpoint(kitchens, tmp_path):
    s = spec(kitchens, mix=(2, 0), iterations=4, val_fraction=0.3, val_every=2, select="last")
    train_model(s, tmp_path / "run")
    assert any("val" in x for x in lines(tmp_path / "run"))
    assert not (tmp_path / "run" / "best.pt").exists()
    ev = evaluate_run(tmp_path / "run")
    assert ev.protocol["checkpoint"] == "checkpoint.pt" and ev.protocol["iteration"] == 4
    # what the result records as selected is that checkpoint (it said iteration 0, the best
    # validation's default, "on validation")
    assert ev.protocol["selected"] == {"select": "last", "on": None, "iteration": 4,
                                       "score": None}


def test_a_fresh_run_in_a_folder_drops_the_best_checkpoint_of_an_attempt_killed_before(
        kitchens, tmp_path):
    """An attempt killed after a validation but before its first checkpoint leaves best.pt
    alone in the folder; a new run there (another spec: no checkpoint to resume) must not let
    `actrec eval` score that stale file."""
    s = spec(kitchens, mix=(2, 0), iterations=6, val_fraction=0.3, val_every=1,
             checkpoint_every=0)
    with pytest.raises(KeyboardInterrupt):
        train_model(s, tmp_path / "run", progress=Kill(3))
    assert (tmp_path / "run" / "best.pt").is_file()
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    train_model(spec(kitchens, mix=(2, 0), iterations=4, seed=5), tmp_path / "run")
    ev = evaluate_run(tmp_path / "run")
    assert ev.protocol["checkpoint"] == "checkpoint.pt" and ev.protocol["iteration"] == 4
