"""The weight-free motion descriptors (framediff, mhi, flow) equal their plain definition (the
module docstring of ``descriptors``, computed frame by frame with np.mod, np.hypot and one
histogram per frame) bit for bit, on frames decoded from real mp4 files, however the frames
are batched: every faster way of computing them must reproduce it exactly."""

from __future__ import annotations

import numpy as np
import pytest

from actrec import registry


def _make(name, **options):
    return registry.create("extractors", name, {k: str(v) for k, v in options.items()})


def _run(ext, frames, batch):
    out = list(ext.extract(frames[i:i + batch] for i in range(0, len(frames), batch)))
    return np.concatenate(out)


def _gradient(image):
    gx = np.zeros_like(image)
    gy = np.zeros_like(image)
    gx[1:-1, 1:-1] = (image[1:-1, 2:] - image[1:-1, :-2]) / 2
    gy[1:-1, 1:-1] = (image[2:, 1:-1] - image[:-2, 1:-1]) / 2
    return gx, gy


def _reference(frames, name, grid, bins, mag_bins, resize, window, threshold=16.0):
    """Causal descriptor rows of ``frames`` by the definition, one frame at a time."""
    from actrec_plugins.extractors.motion.descriptors import _doubling_bins
    from actrec_plugins.extractors.motion.fields import flow_fields, grey_frames

    grey = grey_frames(frames, resize)  # checked against per-frame OpenCV elsewhere
    t_count, h, w = grey.shape
    if name == "flow":  # field t: frame t-1 -> t; zero for the first frame
        fields = np.concatenate([np.zeros((1, h, w, 2), np.float32),
                                 flow_fields(grey[0], grey[1:])])
    else:
        fields = np.zeros((t_count, h, w), np.float32)
        fields[1:] = np.abs(grey[1:].astype(np.int16) - grey[:-1]).astype(np.float32)
    rows_of, cols_of = np.arange(h) * grid // h, np.arange(w) * grid // w
    cell = rows_of[:, None] * grid + cols_of[None, :]
    per_cell = np.bincount(cell.ravel(), minlength=grid * grid).astype(np.float64)
    w1 = window - 1
    out = []
    for t in range(t_count):
        # the window's fields, oldest first; before the first frame they are zero
        win = [fields[i] if i >= 0 else np.zeros_like(fields[0])
               for i in range(t - window + 2, t + 1)]
        if name == "framediff":
            mean = (sum(win) / (w1 * 255.0)).astype(np.float32)
            gx, gy = _gradient(mean)
            dx, dy, weight = gx, -gy, np.hypot(gx, gy)
            mag_bin = _doubling_bins(mean, 1 / 64, mag_bins)
            span = np.pi
        elif name == "mhi":
            mhi = np.zeros((h, w), np.float32)
            for j, d in enumerate(win):  # newer changes overwrite older ones
                mhi[d > threshold] = np.float32((j + 1) / w1)
            gx, gy = _gradient(mhi)
            moved = mhi > 0
            inside = np.zeros_like(moved)
            inside[1:-1, 1:-1] = (moved[1:-1, 1:-1] & moved[:-2, 1:-1] & moved[2:, 1:-1]
                                  & moved[1:-1, :-2] & moved[1:-1, 2:])
            dx, dy, weight = gx, -gy, np.where(inside, np.hypot(gx, gy), 0)
            level = np.minimum(np.ceil(mhi * mag_bins - 1e-6).astype(np.int64) - 1,
                               mag_bins - 1)
            mag_bin = np.where(moved, level, -1)
            span = 2 * np.pi
        else:
            flow = sum(win) / w1
            u, v = flow[..., 0], flow[..., 1]
            length = np.hypot(u, v)
            dx, dy, weight = u, -v, length
            mag_bin = _doubling_bins(length, 0.25, mag_bins)
            span = 2 * np.pi
        theta = np.mod(np.arctan2(dy, dx), span)
        obin = np.floor(theta / (span / bins) + 0.5).astype(np.int64) % bins
        orient = np.bincount((cell * bins + obin).ravel(),
                             weights=weight.ravel().astype(np.float64),
                             minlength=grid * grid * bins).reshape(grid * grid, bins)
        counts = np.zeros((grid * grid, mag_bins))
        for m in range(mag_bins):
            counts[:, m] = np.bincount(cell[mag_bin == m], minlength=grid * grid)
        row = np.concatenate([orient / per_cell[:, None], counts / per_cell[:, None]], axis=1)
        out.append(row.reshape(-1).astype(np.float32))
    return np.stack(out)


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    """Frames decoded from real mp4 files: a textured square drifting over a noisy
    background (compression noise: framediff sees motion almost everywhere, mhi in few
    places), square and wide."""
    import cv2

    from actrec.io.video import open_video

    out = {}
    for h, w in ((128, 128), (96, 160)):
        rng = np.random.default_rng(h + w)
        background = rng.integers(0, 90, (h, w), dtype=np.uint8)
        texture = rng.integers(120, 256, (32, 32), dtype=np.uint8)
        frames = []
        for t in range(23):
            img = background.copy()
            y, x = 20 + t, 10 + 3 * t
            img[y:y + 32, x:x + 32] = texture
            frames.append(np.repeat(img[..., None], 3, axis=2))
        path = tmp_path_factory.mktemp("mp4") / f"sq{h}x{w}.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 15.0, (w, h))
        for frame in frames:
            writer.write(frame)  # grey: the same in BGR
        writer.release()
        video = open_video(path)
        out[(h, w)] = video.read(np.arange(len(video)))
    return out


@pytest.mark.parametrize("name", ["framediff", "mhi", "flow"])
@pytest.mark.parametrize("options", [
    {},  # grid 4, bins 8, mag_bins 4, resize 64, window 5 (flow: 2)
    {"grid": 3, "bins": 5, "mag_bins": 3, "resize": 24, "window": 3},
    {"grid": 2, "bins": 12, "mag_bins": 6, "resize": 40, "window": 2},
])
def test_descriptors_equal_their_definition_bit_for_bit(name, options, decoded):
    ext = _make(name, **options)
    cfg = ext.config
    for shape, frames in decoded.items():
        want = _reference(frames, name, cfg.grid, cfg.bins, cfg.mag_bins, cfg.resize,
                          cfg.window)
        assert np.any(want != 0)
        for batch in (64, 7, 1):
            np.testing.assert_array_equal(_run(_make(name, **options), frames, batch), want,
                                          err_msg=f"{name} {options} {shape} batch {batch}")


@pytest.mark.parametrize("window", [2, 4, 9])
def test_mhi_equals_its_definition_for_windows_with_and_without_its_tables(window, decoded):
    """mhi counts keys per cell and weighs them by table where the MHI's levels allow it
    (windows 2, 3, 5, 9: levels in halves, quarters, eighths), and goes pixel by pixel where
    they do not (window 4: thirds); both are the definition bit for bit."""
    ext = _make("mhi", window=window)
    assert (ext._tables() is None) == (window == 4)
    for frames in decoded.values():
        want = _reference(frames, "mhi", 4, 8, 4, 64, window)
        assert np.any(want[:, :-16] != 0)
        np.testing.assert_array_equal(_run(_make("mhi", window=window), frames, 16), want)


@pytest.mark.parametrize("window", [3, 5, 9])  # (window 2: the MHI is flat where it counts)
def test_mhi_tables_give_the_per_pixel_rows_on_dense_random_motion(window):
    """Every combination of recencies around a pixel (random fields: most pixels moved, at
    every age), odd frame sizes and a grid that does not divide them: the table path's rows
    equal the per-pixel path's bit for bit."""
    from actrec_plugins.extractors.motion.descriptors import MotionDescriptor

    rng = np.random.default_rng(window)
    ext = _make("mhi", window=window, grid=3, bins=7, mag_bins=3)
    assert ext._tables() is not None
    fields = rng.integers(0, 40, (window - 2 + 6, 37, 29)).astype(np.float32)
    fields[:, :5] = 0  # still rows
    plain = MotionDescriptor._describe(ext, fields).copy()
    assert np.count_nonzero(plain.reshape(6, 9, 10)[:, :, :7]) > 20  # weighted directions
    np.testing.assert_array_equal(ext._describe(fields), plain)


@pytest.mark.parametrize("window,mag_bins,by_bytes", [(5, 4, True), (5, 7, False),
                                                      (9, 3, True)])
def test_framediff_magnitude_counts_by_bytes_or_per_pixel_equal_the_definition(
        window, mag_bins, by_bytes, decoded):
    """framediff counts the magnitude bins from the totals saturated to a byte where every
    total from 255 on is in one bin (mean-difference edges 1/64, 2/64, ... below 255/1020),
    else pixel by pixel: both give the definition bit for bit."""
    ext = _make("framediff", window=window, mag_bins=mag_bins)
    assert (ext._byte_bins() is not None) == by_bytes
    for frames in decoded.values():
        want = _reference(frames, "framediff", 4, 8, mag_bins, 64, window)
        got = _run(_make("framediff", window=window, mag_bins=mag_bins), frames, 16)
        np.testing.assert_array_equal(got, want)
        mags = want.reshape(len(frames), 16, 8 + mag_bins)[:, :, 8:]
        assert np.count_nonzero(mags.sum(axis=(0, 1))) >= 3  # several bins occur
