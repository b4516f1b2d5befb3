"""Motion windows at the video's own rate (``-x window_rate=video``): Borg & Camilleri take their
windows over consecutive frames of the video (25-30 fps), where actrec decodes at the dataset's
label rate (15 fps here), so a window of w frames spanned twice the time. With
``window_rate=video`` the extractor sees every frame of a real 30 fps mp4 and the store keeps
one row per 15 fps label frame; a centred window's look-ahead is recorded in label frames."""

from __future__ import annotations

import json

import numpy as np
import pytest
from actrec_plugins.extractors.motion import FrameDiffDescriptor

from actrec.errors import ConfigError, DataError
from actrec.extract import extract_features
from actrec.extract_video import (
    HostOptions,
    VideoTask,
    extract_video,
    label_lookahead,
    rate_lookahead,
)
from actrec.io.features import FeatureStore
from actrec.io.video import open_video
from actrec.plugin_api import DatasetIndex, Split, VideoRecord

cv2 = pytest.importorskip("cv2")

SOURCE = 40  # frames of the 30 fps file: 20 label frames at 15 fps
H, W = 48, 64


@pytest.fixture(scope="module")
def moving_square(tmp_path_factory):
    """A real 30 fps mp4 of a textured square moving 3 pixels right per frame."""
    from conftest import _write_mp4

    rng = np.random.default_rng(3)
    background = rng.integers(0, 50, (H, W), dtype=np.uint8)
    texture = rng.integers(140, 256, (16, 16), dtype=np.uint8)
    frames = []
    for t in range(SOURCE):
        img = background.copy()
        x = 2 + (3 * t) % (W - 18)
        img[16:32, x:x + 16] = texture
        frames.append(np.repeat(img[..., None], 3, axis=2))
    return _write_mp4(tmp_path_factory.mktemp("rate") / "v.mp4", np.stack(frames), fps=30.0)


def _index(path, n_labels=SOURCE // 2):
    labels = (np.arange(n_labels) // 5 % 2).astype(np.int64)
    video = VideoRecord("v", "p1", labels, 15.0, path=path)
    return DatasetIndex("d", ("a", "b"), {"v": video},
                        {"1": Split("1", train=(), test=("v",))}, fps=15.0)


def _framediff(**options):
    return FrameDiffDescriptor(FrameDiffDescriptor.Config(grid=2, bins=4, mag_bins=2, resize=16,
                                                          **options))


def _by_hand(path, extractor):
    """The extractor run on every frame of the file, all rows (the reference)."""
    frames = open_video(path).read_source(np.arange(SOURCE))
    return np.concatenate(list(extractor.extract([frames[:13], frames[13:]])))


def test_windows_at_the_video_rate_keep_the_rows_of_the_label_frames(moving_square, tmp_path):
    index = _index(moving_square)
    store_path = tmp_path / "s.zarr"
    report = extract_features(index, _framediff(window=3, window_rate="video"), store_path,
                              dataset_ref="d", dtype="float32", batch_size=7)
    assert report.ok and report.written == ("v",)
    store = FeatureStore.open(store_path)
    features, labels = store.read("v")
    assert features.shape[0] == 20  # one row per 15 fps label frame, not per video frame
    np.testing.assert_array_equal(labels, index.videos["v"].labels)
    # label frame i is source frame 2 i; its window is source frames 2 i - 2 .. 2 i
    reference = _by_hand(moving_square, _framediff(window=3))
    np.testing.assert_array_equal(features, reference[0::2])
    # at the label rate, the window of 3 label frames spans source frames 2 i - 4 .. 2 i
    at_labels = extract_video(VideoTask("v", moving_square, index.videos["v"].labels, 15.0),
                              _framediff(window=3)).features
    assert not np.allclose(at_labels[4:], features[4:])
    attrs = store.video_attrs("v")
    assert (attrs["window_rate"], attrs["window_fps"], attrs["lookahead"]) == ("video", 30.0, 0)
    assert attrs["fps"] == 15.0 and attrs["frames_cut"] == {"video": 0, "labels": 0}
    assert store.attrs["extractor_config"]["window_rate"] == "video"
    assert store.attrs["lookahead"] == 0 and store.attrs["causal"] is True


def test_a_store_made_at_the_label_rate_is_not_filled_at_the_video_rate(moving_square,
                                                                        tmp_path):
    index = _index(moving_square)
    store_path = tmp_path / "s.zarr"
    assert extract_features(index, _framediff(), store_path, dataset_ref="d").ok
    with pytest.raises(DataError, match="different extractor_config"):
        extract_features(index, _framediff(window_rate="video"), store_path, dataset_ref="d")


def test_a_store_recorded_before_the_option_existed_still_opens(moving_square, tmp_path):
    """A store made before ``window_rate`` existed records no such option: its features are
    the default's (label rate), so the default reopens it and the video rate is refused."""
    from actrec.io.features import source_of

    index = _index(moving_square)
    store_path = tmp_path / "s.zarr"

    def extract(extractor):  # with the source the CLI records (its config included)
        source = source_of("d", {}, extractor.name, extractor.config.to_dict())
        return extract_features(index, extractor, store_path, dataset_ref="d", source=source)

    assert extract(_framediff()).ok
    meta = store_path / "zarr.json"
    doc = json.loads(meta.read_text())
    for record in (doc["attributes"], doc["attributes"]["source"]):
        del record["extractor_config"]["window_rate"]
    meta.write_text(json.dumps(doc))
    again = extract(_framediff())
    assert again.ok and again.skipped == ("v",)
    attrs = FeatureStore.open(store_path).attrs
    assert "window_rate" not in attrs["extractor_config"]
    assert "window_rate" not in attrs["source"]["extractor_config"]
    with pytest.raises(ConfigError, match=r"\(window_rate=None\), not of .*window_rate=video"):
        extract(_framediff(window_rate="video"))


def test_a_centred_window_records_its_look_ahead_in_label_frames(moving_square, tmp_path):
    index = _index(moving_square)
    # window 2 centred: 1 video frame ahead at 30 fps = half a 15 fps label frame: 1 (rounded up)
    # window 5: 2 video frames = 1 label frame; window 7: 3 video frames = 2 label frames
    for window, ahead in ((2, 1), (5, 1), (7, 2)):
        store_path = tmp_path / f"w{window}.zarr"
        extractor = _framediff(window=window, centred=True, window_rate="video")
        assert extractor.lookahead == window // 2  # in the extractor's (video) frames
        report = extract_features(index, extractor, store_path, dataset_ref="d",
                                  dtype="float32")
        assert report.ok
        store = FeatureStore.open(store_path)
        assert (store.attrs["lookahead"], store.attrs["causal"]) == (ahead, False)
        assert store.video_attrs("v")["lookahead"] == ahead
        features, _ = store.read("v")
        reference = _by_hand(moving_square, _framediff(window=window, centred=True))
        np.testing.assert_array_equal(features, reference[0::2])


def test_label_lookahead_by_hand():
    # 30 fps frames under 15 fps labels: label frame i is frame 2 i
    assert [rate_lookahead(k, 30.0, 15.0) for k in range(5)] == [0, 1, 1, 2, 2]
    # 25 fps under 15: frames 0, 2, 3, 5, 7, 8, 10, ...; 2 frames ahead of frame 2 is frame 4,
    # first reached by label frame 3 (frame 5): 2 label frames
    assert rate_lookahead(1, 25.0, 15.0) == 1 and rate_lookahead(2, 25.0, 15.0) == 2
    assert rate_lookahead(3, 15.0, 15.0) == 3  # equal rates: unchanged
    # a video slower than its labels repeats frames: 1 frame ahead is 2 label frames ahead
    assert label_lookahead(np.array([0, 0, 1, 1, 2, 2]), 1) == 2


def test_a_video_looking_further_than_the_store_records_is_refused(moving_square):
    labels = np.zeros(20, np.int64)
    task = VideoTask("v", moving_square, labels, 15.0)
    extractor = _framediff(window=7, centred=True, window_rate="video")
    assert extract_video(task, extractor, HostOptions(max_lookahead=2)).attrs["lookahead"] == 2
    with pytest.raises(DataError, match="2 label frame.*more than the 1 the feature store"):
        extract_video(task, extractor, HostOptions(max_lookahead=1))


def test_window_rate_options_are_checked():
    with pytest.raises(ConfigError, match="window_rate.*labels, video"):
        _framediff(window_rate="frames")
    with pytest.raises(ConfigError, match="exclude each other"):
        _framediff(window_rate="video", fps=25.0)
