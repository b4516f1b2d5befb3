"""actrec.io.video on folders of real jpg/png frames written with OpenCV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from actrec.errors import DataError
from actrec.io.video import FrameFolderReader, frame_files, open_video


def _level(i: int) -> int:
    return 20 + (9 * i) % 216


def write_frames(folder: Path, count: int, name="{i}.png", *, start=1, size=(48, 64)):
    """``count`` flat grey frames, frame ``i`` at level ``20 + 9 i``, as ``name``-named files
    numbered from ``start``. Returns the folder."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = np.full((*size, 3), _level(i), np.uint8)
        image[0, 0] = (0, 0, 255)  # one red (BGR) pixel: checks the RGB conversion
        assert cv2.imwrite(str(folder / name.format(i=i + start)), image)
    return folder


def levels(frames: np.ndarray) -> list[int]:
    """Which written frame each decoded frame is (its grey level, red corner aside)."""
    return [(round(f[1:, 1:].mean()) - 20) // 9 for f in frames]


def test_png_frames_read_in_numeric_order_not_lexical(tmp_path):
    # 1.png .. 12.png: a lexical sort puts 10, 11, 12 between 1 and 2
    folder = write_frames(tmp_path / "S1_Cheese_C1", 12)
    assert [p.name for p in frame_files(folder)][:3] == ["1.png", "2.png", "3.png"]
    v = open_video(folder, folder_fps=15.0)
    assert isinstance(v, FrameFolderReader)
    assert (v.num_frames, v.num_source_frames, v.fps, v.source_fps) == (12, 12, 15.0, 15.0)
    assert v.size == (48, 64) and len(v) == 12
    np.testing.assert_allclose(v.timestamps, np.arange(12) / 15.0)
    frames = v.read(range(12))
    assert frames.dtype == np.uint8 and frames.shape == (12, 48, 64, 3)
    assert levels(frames) == list(range(12))  # PNG is lossless: exact levels
    assert frames[0, 0, 0].tolist() == [255, 0, 0]  # RGB, not OpenCV's BGR
    assert [b.shape[0] for b in v.iter_batches(5)] == [5, 5, 2]
    assert levels(np.concatenate(list(v.iter_batches(5)))) == list(range(12))


def test_epic_style_jpg_frames_resampled_like_videos(tmp_path):
    folder = write_frames(tmp_path / "P01_01", 10, "frame_{i:010d}.jpg")
    assert frame_files(folder)[0].name == "frame_0000000001.jpg"
    v = open_video(folder, fps=15.0, folder_fps=30.0)  # every other frame, as for a video
    assert v.source_indices.tolist() == [0, 2, 4, 6, 8]
    assert levels(v.read(range(5))) == [0, 2, 4, 6, 8]  # JPEG: levels within rounding
    # several reading threads give the same frames
    assert np.array_equal(open_video(folder, folder_fps=30.0, num_threads=3).read(range(10)),
                          open_video(folder, folder_fps=30.0).read(range(10)))


def test_hidden_and_other_files_are_no_frames(tmp_path):
    folder = write_frames(tmp_path / "v", 3, "{i:04d}.png")
    (folder / "._0002.png").write_bytes(b"\x00\x05macOS resource fork")
    (folder / "Thumbs.db").write_bytes(b"x")
    (folder / "notes.txt").write_text("frame 7 is blurry")
    assert [p.name for p in frame_files(folder)] == ["0001.png", "0002.png", "0003.png"]


def test_frame_folder_errors_name_the_folder_and_frame(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "._0001.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match=r"empty: frame folder holds no frames"):
        open_video(empty, folder_fps=15.0)

    ok = write_frames(tmp_path / "ok", 3)
    with pytest.raises(DataError, match=r"ok: a frame folder has no frame rate of its own"):
        open_video(ok)
    with pytest.raises(DataError, match=r"must be positive"):
        open_video(ok, folder_fps=0.0)

    gap = write_frames(tmp_path / "gap", 5)
    (gap / "3.png").unlink()  # a lost frame would shift every later frame against its label
    with pytest.raises(DataError, match=r"go up by 1 until 2\.png, then jump to 4\.png"):
        open_video(gap, folder_fps=15.0)

    # Lost leading frames shift every frame as much as a gap does: numbers start at 0 or 1.
    late = write_frames(tmp_path / "late", 4, start=4)
    with pytest.raises(DataError, match=r"late: the first frame is 4\.png"):
        open_video(late, folder_fps=15.0)
    # Every other frame of a video: read at the video's rate, it would run twice as fast.
    sparse = tmp_path / "sparse"
    for i in range(4):
        write_frames(sparse, 1, "frame_{i:04d}.jpg", start=1 + 2 * i)
    with pytest.raises(DataError, match=r"go up by 2 .*one frame of the video per file"):
        open_video(sparse, folder_fps=15.0)
    zero = write_frames(tmp_path / "zero", 3, "{i:05d}.jpg", start=0)
    assert open_video(zero, folder_fps=15.0).num_frames == 3

    dup = write_frames(tmp_path / "dup", 3)
    (dup / "02.png").write_bytes((dup / "2.png").read_bytes())
    with pytest.raises(DataError, match=r"02\.png and 2\.png are both frame 2"):
        open_video(dup, folder_fps=15.0)

    unnamed = write_frames(tmp_path / "unnamed", 2)
    (unnamed / "cover.jpg").write_bytes((unnamed / "1.png").read_bytes())
    with pytest.raises(DataError, match=r"cover\.jpg: a frame file name needs a frame number"):
        open_video(unnamed, folder_fps=15.0)

    broken = write_frames(tmp_path / "broken", 4)
    (broken / "3.png").write_bytes(b"")  # zero bytes: unreadable, found when read
    v = open_video(broken, folder_fps=15.0)
    assert v.read([0, 1]).shape[0] == 2
    with pytest.raises(DataError, match=r"broken/3\.png: cannot read this image"):
        list(v.iter_batches(2))

    mixed = write_frames(tmp_path / "mixed", 3)
    write_frames(mixed, 1, start=4, size=(40, 64))
    v = open_video(mixed, folder_fps=15.0)
    with pytest.raises(DataError, match=r"mixed/4\.png: frame is 40x64 \(HxW\) but 1\.png is "
                                        r"48x64"):
        v.read(range(4))
