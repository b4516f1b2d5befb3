"""Feature stores at URLs: file:// end to end (extract, then train reads it by URL), and S3
through a real S3-compatible server in this process (moto's ThreadedMotoServer) with s3fs."""

from __future__ import annotations

import json
import os
import time
import uuid

import numpy as np
import pytest
from actrec_plugins.extractors.colorgrad import ColorGradient
from click.testing import CliRunner
from test_reproduce import breakfast_table

from actrec.errors import ConfigError, DataError
from actrec.extract import extract_features
from actrec.io.features import FeatureStore
from actrec.io.integrity import check_store
from actrec.io.remote import StoreURL, store_location

CG = ColorGradient.Config(grid=2, bins=4, resize=32)


def _content(store) -> dict:
    out = {"attrs": store.attrs}
    for vid in store.videos():
        x, y = store.read(vid)
        attrs = {k: v for k, v in store.video_attrs(vid).items()  # a URL's own: generation
                 if k not in ("written_at", "generation")}
        out[vid] = (x.tobytes(), y.tobytes(), json.dumps(attrs, sort_keys=True))
    return out


# ---------------------------------------------------------------------- locations


def test_locations_from_what_users_type(tmp_path):
    assert store_location(f"file://{tmp_path}/s.zarr") == tmp_path / "s.zarr"
    assert store_location("file://localhost/data/s.zarr") == store_location("/data/s.zarr")
    url = store_location("s3://bucket/features/s.zarr/")
    assert isinstance(url, StoreURL) and str(url) == "s3://bucket/features/s.zarr"
    assert (url / "videos" / "v1").url == "s3://bucket/features/s.zarr/videos/v1"
    assert url.name == "s.zarr" and url.suffix == ".zarr" and url.parent.url == "s3://bucket/features"
    with pytest.raises(ConfigError, match="names a local path"):
        store_location("file://otherhost/data/s.zarr")
    from pathlib import Path

    with pytest.raises(ConfigError, match=r"looks like a URL that lost a '/'"):
        FeatureStore.open(Path("s3://bucket/s.zarr"))  # Path() squashed the URL
    with pytest.raises(ConfigError, match=r"s3:/bucket/s.zarr: looks like a URL that lost"):
        FeatureStore.open("s3:/bucket/s.zarr")  # typed with one slash


def test_a_missing_backend_names_its_package():
    pytest.importorskip("fsspec")
    try:
        import gcsfs  # noqa: F401
        pytest.skip("gcsfs is installed here")
    except ImportError:
        pass
    with pytest.raises(ConfigError, match=r"backend for gs:// is not installed \(pip install gcsfs\)"):
        FeatureStore.open("gs://bucket/s.zarr")


# ---------------------------------------------------------------------- file://


@pytest.mark.slow
def test_file_url_store_extracted_then_trained_on(tiny_kitchen, tmp_path):
    from actrec.cli import cli

    _, index = tiny_kitchen
    url = f"file://{tmp_path}/s.zarr"
    report = extract_features(index, ColorGradient(CG), url, dataset_ref="synthetic:tiny")
    assert report.ok and sorted(report.written) == sorted(index.videos)
    assert report.store == tmp_path / "s.zarr"  # a file:// URL is a local store
    store = FeatureStore.open(url)
    assert type(store) is FeatureStore and store.videos() == sorted(index.videos)
    runner = CliRunner()
    result = runner.invoke(cli, ["train", "lstm", "--d1", url, "--iterations", "2", "--history",
                                 "8", "--mix", "2:0", "-o", "hidden=4", "--run-dir",
                                 str(tmp_path / "run"), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert str(tmp_path / "s.zarr") in json.dumps(config)


# ---------------------------------------------------------------------- S3 (moto server)


@pytest.mark.slow
def test_s3_store_written_reopened_and_checked(tiny_kitchen, bucket, tmp_path):
    import s3fs

    _, index = tiny_kitchen
    url = f"s3://{bucket}/features/s.zarr"
    report = extract_features(index, ColorGradient(CG), url, dataset_ref="synthetic:tiny")
    assert report.ok and sorted(report.written) == sorted(index.videos), report.to_dict()
    assert report.store == StoreURL(url)
    local = tmp_path / "local.zarr"
    extract_features(index, ColorGradient(CG), local, dataset_ref="synthetic:tiny")

    reopened = FeatureStore.open(url)
    assert reopened.videos() == sorted(index.videos)
    assert _content(reopened) == _content(FeatureStore.open(local))  # same values and records
    check = check_store(reopened)
    assert check.ok and check.count("ok") == len(index.videos), check.to_dict()

    again = extract_features(index, ColorGradient(CG), url, dataset_ref="synthetic:tiny")
    assert again.written == () and sorted(again.skipped) == sorted(index.videos)

    # Damage in the bucket is found by reads and by check, and redone by extract.
    vid = min(index.videos)
    fs = s3fs.S3FileSystem()
    chunk = f"{FeatureStore.open(url).video_dir(vid).fs_path}/labels/c/0"  # its generation's
    fs.rm(chunk)
    with pytest.raises(DataError, match=r"is damaged \(labels: chunk c/0 is missing\)"):
        FeatureStore.open(url).read(vid)
    assert not check_store(FeatureStore.open(url)).ok
    from actrec.cli import cli as _cli

    checked = CliRunner().invoke(_cli, ["check", url, "--json"], catch_exceptions=False)
    assert checked.exit_code == 1, checked.output  # the command names the damaged video
    assert vid in checked.stdout and json.loads(checked.stdout)["videos"]
    redo = extract_features(index, ColorGradient(CG), url, dataset_ref="synthetic:tiny")
    assert [v for v, _ in redo.redone_damaged] == [vid] and redo.written == (vid,)
    assert _content(FeatureStore.open(url)) == _content(FeatureStore.open(local))
    # Training and evaluation read the store by its URL, beside a local one (D2).
    from actrec.cli import cli

    runner = CliRunner()
    trained = runner.invoke(cli, ["train", "ddlstm", "--d1", url, "--d2", str(local),
                                  "--allow-same-store", "--iterations", "2", "--history", "8",
                                  "--mix", "2:2", "-o", "hidden=4", "--run-dir",
                                  str(tmp_path / "run"), "--json"], catch_exceptions=False)
    assert trained.exit_code == 0, trained.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert url in json.dumps(config)
    evaluated = runner.invoke(cli, ["eval", str(tmp_path / "run"), "--online", "--json"],
                              catch_exceptions=False)
    assert evaluated.exit_code == 0, evaluated.output
    assert len(json.loads(evaluated.stdout)["datasets"]) == 2
    # Claims are deleted when done; status records stay in the store.
    assert not fs.exists(f"{bucket}/features/s.zarr/.claims") or \
        fs.ls(f"{bucket}/features/s.zarr/.claims") == []


def test_s3_store_refuses_another_source_and_hides_unfinished_writes(bucket):
    url = f"s3://{bucket}/s.zarr"
    kwargs = {"dataset": "d", "split_scheme": "default", "classes": ["a", "b"],
                  "splits": {"1": {"train": ["v1"], "test": ["v2"]}}, "extractor": "e",
                  "extractor_config": {}, "lookahead": 0, "chunk_frames": 4}
    store = FeatureStore.open_or_create(url, **kwargs)
    store.write_video("v1", np.ones((6, 3), np.float32), np.array([0, 1, 1, 0, 1, 0]), fps=15,
                      source=None)
    with pytest.raises(DataError, match="different extractor_config"):
        FeatureStore.open_or_create(url, **{**kwargs, "extractor_config": {"x": 1}})
    # A writer that died after its chunks but before the group's zarr.json: not listed.
    import zarr

    zarr.create_array(store=f"{url}/videos/v2/features", shape=(4, 3), dtype="float16")
    assert FeatureStore.open(url).videos() == ["v1"] and not FeatureStore.open(url).has("v2")
    store.write_video("v2", np.zeros((4, 3), np.float32), np.zeros(4, np.int64), fps=15,
                      source=None)
    assert FeatureStore.open(url).videos() == ["v1", "v2"]
    store.remove("v1")
    assert FeatureStore.open(url).videos() == ["v2"]


@pytest.mark.slow
def test_storage_options_on_the_command_line(tiny_kitchen, bucket, s3_server, monkeypatch):
    """`--storage-option endpoint_url=...` instead of AWS_ENDPOINT_URL, reaching the worker
    processes too (--workers 2); --status reads the URL."""
    import fsspec.config

    from actrec.cli import cli

    dataset, index = tiny_kitchen
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setattr(fsspec.config, "conf", {})
    monkeypatch.delenv("FSSPEC_S3", raising=False)
    root = str(dataset.config.root)
    url = f"s3://{bucket}/cli.zarr"
    ref = "synthetic:kitchen=a,participants=3,videos_per_participant=1,frames_mean=40," \
          "size=32,folds=3,seed=7"
    result = CliRunner().invoke(cli, ["extract", ref, "--root", root, "-x", "grid=2", "-x",
                                      "bins=4", "-x", "resize=32", "--out", url,
                                      "--storage-option", f"endpoint_url={s3_server}",
                                      "--workers", "2", "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert len(report["written"]) == len(index.videos) and report["workers"] == 2
    assert json.loads(os.environ["FSSPEC_S3"]) == {"endpoint_url": s3_server}  # for workers
    status = CliRunner().invoke(cli, ["extract", "--status", url, "--json"],
                                catch_exceptions=False)
    assert status.exit_code == 0, status.output
    counts = json.loads(status.stdout)["counts"]
    assert counts == {"done": len(index.videos), "failed": 0, "claimed": 0, "pending": 0}


@pytest.mark.slow
def test_an_unreachable_or_missing_bucket_is_named_not_called_empty(tiny_kitchen, bucket,
                                                                     s3_server, monkeypatch):
    """No server at the endpoint: every command says it cannot reach the store (not 'no
    feature store here', not a traceback); a bucket that does not exist is named."""
    import socket

    import s3fs

    from actrec.cli import cli

    dataset, _ = tiny_kitchen
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    s3fs.S3FileSystem.clear_instance_cache()
    url = f"s3://{bucket}/s.zarr"
    with pytest.raises(DataError, match=r"s.zarr/zarr.json: cannot reach the store \(EndpointConnection"):
        FeatureStore.open(url)
    runner = CliRunner()
    ref = "synthetic:kitchen=a,participants=3,videos_per_participant=1,frames_mean=40," \
          "size=32,folds=3,seed=7"
    for args in (["extract", "--status", url], ["check", url],
                 ["extract", ref, "--root", str(dataset.config.root), "--out", url]):
        result = runner.invoke(cli, args)  # actrec's main prints a DataError as one message
        assert isinstance(result.exception, DataError), (args, result.exception)
        assert "cannot reach the store" in str(result.exception), (args, result.exception)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    s3fs.S3FileSystem.clear_instance_cache()
    with pytest.raises(DataError, match=r"s3://no-such-bucket-x/s.zarr: cannot create it "
                                        r"\(FileNotFoundError: The specified bucket does not"):
        FeatureStore.open_or_create("s3://no-such-bucket-x/s.zarr", dataset="d",
                                    split_scheme="s", classes=["a"], splits={},
                                    extractor="e", extractor_config={}, lookahead=0)


def test_s3_writer_whose_claim_was_taken_over_writes_nothing(bucket):
    """A holder presumed dead (silent past its lease) and taken over must neither delete nor
    commit over its taker's copy: at a URL a video is written in place, so it confirms its
    claim first and stops."""
    import s3fs

    from actrec.extract_claims import claim

    url = f"s3://{bucket}/s.zarr"
    store = FeatureStore.open_or_create(
        url, dataset="d", split_scheme="default", classes=["a", "b"],
        splits={"1": {"train": ["v1"], "test": []}}, extractor="e", extractor_config={},
        lookahead=0, chunk_frames=4)
    taker = np.full((6, 3), 2.0, np.float32)
    store.write_video("v1", taker, np.ones(6, np.int64), fps=15, source=None)
    key = f"{bucket}/s.zarr/.claims/v1.json"
    with claim(url, "v1", lease=60) as mine:
        assert mine
        s3fs.S3FileSystem().pipe(key, json.dumps({"video": "v1", "host": "another-machine",
                                                  "pid": 7, "token": "taker"}).encode())
        with pytest.raises(DataError, match="was taken over by another process"):
            store.write_video("v1", np.zeros((6, 3), np.float32), np.zeros(6, np.int64),
                              fps=15, source=None)
        with pytest.raises(DataError, match="was taken over by another process"):
            store.remove("v1")
    features, labels = FeatureStore.open(url).read("v1")
    assert np.array_equal(features, taker) and labels.tolist() == [1] * 6
    assert json.loads(s3fs.S3FileSystem().cat(key))["token"] == "taker"  # not released
    with claim(url, "v2", lease=60) as mine:  # a claim still held: the write goes through
        assert mine
        store.write_video("v2", taker, np.ones(6, np.int64), fps=15, source=None)
    assert FeatureStore.open(url).videos() == ["v1", "v2"]


def test_s3_listing_never_drops_a_video_it_could_not_read(bucket, monkeypatch):
    """A video group whose zarr.json cannot be read for another reason than its absence (a
    network error, a refused request) is an error, not a video silently left out of
    training."""
    url = f"s3://{bucket}/s.zarr"
    store = FeatureStore.open_or_create(
        url, dataset="d", split_scheme="default", classes=["a", "b"],
        splits={"1": {"train": ["v1", "v2"], "test": []}}, extractor="e", extractor_config={},
        lookahead=0, chunk_frames=4)
    for vid in ("v1", "v2"):
        store.write_video(vid, np.ones((4, 3), np.float32), np.ones(4, np.int64), fps=15,
                          source=None)
    fs = store.path.fs  # the cached instance every StoreURL of this bucket uses
    real = fs.cat

    def flaky(paths, *args, **kwargs):  # the backend answers one read with an error
        out = real(paths, *args, **kwargs)
        key = next(k for k in out if "/v2/" in k)
        if kwargs.get("on_error") == "omit":  # as fsspec does
            del out[key]
        else:
            out[key] = ConnectionResetError("connection reset by peer")
        return out

    assert FeatureStore.open(url).videos() == ["v1", "v2"]
    monkeypatch.setattr(fs, "cat", flaky)
    with pytest.raises(DataError, match=r"cannot read .*v2/zarr.json \(ConnectionResetError"):
        FeatureStore.open(url).videos()


class _TakenOverColorGrad(ColorGradient):
    """colorgrad whose first video is taken over by another machine while it is extracted
    (that machine's claim replaces this process's, as after a long pause of this one)."""

    claim_key: str = ""
    done = False

    def extract(self, batches):
        if not _TakenOverColorGrad.done:
            import s3fs

            _TakenOverColorGrad.done = True
            s3fs.S3FileSystem().pipe(_TakenOverColorGrad.claim_key, json.dumps(
                {"video": "?", "host": "another-machine", "pid": 7, "token": "taker"}).encode())
        yield from super().extract(batches)


@pytest.mark.slow
def test_s3_extraction_taken_over_mid_video_leaves_it_to_the_taker(tiny_kitchen, bucket,
                                                                   monkeypatch, tmp_path):
    """The run whose claim was taken over writes nothing of that video, reports it neither
    written nor failed while the taker holds it, and, when the taker goes silent past its
    lease, takes it back and writes it: the store equals an uninterrupted extraction."""
    _, index = tiny_kitchen
    url = f"s3://{bucket}/s.zarr"
    first = min(index.videos)
    _TakenOverColorGrad.claim_key = f"{bucket}/s.zarr/.claims/{first}.json"
    _TakenOverColorGrad.done = False
    monkeypatch.setenv("ACTREC_CLAIM_LEASE", "2")
    report = extract_features(index, _TakenOverColorGrad(CG), url, dataset_ref="synthetic:tiny",
                              video_ids=[first])
    assert _TakenOverColorGrad.done
    assert report.failed == () and report.written == (first,), report.to_dict()
    local = tmp_path / "local.zarr"
    extract_features(index, ColorGradient(CG), local, dataset_ref="synthetic:tiny",
                     video_ids=[first])
    assert _content(FeatureStore.open(url)) == _content(FeatureStore.open(local))


# ---------------------------------------------------------------------- re-writing a video

_STORE_ARGS = {"dataset": "d", "split_scheme": "default", "classes": ["a", "b"],
               "splits": {"1": {"train": ["v1"], "test": []}}, "extractor": "e",
               "extractor_config": {}, "lookahead": 0, "chunk_frames": 4}
_OLD = (np.arange(18, dtype=np.float32).reshape(6, 3), np.array([0, 1, 1, 0, 1, 0]))
_NEW = (np.full((9, 3), 7.0, np.float32), np.ones(9, np.int64))

# A writer process that dies (SIGKILL, no clean-up) at one step of re-writing v1:
# "commit" kills it right before the commit (after the new chunks are written), "drop" right
# after the commit (before the replaced copy is deleted), "swap" (a folder) right before the
# new copy is moved into place, "rename" (a folder without an atomic exchange) between moving
# the old copy aside and the new one in.
_KILLED_WRITER = r"""
import os, signal, sys
import numpy as np
import actrec.extract_claims as claims
import actrec.io.features as features
from actrec.io.features import FeatureStore
from actrec.io.remote_store import RemoteFeatureStore

where, step = sys.argv[1], sys.argv[2]
die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
calls = []
real_confirm, real_exchange, real_rename = claims.confirm_held, features._exchange, os.rename

def confirm(path, video):  # the second check is the one right before the commit
    calls.append(video)
    if step == "commit" and len(calls) == 2:
        die()
    real_confirm(path, video)

def exchange(a, b):
    if step == "swap":
        die()
    return False if step == "rename" else real_exchange(a, b)

def rename(a, b):
    real_rename(a, b)
    if step == "rename" and "-old" in os.fspath(b):
        die()

claims.confirm_held, features._exchange, os.rename = confirm, exchange, rename
if step == "drop":
    RemoteFeatureStore._drop_replaced = staticmethod(die)
FeatureStore.open(where).write_video("v1", np.full((9, 3), 7.0, np.float32),
                                     np.ones(9, np.int64), fps=15, source=None)
"""


def _killed_writer(where: str, step: str) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, where, step],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == -9, proc.stderr  # died at that step, not of an error


def _holds(where: str, values) -> None:
    store = FeatureStore.open(where)
    assert store.videos() == ["v1"]
    x, y = store.read("v1")
    assert np.array_equal(x, values[0]) and np.array_equal(y, values[1])
    assert check_store(store).ok


@pytest.mark.slow
@pytest.mark.parametrize("step", ["commit", "drop"])
def test_s3_rewrite_killed_at_any_step_loses_nothing(bucket, step):
    """Re-writing a video never has a moment without a whole copy: killed before its commit
    the old copy is there, intact; killed after it the new one is. A later write of the video
    works and leaves one generation."""
    import s3fs

    url = f"s3://{bucket}/s.zarr"
    FeatureStore.open_or_create(url, **_STORE_ARGS).write_video("v1", *_OLD, fps=15,
                                                                source=None)
    _killed_writer(url, step)
    _holds(url, _OLD if step == "commit" else _NEW)
    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    generations = [p for p in fs.ls(f"{bucket}/s.zarr/videos/v1") if "/gen-" in p]
    assert len(generations) == 2  # the dead writer's (uncommitted, or the replaced one)
    store = FeatureStore.open(url)
    store.write_video("v1", *_OLD, fps=15, source=None)
    _holds(url, _OLD)
    fs.invalidate_cache()
    left = {p.rsplit("/", 1)[1] for p in fs.ls(f"{bucket}/s.zarr/videos/v1")}
    # The one committed and the dead writer's leftover (the attempt it did not commit, or
    # the copy it did not drop): a young generation may be a live writer's, so it is kept.
    assert len(left) == 3 and {store.video_attrs("v1")["generation"], "zarr.json"} < left


@pytest.mark.slow
@pytest.mark.parametrize("step", ["swap", "rename"])
def test_folder_rewrite_killed_between_steps_loses_nothing(tmp_path, step):
    """A local store: killed before the new copy is swapped in, the old copy is read; with a
    file system that cannot exchange two folders atomically (two renames), killed between
    the renames, the old copy is put back by the next writer's open."""
    where = str(tmp_path / "s.zarr")
    FeatureStore.open_or_create(where, **_STORE_ARGS).write_video("v1", *_OLD, fps=15,
                                                                  source=None)
    _killed_writer(where, step)
    if step == "swap":
        _holds(where, _OLD)
    else:
        assert FeatureStore.open(where).videos() == []  # the window two renames leave
    FeatureStore.open_or_create(where, **_STORE_ARGS)  # a writer's open cleans up
    _holds(where, _OLD)
    assert not (tmp_path / "s.zarr" / ".tmp").exists()
    FeatureStore.open(where).write_video("v1", *_NEW, fps=15, source=None)
    _holds(where, _NEW)


def test_s3_rewrite_interrupted_before_its_commit_keeps_the_old_copy(bucket, monkeypatch):
    """An error (here Ctrl-C) after the new chunks are written and before the commit: the old
    copy is read as before and the attempt's chunks are gone."""
    import s3fs

    import actrec.extract_claims as claims

    url = f"s3://{bucket}/s.zarr"
    store = FeatureStore.open_or_create(url, **_STORE_ARGS)
    store.write_video("v1", *_OLD, fps=15, source=None)
    calls = []

    def interrupted(path, video):
        calls.append(video)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(claims, "confirm_held", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.write_video("v1", *_NEW, fps=15, source=None)
    _holds(url, _OLD)
    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    assert len([p for p in fs.ls(f"{bucket}/s.zarr/videos/v1") if "/gen-" in p]) == 1


@pytest.mark.parametrize("other", ["rewrite", "remove", "remove-new"])
def test_s3_two_writers_of_one_video_never_mix_their_chunks(bucket, monkeypatch, other):
    """Writer A (silent past its lease, say) passes its last claim check and stops right before
    its commit; writer B re-writes the video meanwhile and commits (or removes it). A's commit
    is then refused (ClaimLost) and leaves nothing: the video is B's, whole, checksums
    matching (or stays removed). A removal of a video that A is writing for the first time
    leaves A's chunks alone, so A commits a whole video."""
    _two_writers(f"s3://{bucket}/s.zarr", monkeypatch, other)


def test_two_writers_on_another_object_store_never_mix_their_chunks(monkeypatch):
    """The same on a backend without conditional writes (fsspec's memory://): the version
    checked right before the commit refuses a writer that resumes after another's commit."""
    pytest.importorskip("fsspec")
    _two_writers(f"memory://{uuid.uuid4().hex[:12]}/s.zarr", monkeypatch)


class _WriterPausedAtCommit:
    """A real writer, a thread named ``name``, writing v1 (``values``) to the store at ``url``:
    ``start()`` returns once it has made its last claim check before the commit, where it
    waits until ``go`` is set; ``outcome`` is then "committed" or the ClaimLost message."""

    def __init__(self, url: str, monkeypatch, values, name: str) -> None:
        import threading

        import actrec.extract_claims as claims
        from actrec.extract_claims import ClaimLost

        self.at_commit, self.go = threading.Event(), threading.Event()
        self.outcome: str | None = None
        real, calls = claims.confirm_held, []

        def confirm(path, video):
            real(path, video)
            if threading.current_thread().name == name:
                calls.append(video)
                if len(calls) == 2:  # its last check before the commit: it stops here
                    self.at_commit.set()
                    self.go.wait(60)

        def write():
            try:
                FeatureStore.open(url).write_video("v1", *values, fps=15, source=None)
                self.outcome = "committed"
            except ClaimLost as exc:
                self.outcome = str(exc)

        monkeypatch.setattr(claims, "confirm_held", confirm)
        self.thread = threading.Thread(target=write, name=name)

    def start(self) -> None:
        self.thread.start()
        assert self.at_commit.wait(60)

    def finish(self) -> None:
        self.go.set()
        self.thread.join(60)
        assert not self.thread.is_alive()


def _two_writers(url: str, monkeypatch, other: str = "rewrite") -> None:
    store = FeatureStore.open_or_create(url, **_STORE_ARGS)
    if other != "remove-new":
        store.write_video("v1", *_OLD, fps=15, source=None)
    a_values = (np.full((6, 3), 3.0, np.float32), np.zeros(6, np.int64))
    a = _WriterPausedAtCommit(url, monkeypatch, a_values, "A")
    a.start()
    if other == "rewrite":  # writer B
        FeatureStore.open(url).write_video("v1", *_NEW, fps=15, source=None)
    else:
        FeatureStore.open(url).remove("v1")
    a.finish()
    if other == "remove-new":
        assert a.outcome == "committed"
        _holds(url, a_values)
        return
    assert "was committed by another process while this one wrote it" in a.outcome
    group = FeatureStore.open(url).path / "videos" / "v1"
    left = {entry.name for entry in group.iterdir()}
    if other == "remove":
        assert FeatureStore.open(url).videos() == [] and left == set()
        return
    _holds(url, _NEW)
    assert left == {FeatureStore.open(url).video_attrs("v1")["generation"], "zarr.json"}


# ---------------------------------------------------------------------- --storage-option


def _endpoint_only_from_options(monkeypatch) -> None:
    """Forget the endpoint the bucket fixture set (AWS_ENDPOINT_URL, fsspec's config and the
    file systems made with it), so that only --storage-option can name it."""
    import fsspec.config
    import s3fs

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setattr(fsspec.config, "conf", {})
    monkeypatch.setenv("FSSPEC_S3", "{}")  # recorded, so the option's export is undone
    monkeypatch.delenv("FSSPEC_S3")
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.mark.slow
def test_train_eval_and_check_take_storage_options(tiny_kitchen, bucket, s3_server, monkeypatch,
                                             tmp_path):
    """`train --storage-option endpoint_url=...`, `eval` and `check` with the option reach a
    store the environment does not point at; without a store URL the option is refused by
    name, and a malformed one is named."""
    from actrec.cli import cli

    _, index = tiny_kitchen
    url = f"s3://{bucket}/s.zarr"
    extract_features(index, ColorGradient(CG), url, dataset_ref="synthetic:tiny")
    option = ["--storage-option", f"endpoint_url={s3_server}"]
    run = str(tmp_path / "run")
    runner = CliRunner()
    _endpoint_only_from_options(monkeypatch)
    trained = runner.invoke(cli, ["train", "lstm", "--d1", url, "--iterations", "2",
                                  "--history", "8", "--mix", "2:0", "-o", "hidden=4",
                                  "--run-dir", run, *option, "--json"], catch_exceptions=False)
    assert trained.exit_code == 0, trained.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["stores"][0]["path"] == url
    _endpoint_only_from_options(monkeypatch)
    evaluated = runner.invoke(cli, ["eval", run, "--online", *option, "--json"],
                              catch_exceptions=False)
    assert evaluated.exit_code == 0, evaluated.output
    assert next(iter(json.loads(evaluated.stdout)["datasets"].values()))["videos"]

    _endpoint_only_from_options(monkeypatch)
    checked = runner.invoke(cli, ["check", url, *option, "--json"], catch_exceptions=False)
    assert checked.exit_code == 0 and json.loads(checked.stdout)["ok"], checked.output

    local = str(tmp_path / "local.zarr")
    refused = runner.invoke(cli, ["train", "lstm", "--d1", local, *option])
    assert refused.exit_code == 2 and "--storage-option applies to a store URL (--d1, --d2 " \
        "or --data s3://..., gs://...)" in refused.output
    malformed = runner.invoke(cli, ["train", "lstm", "--d1", url, "--storage-option",
                                    "endpoint_url"])
    assert isinstance(malformed.exception, ConfigError)
    assert str(malformed.exception) == "--storage-option expects KEY=VALUE, got 'endpoint_url'"


_ONE_CELL = breakfast_table(
    "one-cell", "the frame classifier and an LSTM on one split",
    """[methods.cnn]
kind = "frame-classifier"

[methods.lstm]
kind = "train"
model = "lstm"
protocol = "single"

""",
    """[[columns]]
label = "CNN"
method = "cnn"

[[columns]]
label = "LSTM"
method = "lstm"

[[rows]]
labels = ["0"]
split = 0
paper = [22.0, 30.78]
""")


@pytest.mark.slow
def test_reproduce_reads_a_dataset_store_at_its_url(tiny_kitchen, bucket, s3_server,
                                                    monkeypatch, tmp_path):
    """`reproduce --preset tiny --dataset breakfast=s3://...` trains the frame head and the
    cells on the store in the bucket (reached through --storage-option, in the worker
    processes too), and gives the same numbers as the same grid on a local copy of that
    store."""
    from actrec.cli import cli

    _, index = tiny_kitchen
    url = f"s3://{bucket}/s.zarr"
    local = tmp_path / "local.zarr"
    extract_features(index, ColorGradient(CG), url, dataset_ref="synthetic:tiny")
    extract_features(index, ColorGradient(CG), local, dataset_ref="synthetic:tiny")
    table = tmp_path / "one.toml"
    table.write_text(_ONE_CELL)
    _endpoint_only_from_options(monkeypatch)
    out = {}
    for name, store in (("url", url), ("local", str(local))):
        args = ["reproduce", str(table), "--preset", "tiny", "--root", str(tmp_path / name),
                "--dataset", f"breakfast={store}", "--jobs", "2", "--json"]
        if name == "url":
            args += ["--storage-option", f"endpoint_url={s3_server}"]
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        out[name] = json.loads(result.stdout)
    assert out["url"]["datasets"]["breakfast"]["store"] == url
    assert not any("played by" in n for n in out["url"]["notes"])  # not a synthetic stand-in
    cells = [[(c["status"], c["mean"]) for c in row["cells"]] for row in out["url"]["rows"]]
    assert cells == [[(c["status"], c["mean"]) for c in row["cells"]]
                     for row in out["local"]["rows"]]
    assert [s for s, _ in cells[0]] == ["ok", "ok"]
    heads = list((tmp_path / "url" / "reproduce" / "tiny" / "features").glob("*.zarr"))
    assert len(heads) == 1  # the head's outputs are written locally, under --root
    backbone = FeatureStore.open(heads[0]).attrs["extractor_config"]["backbone_identity"]
    assert backbone == FeatureStore.open(local).identity
    from actrec.frame_head import extract_head_features

    with pytest.raises(ConfigError, match=r"s.zarr: a frame head's store and head file are "
                                          r"written to a local folder; give one \(out=...\)"):
        extract_head_features(url, "1")  # no default place beside a store in a bucket


def test_s3_reader_meeting_a_rewrite_reads_the_new_copy(bucket):
    """A reader that read a video's attributes just before a re-write committed and removed
    the generation they name reads the new generation, not an error or fill values."""
    url = f"s3://{bucket}/s.zarr"
    FeatureStore.open_or_create(url, **_STORE_ARGS).write_video("v1", *_OLD, fps=15,
                                                                source=None)
    reader = FeatureStore.open(url)
    stale = reader.video_attrs("v1")
    FeatureStore.open(url).write_video("v1", *_NEW, fps=15, source=None)
    reader.video_attrs = lambda video_id: stale  # as read a moment before the commit
    x, y = reader.read_window("v1", 2, 4)
    assert np.array_equal(x, _NEW[0][2:6]) and np.array_equal(y, _NEW[1][2:6])


def test_s3_reader_whose_chunks_vanish_mid_read_reads_the_new_copy(bucket):
    """A re-write that commits and deletes the replaced generation while a reader is between
    opening an array and reading its chunks: the reader must not return the fill values Zarr
    gives for the vanished chunks, but the new copy."""
    url = f"s3://{bucket}/s.zarr"
    FeatureStore.open_or_create(url, **_STORE_ARGS).write_video("v1", *_OLD, fps=15,
                                                                source=None)
    reader = FeatureStore.open(url)
    opened = []

    def array(where, name):  # the labels array opened; then the writer commits and drops
        out = FeatureStore._array(where, name)
        opened.append(name)
        if opened == ["features", "labels"]:
            FeatureStore.open(url).write_video("v1", *_NEW, fps=15, source=None)
        return out

    reader._array = array
    x, y = reader.read_window("v1", 0, 6)
    assert np.array_equal(x, _NEW[0][:6]) and np.array_equal(y, _NEW[1][:6])
    assert opened == ["features", "labels", "features", "labels"]  # read again, whole


def test_s3_store_in_the_earlier_layout_is_read_checked_and_rewritten(bucket, tmp_path):
    """A store at a URL written before generations existed keeps each video's arrays in place
    in its group (as a folder store does: here one copied into the bucket). It reads and
    checks as before; re-writing a video commits a generation and deletes the arrays it
    replaced, removing one deletes them: nothing of the earlier copies is left."""
    import s3fs

    from actrec.io.remote_store import RemoteFeatureStore

    local = tmp_path / "s.zarr"
    folder = FeatureStore.open_or_create(local, **_STORE_ARGS)
    for vid in ("v1", "v2"):
        folder.write_video(vid, *_OLD, fps=15, source=None)
    fs = s3fs.S3FileSystem()
    fs.put(str(local), f"{bucket}/s.zarr", recursive=True)
    fs.invalidate_cache()
    assert fs.exists(f"{bucket}/s.zarr/videos/v1/features/c/0/0")  # in place, no generation
    url = f"s3://{bucket}/s.zarr"
    store = FeatureStore.open(url)
    assert isinstance(store, RemoteFeatureStore)
    assert _content(store) == _content(folder)
    assert check_store(store).ok
    assert np.array_equal(store.read_window("v1", 2, 3)[0], _OLD[0][2:5])

    store.write_video("v1", *_NEW, fps=15, source=None)
    fs.invalidate_cache()
    generation = store.video_attrs("v1")["generation"]
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{bucket}/s.zarr/videos/v1")) == \
        sorted([generation, "zarr.json"])
    x, y = FeatureStore.open(url).read("v1")
    assert np.array_equal(x, _NEW[0]) and np.array_equal(y, _NEW[1])
    store.remove("v2")
    fs.invalidate_cache()
    assert fs.find(f"{bucket}/s.zarr/videos/v2") == []
    assert FeatureStore.open(url).videos() == ["v1"] and check_store(store).ok


def test_folder_reader_meeting_a_rewrite_reads_the_new_copy(tmp_path):
    """In a folder a re-write swaps the whole group in at once; a reader that read the
    video's attributes just before finds the new copy's chunks, which the old record does not
    describe (here: one chunk fewer): it reads the new copy (attributes read again), not
    'damaged'."""
    where = tmp_path / "s.zarr"
    FeatureStore.open_or_create(where, **_STORE_ARGS).write_video("v1", *_OLD, fps=15,
                                                                  source=None)
    reader = FeatureStore.open(where)
    stale = reader.video_attrs("v1")
    short = (np.full((3, 3), 5.0, np.float32), np.zeros(3, np.int64))  # 1 chunk, _OLD 2
    FeatureStore.open(where).write_video("v1", *short, fps=15, source=None)
    reader.video_attrs = lambda video_id: stale  # as read a moment before the swap
    x, y = reader.read_window("v1", 2, 4)
    assert np.array_equal(x, short[0][2:]) and np.array_equal(y, short[1][2:])


@pytest.mark.slow
def test_live_and_export_take_storage_options_for_the_runs_stores(tiny_kitchen, bucket, s3_server,
                                                        monkeypatch, tmp_path):
    """`actrec live RUN --storage-option endpoint_url=...` reads the run's store in a bucket
    the environment does not point at (for its extractor's config and frame rate) and
    answers every frame; without the option it cannot; a run on local stores refuses it.
    `actrec export` takes the option alike."""
    from actrec.cli import cli

    _, index = tiny_kitchen
    url = f"s3://{bucket}/s.zarr"
    extract_features(index, ColorGradient(CG), url, dataset_ref="synthetic:tiny")
    run = str(tmp_path / "run")
    runner = CliRunner()
    trained = runner.invoke(cli, ["train", "lstm", "--d1", url, "--iterations", "2",
                                  "--history", "8", "--mix", "2:0", "-o", "hidden=4",
                                  "--run-dir", run, "--json"], catch_exceptions=False)
    assert trained.exit_code == 0, trained.output
    video = str(index.videos[min(index.videos)].path)
    args = ["live", run, video, "--max-frames", "6"]

    _endpoint_only_from_options(monkeypatch)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # the default endpoint is not reachable: fail fast
    lost = runner.invoke(cli, args)
    assert lost.exit_code != 0 and f"its feature store {url} is missing or unreadable" in str(
        lost.exception), lost.output

    _endpoint_only_from_options(monkeypatch)
    live = runner.invoke(cli, [*args, "--storage-option", f"endpoint_url={s3_server}"],
                         catch_exceptions=False)
    assert live.exit_code == 0, live.output
    lines = [json.loads(x) for x in live.stdout.splitlines() if x.startswith("{")]
    assert [x["frame"] for x in lines if "frame" in x and "label" in x] == list(range(6))
    _endpoint_only_from_options(monkeypatch)  # export reads the run's store the same way
    exported = runner.invoke(cli, ["export", run, str(tmp_path / "step.pt2"), "--storage-option",
                                   f"endpoint_url={s3_server}", "--json"],
                             catch_exceptions=False)
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.stdout)["meta"]["extractor"] == "colorgrad"

    local = tmp_path / "local.zarr"
    extract_features(index, ColorGradient(CG), local, dataset_ref="synthetic:tiny")
    local_run = str(tmp_path / "local-run")
    assert runner.invoke(cli, ["train", "lstm", "--d1", str(local), "--iterations", "1",
                               "--history", "8", "--mix", "2:0", "-o", "hidden=4",
                               "--run-dir", local_run]).exit_code == 0
    refused = runner.invoke(cli, ["live", local_run, video, "--storage-option", "a=1"])
    assert refused.exit_code == 2 and "--storage-option applies to a store URL (the stores " \
        f"run {local_run} was trained on, e.g. s3://..., gs://...)" in refused.output


# ---------------------------------------------------------------------- check --sweep


def _killed_writer_of(where: str, step: str, video: str) -> None:
    """``_killed_writer`` writing ``video`` (a new one leaves a group with no commit at all)."""
    import subprocess
    import sys

    code = _KILLED_WRITER.replace('write_video("v1"', f'write_video({video!r}')
    proc = subprocess.run([sys.executable, "-c", code, where, step], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == -9, proc.stderr


def _old_generation(url: str, video: str, days: float, *, written: float | None = None) -> str:
    """A copy of ``video``'s committed generation under the name a writer that started
    ``days`` ago would have given it, never committed (as a dead writer's), its objects
    written ``written`` days ago (default ``days``) by the store's clock: its name."""
    import time as _time

    store = FeatureStore.open(url)
    committed = store.video_attrs(video)["generation"]
    name = f"gen-{int(_time.time() - days * 86400)}-{uuid.uuid4().hex[:12]}"
    group = store_location(url) / "videos" / video
    fs = group.fs
    fs.copy((group / committed).fs_path, (group / name).fs_path, recursive=True)
    _backdate(group / name, days if written is None else written)
    return name


def _backdate(where: StoreURL, days: float) -> None:
    """Set the modification time of every object under ``where`` ``days`` back, in the test
    server itself (moto's S3 backend, fsspec's memory store): how old they would be had a
    writer left them then."""
    import datetime

    back = datetime.timedelta(days=days)
    prefix = where.fs_path.rstrip("/") + "/"
    if where.protocol == "memory":
        for path, entry in where.fs.store.items():
            if path.startswith(prefix):
                entry.created -= back
        return
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    bucket_name, key_prefix = prefix.split("/", 1)
    bucket = s3_backends[DEFAULT_ACCOUNT_ID]["global"].buckets[bucket_name]
    for key in list(bucket.keys.keys()):
        if key.startswith(key_prefix):
            for version in bucket.keys.getlist(key):
                version.last_modified -= back
    where.fs.invalidate_cache()


def _generations_of(url: str, video: str) -> set[str]:
    group = store_location(url) / "videos" / video
    group.fs.invalidate_cache()
    return {g.name for g in group.iterdir() if g.name.startswith("gen-")}


def _sweep(url: str, *args: str) -> dict:
    from actrec.cli import cli

    res = CliRunner().invoke(cli, ["check", url, "--sweep", *args, "--json"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert payload["ok"]  # the committed copies are whole after every sweep
    return payload["swept"]


def _names(items) -> list[tuple[str, str]]:
    return sorted((x["video"], x["path"].rsplit("/", 1)[1]) for x in items)


@pytest.mark.slow
def test_s3_sweep_removes_dead_writers_generations_only(bucket):
    """Real dead writers (SIGKILL before their commit: a re-write of v1, a first write of v2)
    and a generation left two days ago: `check --sweep` removes the old one and leaves the
    young ones (they may be live writers'), `--older-than 0` removes those too unless another
    process holds the video's claim; the committed copies are never touched."""
    from actrec.extract_claims import claim

    url = f"s3://{bucket}/s.zarr"
    FeatureStore.open_or_create(url, **_STORE_ARGS).write_video("v1", *_OLD, fps=15,
                                                                source=None)
    committed = FeatureStore.open(url).video_attrs("v1")["generation"]
    _killed_writer_of(url, "commit", "v1")
    _killed_writer_of(url, "commit", "v2")
    (young_v1,) = _generations_of(url, "v1") - {committed}
    (young_v2,) = _generations_of(url, "v2")
    old = _old_generation(url, "v1", days=2)

    swept = _sweep(url)
    assert _names(swept["removed"]) == [("v1", old)]
    assert swept["removed"][0]["kind"] == "uncommitted generation"
    assert 2 * 86400 - 60 < swept["removed"][0]["age_seconds"] < 2 * 86400 + 60
    assert _names(swept["left"]) == sorted([("v1", young_v1), ("v2", young_v2)])
    assert all("younger than 24 h" in x["why"] for x in swept["left"])
    assert _generations_of(url, "v1") == {committed, young_v1}
    _holds(url, _OLD)

    with claim(url, "v2") as mine:  # v2 is being extracted by a live process (this one)
        assert mine
        swept = _sweep(url, "--older-than", "0s")
    assert _names(swept["removed"]) == [("v1", young_v1)]
    assert _names(swept["left"]) == [("v2", young_v2)]
    assert swept["left"][0]["why"] == "another process is extracting this video"
    swept = _sweep(url, "--older-than", "0")
    assert _names(swept["removed"]) == [("v2", young_v2)] and not swept["left"]
    assert _generations_of(url, "v1") == {committed} and _generations_of(url, "v2") == set()
    _holds(url, _OLD)
    assert _sweep(url, "--older-than", "0") == {**swept, "removed": []}  # nothing left to do
    store = FeatureStore.open(url)  # v2 is written as a new video afterwards
    store.write_video("v2", *_NEW, fps=15, source=None)
    assert store.videos() == ["v1", "v2"] and np.array_equal(store.read("v2")[0], _NEW[0])


def test_memory_store_sweep_keeps_the_committed_generation(monkeypatch):
    """On memory:// (no conditional writes): generations left by a writer that died after
    its commit (the replaced copy) and before one are removed once old enough, the
    committed one never, also when it is itself older than the age."""
    pytest.importorskip("fsspec")
    from actrec.io.leftovers import sweep_store

    url = f"memory://{uuid.uuid4().hex[:12]}/s.zarr"
    store = FeatureStore.open_or_create(url, **_STORE_ARGS)
    store.write_video("v1", *_OLD, fps=15, source=None)
    replaced = _old_generation(url, "v1", days=3)  # as if the commit's clean-up never ran
    dead = _old_generation(url, "v1", days=1.5)
    committed = store.video_attrs("v1")["generation"]
    report = sweep_store(FeatureStore.open(url), now=None)
    assert sorted(x.path.rsplit("/", 1)[1] for x in report.removed) == sorted([replaced, dead])
    assert _generations_of(url, "v1") == {committed}
    # three days later the committed generation is the oldest thing there: it stays
    another = _old_generation(url, "v1", days=0)
    report = sweep_store(FeatureStore.open(url), older_than=0, now=time.time() + 3 * 86400)
    assert [x.path.rsplit("/", 1)[1] for x in report.removed] == [another]
    assert _generations_of(url, "v1") == {committed}
    _holds(url, _OLD)


@pytest.mark.slow
@pytest.mark.parametrize("step", ["swap", "rename"])
def test_folder_sweep_removes_dead_writers_temp_folders(tmp_path, step):
    """A folder store: a writer killed before its swap leaves its temp folder; one killed
    between the two renames leaves the old copy aside (the video missing): `check --sweep`
    removes the first and puts the second back, without any write to the store."""
    where = str(tmp_path / "s.zarr")
    FeatureStore.open_or_create(where, **_STORE_ARGS).write_video("v1", *_OLD, fps=15,
                                                                  source=None)
    _killed_writer(where, step)
    swept = _sweep(where)
    assert [(x["video"], x["kind"]) for x in swept["removed"]] == [("v1", "temp folder")]
    assert [(x["video"], x["kind"]) for x in swept["restored"]] == (
        [("v1", "old copy restored")] if step == "rename" else [])
    _holds(where, _OLD)
    assert not (tmp_path / "s.zarr" / ".tmp").exists()


def test_folder_sweep_lists_the_temp_folders_it_keeps(tmp_path):
    """A temp folder whose writer may be alive (a running process on this host; another
    host's, which cannot be told from here, until a day old) stays and is listed as left with
    why; a dead local writer's goes."""
    import socket

    from actrec.io.features import encode_video_id

    where = tmp_path / "s.zarr"
    FeatureStore.open_or_create(str(where), **_STORE_ARGS).write_video("v1", *_OLD, fps=15,
                                                                       source=None)
    name, host = encode_video_id("v1"), socket.gethostname()
    live = where / ".tmp" / f"{name}.{host}.{os.getpid()}.aa"
    foreign = where / ".tmp" / f"{name}.elsewhere.example.1.bb"
    dead = where / ".tmp" / f"{name}.{host}.{2**22 + 12345}.cc"  # above any pid_max default
    for d in (live, foreign, dead):
        d.mkdir(parents=True)
    swept = _sweep(str(where))
    assert [x["path"] for x in swept["removed"]] == [str(dead)]
    assert sorted(x["path"] for x in swept["left"]) == sorted([str(live), str(foreign)])
    assert all(x["kind"] == "temp folder" and "may be alive" in x["why"] for x in swept["left"])
    assert live.exists() and foreign.exists() and not dead.exists()
    _holds(str(where), _OLD)


def test_sweep_options_are_checked(tmp_path):
    from actrec.cli import cli

    where = str(tmp_path / "s.zarr")
    FeatureStore.open_or_create(where, **_STORE_ARGS)
    res = CliRunner().invoke(cli, ["check", where, "--older-than", "2d"])
    assert res.exit_code == 2 and "--older-than applies to --sweep" in res.output
    res = CliRunner().invoke(cli, ["check", where, "--sweep", "--older-than", "soon"])
    assert isinstance(res.exception, ConfigError) and str(res.exception) == (
        "--older-than: expected an age such as 2d, 12h, 30m or 90s, got 'soon'")
    from actrec.io.leftovers import parse_age

    assert [parse_age(x) for x in ("2d", "12h", "30m", "30min", "90s", "5", "0")] == \
        [172800, 43200, 1800, 1800, 90, 5, 0]


def test_sweep_keeps_a_generation_committed_while_it_waited_for_the_claim(monkeypatch):
    """A writer commits a new copy between the sweep's listing and its claim (then lets the
    claim go): the sweep reads the commit again once it holds the claim and keeps it."""
    pytest.importorskip("fsspec")
    import contextlib

    import actrec.extract_claims as claims
    from actrec.io.leftovers import sweep_store

    url = f"memory://{uuid.uuid4().hex[:12]}/s.zarr"
    FeatureStore.open_or_create(url, **_STORE_ARGS).write_video("v1", *_OLD, fps=15,
                                                                source=None)
    dead = _old_generation(url, "v1", days=0.5)  # (the writer's own clean-up leaves it)
    real_claim = claims.claim

    @contextlib.contextmanager
    def claim_after_a_commit(store_path, video_id, **kwargs):
        with real_claim(store_path, video_id) as mine:  # the writer holds it meanwhile
            assert mine
            FeatureStore.open(url).write_video("v1", *_NEW, fps=15, source=None)
        with real_claim(store_path, video_id, **kwargs) as mine:
            yield mine

    monkeypatch.setattr(claims, "claim", claim_after_a_commit)
    report = sweep_store(FeatureStore.open(url), older_than=0, now=time.time() + 60)
    committed = FeatureStore.open(url).video_attrs("v1")["generation"]
    assert [x.path.rsplit("/", 1)[1] for x in report.removed] == [dead]
    assert _generations_of(url, "v1") == {committed}
    _holds(url, _NEW)


def test_sweep_leaves_every_generation_of_a_video_whose_commit_it_cannot_read():
    """A video whose zarr.json exists but cannot be read (cut short, edited by hand): which
    generation it commits is unknown, so the sweep removes none of them, and says why."""
    pytest.importorskip("fsspec")
    from actrec.io.leftovers import sweep_store

    url = f"memory://{uuid.uuid4().hex[:12]}/s.zarr"
    FeatureStore.open_or_create(url, **_STORE_ARGS).write_video("v1", *_OLD, fps=15,
                                                                source=None)
    committed = FeatureStore.open(url).video_attrs("v1")["generation"]
    dead = _old_generation(url, "v1", days=2)
    meta = store_location(url) / "videos" / "v1" / "zarr.json"
    raw = meta.read_bytes()
    meta.write_bytes(raw[: len(raw) // 2])
    report = sweep_store(FeatureStore.open(url), now=time.time() + 3 * 86400)
    assert report.removed == ()
    assert _generations_of(url, "v1") == {committed, dead}
    assert sorted(x.path.rsplit("/", 1)[1] for x in report.left) == sorted([committed, dead])
    assert all("which generation is committed is unknown" in x.why for x in report.left)
    meta.write_bytes(raw)  # the commit readable again: the dead writer's goes, not the commit
    report = sweep_store(FeatureStore.open(url), now=time.time() + 3 * 86400)
    assert [x.path.rsplit("/", 1)[1] for x in report.removed] == [dead]
    _holds(url, _OLD)


def _interrupted_as_it_commits(url: str, monkeypatch) -> None:
    """Re-write v1 with an interrupt (a worker's SIGTERM unwinding, Ctrl-C) arriving while
    its commit is on its way: the commit lands (the request was sent; fsspec's I/O thread
    goes on with it), the writer unwinds. The store must then hold one whole copy."""
    store = FeatureStore.open_or_create(url, **_STORE_ARGS)
    store.write_video("v1", *_OLD, fps=15, source=None)
    real = StoreURL.write_if

    def landed_then_interrupted(self, data, version):
        real(self, data, version)
        raise KeyboardInterrupt

    monkeypatch.setattr(StoreURL, "write_if", landed_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.write_video("v1", *_NEW, fps=15, source=None)
    monkeypatch.setattr(StoreURL, "write_if", real)
    _holds(url, _NEW)  # the commit landed: its generation must be whole


def test_memory_store_rewrite_interrupted_as_it_commits_keeps_a_whole_copy(monkeypatch):
    pytest.importorskip("fsspec")
    _interrupted_as_it_commits(f"memory://{uuid.uuid4().hex[:12]}/s.zarr", monkeypatch)


def test_s3_rewrite_interrupted_as_it_commits_keeps_a_whole_copy(bucket, monkeypatch):
    _interrupted_as_it_commits(f"s3://{bucket}/s.zarr", monkeypatch)


def _writer_paused_at_its_commit_meets_a_sweep(url: str, monkeypatch, order: str) -> None:
    """A real writer (a thread) re-writes v1 and stops between its last claim check and its
    conditional commit, past its lease; `check --sweep` runs meanwhile (an age of 0 with the
    clock a minute on). ``order`` "sweep-first": the sweep takes the video's claim and
    removes the writer's generation, then the writer resumes: its commit must be refused (it
    would name a removed generation and drop the old copy: both copies lost). "commit-first":
    the writer commits between the sweep's read of the commit and its own write: the sweep
    must keep the new copy and leave the video. Either way one whole copy stays."""
    import threading

    from actrec.io.leftovers import sweep_store

    store = FeatureStore.open_or_create(url, **_STORE_ARGS)
    store.write_video("v1", *_OLD, fps=15, source=None)
    old_generation = store.video_attrs("v1")["generation"]
    real_write_if = StoreURL.write_if
    w = _WriterPausedAtCommit(url, monkeypatch, _NEW, "W")

    def commit_first(self, data, version):  # the sweep's write: the writer commits just before
        if threading.current_thread().name != "W" and not w.go.is_set():
            w.go.set()
            w.thread.join(60)
        return real_write_if(self, data, version)

    if order == "commit-first":
        monkeypatch.setattr(StoreURL, "write_if", commit_first)
    w.start()
    (new_generation,) = _generations_of(url, "v1") - {old_generation}
    report = sweep_store(FeatureStore.open(url), older_than=0, now=time.time() + 60)
    w.finish()
    committed = FeatureStore.open(url).video_attrs("v1")["generation"]
    if order == "sweep-first":
        assert [x.path.rsplit("/", 1)[1] for x in report.removed] == [new_generation]
        assert "was committed by another process while this one wrote it" in w.outcome
        assert committed == old_generation
        _holds(url, _OLD)
    else:
        assert w.outcome == "committed" and report.removed == ()
        assert [(x.video, x.kind) for x in report.left] == [("v1", "video")]
        assert "committed by another process while the sweep held" in report.left[0].why
        assert committed == new_generation
        _holds(url, _NEW)
    assert _generations_of(url, "v1") == {committed}


@pytest.mark.parametrize("order", ["sweep-first", "commit-first"])
def test_memory_store_writer_paused_at_its_commit_loses_nothing_to_a_sweep(monkeypatch, order):
    pytest.importorskip("fsspec")
    _writer_paused_at_its_commit_meets_a_sweep(f"memory://{uuid.uuid4().hex[:12]}/s.zarr",
                                               monkeypatch, order)


@pytest.mark.parametrize("order", ["sweep-first", "commit-first"])
def test_s3_writer_paused_at_its_commit_loses_nothing_to_a_sweep(bucket, monkeypatch, order):
    _writer_paused_at_its_commit_meets_a_sweep(f"s3://{bucket}/s.zarr", monkeypatch, order)


def _slow_clock_writers_generation_is_young(url: str) -> None:
    """A writer whose clock is two days slow names the generation it is writing now as two
    days old: the sweep measures its age by the store's clock (when its objects were
    written), leaves it (it may be about to commit), and removes it once really old."""
    from actrec.io.leftovers import sweep_store

    FeatureStore.open_or_create(url, **_STORE_ARGS).write_video("v1", *_OLD, fps=15,
                                                                source=None)
    fresh = _old_generation(url, "v1", days=2, written=0)
    report = sweep_store(FeatureStore.open(url))
    assert report.removed == ()
    assert [(x.path.rsplit("/", 1)[1], x.age < 60) for x in report.left] == [(fresh, True)]
    assert fresh in _generations_of(url, "v1")
    report = sweep_store(FeatureStore.open(url), now=time.time() + 86400 + 60)
    assert [x.path.rsplit("/", 1)[1] for x in report.removed] == [fresh]
    _holds(url, _OLD)


def test_memory_store_sweep_ages_generations_by_the_stores_clock():
    pytest.importorskip("fsspec")
    _slow_clock_writers_generation_is_young(f"memory://{uuid.uuid4().hex[:12]}/s.zarr")


def test_s3_sweep_ages_generations_by_the_stores_clock(bucket):
    _slow_clock_writers_generation_is_young(f"s3://{bucket}/s.zarr")
