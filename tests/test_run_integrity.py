"""A run never scores or trains on inputs that changed or are damaged, and never loses a file:
changed stores, NaN features, impossible histories and seeds, a full disk, file permissions."""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from actrec.errors import ConfigError, DataError
from actrec.evaluate import evaluate_run
from actrec.io.features import FeatureStore
from actrec.runs import atomic_write_json
from actrec.train import TrainSpec, train_model

from test_train_eval import make_store


def spec(d1, **kw):
    base = dict(model="lstm", d1=d1, model_options={"hidden": 4}, history=12, iterations=2,
                mix=(3, 0), lr=0.02, optimizer="adam", log_every=1, seed=0)
    base.update(kw)
    return TrainSpec(**base)


def test_a_store_changed_after_training_is_refused_at_evaluation(tmp_path):
    path = make_store(tmp_path / "a.zarr", dim=4, classes=2, n_train=4, n_test=2, seed=1)
    run = tmp_path / "run"
    train_model(spec(path), run)
    evaluate_run(run, online=True)  # unchanged: fine
    before = (run / "eval-online.json").read_text()
    store = FeatureStore.open(path)
    x, y = store.read("te0")
    store.remove("te0")  # re-extracted, e.g. at another fps: fewer frames
    store.write_video("te0", x[::3].copy(), y[::3].copy(), fps=5.0, source=None)
    with pytest.raises(DataError, match=r"changed since run .* 1 video\(s\) have other frame "
                                        rf"counts \(e\.g\. 'te0': {len(y)} -> {len(y[::3])}\)"):
        evaluate_run(run, online=True)
    assert (run / "eval-online.json").read_text() == before  # the earlier result is kept


def test_nan_in_stored_features_is_named_not_a_divergence(tmp_path):
    path = make_store(tmp_path / "a.zarr", dim=4, classes=2, n_train=3, n_test=1, seed=2)
    store = FeatureStore.open(path)
    x, y = store.read("tr1")
    x[7, 2] = np.nan
    with pytest.raises(DataError, match="NaN or infinity"):  # refused since written
        store.write_video("tr1", x, y, fps=15.0, source=None)
    # a store written before write_video refused NaN: committed as it did then
    attrs = {k: v for k, v in store.video_attrs("tr1").items()
             if k not in ("integrity", "complete")}
    store.remove("tr1")
    store._commit_video("tr1", attrs, x.astype(store.attrs["dtype"]), y)
    with pytest.raises(DataError, match=r"video 'tr1' has a non-finite feature value \(nan\) at "
                                        r"frame 7, dimension 2"):
        train_model(spec(path), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_history_longer_than_every_training_video_is_refused(tmp_path):
    path = make_store(tmp_path / "a.zarr", dim=4, classes=2, n_train=3, n_test=1, seed=3)
    store = FeatureStore.open(path)
    longest = max(store.num_frames(v) for v in store.splits["1"]["train"])
    with pytest.raises(ConfigError, match=rf"--history {longest + 1} is longer than every "
                                          rf"training video .* has {longest} frames"):
        train_model(spec(path, history=longest + 1), tmp_path / "run")
    train_model(spec(path, history=longest, iterations=1), tmp_path / "ok")


@pytest.mark.parametrize("seed", [-1, 2**70])
def test_impossible_seeds_are_refused(tmp_path, seed):
    with pytest.raises(ConfigError, match=r"seed must be an integer in 0..2\*\*63-1"):
        spec(tmp_path, seed=seed)


def test_a_full_disk_is_named_and_keeps_the_old_checkpoint(tmp_path):
    """A file size limit (what a full disk looks like to the writer) while writing a
    checkpoint: one message naming the file, no traceback, the previous file intact."""
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"previous")
    code = f"""
import resource, signal, sys, torch
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
from actrec.errors import DataError
from actrec.runs import atomic_torch_save
try:
    atomic_torch_save(__import__("pathlib").Path({str(target)!r}), {{"w": torch.zeros(100_000)}})
except DataError as exc:
    print(exc)
    sys.exit(3)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert f"cannot write {target}: no space left" in proc.stdout
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left


def test_run_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    os.umask(0o077)
    try:
        atomic_write_json(tmp_path / "b.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o600



def test_a_split_that_tests_its_own_training_videos_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    store = FeatureStore.open_or_create(
        tmp_path / "leaky.zarr", dataset="leaky", split_scheme="default", classes=["a", "b"],
        splits={"1": {"train": ["v0", "v1", "v2"], "test": ["v2", "v3"]}},
        extractor="toy", extractor_config={}, lookahead=0, dtype="float32")
    for vid in ("v0", "v1", "v2", "v3"):
        store.write_video(vid, rng.normal(size=(30, 4)).astype(np.float32),
                          rng.integers(0, 2, size=30), fps=15.0, source=None)
    with pytest.raises(DataError, match=r"split '1' lists 1 video\(s\) both for training and "
                                        r"for testing \(e\.g\. 'v2'\)"):
        train_model(spec(store.path), tmp_path / "run")


def test_evaluation_compares_content_and_accepts_test_videos_extracted_later(tmp_path):
    path = make_store(tmp_path / "a.zarr", dim=4, classes=2, n_train=4, n_test=2, seed=5)
    store = FeatureStore.open(path)
    x1, y1 = store.read("te1")
    store.remove("te1")  # a test video whose extraction had failed when the run trained
    run = tmp_path / "run"
    train_model(spec(path), run)
    store.write_video("te1", x1, y1, fps=15.0, source=None)  # extracted later: not a change
    assert evaluate_run(run, online=True).datasets["toy5"].videos == 2
    x, y = store.read("te0")
    store.remove("te0")  # re-extracted with other values but the same length
    store.write_video("te0", x + 1.0, y, fps=15.0, source=None)
    with pytest.raises(DataError, match=r"1 video\(s\) hold other features or labels "
                                        r"\(e\.g\. 'te0'\)"):
        evaluate_run(run, online=True)


def test_resuming_refuses_a_changed_store_and_builds_the_model_as_trained(tmp_path):
    import torch

    path = make_store(tmp_path / "a.zarr", dim=4, classes=2, n_train=4, n_test=1, seed=6)
    run = tmp_path / "run"
    opts = {"hidden": 4, "layers": 1, "max_len": 30}
    train_model(spec(path, model="bnlstm", model_options=opts, iterations=2), run)
    # A run from before max_len followed the history: its spec has no max_len, its recorded
    # model config the old default. Resuming must build that model, not today's default.
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    ckpt["spec"]["model_options"] = {"hidden": 4, "layers": 1}
    torch.save(ckpt, run / "checkpoint.pt")
    old_style = spec(path, model="bnlstm", model_options={"hidden": 4, "layers": 1},
                     iterations=3)
    assert train_model(old_style, run).iterations == 3
    store = FeatureStore.open(path)
    x, y = store.read("tr0")
    store.remove("tr0")
    store.write_video("tr0", x * 2.0, y, fps=15.0, source=None)
    with pytest.raises(DataError, match=r"changed since .*checkpoint.pt was written: 1 "
                                        r"video\(s\) hold other features"):
        train_model(dataclasses.replace(old_style, iterations=4), run)
