"""Ctrl-C during `actrec train`: the message says which checkpoint the run kept and how to
resume (it was Click's bare "Aborted."), and the same command resumes from it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from actrec.io.features import FeatureStore


def make_store(path):
    """4 videos of 60 frames, 3 classes, 8-d features; split '1' trains on 3 of them."""
    rng = np.random.default_rng(0)
    ids = [f"v{i}" for i in range(4)]
    store = FeatureStore.open_or_create(
        path, dataset="toy", split_scheme="default", classes=["a", "b", "c"],
        splits={"1": {"train": ids[:3], "test": ids[3:]}}, extractor="toy",
        extractor_config={}, lookahead=0, dtype="float32")
    for i, vid in enumerate(ids):
        y = np.repeat(rng.integers(0, 3, size=6), 10)
        x = np.eye(3, 8)[y] + 0.3 * rng.normal(size=(len(y), 8))
        store.write_video(vid, x.astype(np.float32), y, fps=15.0, source=None,
                          extra={"participant": f"P{i}"})
    return path


@pytest.mark.slow
def test_ctrl_c_during_training_names_the_checkpoint_and_resumes(tmp_path):
    store = make_store(tmp_path / "toy.zarr")
    run_dir = tmp_path / "run"
    # SIGINT as a terminal sends it; Python's handler set first (a child of a shell run in
    # the background inherits SIGINT ignored)
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from actrec.cli import main; main(sys.argv[1:])")
    args = [sys.executable, "-c", code,
            "train", "lstm", "--d1", str(store),
            "--iterations", "100000", "--checkpoint-every", "2", "--history", "8",
            "--mix", "2", "-o", "hidden=4", "--run-dir", str(run_dir)]
    env = {**os.environ, "ACTREC_HOME": str(tmp_path / "home")}
    child = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130, err
    assert "Traceback" not in err and "Aborted." not in err
    assert "keeps its checkpoint of iteration " in err
    assert f"--run-dir {run_dir} to resume" in err
    import torch

    saved = torch.load(run_dir / "checkpoint.pt", weights_only=False)["iteration"]
    assert f"checkpoint of iteration {saved} of 100000" in err.replace("\n", " ")

    # the same command with fewer iterations finishes from that checkpoint
    done = subprocess.run([*args[:7], "--iterations", str(saved + 2), *args[9:], "--json"],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["resumed_from"] == saved


def test_ctrl_c_right_after_a_checkpoint_is_in_place_waits_for_its_record(tmp_path):
    # The run's record of its last checkpoint (what the Ctrl-C message names) is set in
    # `then`: a Ctrl-C between the file's replace and that record left the message one
    # checkpoint behind the file (seen on CI: "iteration 14" beside a file of 16).
    import torch

    from actrec import runs

    recorded = []

    def then():
        signal.raise_signal(signal.SIGINT)  # Ctrl-C lands right after the replace
        recorded.append("saved")

    path = tmp_path / "checkpoint.pt"
    with pytest.raises(KeyboardInterrupt):
        runs.atomic_torch_save(path, {"iteration": 16}, then)
    assert recorded == ["saved"]
    assert torch.load(path, weights_only=True)["iteration"] == 16
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
