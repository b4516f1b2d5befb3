"""The command line end to end: extract two synthetic kitchens, train a DDLSTM jointly on
their stores (found from the dataset references alone), evaluate it online, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

TINY = "participants=3,videos_per_participant=1,frames_mean=40,size=32"
A, B = f"synthetic:kitchen=a,{TINY}", f"synthetic:kitchen=b,{TINY}"


def run(args, home):
    env = {**os.environ, "ACTREC_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "actrec", *args], capture_output=True,
                          text=True, env=env, timeout=600)


@pytest.mark.slow
def test_extract_train_eval_from_dataset_references(tmp_path):
    for ref in (A, B):
        done = run(["extract", ref, "--json"], tmp_path)
        assert done.returncode == 0, done.stderr
        assert len(json.loads(done.stdout)["written"]) == 3
    again = run(["extract", A, "--json"], tmp_path)  # resumes: nothing left to do
    assert json.loads(again.stdout)["written"] == [] and len(json.loads(again.stdout)["skipped"]) == 3

    run_dir = tmp_path / "run"
    args = ["train", "ddlstm", "--d1", A, "--d2", B, "--iterations", "4", "--history", "16",
            "--mix", "2:2", "-o", "hidden=8", "-o", "layers=2", "-o", "max_len=16",
            "--run-dir", str(run_dir), "--json"]
    trained = run(args, tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["iterations"] == 4
    config = json.loads((run_dir / "config.json").read_text())
    assert config["sources"]["history"] == "command line" and config["sources"]["lr"] == "default"

    evaluated = run(["eval", str(run_dir), "--online", "--json"], tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    datasets = json.loads(evaluated.stdout)["datasets"]
    assert len(datasets) == 2 and all(d["videos"] == 1 for d in datasets.values())

    more = run([*args[:-3], "--iterations", "6", "--run-dir", str(run_dir), "--json"], tmp_path)
    assert more.returncode == 0, more.stderr
    assert json.loads(more.stdout)["resumed_from"] == 4

    birnn = run(["train", "birnn", "--d1", A, "--iterations", "1", "--history", "8", "--mix",
                 "2:0", "--run-dir", str(tmp_path / "bi")], tmp_path)
    assert birnn.returncode == 0, birnn.stderr
    refused = run(["eval", str(tmp_path / "bi"), "--online"], tmp_path)
    assert refused.returncode == 1 and "not causal" in refused.stderr
    assert run(["eval", str(tmp_path / "bi"), "--offline"], tmp_path).returncode == 0
