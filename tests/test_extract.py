"""actrec.extract and actrec.workspace on the tiny generated kitchen (real mp4, real Zarr)."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
from actrec_plugins.extractors.colorgrad import ColorGradient

from actrec.errors import ConfigError, DataError
from actrec.extract import ExtractReport, extract_features, resample_labels
from actrec.io.features import FeatureStore
from actrec.io.video import open_video

CG = ColorGradient.Config(grid=2, bins=4, resize=32)


def _mtimes(path: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}


def _copy_index(index, **videos):
    """``index`` with some video records replaced."""
    return dataclasses.replace(index, videos={**index.videos, **videos})


def test_extract_writes_features_equal_to_direct_extraction(tiny_kitchen, tmp_path):
    _, index = tiny_kitchen
    ext = ColorGradient(CG)
    report = extract_features(index, ext, tmp_path / "s.zarr", dataset_ref="synthetic:tiny")
    assert isinstance(report, ExtractReport)
    assert sorted(report.written) == sorted(index.videos) and not report.skipped
    assert report.failed == () and report.ok and report.store == tmp_path / "s.zarr"
    assert report.to_dict()["written"] == list(report.written)
    store = FeatureStore.open(tmp_path / "s.zarr")
    assert store.videos() == sorted(index.videos) and store.dim == ext.dim()
    attrs = store.attrs
    assert attrs["dataset"] == "synthetic:tiny" and attrs["extractor"] == "colorgrad"
    assert attrs["extractor_config"] == CG.to_dict() and attrs["causal"] is True
    assert attrs["classes"] == list(index.classes)
    assert attrs["splits"]["1"]["test"] == list(index.splits["1"].test)
    for vid, record in index.videos.items():
        x, y = store.read(vid)
        np.testing.assert_array_equal(y, record.labels)
        frames = open_video(record.path).read(range(record.num_frames))
        direct = np.concatenate(list(ColorGradient(CG).extract([frames])))
        np.testing.assert_array_equal(x, direct.astype(np.float16).astype(np.float32))
        va = store.video_attrs(vid)
        assert va["fps"] == pytest.approx(15.0) and va["labels_resampled"] is False
        assert va["source"]["path"] == str(record.path) and va["participant"] == record.participant


def test_resume_skips_and_overwrite_rewrites(tiny_kitchen, tmp_path):
    _, index = tiny_kitchen
    path = tmp_path / "s.zarr"
    first = sorted(index.videos)[0]
    report = extract_features(index, ColorGradient(CG), path, dataset_ref="r", video_ids=[first])
    assert report.written == (first,)
    stamps = _mtimes(path / "videos")
    report = extract_features(index, ColorGradient(CG), path, dataset_ref="r")
    assert report.skipped == (first,) and sorted(report.written) == sorted(index.videos)[1:]
    assert all(_mtimes(path / "videos")[k] == v for k, v in stamps.items())  # untouched
    report = extract_features(index, ColorGradient(CG), path, dataset_ref="r")
    assert report.written == () and sorted(report.skipped) == sorted(index.videos)
    before = FeatureStore.open(path).video_attrs(first)["written_at"]
    report = extract_features(index, ColorGradient(CG), path, dataset_ref="r", overwrite=True)
    assert sorted(report.written) == sorted(index.videos)
    assert FeatureStore.open(path).video_attrs(first)["written_at"] > before


def test_failures_are_reported_and_the_rest_continue(tiny_kitchen, tmp_path):
    _, index = tiny_kitchen
    a, b, c = sorted(index.videos)
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video")
    short = index.videos[c]
    broken = _copy_index(index, **{
        a: dataclasses.replace(index.videos[a], path=junk),
        c: dataclasses.replace(short, labels=short.labels[:-3]),
    })
    report = extract_features(broken, ColorGradient(CG), tmp_path / "s.zarr", dataset_ref="r",
                              length_policy="error")
    assert report.written == (b,) and not report.ok
    failed = dict(report.failed)
    assert set(failed) == {a, c}
    assert "junk.mp4: cannot decode video" in failed[a]
    n = short.num_frames
    assert f"video '{c}'" in failed[c] and "--length-policy error" in failed[c]
    assert f"{n} frames" in failed[c] and f"{n - 3} labels" in failed[c]
    store = FeatureStore.open(tmp_path / "s.zarr")
    assert store.videos() == [b] and not (tmp_path / "s.zarr/.tmp").exists()
    # Fixing the inputs and running again fills in exactly the failed ones.
    report = extract_features(index, ColorGradient(CG), tmp_path / "s.zarr", dataset_ref="r")
    assert sorted(report.written) == [a, c] and report.skipped == (b,)


def test_resampling_extractor_resamples_labels(tiny_kitchen, tmp_path):
    _, index = tiny_kitchen
    ext = ColorGradient(dataclasses.replace(CG, fps=7.5))
    extract_features(index, ext, tmp_path / "s.zarr", dataset_ref="r")
    store = FeatureStore.open(tmp_path / "s.zarr")
    for vid, record in index.videos.items():
        x, y = store.read(vid)
        # 15 -> 7.5 fps keeps source frames 0, 2, 4, ...: labels likewise.
        np.testing.assert_array_equal(y, record.labels[::2])
        assert x.shape[0] == (record.num_frames + 1) // 2
        va = store.video_attrs(vid)
        assert va["fps"] == 7.5 and va["label_fps"] == 15.0 and va["labels_resampled"] is True


def test_resample_labels_hand_values():
    labels = np.array([0, 1, 1, 2, 2, 3])
    np.testing.assert_array_equal(resample_labels(labels, 30, 15), [0, 1, 2])
    np.testing.assert_array_equal(resample_labels(labels, 30, 30), labels)
    np.testing.assert_array_equal(resample_labels(labels[:3], 10, 20), [0, 1, 1, 1, 1])


def test_store_mismatch_and_unknown_videos(tiny_kitchen, tmp_path):
    _, index = tiny_kitchen
    path = tmp_path / "s.zarr"
    extract_features(index, ColorGradient(CG), path, dataset_ref="r", video_ids=[])
    with pytest.raises(DataError, match="different extractor_config"):
        extract_features(index, ColorGradient(), path, dataset_ref="r")
    with pytest.raises(DataError, match="no video.*'nope'"):
        extract_features(index, ColorGradient(CG), path, dataset_ref="r", video_ids=["nope"])


def test_progress_bars(tiny_kitchen, tmp_path):
    from rich.console import Console
    from rich.progress import Progress

    _, index = tiny_kitchen
    out = io.StringIO()
    with Progress(console=Console(file=out, force_terminal=False)) as progress:
        extract_features(index, ColorGradient(CG), tmp_path / "s.zarr", dataset_ref="r",
                         progress=progress, batch_size=8)
        tasks = progress.tasks
    # per-video bars are removed once done; the frames bar shows the rate
    assert [t.description for t in tasks][0] == "videos" and len(tasks) == 2
    assert tasks[0].completed == tasks[0].total == len(index.videos)
    frames = sum(r.num_frames for r in index.videos.values())
    assert tasks[1].description.startswith("frames ") and tasks[1].description.endswith("/s")
    assert tasks[1].completed == tasks[1].total == frames


def test_workspace_paths(monkeypatch, tmp_path):
    from actrec import workspace

    monkeypatch.setenv("ACTREC_HOME", str(tmp_path / "h"))
    assert workspace.home() == tmp_path / "h"
    assert workspace.default_store_path("synthetic", "colorgrad") == \
        tmp_path / "h/features/synthetic/colorgrad.zarr"
    p = workspace.default_store_path("synthetic:kitchen=b", "colorgrad")
    assert p.parent.name.startswith("synthetic-kitchen-b-") and p.parent.parent.name == "features"
    assert workspace.slug("a b") != workspace.slug("a/b")
    monkeypatch.delenv("ACTREC_DATA_GTEA", raising=False)
    assert workspace.data_root("gtea") == tmp_path / "h/data/gtea"
    monkeypatch.setenv("ACTREC_DATA_GTEA", str(tmp_path / "g"))
    assert workspace.data_root("gtea") == tmp_path / "g"
    # The data root: given > ACTREC_DATA_<NAME> > workspace, always absolute.
    monkeypatch.chdir(tmp_path)
    assert workspace.dataset_root("gtea", "rel/dir") == tmp_path / "rel/dir"
    assert workspace.dataset_root("gtea") == tmp_path / "g"
    assert workspace.data_root_var("my-data.v2") == "ACTREC_DATA_MY_DATA_V2"
    # A root is part of the default store path: two roots, two stores.
    a = workspace.default_store_path("gtea", "colorgrad", tmp_path / "a")
    b = workspace.default_store_path("gtea", "colorgrad", tmp_path / "b")
    assert a != b and a.parent.name.startswith("gtea@") and a.name == "colorgrad.zarr"
    assert workspace.default_store_path("gtea", "colorgrad", "a") == a  # relative = absolute
    monkeypatch.delenv("ACTREC_HOME")
    assert workspace.home() == Path.home() / ".cache" / "actrec"


TINY = {"kitchen": "a", "participants": "3", "videos_per_participant": "1",
        "frames_mean": "40", "size": "32", "folds": "3", "seed": "7"}


def test_two_roots_never_share_a_store(tiny_kitchen, tmp_path, monkeypatch):
    """`actrec extract` from root B after root A writes B's features to another store; pointed
    at A's store, it refuses and names both roots. (Before: "0 written, 3 skipped".)"""
    import shutil

    from actrec.pipeline import extract_dataset

    dataset, index = tiny_kitchen
    monkeypatch.setenv("ACTREC_HOME", str(tmp_path / "home"))
    root_a = Path(dataset.config.root)
    root_b = tmp_path / "b"
    shutil.copytree(root_a, root_b)  # the same files in another place: another source
    opts = dict(TINY)
    first = extract_dataset("synthetic", dataset_options={**opts, "root": str(root_a)})
    second = extract_dataset("synthetic", dataset_options={**opts, "root": str(root_b)})
    assert len(first.written) == 3 and len(second.written) == 3 and not second.skipped
    assert first.store != second.store and first.store.parent.parent == tmp_path / "home/features"
    assert FeatureStore.open(first.store).source["options"]["root"] == str(root_a)
    assert FeatureStore.open(second.store).source["options"]["root"] == str(root_b)
    assert FeatureStore.open(first.store).identity != FeatureStore.open(second.store).identity
    with pytest.raises(ConfigError, match=rf"holds features of dataset 'synthetic' "
                       rf"\(root={root_a}\).*not of dataset 'synthetic' \(root={root_b}\)"):
        extract_dataset("synthetic", dataset_options={**opts, "root": str(root_b)},
                        out=first.store)
    # The same root again, spelt relatively: the same store, nothing to do.
    monkeypatch.chdir(root_a.parent)
    again = extract_dataset("synthetic", dataset_options={**opts, "root": root_a.name})
    assert again.store == first.store and len(again.skipped) == 3 and not again.written
    # train's --d1 reference finds the store the extraction wrote (root from the same rule).
    from actrec.refs import resolve_store

    monkeypatch.setenv("ACTREC_DATA_SYNTHETIC", str(root_b))
    ref = "synthetic:" + ",".join(f"{k}={v}" for k, v in TINY.items())
    assert resolve_store(ref, "colorgrad") == second.store


def test_store_records_the_dataset_background(tiny_kitchen, tmp_path):
    _, index = tiny_kitchen
    assert index.background_classes == (0,)  # the synthetic kitchen's "background"
    extract_features(index, ColorGradient(CG), tmp_path / "s.zarr", dataset_ref="r",
                     video_ids=[])
    assert FeatureStore.open(tmp_path / "s.zarr").background == (0,)
    none = dataclasses.replace(index, background=None)
    extract_features(none, ColorGradient(CG), tmp_path / "t.zarr", dataset_ref="r", video_ids=[])
    assert FeatureStore.open(tmp_path / "t.zarr").background == ()


class _Lookahead(ColorGradient):
    """colorgrad claiming a lookahead that is not an integer."""

    lookahead = 1.5  # type: ignore[assignment]


def test_non_integer_lookahead_is_refused_before_anything_is_written(tiny_kitchen, tmp_path):
    _, index = tiny_kitchen
    with pytest.raises(ConfigError, match=r"extractor 'colorgrad': lookahead must be an integer "
                       r">= 0 .*got 1\.5 \(float\)"):
        extract_features(index, _Lookahead(CG), tmp_path / "s.zarr", dataset_ref="r")
    assert not (tmp_path / "s.zarr").exists()


def _chunk_files(store_dir: Path, vid: str, array: str) -> list[Path]:
    return sorted(f for f in (store_dir / "videos" / vid / array / "c").rglob("*") if f.is_file())


@pytest.mark.parametrize("array", ["features", "labels"])
def test_a_damaged_video_is_not_done_and_extract_redoes_it(tiny_kitchen, tmp_path, array):
    """A deleted chunk file: before, extract counted the video as done (and reads gave zeros)."""
    _, index = tiny_kitchen
    path = tmp_path / "s.zarr"
    extract_features(index, ColorGradient(CG), path, dataset_ref="r")
    a, b, c = sorted(index.videos)
    expect = FeatureStore.open(path).read(b)
    _chunk_files(path, b, array)[0].unlink()
    with pytest.raises(DataError, match=rf"video '{b}' is damaged \({array}: chunk c/0"):
        FeatureStore.open(path).read(b)
    report = extract_features(index, ColorGradient(CG), path, dataset_ref="r")
    assert report.written == (b,) and sorted(report.skipped) == [a, c]
    assert [v for v, _ in report.redone_damaged] == [b] and report.redone_changed == ()
    assert f"{array}: chunk c/0" in report.redone_damaged[0][1] and " is missing" in \
        report.redone_damaged[0][1]
    assert report.to_dict()["redone_damaged"][0]["video"] == b
    x, y = FeatureStore.open(path).read(b)
    np.testing.assert_array_equal(x, expect[0])
    np.testing.assert_array_equal(y, expect[1])
    np.testing.assert_array_equal(y, index.videos[b].labels)


def test_a_replaced_source_video_is_extracted_again(tiny_kitchen, tmp_path, write_mp4,
                                                    level_frames):
    """The source mp4 replaced after extraction: before, it was skipped as done."""
    import os
    import shutil

    _, index = tiny_kitchen
    a = min(index.videos)
    record = index.videos[a]
    video = tmp_path / "a.mp4"
    shutil.copy2(record.path, video)
    mine = _copy_index(index, **{a: dataclasses.replace(record, path=video)})
    path = tmp_path / "s.zarr"
    extract_features(mine, ColorGradient(CG), path, dataset_ref="r", video_ids=[a])
    old = FeatureStore.open(path).read(a)[0]
    assert extract_features(mine, ColorGradient(CG), path, dataset_ref="r",
                            video_ids=[a]).skipped == (a,)
    # Another video with the same number of frames in its place.
    write_mp4(tmp_path / "new.mp4", level_frames(record.num_frames, 32, 32))
    os.replace(tmp_path / "new.mp4", video)
    trusted = extract_features(mine, ColorGradient(CG), path, dataset_ref="r", video_ids=[a],
                               trust_store=True)
    assert trusted.skipped == (a,) and trusted.redone_changed == ()
    report = extract_features(mine, ColorGradient(CG), path, dataset_ref="r", video_ids=[a])
    assert report.written == (a,) and not report.skipped
    assert report.redone_changed == ((a, report.redone_changed[0][1]),)
    assert str(video) in report.redone_changed[0][1]
    x = FeatureStore.open(path).read(a)[0]
    frames = open_video(video).read(range(record.num_frames))
    direct = np.concatenate(list(ColorGradient(CG).extract([frames])))
    np.testing.assert_array_equal(x, direct.astype(np.float16).astype(np.float32))
    assert not np.array_equal(x, old)
    # Now recorded as it is: done.
    assert extract_features(mine, ColorGradient(CG), path, dataset_ref="r",
                            video_ids=[a]).skipped == (a,)
    # A source that changed into something unreadable: the stale copy does not stay.
    video.write_text("not a video any more")
    bad = extract_features(mine, ColorGradient(CG), path, dataset_ref="r", video_ids=[a])
    assert [v for v, _ in bad.failed] == [a] and "was removed" in bad.failed[0][1]
    assert not FeatureStore.open(path).has(a)


def test_extract_command_says_what_it_redid(tiny_kitchen, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from actrec.cli import cli

    dataset, index = tiny_kitchen
    monkeypatch.setenv("ACTREC_HOME", str(tmp_path / "home"))
    out = tmp_path / "s.zarr"
    args = ["extract", "synthetic", "--root", str(dataset.config.root), "--out", str(out)]
    args += [f"-o{k}={v}" for k, v in TINY.items()]
    runner = CliRunner()
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    b = sorted(index.videos)[1]
    _chunk_files(out, b, "labels")[-1].unlink()
    res = runner.invoke(cli, [*args, "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert payload["written"] == [b] and [d["video"] for d in payload["redone_damaged"]] == [b]
    _chunk_files(out, b, "features")[-1].unlink()
    res = runner.invoke(cli, args, env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    lines = [" ".join(line.replace("│", " ").split()) for line in res.output.splitlines()]
    assert "1 2 0 1 0" in lines[lines.index(next(x for x in lines if "redone: damaged" in x)) + 2]
    assert any(x.startswith(f"{b} redone: damaged features: chunk c/0/0 is missing")
               for x in lines), res.output


def test_extract_command_options_shard_device_and_failures(tiny_kitchen, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from actrec.cli import cli
    from actrec.extract import in_shard

    dataset, index = tiny_kitchen
    monkeypatch.setenv("ACTREC_HOME", str(tmp_path / "home"))
    out = tmp_path / "s.zarr"
    args = ["extract", "synthetic", "--root", str(dataset.config.root), "--out", str(out)]
    args += [f"-o{k}={v}" for k, v in TINY.items()]
    runner = CliRunner()
    res = runner.invoke(cli, [*args, "--shard", "2/2", "--batch-size", "8", "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert sorted(payload["written"]) == sorted(v for v in index.videos if in_shard(v, (2, 2)))
    assert payload["shard"] == "2/2" and payload["frames"] > 0 and payload["workers"] == 1
    assert payload["length_policy"] == "truncate" and payload["frames_cut"] == {}
    for bad, message in ((["--shard", "3/2"], "--shard: expected I/N with 1 <= I <= N"),
                         (["--device", "tpu"], "--device: expected cpu, cuda, cuda:N or auto")):
        res = runner.invoke(cli, [*args, *bad])  # main() prints these as one line
        assert isinstance(res.exception, ConfigError) and message in str(res.exception)
    # A video that cannot be read: exit status 1, the summary names it; the rest is done.
    victim = index.videos[sorted(index.videos)[0]].path
    saved = victim.read_bytes()
    try:
        victim.write_bytes(b"")
        res = runner.invoke(cli, args, env={"COLUMNS": "200"})
    finally:
        victim.write_bytes(saved)
    assert res.exit_code == 1, res.output
    assert victim.stem in res.output and "failed" in res.output and "empty file" in res.output
    res = runner.invoke(cli, [*args, "--json"])  # the file back: only it is done again
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["written"] == [victim.stem]
