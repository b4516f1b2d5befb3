"""Claims on one store shared by processes and machines (actrec.extract_claims): exclusive,
kept alive by a heartbeat, taken over when stale (a dead process at once, a silent one after
its lease), atomically (of two takers one wins), on local folders and on S3 (moto server);
and real extraction processes with overlapping shards writing each video exactly once."""

from __future__ import annotations

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

from actrec.extract import extract_features, in_shard
from actrec.extract_claims import _files, claim, claim_info, list_claims, try_claim
from actrec.io.features import FeatureStore, encode_video_id

TESTS = Path(__file__).resolve().parent
CG = ColorGradient.Config(grid=2, bins=4, resize=32)


def _foreign_claim(store: Path, video: str, age: float) -> Path:
    """A claim left by a process of another machine, last refreshed ``age`` seconds ago."""
    target = store / ".claims" / f"{encode_video_id(video)}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"video": video, "host": "machine-that-died", "pid": 4242,
                                  "token": "t", "since": time.time() - age}))
    os.utime(target, (time.time() - age, time.time() - age))
    return target


_HOLDER = textwrap.dedent("""
    import socket, sys, time
    if len(sys.argv) > 4:  # play a process of another machine
        socket.gethostname = lambda: sys.argv[4]
    from actrec.extract_claims import try_claim
    held = try_claim(sys.argv[1], sys.argv[2], lease=float(sys.argv[3])).start()
    print("held", flush=True)
    time.sleep(60)
""")


def _holder(store: Path, video: str, lease: float, host: str | None = None) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(store), video, str(lease),
                             *([host] if host else [])], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


# ---------------------------------------------------------------------- one claim


def test_a_claim_is_exclusive_and_released(tmp_path):
    with claim(tmp_path, "P03 coffee/cam01") as mine:
        assert mine
        with claim(tmp_path, "P03 coffee/cam01") as theirs:
            assert not theirs  # held: by this very process too
        [info] = list_claims(tmp_path)
        assert (info.video, info.pid, info.stale) == ("P03 coffee/cam01", os.getpid(), False)
    assert claim_info(tmp_path, "P03 coffee/cam01") is None
    assert list((tmp_path / ".claims").iterdir()) == []  # no temp files left either


def test_a_live_holder_keeps_its_claim_past_the_lease_by_its_heartbeat(tmp_path):
    """Three leases on, the claim is still its holder's and was refreshed after it was made
    (its heartbeat runs), so it is not taken over. The refresh is looked for, not bounded in
    time: a loaded machine delays a heartbeat, it does not stop it."""
    proc = _holder(tmp_path, "v", lease=0.4)
    try:
        made = time.time()  # the claim was made before the holder said "held"
        time.sleep(1.2)  # three leases
        deadline = time.monotonic() + 60
        while True:
            info = claim_info(tmp_path, "v", lease=0.4)
            refreshed = time.time() - info.age  # its last refresh
            if refreshed > made or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert info is not None and info.pid == proc.pid and not info.stale
        assert refreshed > made
        assert try_claim(tmp_path, "v", lease=0.4) is None
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_holders_claim_is_taken_over_at_once(tmp_path):
    proc = _holder(tmp_path, "v", lease=600)
    proc.kill()
    proc.wait()
    info = claim_info(tmp_path, "v", lease=600)
    assert info.stale and info.why == f"process {proc.pid} on this host has ended"
    taken = try_claim(tmp_path, "v", lease=600)
    assert taken is not None
    assert claim_info(tmp_path, "v").pid == os.getpid()
    taken.release()


def test_a_live_holder_on_this_host_keeps_its_claim_while_stopped(tmp_path):
    """Stopped (Ctrl-Z, SIGSTOP) past its lease, a holder on this host is known to be alive:
    its claim is not taken over, as an OS lock would not be; once it ends, it is at once."""
    proc = _holder(tmp_path, "v", lease=0.5)
    try:
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(1.2)
        info = claim_info(tmp_path, "v", lease=0.5)
        assert info.age > 0.5 and not info.stale
        assert try_claim(tmp_path, "v", lease=0.5) is None
    finally:
        proc.kill()
        proc.wait()
    taken = try_claim(tmp_path, "v", lease=0.5)
    assert taken is not None
    taken.release()


def test_a_silent_holders_claim_is_taken_over_after_its_lease(tmp_path):
    """A holder on another machine that stops refreshing (hung, partitioned, here stopped
    with SIGSTOP; or a machine that died) keeps its claim for the lease, then loses it."""
    proc = _holder(tmp_path, "v", lease=1.0, host="another-machine")
    try:
        os.kill(proc.pid, signal.SIGSTOP)
        assert try_claim(tmp_path, "v", lease=1.0) is None  # within its lease
        time.sleep(1.3)
        info = claim_info(tmp_path, "v", lease=1.0)
        # the age the message gives is the one judged (1.3 s and what this process was held up
        # since the holder's last beat: "2 s" from 1.5 s on, as a loaded machine reached)
        assert info.stale and info.age > 1.0
        assert info.why == f"not refreshed for {info.age:.0f} s (lease 1 s)"
        taken = try_claim(tmp_path, "v", lease=1.0)
        assert taken is not None and claim_info(tmp_path, "v").pid == os.getpid()
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.5)  # the old holder's next heartbeat finds the claim is not its own
        assert claim_info(tmp_path, "v").pid == os.getpid()
        taken.release()
    finally:
        proc.kill()
        proc.wait()


def test_another_machines_claim_waits_for_its_lease(tmp_path):
    _foreign_claim(tmp_path, "v", age=5)
    assert not claim_info(tmp_path, "v", lease=60).stale
    assert try_claim(tmp_path, "v", lease=60) is None
    info = claim_info(tmp_path, "v", lease=3)
    assert info.stale and info.host == "machine-that-died"
    assert try_claim(tmp_path, "v", lease=3) is not None


def test_a_claim_from_a_container_sharing_the_host_name_waits_for_its_lease(tmp_path):
    """Same host name, other pid namespace: its pid says nothing here, so it is judged by its
    lease like another machine's (not 'ended' because no such pid runs here)."""
    target = _foreign_claim(tmp_path, "v", age=1)
    import socket

    target.write_text(json.dumps({"video": "v", "host": socket.gethostname(), "pid": 999999,
                                  "node": "another-boot/4026531836", "token": "t"}))
    info = claim_info(tmp_path, "v", lease=60)
    assert not info.stale, info.why
    assert try_claim(tmp_path, "v", lease=60) is None


class _SkewedTime:
    """``time`` with this machine's clock an hour ahead of the store's."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def time() -> float:
        return time.time() + 3600


def test_a_fast_clock_does_not_make_a_live_foreign_claim_stale(tmp_path, monkeypatch):
    """Ages are read on the storage's clock: a machine whose clock is an hour ahead does not
    take over a claim another machine refreshed a second ago."""
    import actrec.extract_claims as claims

    _foreign_claim(tmp_path, "v", age=1)
    monkeypatch.setattr(claims, "time", _SkewedTime())
    info = claim_info(tmp_path, "v", lease=60)
    assert not info.stale and info.age < 30, (info.age, info.why)
    assert try_claim(tmp_path, "v", lease=60) is None
    assert not list_claims(tmp_path, lease=60)[0].stale
    _foreign_claim(tmp_path, "v", age=120)  # really stale: still taken over
    assert try_claim(tmp_path, "v", lease=60) is not None


def _race(store) -> list[bool]:
    """Two takers judged the same stale claim; both try to take it over."""
    files = _files(store)
    name = encode_video_id("v")
    found = files.read(name)
    from actrec.extract_claims import _judge

    stale = _judge("v", found[0], found[1], 1.0, found[2])
    assert stale.stale
    return [files.take_over(name, stale, json.dumps({"token": who, "host": "h", "pid": 1})
                            .encode()) for who in ("first", "second")]


def test_of_two_takers_of_one_stale_claim_one_wins(tmp_path):
    _foreign_claim(tmp_path, "v", age=30)
    assert _race(tmp_path) == [True, False]
    assert json.loads((tmp_path / ".claims" / "v.json").read_text())["token"] == "first"


# ---------------------------------------------------------------------- S3


@pytest.fixture
def s3_store(bucket):
    """A store URL in a fresh bucket of the shared moto server (conftest)."""
    return f"s3://{bucket}/s.zarr"


def test_s3_claims_are_conditional_writes(s3_store):
    import s3fs

    first = try_claim(s3_store, "v", lease=30)
    assert first is not None and try_claim(s3_store, "v", lease=30) is None
    first.start()
    assert first.refresh() and claim_info(s3_store, "v").pid == os.getpid()
    first.release()
    assert claim_info(s3_store, "v") is None
    # A stale claim of another machine: of two takers, the compare-and-swap lets one win.
    fs = s3fs.S3FileSystem()
    key = s3_store[len("s3://"):] + "/.claims/v.json"
    fs.pipe(key, json.dumps({"video": "v", "host": "machine-that-died", "pid": 1,
                             "token": "old"}).encode())
    time.sleep(2.1)  # S3 times are to the second
    assert _race(s3_store) == [True, False]
    assert json.loads(fs.cat(key))["token"] == "first"


def test_s3_claim_ages_are_read_on_the_servers_clock(s3_store, monkeypatch):
    import s3fs

    import actrec.extract_claims as claims

    key = s3_store[len("s3://"):] + "/.claims/v.json"
    s3fs.S3FileSystem().pipe(key, json.dumps({"video": "v", "host": "another-machine",
                                              "pid": 1, "token": "t"}).encode())
    monkeypatch.setattr(claims, "time", _SkewedTime())
    info = claim_info(s3_store, "v", lease=60)
    assert not info.stale and info.age < 30, (info.age, info.why)
    assert try_claim(s3_store, "v", lease=60) is None


# ---------------------------------------------------------------------- real extractions


_RUN = textwrap.dedent("""
    import json, sys
    from actrec.extract import extract_features
    from actrec_plugins.datasets.synthetic import SyntheticKitchen
    from test_extract_host import CG, SlowColorGrad

    root, store, shard = sys.argv[1], sys.argv[2], sys.argv[3]
    ds = SyntheticKitchen(SyntheticKitchen.Config(
        root=root, kitchen="b", participants=6, videos_per_participant=1, frames_mean=24,
        size=32, folds=2, seed=3))
    report = extract_features(ds.load(), SlowColorGrad(CG), store, dataset_ref="r",
                              batch_size=8, shard=None if shard == "all" else shard,
                              workers=int(sys.argv[4]))
    print(json.dumps(report.to_dict()))
""")


@pytest.fixture(scope="module")
def six_videos(tmp_path_factory):
    from actrec_plugins.datasets.synthetic import SyntheticKitchen

    root = tmp_path_factory.mktemp("kitchen")
    dataset = SyntheticKitchen(SyntheticKitchen.Config(
        root=root, kitchen="b", participants=6, videos_per_participant=1, frames_mean=24,
        size=32, folds=2, seed=3))
    return dataset, dataset.load()


def _start(root, store, shard: str, workers: int, marks: Path, barrier: str | None = None,
           delay: str = "0.05", lease: str = "120") -> subprocess.Popen:
    env = {**os.environ, "ACTREC_TEST_MARKS": str(marks), "ACTREC_TEST_DELAY": delay,
           "ACTREC_CLAIM_LEASE": lease, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    if barrier:
        env["ACTREC_TEST_BARRIER"] = barrier
    return subprocess.Popen([sys.executable, "-c", _RUN, str(root), str(store), shard,
                             str(workers)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _values(store) -> dict:
    s = FeatureStore.open(store)
    return {v: tuple(a.tobytes() for a in s.read(v)) for v in s.videos()}


@pytest.mark.slow
def test_overlapping_shards_extract_each_video_exactly_once(six_videos, tmp_path):
    """Two machines' runs on one store, one over every video and one over shard 2/2 (five of
    the six), start together: every video is written by exactly one of them, the other skips
    it (after waiting while the other held it)."""
    dataset, index = six_videos
    reference = tmp_path / "reference.zarr"
    from test_extract_host import CG as HOST_CG

    extract_features(index, ColorGradient(HOST_CG), reference, dataset_ref="r", batch_size=8)
    store, marks, barrier = tmp_path / "s.zarr", tmp_path / "marks", tmp_path / "barrier"
    marks.mkdir()
    barrier.mkdir()
    procs = [_start(dataset.config.root, store, shard, 1, marks, f"{barrier}:2")
             for shard in ("all", "2/2")]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        reports.append(json.loads(out))
    everything, half = reports
    overlap = {v for v in index.videos if in_shard(v, (2, 2))}
    assert len(overlap) == 5
    written = [set(r["written"]) for r in reports]
    assert not written[0] & written[1], written  # nobody wrote a video twice
    assert written[0] | written[1] == set(index.videos)
    assert written[1] and written[0] & overlap  # they really shared the overlap
    assert set(half["written"]) | set(half["skipped"]) == overlap and not half["busy"]
    assert set(everything["written"]) | set(everything["skipped"]) == set(index.videos)
    assert _values(store) == _values(reference)
    assert not (store / ".claims").exists()


@pytest.mark.slow
def test_a_rerun_right_after_a_kill_takes_over_the_dead_workers_claims(six_videos, tmp_path):
    """The old bug: a re-run started at once found the dying workers' claims still held,
    called those videos busy and exited 0 with the store incomplete."""
    dataset, index = six_videos
    store, marks = tmp_path / "s.zarr", tmp_path / "marks"
    marks.mkdir()
    proc = _start(dataset.config.root, store, "all", 2, marks, delay="0.1")
    deadline = time.monotonic() + 120
    while len(list(marks.iterdir())) < 5 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # the workers die with it (PR_SET_PDEATHSIG)
    proc.wait()
    left = list_claims(store)
    assert left, "killed while holding no claim: the test proves nothing"
    # At once, and with a lease of an hour: only taking over the dead holders' claims at once
    # (not waiting out their lease) lets it finish; a hang here is that bug.
    rerun = _start(dataset.config.root, store, "all", 2, marks, delay="0", lease="3600")
    try:
        out, err = rerun.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        rerun.kill()
        rerun.communicate()
        pytest.fail("the re-run hung on the dead workers' claims")
    assert rerun.returncode == 0, err
    report = json.loads(out)
    assert report["failed"] == [] and report["busy"] == []
    assert set(report["written"]) | set(report["skipped"]) == set(index.videos)
    assert {c.video for c in left} <= set(report["written"])
    assert FeatureStore.open(store).videos() == sorted(index.videos)
    assert list_claims(store) == []


def test_a_video_another_live_process_holds_is_waited_for_or_reported(tiny_kitchen, tmp_path):
    """Left to a live holder: with wait_busy=False the run reports it busy (the command then
    exits 1 naming it); by default the run waits, and extracts it once the holder is gone."""
    _, index = tiny_kitchen
    store = tmp_path / "s.zarr"
    held = sorted(index.videos)[1]
    extract_features(index, ColorGradient(CG), store, dataset_ref="r", video_ids=[])  # create
    proc = _holder(store, held, lease=600)
    try:
        report = extract_features(index, ColorGradient(CG), store, dataset_ref="r",
                                  wait_busy=False)
        assert report.busy == (held,) and report.ok
        assert sorted(report.written) == sorted(set(index.videos) - {held})
        import threading

        threading.Timer(1.0, proc.kill).start()  # the holder dies while the next run waits
        again = extract_features(index, ColorGradient(CG), store, dataset_ref="r")
        assert again.written == (held,) and again.busy == () and again.ok
    finally:
        proc.kill()
        proc.wait()
    assert FeatureStore.open(store).videos() == sorted(index.videos)


def test_s3_release_never_deletes_the_claim_of_a_process_that_took_it_over(s3_store,
                                                                           monkeypatch):
    """A holder releasing its claim just as another machine takes it over (it was silent past
    its lease): the delete is conditional on the claim it read, so the taker's claim stays."""
    import s3fs

    from actrec.extract_claims import _ObjectFiles

    held = try_claim(s3_store, "v", lease=30)
    assert held is not None
    key = s3_store[len("s3://"):] + "/.claims/v.json"
    real_read = _ObjectFiles.read

    def read_then_taken_over(self, name):  # the taker's PUT lands right after our read
        found = real_read(self, name)
        s3fs.S3FileSystem().pipe(key, json.dumps({"video": "v", "host": "another-machine",
                                                  "pid": 7, "token": "taker"}).encode())
        return found

    monkeypatch.setattr(_ObjectFiles, "read", read_then_taken_over)
    held.release()
    monkeypatch.setattr(_ObjectFiles, "read", real_read)
    info = claim_info(s3_store, "v")
    assert info is not None and info.host == "another-machine"
