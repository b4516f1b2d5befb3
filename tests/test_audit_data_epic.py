"""Audit: EPIC-Kitchens frame numbers count the released RGB frames (extracted at 60 fps for
the EPIC-55 videos, 50 for EPIC-100's new ones), not the camera's frames; checked on the real
EPIC-55 annotations in shared/data."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from actrec_plugins.datasets.epic import EpicKitchens, frames_fps
from test_left2_setup_store import Grey

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
EPIC = DATA / "epic55"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared/data is absent")


def _seconds(stamp: str) -> float:
    h, m, s = stamp.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def test_frames_fps_of_the_two_releases():
    assert frames_fps("P01_01") == frames_fps("P10_04") == 60.0
    assert frames_fps("P01_101") == frames_fps("P37_103") == 50.0


@needs_data
def test_epic55_labels_are_at_60_fps_whatever_the_camera_rate():
    idx = EpicKitchens(EpicKitchens.Config(root=EPIC)).load()
    info = {r["video"]: (float(r["duration"]), float(r["fps"]))
            for r in csv.DictReader(open(EPIC / "EPIC_video_info.csv"))}
    rows = list(csv.DictReader(open(EPIC / "EPIC_train_action_labels.csv")))
    # The files themselves: start_frame / start_timestamp is 60 on every video, the 29.97 fps
    # P10_04 and 48 fps P17_04 included (their frames were extracted with ffmpeg -r 60).
    for video in ("P01_01", "P10_04", "P17_04"):
        ratios = [int(r["start_frame"]) / _seconds(r["start_timestamp"])
                  for r in rows if r["video_id"] == video and _seconds(r["start_timestamp"]) > 10]
        assert min(ratios) > 59.5 and max(ratios) <= 60.01, video
    assert info["P10_04"][1] == pytest.approx(29.97, abs=0.01)
    assert info["P17_04"][1] == pytest.approx(47.95, abs=0.01)

    for video, rec in idx.videos.items():
        assert rec.fps == 60.0
        assert rec.num_frames == round(info[video][0] * 60.0)
    assert idx.fps == 60.0
    # P10_04: 3359.8755 s -> 201,593 frames at 60 fps; its last action stops at frame 201,426
    # (at its camera's 29.97 fps the video would last 100,696 frames: half its labels lost)
    p10 = idx.videos["P10_04"]
    assert p10.num_frames == 201593
    last = max(int(r["stop_frame"]) for r in rows if r["video_id"] == "P10_04")
    assert last == 201426 and p10.labels[last - 1] > 0 and (p10.labels[last:] == 0).all()
    # At 60 fps no action of the 272 videos runs past its video's end (89,380 frames did).
    assert "frames past the video end (clipped)" not in idx.repairs
    assert sum(r.num_frames for r in idx.videos.values()) == sum(
        round(info[v][0] * 60.0) for v in idx.videos)


@needs_data
@pytest.mark.slow
def test_a_59_94_fps_camera_file_is_resampled_to_the_60_fps_labels(tmp_path):
    """End to end through the EPIC plugin: P01_01.MP4 at 59.94 fps (1,100 frames, frame i a
    grey level telling i mod 8) in the EPIC-55 layout; its labels count 60 fps frames, so the
    store holds round(1100 * 60 / 59.94) = 1,101 frames, the frame near 500 shown twice."""
    cv2 = pytest.importorskip("cv2")
    from actrec.extract import extract_features
    from actrec.io.features import FeatureStore
    from actrec.io.video import open_video, resample_indices

    n = 1100
    root = tmp_path / "epic"
    video = root / "videos" / "train" / "P01" / "P01_01.MP4"
    video.parent.mkdir(parents=True)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 59.94, (32, 32))
    for i in range(n):
        writer.write(np.full((32, 32, 3), 40 + (i % 8) * 24, np.uint8))
    writer.release()
    container = open_video(video).container_fps
    assert container == pytest.approx(59.94, abs=0.01)
    header = (EPIC / "EPIC_train_action_labels.csv").read_text().splitlines()[0]
    rows = [f"{k},P0{k + 1},P0{k + 1}_01,x,00:00:00.01,00:00:01.00,2,600,open,2,door,8,"
            f"['door'],[8]" for k in range(4)]
    (root / "EPIC_train_action_labels.csv").write_text("\n".join([header, *rows]) + "\n")
    duration = n / container  # the camera file's length in seconds
    (root / "EPIC_video_info.csv").write_text("video,resolution,duration,fps\n" + "".join(
        f"P0{k + 1}_01,1920x1080,{duration},{container}\n" for k in range(4)))
    for kind in ("verb", "noun"):
        (root / f"EPIC_{kind}_classes.csv").write_text(
            (EPIC / f"EPIC_{kind}_classes.csv").read_text())

    index = EpicKitchens(EpicKitchens.Config(root=root)).load()
    record = index.videos["P01_01"]
    assert record.path == video and record.fps == 60.0 and record.num_frames == 1101
    # Grey: each frame's mean grey level, which tells which frame was decoded
    report = extract_features(index, Grey(), tmp_path / "store.zarr", dataset_ref="epic",
                              video_ids=["P01_01"], batch_size=128)
    assert list(report.written) == ["P01_01"] and not report.failed
    features, labels = FeatureStore.open(tmp_path / "store.zarr").read("P01_01")
    expected = resample_indices(n, container, 60.0)  # the source frame of each 60 fps instant
    assert features.shape[0] == labels.shape[0] == expected.shape[0] == 1101
    assert np.array_equal(np.rint((features[:, 0] - 40) / 24).astype(np.int64), expected % 8)
    np.testing.assert_array_equal(labels, record.labels)
