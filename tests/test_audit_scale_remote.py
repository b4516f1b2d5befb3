"""A feature store read over S3 (a real S3-compatible server: moto's, as in
tests/test_remote_stores.py) gives the numbers of its local copy, and damage or a change at the
URL is refused, never read: bit-identical reads and windows, the recorded sha256 digests of
what is read, a chunk altered in place (size kept) or cut short, training on the URL equal to
training on the local copy, and a resumed run whose store changed at the URL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from actrec.errors import DataError
from actrec.io.features import FeatureStore
from actrec.io.integrity import array_digest, recorded_digest, verify_video
from actrec.io.remote import store_location

VIDEOS = {"tr0": 23, "tr1": 40, "tr2": 17, "te0": 30}


def fill(where, seed: int = 0, dtype: str = "float32", videos=VIDEOS) -> dict:
    """The same videos written to a store at ``where`` (chunks of 8 frames); returns them."""
    rng = np.random.default_rng(seed)
    store = FeatureStore.open_or_create(
        where, dataset="toy", split_scheme="default", classes=["a", "b", "c"],
        splits={"1": {"train": ["tr0", "tr1", "tr2"], "test": ["te0"]}}, extractor="toy",
        extractor_config={"seed": 0}, lookahead=0, dtype=dtype, chunk_frames=8)
    written = {}
    for vid, t in videos.items():
        y = np.repeat(rng.integers(-1, 3, size=t // 4 + 1), 4)[:t]
        x = (rng.normal(size=(t, 5)) * 10 ** rng.uniform(-3, 3, size=5)).astype(np.float32)
        store.write_video(vid, x, y, fps=15.0, source=None)
        written[vid] = (x, y)
    return written


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_reads_over_s3_are_bit_identical_to_the_local_copy(bucket, tmp_path, dtype):
    url = f"s3://{bucket}/s.zarr"
    written = fill(url, dtype=dtype)
    fill(tmp_path / "s.zarr", dtype=dtype)
    remote, local = FeatureStore.open(url), FeatureStore.open(tmp_path / "s.zarr")
    assert remote.videos() == local.videos() == sorted(VIDEOS)
    for vid, (x, y) in written.items():
        rx, ry = remote.read(vid)
        lx, ly = local.read(vid)
        assert rx.tobytes() == lx.tobytes() and ry.tobytes() == ly.tobytes()
        want = x if dtype == "float32" else x.astype(np.float16).astype(np.float32)
        assert rx.tobytes() == want.tobytes() and np.array_equal(ry, y)
        # What is read is what the commit recorded (sha256 of the stored values).
        attrs = remote.video_attrs(vid)
        assert array_digest(rx, dtype) == recorded_digest(attrs, "features")
        assert array_digest(ry, "int64") == recorded_digest(attrs, "labels")
        for t0, n in ((0, 1), (5, 9), (7, 2), (15, 20), (VIDEOS[vid] - 3, 10)):
            wx, wy = remote.read_window(vid, t0, n)  # windows across chunk boundaries
            assert wx.tobytes() == rx[t0 : t0 + n].tobytes() and np.array_equal(wy, ry[t0 : t0 + n])
        assert verify_video(remote, vid).status == "ok"


def test_a_chunk_changed_at_the_url_is_refused_not_read(bucket):
    import s3fs

    url = f"s3://{bucket}/s.zarr"
    fill(url)
    fs = s3fs.S3FileSystem()
    store = FeatureStore.open(url)
    base = store.video_dir("tr1").fs_path
    for array, key, change in (("features", "c/1/0", "flip"), ("labels", "c/2", "flip"),
                               ("features", "c/3/0", "cut")):
        path = f"{base}/{array}/{key}"
        raw = fs.cat(path)
        bad = bytearray(raw)
        if change == "flip":  # same size: only the chunk's checksum can tell
            bad[len(bad) // 2] ^= 0x10
        else:
            bad = bad[:-2]
        fs.pipe(path, bytes(bad))
        s3fs.S3FileSystem.clear_instance_cache()
        fresh = FeatureStore.open(url)
        with pytest.raises(DataError, match="'tr1'") as info:
            fresh.read("tr1")
        assert "actrec check" in str(info.value)
        chunk_frames = 8
        t = int(key.split("/")[1]) * chunk_frames
        with pytest.raises(DataError, match="'tr1'"):
            fresh.read_window("tr1", t, 1)  # the window holding the changed chunk
        fresh.read_window("tr1", 0, 8)  # a chunk untouched still reads
        check = verify_video(fresh, "tr1")
        assert check.status == "damaged", check
        fs.pipe(path, raw)  # put it back for the next change
    assert verify_video(FeatureStore.open(url), "tr1").status == "ok"


def _spec(d1, d2, iterations: int):
    from actrec.train import TrainSpec

    return TrainSpec(model="ddlstm", d1=d1, d2=d2, model_options={"hidden": 6, "layers": 1},
                     history=10, iterations=iterations, mix=(2, 2), lr=0.01, optimizer="adam",
                     log_every=1, checkpoint_every=2, windows="stride:3", loss_frames="all",
                     seed=3, allow_same_store=True)


@pytest.mark.slow
def test_training_on_the_url_is_training_on_the_local_copy_and_a_changed_store_is_refused(
        bucket, tmp_path):
    import torch

    from actrec.runs import load_checkpoint
    from actrec.train import train_model

    url = f"s3://{bucket}/s.zarr"
    fill(url, seed=4)
    fill(tmp_path / "s.zarr", seed=4)
    fill(tmp_path / "b.zarr", seed=5)
    remote = store_location(url)
    train_model(_spec(remote, tmp_path / "b.zarr", 4), tmp_path / "on-url")
    train_model(_spec(tmp_path / "s.zarr", tmp_path / "b.zarr", 4), tmp_path / "on-copy")
    a = load_checkpoint(tmp_path / "on-url" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "on-copy" / "checkpoint.pt")["model"]
    for key, value in b.items():
        assert torch.equal(a[key], value), key  # the same bytes in, the same run out

    # A training video rewritten at the URL after the run: resuming it is refused.
    x, y = FeatureStore.open(url).read("tr1")
    FeatureStore.open(url).write_video("tr1", x + 1, y, fps=15.0, source=None)
    with pytest.raises(DataError, match=r"changed since .* hold other features or labels "
                                        r"\(e\.g\. 'tr1'\)"):
        train_model(_spec(remote, tmp_path / "b.zarr", 6), tmp_path / "on-url")
    assert load_checkpoint(tmp_path / "on-url" / "checkpoint.pt")["iteration"] == 4


def _swap_label_chunks(fs_cat, fs_pipe, base: str) -> None:
    """Exchange two label chunks of one video: both valid (their crc32c holds), the same
    size (constant labels compress alike), so neither the sizes nor the codec can tell."""
    a, b = f"{base}/labels/c/0", f"{base}/labels/c/1"
    ta, tb = fs_cat(a), fs_cat(b)
    assert len(ta) == len(tb)
    fs_pipe(a, tb)
    fs_pipe(b, ta)


def _one_label_per_chunk(where):
    store = FeatureStore.open_or_create(
        where, dataset="toy", split_scheme="default", classes=["a", "b", "c"],
        splits={"1": {"train": ["v"], "test": []}}, extractor="toy", extractor_config={},
        lookahead=0, chunk_frames=8)
    store.write_video("v", np.zeros((24, 3), np.float32), np.repeat([0, 1, 2], 8), fps=15.0,
                      source=None)
    return store


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_valid_chunks_in_the_wrong_place_are_refused_on_a_whole_read(request, tmp_path, where):
    """Chunk files exchanged (a botched copy or sync): every size and crc32c still holds, the
    labels read would be silently wrong. A whole-video read (what training, validation and
    evaluation do) checks the sha256 its commit recorded and refuses it."""
    if where == "s3":
        import s3fs

        bucket = request.getfixturevalue("bucket")
        store = _one_label_per_chunk(f"s3://{bucket}/s.zarr")
        fs = s3fs.S3FileSystem()
        _swap_label_chunks(fs.cat, fs.pipe, store.video_dir("v").fs_path)
        s3fs.S3FileSystem.clear_instance_cache()
    else:
        store = _one_label_per_chunk(tmp_path / "s.zarr")
        _swap_label_chunks(lambda p: Path(p).read_bytes(), lambda p, b: Path(p).write_bytes(b),
                           str(store.video_dir("v")))
    fresh = FeatureStore.open(store.path)
    assert fresh.damage("v") == []  # the cheap check (sizes) cannot see it
    with pytest.raises(DataError, match=r"video 'v' is damaged \(labels: the values read "
                                        r"differ from the sha256 recorded"):
        fresh.read("v")
    assert verify_video(fresh, "v").status == "damaged"


def test_a_store_in_a_missing_bucket_names_the_bucket(bucket):
    """Reading from a mistyped bucket (or another endpoint's) says so; a missing store in an
    existing bucket stays "no feature store here"."""
    from click.testing import CliRunner

    from actrec.cli import cli

    with pytest.raises(DataError, match=r"no feature store here: the bucket 'no-such-bucket-q' "
                                        r"does not exist"):
        FeatureStore.open("s3://no-such-bucket-q/features/s.zarr")
    with pytest.raises(DataError, match=r"s.zarr: no feature store here \(missing zarr.json\)$"):
        FeatureStore.open(f"s3://{bucket}/s.zarr")
    result = CliRunner().invoke(cli, ["check", "s3://no-such-bucket-q/s.zarr"])
    assert result.exit_code != 0
    assert "the bucket 'no-such-bucket-q' does not exist" in str(result.exception)


_TOGETHER = """
import sys, time
from pathlib import Path
import actrec.extract, actrec.io.features, actrec.pipeline, zarr, s3fs  # imports before
from actrec.cli import main
base = Path(sys.argv[1]); (base / f"ready-{sys.argv[2]}").touch()
deadline = time.monotonic() + 60
while len(list(base.glob("ready-*"))) < 2 and time.monotonic() < deadline:
    time.sleep(0)
main(sys.argv[3:])
"""


@pytest.mark.slow
@pytest.mark.parametrize("overwrite", [False, True])
def test_two_extract_commands_at_once_into_a_new_s3_store_lose_nothing(
        tiny_kitchen, bucket, tmp_path, overwrite):
    """Two `actrec extract` at once into one new store at a URL (no OS locks there: claims
    and generations): both succeed, every video is there once, whole, with the values of a
    local extraction, and the store checks clean."""
    import json
    import subprocess
    import sys

    dataset, index = tiny_kitchen
    url = f"s3://{bucket}/s.zarr"
    opts = {"kitchen": "a", "participants": "3", "videos_per_participant": "1",
            "frames_mean": "40", "size": "32", "folds": "3", "seed": "7"}
    args = ["extract", "synthetic", "--root", str(dataset.config.root), "--json",
            *[f"-o{k}={v}" for k, v in opts.items()], *(["--overwrite"] if overwrite else [])]
    (tmp_path / "go").mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", _TOGETHER, str(tmp_path / "go"), str(w),
                               *args, "--out", url], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for w in range(2)]
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-2000:]
        reports.append(json.loads(out))
    written = [v for r in reports for v in r["written"]]
    assert sorted(set(written)) == sorted(index.videos)
    if not overwrite:  # claims: each video extracted by one of them only
        assert sorted(written) == sorted(index.videos)
    from actrec.io.integrity import check_store

    local = tmp_path / "local.zarr"
    from click.testing import CliRunner

    from actrec.cli import cli

    done = CliRunner().invoke(cli, [*args, "--out", str(local)], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    remote, copy = FeatureStore.open(url), FeatureStore.open(local)
    assert remote.videos() == copy.videos() == sorted(index.videos)
    for vid in index.videos:
        (rx, ry), (lx, ly) = remote.read(vid), copy.read(vid)
        assert rx.tobytes() == lx.tobytes() and ry.tobytes() == ly.tobytes()
    assert check_store(remote).ok


def test_a_creator_that_finds_the_store_made_meanwhile_opens_it(bucket, monkeypatch):
    """Two writers create one new store at a URL (no lock there): B finds no zarr.json, then
    A creates the store, then B looks at the folder. B must open A's store, not refuse it as
    "exists and is not a feature store" (what two `actrec extract` at once met)."""
    from actrec.io.remote import StoreURL

    url = f"s3://{bucket}/new.zarr"
    kw = {"dataset": "d", "split_scheme": "default", "classes": ["a", "b"],
          "splits": {"1": {"train": ["v"], "test": []}}, "extractor": "e",
          "extractor_config": {}, "lookahead": 0}
    real = StoreURL.is_file
    made = []

    def is_file(self):
        answer = real(self)
        if self.name == "zarr.json" and str(self.parent) == url and not answer and not made:
            made.append(True)  # writer A creates the store right after B's look
            FeatureStore.open_or_create(url, **kw)
        return answer

    monkeypatch.setattr(StoreURL, "is_file", is_file)
    store = FeatureStore.open_or_create(url, **kw)  # writer B
    assert made and store.attrs["dataset"] == "d"
    store.write_video("v", np.zeros((4, 2), np.float32), np.zeros(4, np.int64), fps=15.0,
                      source=None)
    assert FeatureStore.open(url).videos() == ["v"]
    # A folder that holds something else than a store is still refused.
    import s3fs

    s3fs.S3FileSystem().pipe(f"{bucket}/other.zarr/notes.txt", b"mine")
    monkeypatch.undo()
    with pytest.raises(DataError, match="exists and is not a feature store"):
        FeatureStore.open_or_create(f"s3://{bucket}/other.zarr", **kw)
