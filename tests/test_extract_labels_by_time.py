"""Labels that count time (``VideoRecord.labels_by_time``, EPIC-Kitchens' 60 fps frame
numbers on 59.94 fps camera files) resample a near-rate file by timestamps; labels that count
the file's frames (the default) take it one frame per label. A real 59.94 fps mp4."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pytest

from actrec.extract_video import HostOptions, VideoTask, extract_video
from actrec.io.video import open_video, resample_indices
from actrec.plugin_api import FeatureExtractor

N = 1100  # source frames: at 59.94 vs 60 fps the time grid gains one frame near frame 500


class Grey(FeatureExtractor):
    """Feature of a frame: its mean grey level (which frame was decoded)."""

    name = "grey"
    lookahead = 0

    def dim(self) -> int:
        return 1

    def extract(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for batch in batches:
            yield batch.reshape(batch.shape[0], -1).mean(axis=1, keepdims=True).astype(np.float32)


@pytest.fixture(scope="module")
def camera_file(tmp_path_factory):
    """A 59.94 fps mp4 whose frame i is a flat grey of level 40 + (i % 8) * 24 (far apart
    levels: a decoded frame tells its index modulo 8 despite the codec)."""
    cv2 = pytest.importorskip("cv2")
    path = tmp_path_factory.mktemp("epic") / "P01_01.MP4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 59.94, (32, 32))
    for i in range(N):
        writer.write(np.full((32, 32, 3), 40 + (i % 8) * 24, np.uint8))
    writer.release()
    return path


def _level_index(features: np.ndarray) -> np.ndarray:
    return np.rint((features[:, 0] - 40) / 24).astype(np.int64)


@pytest.mark.slow
def test_labels_by_time_resample_a_near_rate_file_by_timestamps(camera_file):
    container = open_video(camera_file).container_fps
    assert container == pytest.approx(59.94, abs=0.01)
    n_labels = int(round(N * 60 / container))  # what `ffmpeg -r 60` extracts: one more frame
    assert n_labels == N + 1
    labels = np.arange(n_labels, dtype=np.int64) % 5
    options = HostOptions(batch_size=128)

    by_time = extract_video(VideoTask("P01_01", camera_file, labels, 60.0, labels_by_time=True),
                            Grey(), options)
    expected = resample_indices(N, container, 60.0)  # source frame of each 60 fps instant
    assert by_time.features.shape[0] == n_labels == expected.shape[0]
    assert np.array_equal(_level_index(by_time.features), expected % 8)
    assert np.count_nonzero(np.diff(expected) == 0) == 1  # one frame shown twice, as ffmpeg does
    assert by_time.attrs["source_fps"] == pytest.approx(container)
    assert by_time.video_frames_cut == by_time.label_frames_cut == 0
    assert np.array_equal(by_time.labels, labels)

    # Labels that count the file's frames: frame i for label i, the spare label cut.
    by_frame = extract_video(VideoTask("P01_01", camera_file, labels, 60.0), Grey(), options)
    assert by_frame.features.shape[0] == N and by_frame.label_frames_cut == 1
    assert np.array_equal(_level_index(by_frame.features), np.arange(N) % 8)
    assert by_frame.attrs["source_fps"] == 60.0
    # After the repeated frame the two readings are one frame apart: the drift avoided.
    late = np.flatnonzero(np.diff(expected) == 0)[0] + 1
    assert np.all(_level_index(by_time.features)[late + 1:N] == (np.arange(late, N - 1) % 8))
