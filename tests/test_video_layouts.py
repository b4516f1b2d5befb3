"""Every real dataset plugin finds its videos in the layouts the dataset authors ship (real
avi/mp4 files and jpg/png frame folders written with OpenCV, real annotation files from
shared/data where they exist), and counts the videos it cannot find."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from actrec.errors import DataError
from actrec.io.video import open_video

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared/data is absent")


def write_video(path: Path, frames: int, *, fps: float = 15.0, level: int = 0,
                size=(48, 64)) -> Path:
    """A real video of ``frames`` flat frames (grey ``level + i mod 200``): mp4v for .mp4,
    MJPG for .avi, as the datasets ship them."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    codec = "MJPG" if path.suffix.lower() == ".avi" else "mp4v"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size[::-1])
    assert writer.isOpened(), path
    for i in range(frames):
        writer.write(np.full((*size, 3), (level + i) % 200 + 20, np.uint8))
    writer.release()
    return path


def write_frames(folder: Path, frames: int, name: str, *, size=(48, 64)) -> Path:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(frames):
        assert cv2.imwrite(str(folder / name.format(i + 1)), np.full((*size, 3), 20 + i, np.uint8))
    return folder


def load(name: str, **options):
    from actrec import registry

    return registry.create("datasets", name, options).load()


# ------------------------------------------------------------------------------------------
# Breakfast


BF_VIDEOS = {  # id -> coarse segmentation folder, frames of the shipped video
    "P12_cam01_P12_coffee": ("coffee", 215),
    "P12_webcam01_P12_coffee": ("coffee", 215),
    "P15_stereo01_P15_tea": ("tea", 358),
}


def breakfast_tree(root: Path, videos=BF_VIDEOS, *, with_videos=True) -> Path:
    """``root`` in Breakfast's shipped layout: the real coarse segmentation files of
    ``videos`` and the real mapping, with their videos under BreakfastII_15fps_qvga_sync."""
    for vid, (recipe, _) in videos.items():
        src = DATA / "breakfast" / "segmentation_coarse" / recipe / f"{vid}.txt"
        (root / "segmentation_coarse" / recipe).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / "segmentation_coarse" / recipe / src.name)
    shutil.copy(DATA / "breakfast" / "mapping.txt", root)
    if with_videos:
        sync = root / "BreakfastII_15fps_qvga_sync"
        write_video(sync / "P12" / "cam01" / "P12_coffee.avi", 215)
        write_video(sync / "P12" / "webcam01" / "P12_coffee.avi", 215, level=50)
        write_video(sync / "P15" / "stereo" / "P15_tea_ch0.avi", 358)
        write_video(sync / "P15" / "stereo" / "P15_tea_ch1.avi", 358, level=100)
    return root


@needs_data
def test_breakfast_finds_cameras_and_maps_stereo01_to_a_channel(tmp_path):
    root = breakfast_tree(tmp_path / "bf")
    index = load("breakfast", root=root)
    sync = root / "BreakfastII_15fps_qvga_sync"
    assert {v: r.path for v, r in index.videos.items()} == {
        "P12_cam01_P12_coffee": sync / "P12" / "cam01" / "P12_coffee.avi",
        "P12_webcam01_P12_coffee": sync / "P12" / "webcam01" / "P12_coffee.avi",
        "P15_stereo01_P15_tea": sync / "P15" / "stereo" / "P15_tea_ch0.avi",
    }
    assert index.missing_videos == {}
    other = load("breakfast", root=root, stereo_channel=1)
    assert other.videos["P15_stereo01_P15_tea"].path.name == "P15_tea_ch1.avi"
    # a videos folder pointing into the sync folder, given relative to the working directory
    moved = tmp_path / "elsewhere"
    shutil.move(str(sync), str(moved))
    import os

    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        index = load("breakfast", root=root, videos="elsewhere")
    finally:
        os.chdir(here)
    assert index.videos["P12_cam01_P12_coffee"].path == moved / "P12" / "cam01" / "P12_coffee.avi"
    with pytest.raises(DataError, match=r"videos folder for dataset 'breakfast' not found: .*nothere"):
        load("breakfast", root=root, videos=tmp_path / "nothere")


@needs_data
def test_breakfast_counts_videos_it_cannot_find_and_says_where_it_looked(tmp_path):
    root = breakfast_tree(tmp_path / "bf")
    (root / "BreakfastII_15fps_qvga_sync" / "P15" / "stereo" / "P15_tea_ch0.avi").unlink()
    # an MS-TCN-named converted copy of a video is found too
    write_video(root / "P12_cam01_P12_tea.mp4", 10)
    shutil.copy(DATA / "breakfast" / "segmentation_coarse" / "tea" / "P12_cam01_P12_tea.txt",
                root / "segmentation_coarse" / "tea")
    index = load("breakfast", root=root)
    assert index.videos["P12_cam01_P12_tea"].path == root / "P12_cam01_P12_tea.mp4"
    assert list(index.missing_videos) == ["P15_stereo01_P15_tea"]
    assert index.videos["P15_stereo01_P15_tea"].path is None
    reason = index.missing_videos["P15_stereo01_P15_tea"]
    assert reason.startswith("no video file found; looked for "
                             "BreakfastII_15fps_qvga_sync/P15/stereo/P15_tea_ch0, "
                             "P15/stereo/P15_tea_ch0, P15_stereo01_P15_tea (each as a .mp4/")
    assert reason.endswith(f"under {root}")

    from actrec.datasets_info import summarize

    summary = summarize(index).to_dict()
    assert summary["video_files"] == 3 and summary["videos"] == 4
    assert summary["missing_videos"] == {"P15_stereo01_P15_tea": reason}


@needs_data
def test_mstcn_ground_truth_ids_find_breakfasts_shipped_videos(tmp_path):
    """The MS-TCN ids (``P12_cam01_P12_coffee``) of Breakfast's ground truth, read by the
    breakfast plugin (source=mstcn) or by the generic mstcn plugin, map to the shipped files."""
    root = breakfast_tree(tmp_path / "bf")
    (root / "groundTruth").mkdir()
    (root / "splits").mkdir()
    for vid in ("P12_cam01_P12_coffee", "P12_webcam01_P12_coffee"):
        shutil.copy(DATA / "breakfast" / "groundTruth" / f"{vid}.txt", root / "groundTruth")
    (root / "splits" / "train.split1.bundle").write_text("P12_webcam01_P12_coffee.txt\n")
    (root / "splits" / "test.split1.bundle").write_text("P12_cam01_P12_coffee.txt\n")
    expected = root / "BreakfastII_15fps_qvga_sync" / "P12" / "cam01" / "P12_coffee.avi"
    for name, options in (("breakfast", {"source": "mstcn"}), ("mstcn", {})):
        index = load(name, root=root, **options)
        assert index.videos["P12_cam01_P12_coffee"].path == expected, name
        assert index.videos["P12_webcam01_P12_coffee"].path.parent.name == "webcam01"
        assert index.missing_videos == {}


# ------------------------------------------------------------------------------------------
# The other datasets' layouts


def salads_tree(root: Path) -> Path:
    """50 Salads in the MS-TCN annotation layout (written labels, real mapping and 40/10
    bundle format) with the videos where the dataset ships them, ``rgb/rgb-XX-Y.avi``."""
    (root / "groundTruth").mkdir(parents=True)
    (root / "splits").mkdir()
    shutil.copy(DATA / "50salads" / "mapping.txt", root)
    lengths = {"rgb-01-1": 40, "rgb-01-2": 36, "rgb-02-1": 30}
    for vid, n in lengths.items():
        labels = ["action_start"] * 5 + ["cut_tomato"] * (n - 10) + ["action_end"] * 5
        (root / "groundTruth" / f"{vid}.txt").write_text("\n".join(labels) + "\n")
    (root / "splits" / "train.split1.bundle").write_text("rgb-01-1.txt\nrgb-01-2.txt\n")
    (root / "splits" / "test.split1.bundle").write_text("rgb-02-1.txt\n")
    write_video(root / "rgb" / "rgb-01-1.avi", 40, fps=30.0)
    write_video(root / "rgb" / "rgb-01-2.avi", 36, fps=30.0)
    write_video(root / "rgb-02-1.mp4", 30, fps=30.0)  # a converted copy, flat
    return root


def mpii_tree(root: Path) -> Path:
    root.mkdir(parents=True)
    rows = ["subject,file_name,start_frame,end_frame,activity_category_id,activity_category"]
    for i, (subject, vid) in enumerate((("s08", "s08-d02-cam-002"), ("s09", "s09-d01-cam-002"),
                                        ("s10", "s10-d03-cam-002.avi"),
                                        ("s11", "s11-d02-cam-002"))):
        rows += [f"{subject},{vid},1,10,{i % 2 + 1},{'cut' if i % 2 == 0 else 'peel'}",
                 f"{subject},{vid},16,30,{i % 2 + 1},{'cut' if i % 2 == 0 else 'peel'}"]
    (root / "annotations.csv").write_text("\n".join(rows) + "\n")
    write_video(root / "s08-d02-cam-002.avi", 30, fps=30.0)
    write_video(root / "videos" / "s09-d01-cam-002.avi", 30, fps=30.0)
    write_video(root / "videos" / "s10-d03-cam-002.avi", 30, fps=30.0)
    write_video(root / "s11-d02-cam-002.avi", 30, fps=30.0)
    return root


def gtea_tree(root: Path) -> Path:
    """GTEA with the real leave-one-subject-out split files; videos of split 1 as mp4 files
    and as folders of PNG frames (the frame release)."""
    shutil.copytree(DATA / "gtea" / "splits", root / "splits")
    (root / "groundTruth").mkdir()
    ids = sorted({line.strip() for p in (root / "splits").glob("Split_1/*.txt")
                  for line in p.read_text().splitlines() if line.strip()})
    for i, vid in enumerate(ids):
        n = 20 + i
        (root / "groundTruth" / f"{vid}.txt").write_text(
            "\n".join(["background"] * 4 + ["take"] * (n - 8) + ["background"] * 4) + "\n")
        if vid.startswith("S1_"):
            write_video(root / f"{vid}.mp4", n)
        elif vid != "S2_Tea_C1":  # left without a video: counted
            write_frames(root / "png" / vid, n, "{:010d}.png")
    return root


def epic_tree(root: Path, version: str) -> Path:
    """EPIC-Kitchens-55 or -100 files with the real class lists and the release's columns,
    tiny durations, and the videos in that release's layout (P03_01 as a frame folder)."""
    root.mkdir(parents=True)
    prefix = "EPIC_100_" if version == "100" else "EPIC_"
    verbs = (DATA / "epic55" / "EPIC_verb_classes.csv").read_text()
    nouns = (DATA / "epic55" / "EPIC_noun_classes.csv").read_text()
    (root / f"{prefix}verb_classes.csv").write_text(verbs)
    (root / f"{prefix}noun_classes.csv").write_text(nouns)
    header = (DATA / "epic55" / "EPIC_train_action_labels.csv").read_text().splitlines()[0]
    rows = [header]
    videos = ("P01_01", "P02_01", "P03_01", "P04_01")
    for uid, vid in enumerate(videos):
        rows.append(f"{uid},{vid[:3]},{vid},open door,00:00:00.01,00:00:00.20,2,12,open,2,"
                    f"door,8,['door'],[8]")
    labels = "EPIC_100_train.csv" if version == "100" else "EPIC_train_action_labels.csv"
    (root / labels).write_text("\n".join(rows) + "\n")
    info = ["video_id,duration,fps,resolution" if version == "100" else
            "video,resolution,duration,fps"]
    for vid in videos:
        info.append(f"{vid},0.5,60.0,1920x1080" if version == "100" else
                    f"{vid},1920x1080,0.5,60.0")
    (root / f"{prefix}video_info.csv").write_text("\n".join(info) + "\n")
    if version == "100":
        write_video(root / "P01" / "videos" / "P01_01.MP4", 30, fps=60.0)
        write_video(root / "P02" / "videos" / "P02_01.MP4", 30, fps=60.0)
        write_frames(root / "P03" / "rgb_frames" / "P03_01", 30, "frame_{:010d}.jpg")
    else:
        write_video(root / "videos" / "train" / "P01" / "P01_01.MP4", 30, fps=60.0)
        write_video(root / "videos" / "train" / "P02" / "P02_01.MP4", 30, fps=60.0)
        write_frames(root / "rgb_frames" / "P03" / "P03_01", 30, "frame_{:010d}.jpg")
    return root  # P04_01 has no video


def signing_tree(root: Path) -> Path:
    root.mkdir(parents=True)
    ids = ["0aBcD3fGh1I", "1xYz_-AbCdE", "2QwErTyUiOp", "3AsDfGhJkL0", "4ZxCvBnM123"]
    rows = [f"{vid} {f} {'S' if f < 6 else 'P'}" for vid in ids for f in range(12)]
    (root / "gt.txt").write_text("\n".join(rows) + "\n")
    for vid in ids:
        write_video(root / f"{vid}.mp4", 12, fps=5.0)
    return root


def mstcn_tree(root: Path) -> Path:
    (root / "groundTruth").mkdir(parents=True)
    (root / "splits").mkdir()
    (root / "mapping.txt").write_text("0 background\n1 pour\n")
    for vid in ("clip_a", "clip_b"):
        (root / "groundTruth" / f"{vid}.txt").write_text("background\n" * 4 + "pour\n" * 8)
    (root / "splits" / "train.split1.bundle").write_text("clip_a.txt\n")
    (root / "splits" / "test.split1.bundle").write_text("clip_b.txt\n")
    write_video(root / "videos" / "clip_a.mp4", 12)
    write_frames(root / "clip_b", 12, "img_{:05d}.jpg")
    return root


@pytest.mark.parametrize("name, make, options, expected, missing", [
    ("salads", salads_tree, {}, {"rgb-01-1": "rgb/rgb-01-1.avi", "rgb-01-2": "rgb/rgb-01-2.avi",
                                 "rgb-02-1": "rgb-02-1.mp4"}, []),
    ("mpii", mpii_tree, {}, {"s08-d02-cam-002": "s08-d02-cam-002.avi",
                             "s09-d01-cam-002": "videos/s09-d01-cam-002.avi",
                             "s10-d03-cam-002.avi": "videos/s10-d03-cam-002.avi",
                             "s11-d02-cam-002": "s11-d02-cam-002.avi"}, []),
    ("epic", lambda r: epic_tree(r, "100"), {},
     {"P01_01": "P01/videos/P01_01.MP4", "P02_01": "P02/videos/P02_01.MP4",
      "P03_01": "P03/rgb_frames/P03_01"}, ["P04_01"]),
    ("epic", lambda r: epic_tree(r, "55"), {},
     {"P01_01": "videos/train/P01/P01_01.MP4", "P02_01": "videos/train/P02/P02_01.MP4",
      "P03_01": "rgb_frames/P03/P03_01"}, ["P04_01"]),
    ("signing", signing_tree, {}, {"0aBcD3fGh1I": "0aBcD3fGh1I.mp4",
                                   "1xYz_-AbCdE": "1xYz_-AbCdE.mp4"}, []),
    ("mstcn", mstcn_tree, {}, {"clip_a": "videos/clip_a.mp4", "clip_b": "clip_b"}, []),
])
@needs_data
def test_each_layout_resolves_every_video(tmp_path, name, make, options, expected, missing):
    root = make(tmp_path / name)
    index = load(name, root=root, **options)
    for vid, rel in expected.items():
        assert index.videos[vid].path == root / rel, vid
    assert sorted(index.missing_videos) == missing
    assert all(index.videos[v].path is None for v in missing)
    found = [r for r in index.videos.values() if r.path is not None]
    assert len(found) == len(index.videos) - len(missing)
    for record in found:  # every found path opens as a video of the dataset's rate or its own
        assert open_video(record.path, folder_fps=record.fps).num_frames > 0


@needs_data
def test_gtea_reads_mp4_files_and_png_folders_of_the_real_split(tmp_path):
    root = gtea_tree(tmp_path / "gtea")
    index = load("gtea", root=root)
    split = index.split(1)
    assert len(split.train) == 21 and len(split.test) == 7  # the real split files
    assert index.videos["S1_Coffee_C1"].path == root / "S1_Coffee_C1.mp4"
    assert index.videos["S2_Coffee_C1"].path == root / "png" / "S2_Coffee_C1"
    assert list(index.missing_videos) == ["S2_Tea_C1"]
    frames = open_video(index.videos["S2_Coffee_C1"].path, folder_fps=index.fps)
    assert frames.num_frames == index.videos["S2_Coffee_C1"].num_frames
    assert frames.fps == 15.0


# ------------------------------------------------------------------------------------------
# End to end: `actrec extract DATASET --split K --root R` on each layout


def actrec(args, capsys) -> tuple[int, str, str]:
    """Run the command line in this process: (exit code, stdout, stderr)."""
    from actrec.cli import main

    capsys.readouterr()
    try:
        main(list(map(str, args)))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name, make, split", [
    ("breakfast", breakfast_tree, "1"),
    ("salads", salads_tree, "1"),
    ("mpii", mpii_tree, "1"),
    ("gtea", gtea_tree, "1"),
    ("epic", lambda r: epic_tree(r, "100"), "1"),
    ("epic", lambda r: epic_tree(r, "55"), "1"),
    ("signing", signing_tree, "1"),
    ("mstcn", mstcn_tree, "1"),
])
@needs_data
def test_extract_split_on_the_real_layout(tmp_path, monkeypatch, capsys, name, make, split):
    import json

    from actrec.io.features import FeatureStore

    monkeypatch.setenv("ACTREC_HOME", str(tmp_path / "home"))
    root = make(tmp_path / name)
    index = load(name, root=root)
    chosen = index.split(split)
    wanted = sorted(set(chosen.train) | set(chosen.test))
    missing = sorted(v for v in wanted if v in index.missing_videos)

    code, out, err = actrec(["extract", name, "--split", split, "--root", root, "--json"],
                            capsys)
    report = json.loads(out)
    assert code == (1 if missing else 0), err
    assert sorted(report["written"]) == sorted(set(wanted) - set(missing))
    assert sorted(v["video"] for v in report["failed"]) == missing
    for failure in report["failed"]:  # where the dataset looked, not a decoder error
        assert "no video file found; looked for" in failure["error"], failure

    store = FeatureStore.open(report["store"])
    for vid in report["written"]:
        features, labels = store.read(vid)
        truth = index.videos[vid].labels
        # Breakfast's coarse labels run a few frames past the real videos: cut, as reported
        assert len(truth) - len(labels) == sum(c["label_frames"] for c in report["cut"]
                                               if c["video"] == vid)
        np.testing.assert_array_equal(labels, truth[: len(labels)])
        assert features.shape[0] == len(labels) and np.isfinite(features).all()
    if name == "breakfast":  # the real coarse files run 4 frames past these two videos
        assert {c["video"]: c["label_frames"] for c in report["cut"]} == {
            "P12_cam01_P12_coffee": 4, "P12_webcam01_P12_coffee": 4}
    # the videos of the split are done: a second run skips them and retries only the failed
    code, out, _ = actrec(["extract", name, "--split", split, "--root", root, "--json"], capsys)
    again = json.loads(out)
    assert again["written"] == [] and sorted(again["skipped"]) == sorted(report["written"])
    assert sorted(v["video"] for v in again["failed"]) == missing


@needs_data
def test_datasets_info_reports_missing_videos(tmp_path, capsys):
    import json

    root = gtea_tree(tmp_path / "gtea")
    code, out, err = actrec(["datasets", "info", "gtea", "--root", root, "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["video_files"] == 27 and data["videos"] == 28
    assert list(data["missing_videos"]) == ["S2_Tea_C1"]
    code, out, _ = actrec(["datasets", "info", "gtea", "--root", root], capsys)
    assert "video files found" in out and "27 of 28" in out
    assert "videos without a video file: 1" in out and "S2_Tea_C1" in out


@needs_data
@pytest.mark.slow
def test_signing_extract_cuts_whole_videos_to_their_labelled_start(tmp_path, monkeypatch,
                                                                   capsys):
    """Signing in the Wild labels only each video's start: whole videos three times longer
    than their labels (far past the length checks) are cut to them, the rest not stored."""
    import json

    from actrec.io.features import FeatureStore

    monkeypatch.setenv("ACTREC_HOME", str(tmp_path / "home"))
    root = signing_tree(tmp_path / "signing")
    for path in root.glob("*.mp4"):
        write_video(path, 36, fps=5.0)  # 7.2 s of video, 2.4 s labelled
    code, out, err = actrec(["extract", "signing", "--split", "1", "--root", root, "--json"],
                            capsys)
    report = json.loads(out)
    assert code == 0 and not report["failed"], err
    assert len(report["written"]) == 5
    assert {c["video"]: (c["video_frames"], c["label_frames"]) for c in report["cut"]} == {
        vid: (24, 0) for vid in report["written"]}
    store = FeatureStore.open(report["store"])
    for vid in report["written"]:
        features, labels = store.read(vid)
        assert features.shape[0] == 12
        np.testing.assert_array_equal(labels, [0] * 6 + [1] * 6)  # signing, then speaking
