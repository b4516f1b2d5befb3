"""Several named streams in one feature store: layout, old stores, extraction per stream,
early fusion reads, refusals, and `actrec check` across streams."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from actrec import registry
from actrec.cli import cli
from actrec.errors import ConfigError, DataError
from actrec.extract import extract_features
from actrec.io.features import FeatureStore, source_of
from actrec.io.streams import StreamConcat

CG = {"grid": "1", "bins": "2", "resize": "16"}
FLOW = {"grid": "2", "bins": "4", "mag_bins": "2", "resize": "16"}


def _extract(index, path, name, options, stream, **kw):
    ext = registry.create("extractors", name, dict(options))
    source = source_of("synthetic", {"root": "/data/tiny"}, ext.name, ext.config.to_dict())
    return extract_features(index, ext, path, dataset_ref="synthetic:tiny", stream=stream,
                            source=source, **kw), ext


@pytest.fixture(scope="module")
def two_streams(tiny_kitchen, tmp_path_factory):
    """A store with streams rgb (colorgrad) and flow (centred flow)."""
    _, index = tiny_kitchen
    path = tmp_path_factory.mktemp("streams") / "s.zarr"
    rgb, _ = _extract(index, path, "colorgrad", CG, "rgb")
    flow, _ = _extract(index, path, "flow", {**FLOW, "centred": "true"}, "flow")
    assert rgb.ok and flow.ok and len(flow.written) == len(index.videos)
    return path, index


def test_layout_and_each_stream_records_its_own_extractor(two_streams):
    path, index = two_streams
    store = FeatureStore.open(path)
    assert store.stream_name == "rgb" and store.streams() == ["rgb", "flow"]
    flow = store.stream("flow")
    assert flow.path == path / "streams" / "flow"
    assert flow.attrs["extractor"] == "flow" and flow.attrs["lookahead"] == 1
    assert flow.attrs["causal"] is False and flow.attrs["extractor_config"]["centred"] is True
    assert store.attrs["extractor"] == "colorgrad" and store.attrs["lookahead"] == 0
    # The stream is a Zarr group of the store's hierarchy, not a stray folder.
    import zarr

    root = zarr.open_group(str(path), mode="r")
    assert root["streams/flow"].attrs["stream"] == "flow"
    assert sorted(flow.videos()) == sorted(index.videos) == store.videos()
    assert store.dim == 1 * (4 * 2 + 1) + 2 and flow.dim == 4 * (4 + 2)


def test_concatenation_reads_streams_side_by_side(two_streams):
    path, _ = two_streams
    store = FeatureStore.open(path)
    both = store.select(["rgb", "flow"])
    assert isinstance(both, StreamConcat) and both.dim == store.dim + store.stream("flow").dim
    vid = both.videos()[0]
    x, y = both.read(vid)
    xr, yr = store.read(vid)
    xf, yf = store.stream("flow").read(vid)
    np.testing.assert_array_equal(x, np.concatenate([xr, xf], axis=1))
    np.testing.assert_array_equal(y, yr)
    np.testing.assert_array_equal(y, yf)
    # Order follows the request; the concatenation looks ahead as far as its furthest stream.
    x2, _ = store.select(["flow", "rgb"]).read_window(vid, 3, 5)
    np.testing.assert_array_equal(x2, np.concatenate([xf[3:8], xr[3:8]], axis=1))
    attrs = both.attrs
    assert attrs["lookahead"] == 1 and attrs["causal"] is False
    assert attrs["streams"]["rgb"]["lookahead"] == 0
    assert both.identity not in (store.identity, store.stream("flow").identity)
    assert store.select(["rgb", "flow"]).identity == both.identity
    assert store.select(["flow", "rgb"]).identity != both.identity
    assert store.select(None) is store and store.select(["flow"]).attrs["extractor"] == "flow"
    # The fingerprint's digests cover both streams.
    integrity = both.video_attrs(vid)["integrity"]
    assert set(integrity) == {"rgb/features", "rgb/labels", "flow/features", "flow/labels"}


def test_each_stream_resumes_on_its_own(two_streams):
    path, index = two_streams
    again, _ = _extract(index, path, "flow", {**FLOW, "centred": "true"}, "flow")
    assert again.written == () and len(again.skipped) == len(index.videos)
    # Another config for an existing stream is refused, as for a store.
    with pytest.raises(ConfigError, match="streams/flow holds features of .*centred=True"):
        _extract(index, path, "flow", FLOW, "flow")


def test_bad_stream_requests(two_streams, tiny_kitchen, tmp_path):
    path, index = two_streams
    store = FeatureStore.open(path)
    with pytest.raises(DataError, match="no stream 'mhi'; it holds: rgb, flow"):
        store.stream("mhi")
    with pytest.raises(ConfigError, match="distinct"):
        store.select(["rgb", "rgb"])
    with pytest.raises(ConfigError, match="stream name"):
        store.select(["../x"])
    # A stream of other data cannot join: another data root...
    ext = registry.create("extractors", "mhi", {"resize": "16"})
    other = source_of("synthetic", {"root": "/data/elsewhere"}, "mhi", ext.config.to_dict())
    with pytest.raises(ConfigError, match="cannot join"):
        extract_features(index, ext, path, dataset_ref="synthetic:tiny", stream="mhi",
                         source=other)
    # ... or other classes.
    with pytest.raises(ConfigError, match="cannot join .* classes"):
        FeatureStore.open_or_create(path, dataset="synthetic:tiny", split_scheme="default",
                                    classes=["x"], splits={}, extractor="mhi",
                                    extractor_config={}, lookahead=0, stream="mhi")
    assert FeatureStore.open(path).streams() == ["rgb", "flow"]  # nothing was made


def test_old_single_stream_store_keeps_working_and_takes_streams(tiny_kitchen, tmp_path):
    _, index = tiny_kitchen
    path = tmp_path / "old.zarr"
    _extract(index, path, "colorgrad", CG, None)
    meta = path / "zarr.json"
    doc = json.loads(meta.read_text())
    del doc["attributes"]["stream"]  # as written before streams existed
    meta.write_text(json.dumps(doc))
    store = FeatureStore.open(path)
    assert store.stream_name == "colorgrad" and store.streams() == ["colorgrad"]
    before = store.read(store.videos()[0])
    # Extracting without a stream, or naming the store's own, still fills the store itself.
    report, _ = _extract(index, path, "colorgrad", CG, "colorgrad")
    assert report.written == () and "stream" not in FeatureStore.open(path).attrs
    report, _ = _extract(index, path, "mhi", {"resize": "16", "grid": "1"}, "mhi")
    assert report.ok and FeatureStore.open(path).streams() == ["colorgrad", "mhi"]
    np.testing.assert_array_equal(FeatureStore.open(path).read(store.videos()[0])[0], before[0])
    x, _ = FeatureStore.open(path).select(["colorgrad", "mhi"]).read(store.videos()[0])
    assert x.shape[1] == store.dim + 12


def test_streams_that_disagree_are_refused_and_reported(tiny_kitchen, tmp_path):
    _, index = tiny_kitchen
    path = tmp_path / "s.zarr"
    _extract(index, path, "colorgrad", CG, "rgb")
    _extract(index, path, "mhi", {"resize": "16", "grid": "1"}, "mhi")
    store = FeatureStore.open(path)
    vid = store.videos()[0]
    mhi = store.stream("mhi")
    x, y = mhi.read(vid)
    mhi.write_video(vid, x[:-1], y[:-1], fps=15.0, source=None)  # one frame short
    with pytest.raises(DataError, match="different frame counts .*'rgb' \\d+, 'mhi' \\d+"):
        store.select(["rgb", "mhi"]).read(vid)
    other = store.videos()[1]
    x, y = mhi.read(other)
    y = y.copy()
    y[0] = (y[0] + 1) % len(store.classes)
    mhi.write_video(other, x, y, fps=15.0, source=None)
    with pytest.raises(DataError, match="different labels"):
        store.select(["rgb", "mhi"]).read(other)

    res = CliRunner().invoke(cli, ["check", str(path), "--json", "--no-sources"])
    assert res.exit_code == 1, res.output
    payload = json.loads(res.stdout)
    assert payload["streams"] == ["rgb", "mhi"]
    assert payload["videos"] == 2 * len(index.videos)
    assert payload["counts"]["inconsistent"] == 2 and payload["counts"]["ok"] == \
        2 * len(index.videos) - 2
    bad = {(p["video"], p["stream"]): p["problems"][0] for p in payload["problems"]}
    assert "frames in stream 'mhi'" in bad[(vid, "mhi")]
    assert "labels in stream 'mhi' differ" in bad[(other, "mhi")]
    table = CliRunner().invoke(cli, ["check", str(path), "--no-sources"])
    assert f"{len(index.videos)} videos in 2 streams (rgb, mhi), {2 * len(index.videos)} stored copies" \
        in " ".join(table.output.split())


def test_check_finds_damage_inside_a_stream(two_streams, tmp_path):
    import shutil

    path, _ = two_streams
    copy = tmp_path / "copy.zarr"
    shutil.copytree(path, copy)
    flow = FeatureStore.open(copy).stream("flow")
    vid = flow.videos()[0]
    chunk = next((flow.video_dir(vid) / "features" / "c").rglob("*"))
    while chunk.is_dir():
        chunk = next(chunk.iterdir())
    chunk.unlink()
    res = CliRunner().invoke(cli, ["check", str(copy), "--json", "--no-sources"])
    assert res.exit_code == 1
    problems = json.loads(res.stdout)["problems"]
    assert [(p["video"], p["stream"], p["status"]) for p in problems] == \
        [(vid, "flow", "damaged")]


def test_cli_extract_writes_a_named_stream(tmp_path):
    home = tmp_path / "home"
    ref = "synthetic:kitchen=a,participants=2,folds=2,videos_per_participant=1,frames_mean=30,size=32"
    runner = CliRunner(env={"ACTREC_HOME": str(home)})
    out = tmp_path / "two.zarr"
    for extractor, stream, extra in (("colorgrad", "rgb", []),
                                     ("framediff", "diff", ["-x", "resize=16", "-x", "grid=2"])):
        res = runner.invoke(cli, ["extract", ref, "--extractor", extractor, *extra,
                                  "--stream", stream, "--out", str(out), "--json"])
        assert res.exit_code == 0, res.output
        assert len(json.loads(res.stdout)["written"]) == 2
    store = FeatureStore.open(out)
    assert store.streams() == ["rgb", "diff"]
    assert store.stream("diff").attrs["extractor"] == "framediff"
    # Without --out a stream goes to the dataset's streams.zarr.
    res = runner.invoke(cli, ["extract", ref, "--extractor", "mhi", "-x", "resize=16",
                              "--stream", "mhi", "--json"])
    assert res.exit_code == 0, res.output
    made = json.loads(res.stdout)["store"]
    assert made.endswith("streams.zarr") and FeatureStore.open(made).streams() == ["mhi"]
    bad = runner.invoke(cli, ["extract", ref, "--stream", "no/good", "--out", str(out)])
    assert isinstance(bad.exception, ConfigError) and "stream name" in str(bad.exception)


@pytest.mark.slow
def test_workers_write_into_the_stream(tiny_kitchen, tmp_path):
    _, index = tiny_kitchen
    path = tmp_path / "w.zarr"
    _extract(index, path, "colorgrad", CG, "rgb")
    report, ext = _extract(index, path, "mhi", {"resize": "16", "grid": "1"}, "mhi", workers=2)
    assert report.ok and sorted(report.written) == sorted(index.videos)
    store = FeatureStore.open(path)
    mhi = store.stream("mhi")
    assert mhi.videos() == store.videos() and mhi.dim == ext.dim()
    # The same rows as one process writes.
    one, _ = _extract(index, tmp_path / "one.zarr", "mhi", {"resize": "16", "grid": "1"}, None)
    vid = store.videos()[0]
    np.testing.assert_array_equal(mhi.read(vid)[0], FeatureStore.open(one.store).read(vid)[0])
