"""The ``cnn`` extractor on the tiny generated kitchen (real mp4 files, real backbone files,
real Zarr stores): stored rows equal the backbone run by hand on the decoded frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actrec import registry
from actrec.backbones import Preprocess, load_backbone
from actrec.errors import ConfigError, DataError
from actrec.extract import extract_features
from actrec.io.features import FeatureStore, source_of
from actrec.io.video import open_video
from actrec.plugin_api import ExtractRuntime
from actrec_plugins.extractors.cnn import CNNExtractor

from test_backbones import export_all, small_resnet

PRE = {"resize": "36", "crop": "32"}


@pytest.fixture(scope="module")
def backbone_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("backbones")
    model = small_resnet(seed=4)
    return model, dict(zip(("pth", "pt2", "onnx"), export_all(model, folder)))


def _cnn(path, **options) -> CNNExtractor:
    return registry.create("extractors", "cnn", {"model": str(path), **PRE, **options})


def test_cnn_is_causal_and_records_the_model_and_preprocessing(backbone_files, tmp_path,
                                                               tiny_kitchen):
    model, files = backbone_files
    _, index = tiny_kitchen
    ext = _cnn(files["pt2"])
    assert isinstance(ext, CNNExtractor) and ext.checked_lookahead() == 0 and ext.dim() == 24
    report = extract_features(index, ext, tmp_path / "s.zarr", dataset_ref="synthetic:tiny",
                              dtype="float32")
    assert sorted(report.written) == sorted(index.videos) and not report.failed
    store = FeatureStore.open(tmp_path / "s.zarr")
    cfg = store.attrs["extractor_config"]
    assert store.attrs["extractor"] == "cnn" and store.attrs["lookahead"] == 0
    assert cfg["model"] == str(files["pt2"].resolve()) and len(cfg["sha256"]) == 64
    assert (cfg["resize"], cfg["crop"], cfg["channels"], cfg["output"]) == (36, 32, "rgb",
                                                                          "features")
    assert cfg["mean"] == pytest.approx([0.485, 0.456, 0.406])
    pre = Preprocess(resize=36, crop=32)
    for vid, record in index.videos.items():
        frames = open_video(record.path).read(range(record.num_frames))
        with torch.no_grad():
            want = model.features(torch.from_numpy(pre.apply(frames))).numpy()
        got, labels = store.read(vid)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(labels, record.labels)


def test_every_format_and_any_batching_give_the_same_rows(backbone_files, tiny_kitchen):
    _, files = backbone_files
    _, index = tiny_kitchen
    record = index.videos[min(index.videos)]
    frames = open_video(record.path).read(range(record.num_frames))
    whole = np.concatenate(list(_cnn(files["pth"]).extract([frames])))
    assert whole.shape == (record.num_frames, 24)
    for fmt in ("pt2", "onnx"):
        pieces = [frames[:5], frames[5:6], frames[6:]]
        got = np.concatenate(list(_cnn(files[fmt]).extract(iter(pieces))))
        np.testing.assert_allclose(got, whole, rtol=1e-4, atol=1e-5, err_msg=fmt)
    logits = np.concatenate(list(_cnn(files["onnx"], output="logits").extract([frames])))
    assert logits.shape == (record.num_frames, 5)


def test_bgr_and_value_range_reach_the_backbone(backbone_files, tiny_kitchen):
    _, files = backbone_files
    _, index = tiny_kitchen
    record = index.videos[min(index.videos)]
    frames = open_video(record.path).read(range(4))
    rgb = np.concatenate(list(_cnn(files["pth"]).extract([frames])))
    as_bgr = np.concatenate(list(_cnn(files["pth"], channels="bgr").extract([frames[..., ::-1]])))
    np.testing.assert_allclose(as_bgr, rgb, rtol=1e-5, atol=1e-6)
    # Values 0..255 with mean/std scaled by 255 are the same numbers as 0..1 with mean/std.
    caffe = _cnn(files["pth"], pixel_range="255", mean="123.675,116.28,103.53",
                 std="58.395,57.12,57.375")
    np.testing.assert_allclose(np.concatenate(list(caffe.extract([frames]))), rgb, rtol=1e-4,
                               atol=1e-5)
    shifted = np.concatenate(list(_cnn(files["pth"], mean="0.4").extract([frames])))
    assert np.abs(shifted - rgb).max() > 1e-3  # the options do reach the backbone


def test_backbone_input_that_does_not_fit_the_preprocessing(backbone_files):
    _, files = backbone_files
    with pytest.raises(ConfigError) as err:  # when it is configured, before any store
        _cnn(files["onnx"], resize="24", crop="16")
    text = str(err.value)
    assert "[any, 3, 32, 32]" in text and "[N, 3, 16, 16]" in text
    assert "resize=24, crop=16" in text and "m.onnx" in text


def test_bad_options_and_changed_files(backbone_files, tmp_path):
    _, files = backbone_files
    with pytest.raises(ConfigError, match="needs a backbone file: -x model=PATH"):
        registry.create("extractors", "cnn", {})
    with pytest.raises(DataError, match="backbone file not found"):
        _cnn(tmp_path / "none.onnx")
    with pytest.raises(ConfigError, match="crop .*must not exceed resize"):
        _cnn(files["pth"], resize="16")
    with pytest.raises(ConfigError, match="'output' for extractor 'cnn'"):
        _cnn(files["pth"], output="probs")
    with pytest.raises(DataError, match="has sha256 .* but sha256=abc"):
        _cnn(files["pth"], sha256="abc")
    copy = tmp_path / "copy.pth"
    copy.write_bytes(files["pth"].read_bytes())
    ext = _cnn(copy)
    torch.save(small_resnet(seed=9).state_dict(), copy)  # replaced after configuring
    with pytest.raises(DataError, match="changed since the extractor was configured"):
        ext.setup(ExtractRuntime())  # where a worker loads it
    assert load_backbone(copy).digest != ext.config.sha256


def test_a_store_refuses_features_of_another_backbone_file(tmp_path, tiny_kitchen):
    _, index = tiny_kitchen
    model = tmp_path / "b.pth"
    torch.save(small_resnet(seed=1).state_dict(), model)
    first = sorted(index.videos)[:1]

    def extract(ext, ids=None):  # as actrec extract does: the store records its source
        source = source_of("synthetic", {}, ext.name, ext.config.to_dict())
        return extract_features(index, ext, tmp_path / "s.zarr", dataset_ref="synthetic:tiny",
                                video_ids=ids, source=source)

    extract(_cnn(model), first)
    torch.save(small_resnet(seed=2).state_dict(), model)  # other weights, same path
    with pytest.raises(ConfigError, match="sha256=.*not of .*sha256="):
        extract(_cnn(model))
    assert FeatureStore.open(tmp_path / "s.zarr").videos() == first  # nothing mixed in
