"""`actrec check --drop-damaged`: a chunk altered in place (same size) passes extract's cheap
test, so extract alone never redoes it; check finds it, drops exactly that video, and extract
then redoes it (real mp4 sources, real Zarr stores, the real commands)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from actrec.cli import cli
from actrec.errors import DataError
from actrec.io.features import FeatureStore
from actrec.io.integrity import check_store, drop_damaged

TINY = {"kitchen": "a", "participants": "3", "videos_per_participant": "1",
        "frames_mean": "40", "size": "32", "folds": "3", "seed": "7"}


def _extract(runner, root, out, *more):
    args = ["extract", "synthetic", "--root", str(root), "--out", str(out),
            *(f"-o{k}={v}" for k, v in TINY.items()), "--json", *more]
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def _check(runner, store, *more):
    res = runner.invoke(cli, ["check", str(store), *more], env={"COLUMNS": "200"})
    return res.exit_code, res.stdout


def _flip_a_byte(store, vid):
    """One byte of one of ``vid``'s feature chunks changed, its size kept."""
    chunks = sorted(f for f in (store / "videos" / vid / "features" / "c").rglob("*")
                    if f.is_file())
    data = bytearray(chunks[0].read_bytes())
    data[len(data) // 2] ^= 0x40
    chunks[0].write_bytes(bytes(data))
    assert chunks[0].stat().st_size == len(data)
    return chunks[0].relative_to(store / "videos" / vid / "features").as_posix()  # c/i/j


def _all(store):
    opened = FeatureStore.open(store)
    return {v: opened.read(v) for v in opened.videos()}


def test_drop_damaged_lets_extract_redo_a_chunk_altered_in_place(tiny_kitchen, tmp_path,
                                                                 monkeypatch):
    dataset, index = tiny_kitchen
    monkeypatch.setenv("ACTREC_HOME", str(tmp_path / "home"))
    root = tmp_path / "data"
    shutil.copytree(dataset.config.root, root)  # its own sources: one is touched below
    runner = CliRunner()
    ref, out = tmp_path / "ref.zarr", tmp_path / "s.zarr"
    _extract(runner, root, ref)
    _extract(runner, root, out)
    expect = _all(ref)
    a, b, c = sorted(index.videos)
    assert sorted(expect) == [a, b, c]

    key = _flip_a_byte(out, b)
    assert FeatureStore.open(out).damage(b) == []  # extract's cheap test cannot see it
    with pytest.raises(DataError, match=rf"cannot read video '{b}'.*; if its chunks are "
                       rf"damaged, run `actrec check {out} --drop-damaged` to find and remove "
                       rf"every damaged video, then `actrec extract` again"):
        FeatureStore.open(out).read(b)
    # c's source touched (same bytes, later mtime): "source changed", not damaged.
    source = FeatureStore.open(out).video_attrs(c)["source"]["path"]
    t = os.stat(source).st_mtime
    os.utime(source, (t + 10, t + 10))

    code, text = _check(runner, out)
    assert code == 1
    flat = " ".join(text.split())
    assert f"`actrec check {out} --drop-damaged` removes the damaged videos" in flat
    code, text = _check(runner, out, "--json")
    payload = json.loads(text)
    assert code == 1 and payload["dropped"] == []
    assert {p["video"]: p["status"] for p in payload["problems"]} == \
        {b: "damaged", c: "source changed"}
    assert payload["problems"][0]["problems"][0] == \
        f"features: chunk {key} fails its crc32c checksum (altered in place after written)"
    assert FeatureStore.open(out).videos() == [a, b, c]  # nothing removed without the flag

    # The old way out: extract alone redoes c (source changed) but counts b as done.
    again = _extract(runner, root, out)
    assert again["skipped"] == [a, b] and again["written"] == [c]
    assert [d["video"] for d in again["redone_changed"]] == [c] and again["redone_damaged"] == []
    code, text = _check(runner, out, "--json")
    assert code == 1 and [(p["video"], p["status"]) for p in json.loads(text)["problems"]] == \
        [(b, "damaged")]

    # Touch c again: --drop-damaged removes b, and only b.
    t = os.stat(source).st_mtime
    os.utime(source, (t + 10, t + 10))
    files_a = sorted(p for p in (out / "videos" / a).rglob("*"))
    code, text = _check(runner, out, "--drop-damaged")
    flat = " ".join(text.replace("│", " ").split())
    assert code == 1  # the check found damage; what it removed is said
    assert f"{c} source changed" in flat and "was left" not in flat  # not even considered
    assert f"{b} damaged (removed) features: chunk {key} fails its crc32c checksum" in flat
    assert f"removed 1 damaged video from the store: {b}; `actrec extract` for this store " \
           f"extracts it again" in flat
    assert FeatureStore.open(out).videos() == [a, c]
    assert sorted(p for p in (out / "videos" / a).rglob("*")) == files_a
    assert not (out / ".claims").exists() or not any((out / ".claims").iterdir())

    redo = _extract(runner, root, out)
    assert redo["written"] == [b, c] and redo["skipped"] == [a]
    assert [d["video"] for d in redo["redone_changed"]] == [c]
    code, text = _check(runner, out, "--json")
    assert code == 0 and json.loads(text)["ok"] is True, text
    got = _all(out)
    assert sorted(got) == [a, b, c]
    for vid in got:
        np.testing.assert_array_equal(got[vid][0], expect[vid][0])
        np.testing.assert_array_equal(got[vid][1], expect[vid][1])
    code, text = _check(runner, out, "--drop-damaged", "--json")
    assert code == 0 and json.loads(text)["dropped"] == []


def _small_store(path):
    store = FeatureStore.open_or_create(
        path, dataset="synthetic", split_scheme="default", classes=["bg", "cut"],
        splits={"1": {"train": ["v1"], "test": ["v2"]}}, extractor="colorgrad",
        extractor_config={"grid": 2}, lookahead=0, dtype="float16", chunk_frames=16)
    rng = np.random.default_rng(0)
    data = {v: (rng.normal(size=(50, 4)).astype(np.float32), rng.integers(0, 2, 50))
            for v in ("v1", "v2")}
    for v, (x, y) in data.items():
        store.write_video(v, x, y, fps=15.0, source=None)
    return store, data


def test_a_video_written_again_or_being_extracted_is_left(tmp_path):
    """Between check and drop, a video re-written intact stays, and so does one that another
    process is extracting (it holds the video's claim)."""
    from actrec.extract_claims import claim

    store, data = _small_store(tmp_path / "s.zarr")
    for v in ("v1", "v2"):
        _flip_a_byte(store.path, v)
    report = check_store(store)
    assert [x.video for x in report.videos if x.status == "damaged"] == ["v1", "v2"]
    store.write_video("v1", *data["v1"], fps=15.0, source=None)  # repaired since the check
    with claim(store.path, "v2") as mine:
        assert mine
        held = drop_damaged(store, report)
    assert held.dropped == () and store.videos() == ["v1", "v2"]
    assert held.notes == (
        "video 'v1' was left: it is intact now (written again since the check)",
        "video 'v2' was left: another process is extracting it now")
    done = drop_damaged(store, report)
    assert [v.video for v in done.dropped] == ["v2"] and store.videos() == ["v1"]
    assert done.to_dict()["dropped"] == [{"video": "v2", "stream": ""}]


def test_drop_damaged_at_a_url(monkeypatch):
    """A store at a URL (fsspec's memory://): the damaged video's committed generation goes,
    the other video stays readable, and claims are released."""
    import uuid

    import fsspec

    url = f"memory://{uuid.uuid4().hex[:12]}/s.zarr"
    store, data = _small_store(url)
    fs = fsspec.filesystem("memory")
    chunk = f"{store.video_dir('v2').fs_path}/features/c/1/0"
    raw = bytearray(fs.cat_file(chunk))
    raw[len(raw) // 2] ^= 0x40
    fs.pipe_file(chunk, bytes(raw))
    assert store.damage("v2") == []
    res = CliRunner().invoke(cli, ["check", url, "--drop-damaged", "--json"])
    assert res.exit_code == 1, res.output
    payload = json.loads(res.stdout)
    assert payload["dropped"] == [{"video": "v2", "stream": ""}] and payload["notes"] == []
    reopened = FeatureStore.open(url)
    assert reopened.videos() == ["v1"] and not fs.exists(chunk)
    np.testing.assert_array_equal(reopened.read("v1")[1], data["v1"][1])
    assert not fs.exists(f"{url[len('memory://'):]}/.claims") or \
        fs.ls(f"{url[len('memory://'):]}/.claims") == []
    assert CliRunner().invoke(cli, ["check", url]).exit_code == 0
