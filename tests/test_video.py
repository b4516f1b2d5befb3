"""actrec.io.video on real mp4 files written with OpenCV."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from actrec.errors import DataError
from actrec.io.video import open_video, resample_indices


def _frame_numbers(frames: np.ndarray, made: np.ndarray) -> list[int]:
    """Which of the written frames ``made`` each decoded frame is (nearest grey level)."""
    levels = made[:, 0, 0, 0].astype(float)
    return [int(np.argmin(np.abs(levels - f.mean()))) for f in frames]


@pytest.fixture
def clip(tmp_path, write_mp4, level_frames):
    return write_mp4(tmp_path / "clip.mp4", level_frames(24), fps=15.0)


def test_geometry_and_timestamps(clip, level_frames):
    v = open_video(clip)
    assert v.num_frames == 24 and len(v) == 24
    assert v.source_fps == pytest.approx(15.0) and v.fps == pytest.approx(15.0)
    assert v.size == (32, 40)
    np.testing.assert_allclose(v.timestamps, np.arange(24) / 15.0)
    assert v.timestamps.dtype == np.float64
    frames = v.read(range(24))
    assert frames.dtype == np.uint8 and frames.shape == (24, 32, 40, 3)
    assert _frame_numbers(frames, level_frames(24)) == list(range(24))


def test_resample_indices_hand_values():
    # 30 -> 15 fps: every other frame; 15 -> 30: each frame twice (round half up: 0.5 -> 1).
    assert resample_indices(10, 30, 15).tolist() == [0, 2, 4, 6, 8]
    assert resample_indices(5, 15, 30).tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4]
    # 25 -> 10 fps: i * 2.5 -> 0, 2.5 -> 3, 5.0 -> 5, 7.5 -> 8 (out of 7 frames, dropped).
    assert resample_indices(7, 25, 10).tolist() == [0, 3, 5]
    assert resample_indices(6, 12, 12).tolist() == list(range(6))
    assert resample_indices(0, 30, 15).tolist() == []


@given(st.integers(0, 500), st.sampled_from([6.0, 10.0, 12.5, 15.0, 24.0, 25.0, 29.97, 30.0]),
       st.sampled_from([1.0, 4.0, 5.0, 7.5, 15.0, 30.0, 60.0]))
def test_resample_indices_properties(n, src, dst):
    idx = resample_indices(n, src, dst)
    i = np.arange(idx.size)
    # Exactly the frames whose rounded source index lies in the video, nearest by time.
    np.testing.assert_array_equal(idx, np.floor(i * src / dst + 0.5).astype(np.int64))
    assert idx.size == 0 or idx[-1] <= n - 1
    assert np.floor(idx.size * src / dst + 0.5) >= n  # the next one would fall outside
    assert np.all(np.abs(idx / src - i / dst) <= 0.5 / src + 1e-12)


def test_resampled_reading(clip, level_frames):
    v = open_video(clip, fps=5.0)  # every third source frame
    assert v.fps == 5.0 and v.source_fps == pytest.approx(15.0)
    assert v.num_frames == 8
    assert v.source_indices.tolist() == [0, 3, 6, 9, 12, 15, 18, 21]
    np.testing.assert_allclose(v.timestamps, np.arange(8) / 5.0)
    frames = np.concatenate(list(v.iter_batches(3)))
    assert _frame_numbers(frames, level_frames(24)) == [0, 3, 6, 9, 12, 15, 18, 21]
    up = open_video(clip, fps=20.0)  # i * 0.75 rounded half up
    assert up.num_frames == 32
    assert up.source_indices[:6].tolist() == [0, 1, 2, 2, 3, 4]


def test_batched_reads_equal_single_reads(clip):
    v = open_video(clip)
    batches = list(v.iter_batches(batch_size=5))
    assert [b.shape[0] for b in batches] == [5, 5, 5, 5, 4]
    whole = np.concatenate(batches)
    singles = np.concatenate([v.read([i]) for i in range(v.num_frames)])
    np.testing.assert_array_equal(whole, singles)
    np.testing.assert_array_equal(v.read([7, 2]), singles[[7, 2]])


def test_batches_are_the_callers_own_writable_arrays(clip, level_frames):
    # Batches are decord's memory viewed in place: each must stay valid and unchanged while
    # later batches are read (and after its reader is gone), and be the caller's to write.
    import gc

    v = open_video(clip)
    batches = list(v.iter_batches(batch_size=5))
    del v
    gc.collect()
    fresh = list(open_video(clip).iter_batches(batch_size=5))
    assert _frame_numbers(np.concatenate(batches), level_frames(24)) == list(range(24))
    for held, again in zip(batches, fresh):
        np.testing.assert_array_equal(held, again)
        assert held.flags.writeable and held.flags.c_contiguous and held.dtype == np.uint8
    assert not any(np.shares_memory(a, b) for i, a in enumerate(batches)
                   for b in batches[i + 1:] + fresh)
    batches[0][:] = 0  # writing one batch changes no other
    np.testing.assert_array_equal(batches[1], fresh[1])


def test_a_view_of_a_batch_outlives_the_batch(clip, level_frames):
    # What framediff/mhi do: keep the last frame(s) of a batch (a view) for the next batch
    # while the batch itself is dropped, and more batches are decoded, in another thread
    # as the pipelined host's reader does, into memory the allocator may hand out again.
    import gc
    import threading

    v = open_video(clip)
    tails = []
    for batch in v.iter_batches(batch_size=4):
        tails.append(batch[-2:])  # a view; the batch goes out of scope
    expected = [t.copy() for t in tails]
    del batch
    gc.collect()

    def scribble():
        for _ in range(5):
            for b in open_video(clip).iter_batches(batch_size=4):
                b[:] = 255

    reader = threading.Thread(target=scribble)
    reader.start()
    reader.join()
    gc.collect()
    for tail, want in zip(tails, expected):
        np.testing.assert_array_equal(tail, want)
    assert _frame_numbers(np.concatenate(tails), level_frames(24)) == \
        [n for k in range(4, 25, 4) for n in (k - 2, k - 1)]


def test_read_out_of_range_and_bad_batch(clip):
    v = open_video(clip)
    with pytest.raises(IndexError):
        v.read([24])
    with pytest.raises(ValueError):
        next(v.iter_batches(0))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nothere.mp4: video file not found"):
        open_video(tmp_path / "nothere.mp4")


def test_zero_byte_file(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.mp4: empty file \(0 bytes\); expected a video$"):
        open_video(empty)


def test_text_file_named_mp4(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("these are not video frames\n")
    with pytest.raises(DataError, match=r"notes\.mp4: cannot decode video"):
        open_video(fake)


def test_truncated_file(tmp_path, clip):
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])  # 'mp4v' puts the index last: it is lost
    with pytest.raises(DataError, match=r"cut\.mp4: cannot decode video"):
        open_video(cut)


def test_truncated_frame_data_with_intact_index(tmp_path, write_mp4):
    # Frame data cut in the middle while the index (moov) survives: the decoder runs out of
    # packets; decord's DECORDError must come out as a DataError naming the file.
    rng = np.random.default_rng(0)
    src = write_mp4(tmp_path / "noisy.mp4",
                    rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8))
    data = src.read_bytes()
    mdat, moov = data.find(b"mdat"), data.find(b"moov")
    assert 0 < mdat < moov, "expected mdat before moov in an OpenCV mp4"
    end = mdat + (moov - mdat) // 2
    head = bytearray(data[:end])
    head[mdat - 4:mdat] = struct.pack(">I", end - (mdat - 4))  # fix the mdat box size
    bad = tmp_path / "holes.mp4"
    bad.write_bytes(bytes(head) + data[moov - 4:])
    with pytest.raises(DataError, match=r"holes\.mp4"):
        v = open_video(bad)
        for _ in v.iter_batches(8):
            pass


@pytest.mark.parametrize("width", [16, 32, 48, 72, 96, 144])
def test_widths_decord_cannot_copy_are_read_with_opencv(tmp_path, write_mp4, level_frames,
                                                         width):
    """decord's batch copy refuses some widths (0.6: 8-24, 48, 72; decord2: 8-32, 48, 96,
    144); those files are read with OpenCV, frame for frame what OpenCV decodes, in any order
    and with repeats (upsampling)."""
    import cv2

    frames = level_frames(7, 32, width)  # R: 20 + 9 i; G and B differ, so RGB order shows
    frames[..., 1] //= 2
    frames[..., 2] = 255 - frames[..., 2]
    clip = write_mp4(tmp_path / f"w{width}.mp4", frames)
    capture = cv2.VideoCapture(str(clip))
    expected = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        expected.append(frame[:, :, ::-1])
    expected = np.stack(expected)
    video = open_video(clip)
    assert video.size == (32, width) and video.num_frames == 7 == expected.shape[0]
    np.testing.assert_array_equal(video.read(range(7)), expected)
    np.testing.assert_array_equal(video.read([5, 2, 2, 6]), expected[[5, 2, 2, 6]])
    # each frame is the one written, in RGB order, up to compression
    assert np.all(np.abs(expected[..., 0].mean(axis=(1, 2)) - (20 + 9 * np.arange(7))) < 6)
    assert np.all(np.abs(expected[..., 2].mean(axis=(1, 2)) - (235 - 9 * np.arange(7))) < 6)
    up = open_video(clip, fps=30.0)  # every source frame twice
    np.testing.assert_array_equal(up.read(range(4)), expected[[0, 1, 1, 2]])


@pytest.mark.parametrize("container_fps", [29.97, 29.4, 30.5])
def test_a_container_rate_near_the_label_rate_reads_one_frame_per_label(
        tmp_path, write_mp4, level_frames, container_fps):
    # Labels count the file's frames: a 29.97 fps file of a 30 fps dataset must give frame i
    # for label i. Resampling by the container's rate would repeat a frame once every
    # ~1 / (1 - 29.97 / 30) frames and shift every later label.
    frames = level_frames(120)
    path = write_mp4(tmp_path / "ntsc.mp4", frames, fps=container_fps)
    reader = open_video(path, fps=30.0, nominal_fps=30.0)
    assert reader.container_fps == pytest.approx(container_fps, abs=0.01)
    assert reader.source_fps == 30.0 and reader.num_frames == 120
    np.testing.assert_array_equal(reader.source_indices, np.arange(120))
    got = reader.read(np.arange(120))[:, 0, 0, 0].astype(int)
    np.testing.assert_allclose(got, frames[:, 0, 0, 0].astype(int), atol=5)  # levels 9 apart
    # far from the nominal rate (a 15 fps copy of a 30 fps dataset) frames are resampled
    half = open_video(write_mp4(tmp_path / "half.mp4", frames, fps=15.0), fps=30.0,
                      nominal_fps=30.0)
    assert half.source_fps == 15.0 and half.num_frames == 239  # round(i / 2) < 120


@pytest.mark.parametrize("first_read", [list(range(24)), [0, 0, 1, 1, 2], [0, 3, 6, 9], [0],
                                        [0, 0], [5, 6, 7], [1, 2]])
def test_first_read_after_opening_equals_opencvs_frames(tmp_path, write_mp4, first_read):
    # Opening decodes frame 0 (for the frame size); a first read from frame 0 goes on from
    # there instead of seeking back. Every pattern of a first read (resampling repeats or
    # skips frames), and reads after it, give exactly the frames OpenCV decodes in order.
    import cv2

    rng = np.random.default_rng(3)
    made = rng.integers(0, 256, (24, 32, 64, 3), dtype=np.uint8)  # a width decord copies
    path = write_mp4(tmp_path / "noise.mp4", made)
    capture = cv2.VideoCapture(str(path))
    want = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        want.append(frame[:, :, ::-1])
    capture.release()
    want = np.stack(want)
    assert len(want) == 24
    v = open_video(path)
    first = v.read(first_read)
    assert first.shape == (len(first_read), 32, 64, 3)
    np.testing.assert_array_equal(first, want[first_read])
    assert first.flags.writeable and first.flags.c_contiguous
    np.testing.assert_array_equal(v.read(range(24)), want)
    again = v.read([0, 0])
    assert again.shape == (2, 32, 64, 3)
    np.testing.assert_array_equal(again, want[[0, 0]])


_FAULTS = """
import resource, sys
import numpy as np
from actrec.io.video import keep_freed_batches, open_video
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def batch_faults():
    before = faults()
    for _ in range(20):  # a 3 MB batch made, written and freed, as decord's batches are
        np.ones(3 << 20, np.uint8)  # (under numpy's 4 MB huge-page threshold: 4 KiB faults)
    return (faults() - before) // 20
import actrec.io.video as video
open_video(sys.argv[1]).read(range(4))
alone = video._allocator_kept  # a reader alone leaves the process's allocator as it is
kept = keep_freed_batches()  # what the extraction host calls
print(alone, kept, batch_faults())
"""


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="glibc only")
@pytest.mark.parametrize("user_setting", [False, True, "tunables", "opt-out"])
def test_the_host_keeps_freed_batch_memory_unless_the_user_tuned_malloc(clip, user_setting):
    """After ``keep_freed_batches`` (the extraction host's call) a freed batch's memory is
    reused for the next (no page faults: fresh pages cost a tenth of decoding here); opening
    a video alone changes nothing in the process, and a user's MALLOC_* setting or
    ACTREC_KEEP_FREED_BATCHES=0 is left as it is (then a 4 MB block is mapped afresh each
    time: ~750 faults)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    for key in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                "GLIBC_TUNABLES"):
        env.pop(key, None)
    env["NUMPY_MADVISE_HUGEPAGE"] = "0"  # huge pages would hide the faults being counted
    env.pop("ACTREC_KEEP_FREED_BATCHES", None)
    if user_setting == "tunables":  # the same setting as a glibc tunable
        env["GLIBC_TUNABLES"] = "glibc.malloc.top_pad=0"
    elif user_setting == "opt-out":
        env["ACTREC_KEEP_FREED_BATCHES"] = "0"
    elif user_setting:
        env["MALLOC_TOP_PAD_"] = "0"
    out = subprocess.run([sys.executable, "-c", _FAULTS, str(clip)], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    alone, kept, faults = out[0] == "True", out[1] == "True", int(out[2])
    tuned = bool(user_setting)
    assert not alone
    assert kept is not tuned
    if user_setting != "opt-out":  # (glibc's own adaptive threshold varies without settings)
        assert (faults < 50) is not tuned, faults
