"""Audit: EPIC-Kitchens frame numbers count the released RGB frames (extracted at 60 fps for
the EPIC-55 videos, 50 for EPIC-100's new ones), not the camera's frames; checked on the real
EPIC-55 annotations in shared/data."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from actrec_plugins.datasets.epic import EpicKitchens, frames_fps

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
