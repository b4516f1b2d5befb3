"""The ``colorgrad`` extractor: exact layout, hand-computed values, causal streaming."""

from __future__ import annotations

import numpy as np
import pytest
from actrec_plugins.extractors.colorgrad import ColorGradient

from actrec.errors import ConfigError

# grid 2, bins 4 on 8 x 8 frames: per cell 3*4 colour + 4 orientation + 1 motion = 17.
SMALL = ColorGradient.Config(grid=2, bins=4, resize=8)


def _run(ext, frames, batch=None):
    frames = np.asarray(frames, dtype=np.uint8)
    batch = batch or len(frames)
    out = list(ext.extract(frames[i:i + batch] for i in range(0, len(frames), batch)))
    return np.concatenate(out)


def _cell(feats, c):
    """(colour [12], orientation [4], motion) of cell ``c`` of a ``SMALL`` feature row."""
    row = feats[c * 17:(c + 1) * 17]
    return row[:12], row[12:16], row[16]


def test_dim_and_contract():
    assert ColorGradient().dim() == 4 * (4 * 8 + 1) + 2 == 134
    assert ColorGradient(SMALL).dim() == 70
    assert ColorGradient(ColorGradient.Config(grid=3, bins=6)).dim() == 9 * 25 + 2
    ext = ColorGradient()
    assert ext.lookahead == 0 and ext.causal and ext.fps is None
    assert ColorGradient(ColorGradient.Config(fps=5.0)).fps == 5.0
    feats = _run(ext, np.zeros((3, 64, 64, 3)))
    assert feats.shape == (3, 134) and feats.dtype == np.float32


def test_constant_colour_frame():
    frame = np.empty((8, 8, 3), np.uint8)
    frame[:] = (200, 100, 30)  # bins of 64 levels: R -> 3, G -> 1, B -> 0
    feats = _run(ColorGradient(SMALL), [frame])[0]
    for c in range(4):
        colour, orient, motion = _cell(feats, c)
        np.testing.assert_array_equal(colour, [0, 0, 0, 1, 0, 1, 0, 0, 1, 0, 0, 0])
        np.testing.assert_array_equal(orient, 0.0)  # no gradient anywhere
        assert motion == 0.0  # first frame: no previous one
    np.testing.assert_array_equal(feats[68:], [0.0, 0.0])
    # A larger frame of the same colour is resized to the same features.
    big = np.broadcast_to(frame[:1, :1], (16, 16, 3))
    np.testing.assert_array_equal(_run(ColorGradient(SMALL), [big])[0], feats)


def test_frame_difference_energy_and_centre():
    first = np.full((8, 8, 3), 100, np.uint8)
    second = first.copy()
    second[:, :4] += 9  # left half brighter by 9 grey levels
    feats = _run(ColorGradient(SMALL), [first, second])
    assert all(_cell(feats[0], c)[2] == 0 for c in range(4))
    motion = [_cell(feats[1], c)[2] for c in range(4)]
    np.testing.assert_allclose(motion, [9 / 255, 0, 9 / 255, 0], rtol=1e-6)
    # Motion centre: mean of pixel-centre x over columns 0..3 = -0.25; rows are uniform.
    np.testing.assert_allclose(feats[1, 68:], [-0.25, 0.0], atol=1e-7)
    # Colour of the left cells moved from bin 1 (100) to bin 1 (109): histograms unchanged.
    np.testing.assert_array_equal(_cell(feats[1], 0)[0], _cell(feats[0], 0)[0])


def test_gradient_orientation_of_edges():
    # Vertical edge between columns 3 and 4 (0 | 80): central differences give 40 at columns
    # 3 and 4 on the 6 interior rows; each cell gets 3 such pixels: 120 / (16 px * 255).
    frame = np.zeros((8, 8, 3), np.uint8)
    frame[:, 4:] = 80
    feats = _run(ColorGradient(SMALL), [frame])[0]
    for c in range(4):
        np.testing.assert_allclose(_cell(feats, c)[1], [120 / 4080, 0, 0, 0], rtol=1e-6)
    # The same edge turned horizontal lands in the pi/2 bin (index 2 of 4).
    feats = _run(ColorGradient(SMALL), [frame.transpose(1, 0, 2)])[0]
    for c in range(4):
        np.testing.assert_allclose(_cell(feats, c)[1], [0, 0, 120 / 4080, 0], rtol=1e-6)


    # Unsigned: the same edges falling the other way (80 | 0: gradient angle pi, and -pi/2)
    # land in the same bins; angle pi is bin 0, not past the last bin.
    flipped = frame[:, ::-1]
    feats = _run(ColorGradient(SMALL), [flipped])[0]
    for c in range(4):
        np.testing.assert_allclose(_cell(feats, c)[1], [120 / 4080, 0, 0, 0], rtol=1e-6)
    feats = _run(ColorGradient(SMALL), [flipped.transpose(1, 0, 2)])[0]
    for c in range(4):
        np.testing.assert_allclose(_cell(feats, c)[1], [0, 0, 120 / 4080, 0], rtol=1e-6)


@pytest.mark.parametrize("grid,bins", [(2, 8), (3, 5), (4, 8), (1, 256)])
def test_colour_histograms_match_a_direct_count(grid, bins):
    # Both ways of counting (one byte key per pixel when cells * 3 * bins <= 256, else a
    # general bincount) against a plain per-cell, per-channel count.
    rng = np.random.default_rng(grid * 1000 + bins)
    frames = rng.integers(0, 256, (5, 24, 24, 3), dtype=np.uint8)
    ext = ColorGradient(ColorGradient.Config(grid=grid, bins=bins, resize=24))
    feats = _run(ext, frames)
    per = 4 * bins + 1
    band = np.arange(24) * grid // 24
    for f in range(5):
        for c in range(grid * grid):
            pixels = frames[f][(band[:, None] == c // grid) & (band[None, :] == c % grid)]
            want = [np.mean(pixels[:, ch].astype(int) * bins // 256 == k)
                    for ch in range(3) for k in range(bins)]
            np.testing.assert_allclose(feats[f, c * per:c * per + 3 * bins], want, rtol=1e-6)


def test_causal_streaming_and_batching():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (23, 20, 20, 3), dtype=np.uint8)
    ext = ColorGradient(ColorGradient.Config(grid=2, bins=5, resize=16))
    full = _run(ext, frames)
    assert full.shape == (23, ext.dim())
    # Features of a prefix do not change when frames are appended (nothing looks ahead).
    for n in (1, 7, 16):
        np.testing.assert_array_equal(_run(ext, frames[:n]), full[:n])
    # Batch size does not matter: the previous frame is carried across batches.
    for batch in (1, 4, 9):
        np.testing.assert_allclose(_run(ext, frames, batch), full, rtol=0, atol=1e-7)
    # Nor how many frames are computed together inside a batch (sums are exact).
    ext.chunk = 3
    np.testing.assert_array_equal(_run(ext, frames), full)
    # Each extract() call is a new video: its first frame has no motion.
    again = _run(ext, frames[5:8])
    assert np.all(again[0, [k * 21 + 20 for k in range(4)]] == 0)
    assert np.any(full[5, [k * 21 + 20 for k in range(4)]] > 0)


def test_bad_options():
    with pytest.raises(ConfigError, match="grid"):
        ColorGradient(ColorGradient.Config(grid=0))
    with pytest.raises(ConfigError, match="resize"):
        ColorGradient(ColorGradient.Config(grid=4, resize=6))
    with pytest.raises(ConfigError, match="fps"):
        ColorGradient(ColorGradient.Config(fps=0.0))
    with pytest.raises(ConfigError, match="unknown option 'bogus'"):
        ColorGradient.Config.from_options({"bogus": 1}, owner="extractor 'colorgrad'")


# ------------------------------------------------------------------ bit-identity with a reference


def _reference(frames: np.ndarray, grid: int, bins: int, resize: int) -> np.ndarray:
    """colorgrad as first written (one plain pass per video, np.hypot, np.mod), the
    definition every faster version must reproduce bit for bit."""
    import cv2

    s, g = resize, grid
    if frames.shape[1:3] != (s, s):
        frames = np.stack([cv2.resize(f, (s, s), interpolation=cv2.INTER_AREA) for f in frames])
    b, cells = len(frames), g * g
    grey = (frames[..., 0].astype(np.uint16) + frames[..., 1] + frames[..., 2]) \
        .astype(np.float32) / 3.0
    diff = np.abs(grey - np.concatenate([grey[:1], grey[:-1]]))
    band = np.arange(s) * g // s
    cell = band[:, None] * g + band[None, :]
    per_cell = np.bincount(cell.ravel(), minlength=cells).astype(np.float64)
    frame_ix = np.arange(b)[:, None, None]
    value_bin = (np.arange(256) * bins // 256)[frames]  # [B, S, S, 3]
    key = ((frame_ix[..., None] * cells + cell[None, :, :, None]) * 3 + np.arange(3)) * bins \
        + value_bin
    colour = np.bincount(key.ravel(), minlength=b * cells * 3 * bins)
    colour = colour.reshape(b, cells, 3 * bins) / per_cell[None, :, None]
    gx = np.zeros_like(grey)
    gy = np.zeros_like(grey)
    gx[:, 1:-1, 1:-1] = (grey[:, 1:-1, 2:] - grey[:, 1:-1, :-2]) / 2
    gy[:, 1:-1, 1:-1] = (grey[:, 2:, 1:-1] - grey[:, :-2, 1:-1]) / 2
    mag = np.hypot(gx, gy)
    theta = np.mod(np.arctan2(gy, gx), np.pi)
    obin = np.minimum((theta * bins / np.pi).astype(np.int64), bins - 1)
    okey = (frame_ix * cells + cell[None]) * bins + obin
    orient = np.bincount(okey.ravel(), weights=mag.ravel().astype(np.float64),
                         minlength=b * cells * bins)
    orient = orient.reshape(b, cells, bins) / (per_cell[None, :, None] * 255.0)
    mkey = frame_ix * cells + cell[None]
    motion = np.bincount(mkey.ravel(), weights=diff.ravel().astype(np.float64),
                         minlength=b * cells).reshape(b, cells) / (per_cell * 255.0)
    total = diff.sum(axis=(1, 2), dtype=np.float64)
    coord = (np.arange(s) + 0.5) / s - 0.5
    safe = np.where(total > 0, total, 1.0)
    cx = (diff.sum(axis=1, dtype=np.float64) @ coord) / safe
    cy = (diff.sum(axis=2, dtype=np.float64) @ coord) / safe
    per = np.concatenate([colour, orient, motion[..., None]], axis=2)
    out = np.concatenate([per.reshape(b, -1), np.stack([cx, cy], axis=1)], axis=1)
    return out.astype(np.float32)


def _textured_video(tmp_path, write_mp4, h: int, w: int, count: int = 21) -> np.ndarray:
    """Decoded frames of a real mp4: smooth colour blobs drifting over noise, so that every
    orientation, colour bin and motion level occurs."""
    from actrec.io.video import open_video

    rng = np.random.default_rng(h * w)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    frames = []
    for t in range(count):
        base = 128 + 90 * np.sin((xx + 3 * t) / 7.0)[..., None] * np.cos((yy - 2 * t) / 5.0)[
            ..., None] * np.array([1.0, -0.6, 0.3])
        noise = rng.normal(0, 18, (h, w, 3))
        frames.append(np.clip(base + noise, 0, 255).astype(np.uint8))
    path = write_mp4(tmp_path / f"tex{h}x{w}.mp4", np.stack(frames))
    return open_video(path).read(np.arange(count))


@pytest.mark.parametrize("h,w", [(128, 128), (100, 72), (64, 64)])
@pytest.mark.parametrize("grid,bins,resize", [(2, 8, 64), (3, 5, 30), (4, 8, 64), (1, 256, 32)])
def test_features_equal_the_reference_bit_for_bit(tmp_path, write_mp4, h, w, grid, bins,
                                                   resize):
    frames = _textured_video(tmp_path, write_mp4, h, w)
    ext = ColorGradient(ColorGradient.Config(grid=grid, bins=bins, resize=resize))
    want = _reference(frames, grid, bins, resize)
    for batch in (len(frames), 8, 1):
        np.testing.assert_array_equal(_run(ext, frames, batch), want)


def test_colour_counts_of_more_frames_than_one_16_bit_histogram_holds():
    # 192 keys per frame: 341 frames fit one 16-bit key range; 400 frames computed together
    # are counted in two groups.
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, (400, 8, 8, 3), dtype=np.uint8)
    ext = ColorGradient(ColorGradient.Config(grid=1, bins=64, resize=8))
    ext.chunk = 400
    np.testing.assert_array_equal(_run(ext, frames), _reference(frames, 1, 64, 8))


@pytest.mark.parametrize("bins", [3, 6, 12])
def test_an_angle_just_below_180_degrees_that_rounds_up_counts_in_the_last_bin(bins):
    # With 3, 6 or 12 bins the largest float32 angle below pi scales to ``bins`` itself:
    # it belongs to the last bin (the definition's minimum), never to the next frame's first.
    # Grey levels of whole frames are 1/3 apart, too coarse for such an angle: crafted here.
    ext = ColorGradient(ColorGradient.Config(grid=1, bins=bins, resize=8))
    rng = np.random.default_rng(bins)
    frames = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    grey = rng.uniform(0, 255, (2, 8, 8)).astype(np.float32)
    grey[0, 3, 4], grey[0, 3, 2], grey[0, 2, 3] = 0.0, 200.0, 100.0  # gx = -100 at (3, 3)
    pi = np.float32(np.pi)
    for k in range(1, 400):  # gy = a few float32 steps above 0: the angle just below pi
        grey[0, 4, 3] = np.float32(100.0) + np.float32(k) * np.spacing(np.float32(100.0))
        gy = (grey[0, 4, 3] - grey[0, 2, 3]) * np.float32(0.5)
        theta = np.arctan2(np.float32([gy]), np.float32([-100.0]))
        if theta[0] < pi and int((theta * np.float32(bins) / pi)[0]) == bins:
            break
    else:
        pytest.fail("no angle rounds up")
    diff = np.zeros_like(grey)
    got = ext._features(frames, grey, diff)
    gx = np.zeros_like(grey)
    gy = np.zeros_like(grey)
    gx[:, 1:-1, 1:-1] = (grey[:, 1:-1, 2:] - grey[:, 1:-1, :-2]) / 2
    gy[:, 1:-1, 1:-1] = (grey[:, 2:, 1:-1] - grey[:, :-2, 1:-1]) / 2
    theta = np.mod(np.arctan2(gy, gx), np.pi)
    obin = np.minimum((theta * bins / np.pi).astype(np.int64), bins - 1)
    assert obin[0, 3, 3] == bins - 1
    for f in range(2):
        orient = np.bincount(obin[f].ravel(), weights=np.hypot(gx[f], gy[f]).ravel()
                             .astype(np.float64), minlength=bins) / (64 * 255.0)
        np.testing.assert_array_equal(got[f, 3 * bins:4 * bins], orient.astype(np.float32))
