"""`actrec train --threads N`: the number reaches torch inside the training (seen by a model
plugin's forward), is recorded, is kept or retaken on a resume, comes from
ACTREC_TRAIN_THREADS too, leaves the caller's torch threads as they were, and under torchrun
is shared by the processes of the machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from test_registry import write_dist
from test_train_eval import make_store

from actrec.cli import cli
from actrec.train import thread_share

PROBE = '''
import os
from dataclasses import dataclass

import torch

from actrec.nn.base import SequenceModel
from actrec.plugin_api import PluginConfig, TemporalModel

SEEN = []  # torch.get_num_threads() at every training forward of this process


class Probe(SequenceModel):
    causal = False

    def __init__(self, d, k, out):
        super().__init__()
        self.lin = torch.nn.Linear(d, k)
        self.out = out

    def forward(self, x, domain, mask=None):
        SEEN.append(torch.get_num_threads())
        if self.out:
            with open(self.out, "a") as f:
                f.write(f"{os.environ.get('RANK', '-')} {torch.get_num_threads()}\\n")
        return self.lin(x)


@dataclass(frozen=True)
class Cfg(PluginConfig):
    out: str = ""


class ThreadProbe(TemporalModel):
    name = "threadprobe"
    Config = Cfg
    causal = False

    def build(self, input_dim, num_classes):
        return Probe(input_dim, num_classes, self.config.out)
'''


@pytest.fixture(scope="module")
def probe_site(tmp_path_factory):
    site = tmp_path_factory.mktemp("probe-site")
    write_dist(site, "thread-probe", "[actrec.models]\nthreadprobe = thread_probe:ThreadProbe\n")
    (site / "thread_probe.py").write_text(PROBE)
    return site


@pytest.fixture
def probe(probe_site, monkeypatch):
    monkeypatch.syspath_prepend(str(probe_site))
    import thread_probe

    thread_probe.SEEN.clear()
    return thread_probe


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("threads") / "s.zarr", dim=4, classes=3,
                      n_train=4, n_test=2, seed=4)


def _train(store, run_dir, *more, env=None):
    runner = CliRunner(env={"ACTREC_HOME": str(run_dir.parent / "home"), **(env or {})})
    return runner.invoke(cli, ["train", "threadprobe", "--d1", str(store), "--history", "8",
                               "--mix", "4:0", "--run-dir", str(run_dir), "--json", *more],
                         auto_envvar_prefix="ACTREC")  # as actrec.cli.main runs it


def test_threads_reach_torch_in_training_and_are_recorded_and_restored(probe, store,
                                                                       tmp_path):
    before = torch.get_num_threads()
    asked = before + 1  # differs from what torch has, whatever the machine
    res = _train(store, tmp_path / "run", "--iterations", "3", "--threads", str(asked))
    assert res.exit_code == 0, res.output
    assert probe.SEEN == [asked] * 3  # every training step ran with them
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["threads"] == asked and config["spec"]["threads"] == asked
    assert config["sources"]["threads"] == "command line"
    assert torch.get_num_threads() == before  # the caller's torch as it was

    probe.SEEN.clear()  # default: torch's own number, untouched
    res = _train(store, tmp_path / "plain", "--iterations", "2")
    assert res.exit_code == 0, res.output
    assert probe.SEEN == [before] * 2
    config = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert config["spec"]["threads"] == 0 and config["threads"] == before


def test_threads_from_the_environment(probe, store, tmp_path):
    before = torch.get_num_threads()
    res = _train(store, tmp_path / "run", "--iterations", "2",
                 env={"ACTREC_TRAIN_THREADS": str(before + 2)})
    assert res.exit_code == 0, res.output
    assert probe.SEEN == [before + 2] * 2
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["sources"]["threads"] == "environment" and config["threads"] == before + 2


def test_a_resume_keeps_the_recorded_threads_unless_given_again(probe, store, tmp_path):
    before = torch.get_num_threads()
    run = tmp_path / "run"
    assert _train(store, run, "--iterations", "2", "--threads", str(before + 1)).exit_code == 0
    probe.SEEN.clear()
    res = _train(store, run, "--iterations", "4")  # the same command, longer: its threads
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["resumed_from"] == 2
    assert probe.SEEN == [before + 1] * 2
    probe.SEEN.clear()
    res = _train(store, run, "--iterations", "6", "--threads", "0")  # torch's own again
    assert res.exit_code == 0, res.output
    assert probe.SEEN == [before] * 2
    resumed = json.loads((run / "config.json").read_text())["resumed"]
    assert [(r["at_iteration"], r["threads"], r["spec"]["threads"]) for r in resumed] == [
        (2, before + 1, before + 1), (4, before, 0)]


def test_a_negative_number_of_threads_is_refused(store, tmp_path):
    res = _train(store, tmp_path / "run", "--threads", "-1")
    assert res.exit_code == 2 and "--threads" in res.output
    assert not (tmp_path / "run").exists()


def test_torchrun_processes_share_the_threads_of_their_machine(monkeypatch):
    assert thread_share(0) is None and thread_share(3) == 3  # one process: as asked
    for key, value in {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1",
                       "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(key, value)
    assert [thread_share(n) for n in (0, 1, 2, 5, 8)] == [None, 1, 1, 2, 4]


@pytest.mark.slow
def test_threads_under_torchrun_are_each_process_share(probe_site, store, tmp_path):
    out = tmp_path / "seen.txt"
    env = {**os.environ, "ACTREC_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(probe_site), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "actrec", "train", "threadprobe", "--d1", str(store), "--history", "8",
         "--iterations", "2", "--mix", "4:0", "-o", f"out={out}", "--threads", "6",
         "--run-dir", str(tmp_path / "run"), "--json"],
        check=False, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = sorted(out.read_text().split("\n")[:-1])
    assert seen == ["0 3", "0 3", "1 3", "1 3"]  # 6 threads, 2 processes: 3 each
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["spec"]["threads"] == 6 and config["threads"] == 3
