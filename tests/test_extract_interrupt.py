"""An extraction stopped by a signal says what it did: ``actrec extract --json`` interrupted by
Ctrl-C (SIGINT to the process group, as a terminal sends it) or SIGTERM (a batch scheduler)
prints the same JSON document as a finished run, with the signal, the videos written (whole,
in the store) and the ones not done (the video in progress among them), and exits 130 / 143;
no claim or half-written video is left and the re-run completes the store. Real processes,
real signals, a real plugin distribution, real mp4 files and Zarr stores."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from actrec_plugins.extractors.colorgrad import ColorGradient
from conftest import extractor_plugin_site
from test_extract_host import CG, _run_until_mid_video, _store_content

from actrec.extract import ExtractInterrupted, extract_features
from actrec.extract_status import store_status
from actrec.io.features import FeatureStore

TINY = {"kitchen": "a", "participants": "3", "videos_per_participant": "1",
        "frames_mean": "40", "size": "32", "folds": "3", "seed": "7"}


@pytest.fixture
def slow_site(tmp_path):
    """A plugin distribution whose extractor ``slowcg`` is ``SlowColorGrad`` (colorgrad that
    sleeps per batch and marks each batch) under its own name."""
    return extractor_plugin_site(tmp_path / "site", "slowcg_plugin", "SlowCG", "slowcg",
                                 textwrap.dedent('''
        from test_extract_host import SlowColorGrad

        class SlowCG(SlowColorGrad):
            name = "slowcg"
    '''))


def _cli(root, workers):
    def command(store):
        return ["-m", "actrec", "extract", "synthetic", "--root", str(root), "--out",
                str(store), "--extractor", "slowcg", "-x", f"grid={CG.grid}",
                "-x", f"bins={CG.bins}", "-x", f"resize={CG.resize}", "--batch-size", "8",
                "--workers", str(workers), "--json", *[f"-o{k}={v}" for k, v in TINY.items()]]
    return command


def _videos(content: dict) -> dict:
    """The videos of ``_store_content``, ``slowcg`` named as the colorgrad it is."""
    content = {k: v for k, v in content.items() if k != "attrs"}  # the stores' sources differ
    return {k: (x, y, attrs.replace('"extractor": "slowcg"', '"extractor": "colorgrad"'))
            for k, (x, y, attrs) in content.items()}


@pytest.mark.slow
@pytest.mark.parametrize("workers, sig", [(1, signal.SIGINT), (2, signal.SIGINT),
                                          (1, signal.SIGTERM), (2, signal.SIGTERM)])
def test_an_interrupted_run_prints_its_json_summary_and_the_rerun_completes(
        tiny_kitchen, tmp_path, slow_site, workers, sig):
    dataset, _ = tiny_kitchen
    # 1 worker: 7 batches = the 2nd video under way; 2 workers: 11 = the first two videos
    # (5 batches each, side by side) at or past their last batch, the third under way.
    index, reference, path, _, proc = _run_until_mid_video(
        tiny_kitchen, tmp_path, workers, batches=7 if workers == 1 else 11,
        command=_cli(dataset.config.root, workers), pythonpath=[slow_site],
        new_session=True)
    if sig == signal.SIGINT:  # Ctrl-C: the terminal signals the whole process group
        os.killpg(proc.pid, sig)
    else:  # a scheduler's (or kill's) SIGTERM to the command
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 128 + sig, err.decode()
    assert "Traceback" not in err.decode(), err.decode()
    name = signal.Signals(sig).name
    assert f"Interrupted by {name}" in err.decode()
    report = json.loads(out)  # one JSON document, the one a finished run prints
    assert report["interrupted"] == name and report["stopped"].startswith(f"interrupted by {name}")
    store = FeatureStore.open(path)
    done = store.videos()
    # Done: exactly the whole videos in the store; the rest, the one in progress with them,
    # not done; nothing failed.
    assert sorted(report["written"]) == done and 1 <= len(done) < len(index.videos), report
    assert sorted(report["not_done"]) == sorted(set(index.videos) - set(done))
    # the one cut off mid-video (each worker's, with 2): started, not finished
    assert 1 <= len(report["in_progress"]) <= workers
    assert set(report["in_progress"]) <= set(report["not_done"])
    assert report["failed"] == [] and report["skipped"] == [] and report["workers"] == workers
    assert report["frames"] == sum(store.read(v)[0].shape[0] for v in done)
    for vid in done:
        assert not store.damage(vid)
    assert not list((path / ".claims").glob("*.json")), "claims left"
    assert not list(path.glob(".tmp/*")), "half-written videos left"
    assert _videos(_store_content(path)) == {v: c for v, c in _videos(
        _store_content(reference)).items() if v in done}
    # The store's record of the run says it was stopped, and by what.
    runs = store_status(path).runs
    assert [r["state"] for r in runs] == [f"stopped: {report['stopped']}"]
    assert runs[0]["written"] == len(done)
    # The re-run does the rest (not slowed down) and ends with the uninterrupted store.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(slow_site), *sys.path]),
           "ACTREC_TEST_MARKS": str(tmp_path / "marks"), "ACTREC_TEST_DELAY": "0"}
    again = subprocess.run([sys.executable, *_cli(dataset.config.root, workers)(path)],
                           capture_output=True, env=env, timeout=120, check=False)
    assert again.returncode == 0, again.stderr.decode()
    second = json.loads(again.stdout)
    assert sorted(second["written"]) == sorted(report["not_done"])
    assert sorted(second["skipped"]) == done and second["interrupted"] is None
    assert _videos(_store_content(path)) == _videos(_store_content(reference))


@pytest.mark.slow
def test_an_interrupt_in_python_raises_keyboard_interrupt_with_the_report(
        tiny_kitchen, tmp_path):
    """From Python, Ctrl-C is still a KeyboardInterrupt (SIGTERM a SystemExit(143)), carrying
    the report: here a SIGINT raised by the extractor itself after the first video."""
    _, index = tiny_kitchen
    first = min(index.videos)

    class CtrlCAfterFirst(ColorGradient):
        calls = 0

        def extract(self, batches):
            CtrlCAfterFirst.calls += 1
            if CtrlCAfterFirst.calls == 2:  # the second video: as if Ctrl-C were pressed now
                signal.raise_signal(signal.SIGINT)
            yield from super().extract(batches)

    with pytest.raises(KeyboardInterrupt) as caught:
        extract_features(index, CtrlCAfterFirst(CG), tmp_path / "s.zarr", dataset_ref="r",
                         batch_size=8, video_ids=sorted(index.videos))
    assert isinstance(caught.value, ExtractInterrupted)
    report = caught.value.report
    assert caught.value.signal == "SIGINT" and caught.value.exit_code == 130
    assert report.written == (first,) and report.interrupted == "SIGINT" and not report.ok
    assert report.not_done == tuple(sorted(index.videos)[1:]) and not report.failed
    assert report.in_progress == (sorted(index.videos)[1],)
    assert FeatureStore.open(tmp_path / "s.zarr").videos() == [first]
    assert not list((tmp_path / "s.zarr" / ".claims").glob("*.json"))
    # The table: how many are not done, the video cut off, then the ones not started.
    from rich.console import Console

    from actrec.cli.extract_cmd import _render

    console = Console(record=True, width=200)
    console.print(_render(report))
    lines = [" ".join(x.replace("│", " ").split()) for x in console.export_text().splitlines()]
    assert any("not done (run stopped)" in x for x in lines)
    assert "1 0 0 0 0 0 0 (0) 2" in lines, lines
    second, third = sorted(index.videos)[1:]
    assert f"{second} not done: was being extracted interrupted by SIGINT (Ctrl-C)" in lines
    assert f"{third} not done: not started interrupted by SIGINT (Ctrl-C)" in lines


# ------------------------------------------------------------------ a stopped worker's exit

REGWATCH = '''
import multiprocessing
import os
import time
from pathlib import Path

import multiprocessing.resource_tracker as tracker
from actrec_plugins.extractors.colorgrad import ColorGradient

_register = tracker.register


def register(name, rtype):
    """The stdlib's, then (in a worker, first time) a marker and a pause: the moment between a
    lock's registration with the resource tracker and its clean-up hook, made long enough
    for a test to stop the worker there."""
    _register(name, rtype)
    marks = os.environ.get("REGWATCH_MARKS")
    if marks and multiprocessing.parent_process() is not None and not register.paused:
        register.paused = True
        (Path(marks) / f"register-{os.getpid()}").touch()
        time.sleep(1.5)


register.paused = False
tracker.register = register


class RegWatch(ColorGradient):
    name = "regwatch"
'''


@pytest.fixture
def regwatch_site(tmp_path):
    return extractor_plugin_site(tmp_path / "regsite", "regwatch_plugin", "RegWatch", "regwatch",
                                 REGWATCH)


@pytest.mark.slow
def test_a_worker_stopped_as_it_makes_its_first_lock_leaves_no_leaked_semaphore(
        tiny_kitchen, tmp_path, regwatch_site):
    # A worker's first store write makes a process lock (numcodecs' blosc mutex), registered
    # with multiprocessing's resource tracker and then given its clean-up hook. A SIGTERM from
    # the parent stopping the run (here: the command's own SIGTERM) between the two unwound
    # the worker without the hook: "resource_tracker: There appear to be 1 leaked semaphore
    # objects" at the end. The pause in the registration (REGWATCH) widens that moment.
    dataset, _ = tiny_kitchen
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "REGWATCH_MARKS": str(marks),
           "PYTHONPATH": os.pathsep.join([str(regwatch_site), *sys.path])}
    args = ["-m", "actrec", "extract", "synthetic", "--root", str(dataset.config.root),
            "--out", str(tmp_path / "s.zarr"), "--extractor", "regwatch", "--batch-size", "8",
            "--workers", "2", "--json", *[f"-o{k}={v}" for k, v in TINY.items()]]
    proc = subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(marks.iterdir()) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 143, err.decode()
    assert "leaked semaphore" not in err.decode(), err.decode()
    assert json.loads(out)["interrupted"] == "SIGTERM"
    assert not list((tmp_path / "s.zarr" / ".claims").glob("*.json"))


STUCK = '''
import os
import signal
import time
from pathlib import Path

from actrec_plugins.extractors.colorgrad import ColorGradient


class StuckCG(ColorGradient):
    """colorgrad stuck for a while in its first batch as in a long native call: SIGTERM does
    not reach this (main) thread until it returns."""

    name = "stuckcg"

    def extract(self, batches):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        (Path(os.environ["STUCK_MARKS"]) / str(os.getpid())).touch()
        time.sleep(float(os.environ.get("STUCK_SECONDS", "45")))
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        yield from super().extract(batches)
'''


@pytest.mark.slow
def test_a_second_ctrl_c_while_workers_stop_kills_them_and_the_command_ends(tiny_kitchen,
                                                                             tmp_path):
    # Ctrl-C stops the workers and waits for them to unwind; a worker stuck in a long call
    # does not, and Ctrl-C again must end the wait (kill them) rather than leave the command
    # hanging on them at its exit.
    dataset, index = tiny_kitchen
    site = extractor_plugin_site(tmp_path / "stucksite", "stuck_plugin", "StuckCG", "stuckcg",
                                 STUCK)
    marks = tmp_path / "marks"
    marks.mkdir()
    out = tmp_path / "s.zarr"
    env = {**os.environ, "STUCK_MARKS": str(marks),
           "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    args = ["-m", "actrec", "extract", "synthetic", "--root", str(dataset.config.root),
            "--out", str(out), "--extractor", "stuckcg", "--batch-size", "8", "--workers", "2",
            "--json", *[f"-o{k}={v}" for k, v in TINY.items()]]
    proc = subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(list(marks.iterdir())) < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.02)
        workers = [int(m.name) for m in marks.iterdir()]
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(1.0)  # the command is waiting for its stuck workers
        assert proc.poll() is None
        os.killpg(proc.pid, signal.SIGINT)
        out_text, err = proc.communicate(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err.decode()
    report = json.loads(out_text)
    assert report["interrupted"] == "SIGINT" and not report["written"]
    assert sorted(report["not_done"]) == sorted(index.videos)
    assert len(report["in_progress"]) == 2 and set(report["in_progress"]) <= set(index.videos)
    for pid in workers:  # killed, not left behind
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    assert not list((out / ".claims").glob("*.json")), "claims left"
    assert not list(out.glob(".tmp/*"))


def test_a_video_written_before_the_stop_whose_report_was_cut_off_counts_as_written(
        tiny_kitchen, tmp_path):
    # A stop can cut off a finished video's last word (a worker's message still in its pipe,
    # an interrupt between the write and its report): the store decides. Started by the run
    # and written since it began: written; an older copy or nothing: not done.
    from actrec.extract import _Plan, _written_unheard

    _, index = tiny_kitchen
    old, new, absent = sorted(index.videos)
    path = tmp_path / "s.zarr"
    extract_features(index, ColorGradient(CG), path, dataset_ref="r", video_ids=[old])
    since = time.time()
    extract_features(index, ColorGradient(CG), path, dataset_ref="r", video_ids=[new])
    plan = _Plan(started={old, new, absent})
    _written_unheard(plan, path, since)
    assert list(plan.results) == [new]
    outcome = plan.results[new]
    assert outcome.ok and not outcome.skipped
    assert outcome.frames == FeatureStore.open(path).read(new)[0].shape[0] > 0
    # damaged since: not done either
    chunk = next(p for p in (FeatureStore.open(path).video_dir(new)).rglob("c/*") if p.is_file())
    chunk.unlink()
    plan = _Plan(started={new})
    _written_unheard(plan, path, since)
    assert plan.results == {}
