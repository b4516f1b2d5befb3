"""Feature stores at URLs: file:// end to end (extract, then train reads it by URL), and S3
through a real S3-compatible server in this process (moto's ThreadedMotoServer) with s3fs."""

from __future__ import annotations

import json
import logging
import os
import uuid

import numpy as np
import pytest
from actrec_plugins.extractors.colorgrad import ColorGradient
from click.testing import CliRunner

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
        attrs = {k: v for k, v in store.video_attrs(vid).items() if k != "written_at"}
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


@pytest.fixture(scope="module")
def s3_server():
    """A real S3-compatible HTTP server (moto) on a free port, for this module."""
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _host, port = server.get_host_and_port()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_server, monkeypatch):
    """A fresh bucket; credentials and endpoint as a user passes them (AWS_* variables)."""
    import s3fs

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    s3fs.S3FileSystem.clear_instance_cache()
    name = f"b-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem().mkdir(name)
    yield name
    s3fs.S3FileSystem.clear_instance_cache()


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
    chunk = f"{bucket}/features/s.zarr/videos/{vid}/labels/c/0"
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
