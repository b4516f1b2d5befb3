"""Motion extractors (flow, mhi, framediff): hand-computed descriptors of hand-made motion,
causal and centred windows exactly as declared, and real mp4 files end to end."""

from __future__ import annotations

import numpy as np
import pytest
from actrec_plugins.extractors.motion import (
    FlowDescriptor,
    FrameDiffDescriptor,
    MHIDescriptor,
)

from actrec import registry
from actrec.errors import ConfigError

METHODS = {"flow": FlowDescriptor, "mhi": MHIDescriptor, "framediff": FrameDiffDescriptor}


def _run(ext, frames, batch=None):
    frames = np.asarray(frames, dtype=np.uint8)
    batch = batch or len(frames)
    out = list(ext.extract(frames[i:i + batch] for i in range(0, len(frames), batch)))
    return np.concatenate(out)


def _make(name, **options):
    return registry.create("extractors", name, {k: str(v) for k, v in options.items()})


def _bar_video(frames=8, size=16):
    """A one-pixel white column on black at x = t in frame t (full height)."""
    video = np.zeros((frames, size, size, 3), np.uint8)
    for t in range(frames):
        video[t, :, t] = 255
    return video


def _square_video(frames=10, size=64, step=(2, 0), side=16, seed=0, textured=True):
    """A square moving ``step`` = (dx, dy) pixels per frame (y down) through the middle of the
    frame: textured over a darker textured background, or flat white on black."""
    rng = np.random.default_rng(seed)
    if textured:
        background = rng.integers(0, 60, (size, size), dtype=np.uint8)
        texture = rng.integers(150, 256, (side, side), dtype=np.uint8)
    else:
        background = np.zeros((size, size), np.uint8)
        texture = np.full((side, side), 255, np.uint8)
    video = np.empty((frames, size, size, 3), np.uint8)
    x0 = (size - side) // 2 - step[0] * (frames - 1) // 2
    y0 = (size - side) // 2 - step[1] * (frames - 1) // 2
    for t in range(frames):
        img = background.copy()
        x, y = x0 + step[0] * t, y0 + step[1] * t
        img[y:y + side, x:x + side] = texture
        video[t] = img[..., None]
    return video


def _orientation_share(rows, bins, mag_bins, grid=1):
    """Per row, each orientation bin's share of the orientation mass summed over cells."""
    per = rows.reshape(rows.shape[0], grid * grid, bins + mag_bins)[:, :, :bins].sum(axis=1)
    return per / per.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------------- contract


def test_plugins_are_registered_with_dims_and_lookahead():
    for name, cls in METHODS.items():
        ext = _make(name)
        assert isinstance(ext, cls) and ext.lookahead == 0 and ext.causal
        assert ext.dim() == 16 * (8 + 4)
        assert _make(name, grid=2, bins=6, mag_bins=3).dim() == 4 * 9
    # Centred: half the window ahead (flow's window is one field: t -> t+1).
    assert _make("flow", centred="true").lookahead == 1
    assert _make("mhi", centred="true").lookahead == 2
    assert _make("framediff", centred=True, window=7).lookahead == 3
    assert _make("mhi", centred="false", window=9).lookahead == 0


@pytest.mark.parametrize("options", [{"grid": 0}, {"window": 1}, {"resize": 6},
                                     {"bins": 0}, {"fps": -1}, {"centred": "maybe"},
                                     {"unknown": 1}])
def test_bad_options_are_config_errors(options):
    with pytest.raises(ConfigError, match="extractor 'mhi'"):
        _make("mhi", **options)


# ------------------------------------------------------------------------ hand-made motion


def test_mhi_of_a_moving_bar_by_hand():
    # Frame 4, window 5: the four differences light columns (0,1), (1,2), (2,3), (3,4) with
    # recency 1/4, 2/4, 3/4, 1, so the MHI's columns 0..4 are 0.25, 0.5, 0.75, 1, 1.
    ext = MHIDescriptor(MHIDescriptor.Config(grid=1, bins=8, mag_bins=4, resize=16))
    rows = _run(ext, _bar_video())
    np.testing.assert_array_equal(rows[0], 0)  # nothing before the first frame; still
    # pixels are in no recency bin
    row = rows[4]
    # Recency levels: 16 pixels each at 0.25, 0.5, 0.75 and 32 at 1, of 256.
    np.testing.assert_allclose(row[8:], [16 / 256, 16 / 256, 16 / 256, 32 / 256], rtol=1e-6)
    # Gradient inside the history (columns 1..3, rows 1..14): (0.75-0.25)/2, (1-0.5)/2,
    # (1-0.75)/2, all pointing right (0 degrees): 14 * 0.625 / 256.
    np.testing.assert_allclose(row[:8], [14 * 0.625 / 256, 0, 0, 0, 0, 0, 0, 0], rtol=1e-6)


def test_framediff_of_a_moving_bar_by_hand():
    # Mean difference over the 4 pairs: column 0 changed once, 1..3 twice, 4 once: / 4.
    ext = FrameDiffDescriptor(FrameDiffDescriptor.Config(grid=1, bins=8, mag_bins=4,
                                                         resize=16))
    row = _run(ext, _bar_video())[4]
    # Magnitudes 0.25 and 0.5 are far past the last doubling edge (bin 3); 11 columns still.
    np.testing.assert_allclose(row[8:], [176 / 256, 0, 0, 80 / 256], rtol=1e-6)
    # |gradient| on rows 1..14: columns 1..5 give 0.125, 0, 0.125, 0.25, 0.125, all
    # horizontal (unsigned: bin 0).
    np.testing.assert_allclose(row[:8], [14 * 0.625 / 256, 0, 0, 0, 0, 0, 0, 0], rtol=1e-6)


@pytest.mark.parametrize("step, expected_bin", [((2, 0), 0), ((0, -2), 2), ((-2, 0), 4),
                                                ((0, 2), 6), ((2, -2), 1)])
def test_flow_orientation_follows_the_motion(step, expected_bin):
    # 8 bins of 45 degrees centred on 0, 45, 90, ...; y points up: dy = -2 (image) is 90.
    ext = FlowDescriptor(FlowDescriptor.Config(grid=1, bins=8, mag_bins=4))
    rows = _run(ext, _square_video(step=step))
    # The first frame has no predecessor: no motion, every pixel in the lowest magnitude bin.
    np.testing.assert_array_equal(rows[0], [0] * 8 + [1, 0, 0, 0])
    share = _orientation_share(rows[2:], 8, 4)
    assert (share[:, expected_bin] > 0.8).all(), share.round(2)
    # The square moves 2 (or 2.8) pixels a frame: its pixels reach the top magnitude bin (>= 1).
    assert (rows[2:, -1] >= 0.05).all()


def test_wide_frames_keep_their_directions():
    # 40 x 160 frames, resize 32: analysed at 32 x 128, so a 45-degree motion stays in the
    # 45-degree bin (squashed to 64 x 64 it would lean to about 76 degrees: the 90 bin).
    rng = np.random.default_rng(3)
    background = rng.integers(0, 60, (40, 160), dtype=np.uint8)
    texture = rng.integers(150, 256, (12, 12), dtype=np.uint8)
    video = np.empty((8, 40, 160, 3), np.uint8)
    for t in range(8):
        img = background.copy()
        img[22 - 2 * t:34 - 2 * t, 60 + 2 * t:72 + 2 * t] = texture  # right and up
        video[t] = img[..., None]
    ext = FlowDescriptor(FlowDescriptor.Config(grid=1, bins=8, mag_bins=4, resize=32))
    share = _orientation_share(_run(ext, video, batch=3)[2:], 8, 4)
    assert (share.argmax(axis=1) == 1).all(), share.round(2)
    from actrec_plugins.extractors.motion.fields import grey_frames, resized_shape

    assert grey_frames(video[:1], 32).shape == (1, 32, 128)
    assert resized_shape(160, 40, 32, True) == (128, 32)
    assert resized_shape(40, 160, 32, False) == (32, 32)


def test_mhi_orientation_follows_the_motion():
    ext = MHIDescriptor(MHIDescriptor.Config(grid=1, bins=8, mag_bins=4))
    for step, expected in (((2, 0), 0), ((0, 2), 6)):
        # A flat square: its history is a clean ramp (a texture changes inside the square).
        rows = _run(ext, _square_video(step=step, textured=False))
        share = _orientation_share(rows[4:], 8, 4)
        assert (share[:, expected] > 0.8).all(), (step, share.round(2))


def test_still_video_gives_zero_motion():
    still = np.repeat(_square_video(frames=1), 6, axis=0)
    for name in METHODS:
        rows = _run(_make(name), still)
        orient = rows.reshape(6, 16, 12)[:, :, :8]
        if name == "flow":  # Farneback of two identical images: a few thousandths of a pixel
            np.testing.assert_allclose(orient, 0, atol=1e-2)
        else:
            np.testing.assert_array_equal(orient, 0)


# ------------------------------------------------------------------- causal and centred


@pytest.mark.parametrize("name", list(METHODS))
def test_output_does_not_depend_on_batching(name):
    video = _square_video(frames=11, step=(1, 1))
    for centred in ("false", "true"):
        whole = _run(_make(name, centred=centred), video)
        assert whole.shape == (11, _make(name).dim())
        for batch in (1, 3, 4):
            np.testing.assert_array_equal(_run(_make(name, centred=centred), video, batch),
                                          whole)
        for chunk in (1, 3):  # nor on how a batch is split to be computed
            ext = _make(name, centred=centred)
            ext.chunk = chunk
            np.testing.assert_array_equal(_run(ext, video), whole)


@pytest.mark.parametrize("name", list(METHODS))
def test_directions_of_moving_pixels_only_or_of_all_give_the_same_features(name, tmp_path,
                                                                            write_mp4):
    # A real mp4 (compression noise: most pixels move a little for framediff, few for mhi);
    # 'dense' is the share of moving pixels from which every pixel's direction is computed.
    from actrec.io.video import open_video

    video = open_video(write_mp4(tmp_path / "sq.mp4", _square_video(frames=9, step=(2, 1))))
    frames = video.read(np.arange(len(video)))
    rows = []
    for dense in (0.0, 1.01):  # always every pixel; always the moving ones only
        ext = _make(name)
        ext.dense = dense
        rows.append(_run(ext, frames, 4))
    assert np.any(rows[0] != 0)
    np.testing.assert_array_equal(rows[0], rows[1])


def test_hypot_is_numpys_bit_for_bit():
    from actrec_plugins.extractors.motion.descriptors import _hypot

    rng = np.random.default_rng(0)
    scale = np.float32(10.0) ** rng.integers(-40, 38, (2, 200_000)).astype(np.float32)
    x, y = (rng.standard_normal((2, 200_000)) * scale).astype(np.float32)
    x[:100], y[:50] = 0, -0.0
    np.testing.assert_array_equal(_hypot(x.reshape(400, 500), y.reshape(400, 500)),
                                  np.hypot(x, y).reshape(400, 500))
    np.testing.assert_array_equal(_hypot(x, y), np.hypot(x, y))


@pytest.mark.parametrize("window", [2, 5, 9])
def test_framediff_motion_equals_its_plain_definition(window):
    # Whole grey-level differences, as diff_fields gives them: magnitude bins by table equal
    # the doubling bins of the mean difference, and the weight is the gradient's hypot.
    from actrec_plugins.extractors.motion.descriptors import _doubling_bins, _gradient
    from actrec_plugins.extractors.motion.fields import mean_difference

    rng = np.random.default_rng(window)
    fields = rng.choice(np.float32([0, 1, 2, 3, 7, 60, 255]), (window + 6, 12, 10))
    ext = _make("framediff", window=window, mag_bins=6)
    dx, dy, weight, mag_bin = ext.motion(fields)
    diff = mean_difference(fields, window)
    gx, gy = _gradient(diff)
    np.testing.assert_array_equal(dx, gx)
    np.testing.assert_array_equal(dy, -gy)
    np.testing.assert_array_equal(weight, np.hypot(gx, gy))
    np.testing.assert_array_equal(mag_bin, _doubling_bins(diff, 1 / 64, 6))
    assert len(np.unique(mag_bin)) >= 4


@pytest.mark.parametrize("shape", [(1, 5, 7), (6, 64, 64), (3, 1, 9), (17, 33, 2)])
def test_diff_fields_are_absolute_differences_of_consecutive_frames(shape):
    from actrec_plugins.extractors.motion.fields import diff_fields

    rng = np.random.default_rng(shape[0])
    grey = rng.integers(0, 256, shape, dtype=np.uint8)
    prev = rng.integers(0, 256, shape[1:], dtype=np.uint8)
    grey[0, 0, 0], prev[0, 0] = 0, 255  # both extremes: |0 - 255| = 255
    frames = np.concatenate([prev[None], grey]).astype(np.int64)
    got = diff_fields(prev, grey)
    assert got.dtype == np.float32 and got.shape == shape and got[0, 0, 0] == 255
    np.testing.assert_array_equal(got, np.abs(frames[1:] - frames[:-1]))


@pytest.mark.parametrize("window", [2, 3, 5, 9])
def test_motion_history_is_the_newest_changes_level(window):
    # Against the definition, per pixel: the newest pair j whose difference exceeds the
    # threshold gives (j + 1) / (window - 1) as float32; differences at the threshold exactly
    # do not count.
    from actrec_plugins.extractors.motion.fields import motion_history

    rng = np.random.default_rng(window)
    fields = rng.choice(np.float32([0, 3, 15.5, 16, 16.5, 40]), (window + 4, 6, 7))
    got = motion_history(fields, window, 16.0)
    b = fields.shape[0] - (window - 2)
    assert got.dtype == np.float32 and got.shape == (b, 6, 7)
    for i in range(b):
        for y in range(6):
            for x in range(7):
                changed = [j for j in range(window - 1) if fields[i + j, y, x] > 16.0]
                want = np.float32((changed[-1] + 1) / (window - 1)) if changed else 0.0
                assert got[i, y, x] == want


@pytest.mark.parametrize("shape", [(128, 128), (100, 72), (64, 64), (96, 160), (128, 256)])
def test_grey_frames_of_a_batch_equal_each_frame_converted_alone(shape):
    import cv2
    from actrec_plugins.extractors.motion.fields import grey_frames, resized_shape

    rng = np.random.default_rng(shape[0] + shape[1])
    frames = rng.integers(0, 256, (6, *shape, 3), dtype=np.uint8)
    h, w = resized_shape(*shape, 64, True)
    want = [cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (w, h), interpolation=cv2.INTER_AREA)
            for f in frames]
    np.testing.assert_array_equal(grey_frames(frames, 64), np.stack(want))
    assert grey_frames(frames[:0], 64).shape == (0, h, w)


@pytest.mark.parametrize("name", list(METHODS))
def test_centred_feature_is_the_causal_feature_k_frames_later(name):
    video = _square_video(frames=12, step=(2, 1))
    causal = _run(_make(name), video, batch=5)
    centred_ext = _make(name, centred="true")
    k = centred_ext.lookahead
    centred = _run(centred_ext, video, batch=5)
    assert centred.shape == causal.shape
    np.testing.assert_array_equal(centred[:-k], causal[k:])
    if name != "flow":  # past the end the frames repeat the last one: exactly no new change
        padded = np.concatenate([video, np.repeat(video[-1:], k, axis=0)])
        np.testing.assert_array_equal(centred[-k:], _run(_make(name), padded)[-k:])
    assert not np.array_equal(centred, causal)


@pytest.mark.parametrize("name", list(METHODS))
def test_a_change_reaches_back_exactly_lookahead_frames(name, tmp_path, write_mp4):
    from actrec.io.video import open_video

    # Frames as decoded from a real mp4 file, then changed from frame m on.
    path = write_mp4(tmp_path / "square.mp4", _square_video(frames=12, step=(2, 0)))
    video = open_video(path).read(np.arange(12))
    changed = video.copy()
    m = 8
    changed[m:, 2:10, 2:10] = 255  # a new bright patch from frame m on
    for centred in ("false", "true"):
        ext = _make(name, centred=centred)
        k = ext.lookahead
        before, after = _run(ext, video, 4), _run(_make(name, centred=centred), changed, 4)
        # Rows before m - k are untouched; row m - k sees the change.
        np.testing.assert_array_equal(before[:m - k], after[:m - k])
        assert not np.array_equal(before[m - k], after[m - k])


def test_short_video_centred_still_gives_one_row_per_frame():
    for name in METHODS:
        for frames in (1, 2):
            rows = _run(_make(name, centred="true"), _square_video(frames=frames))
            assert rows.shape[0] == frames


# -------------------------------------------------------------------------- real files


def test_real_mp4_flow_and_mhi_see_rightward_motion(tmp_path, write_mp4):
    from actrec.io.video import open_video

    for name, textured in (("flow", True), ("mhi", False)):
        video = _square_video(frames=12, size=96, step=(3, 0), textured=textured)
        reader = open_video(write_mp4(tmp_path / f"square-{name}.mp4", video))
        ext = _make(name, grid=1)
        rows = np.concatenate(list(ext.extract(reader.iter_batches(5))))
        assert rows.shape == (12, 12)
        share = _orientation_share(rows[4:], 8, 4)
        assert (share[:, 0] > 0.7).all(), (name, share.round(2))


def test_extract_records_lookahead_in_the_store(tiny_kitchen, tmp_path):
    from actrec.extract import extract_features
    from actrec.io.features import FeatureStore

    _, index = tiny_kitchen
    ext = _make("mhi", centred="true", resize=16, grid=2)
    report = extract_features(index, ext, tmp_path / "m.zarr", dataset_ref="synthetic:tiny")
    assert report.ok and len(report.written) == len(index.videos)
    store = FeatureStore.open(tmp_path / "m.zarr")
    assert store.attrs["lookahead"] == 2 and store.attrs["causal"] is False
    assert store.attrs["extractor_config"]["centred"] is True
    vid = index.videos[store.videos()[0]]
    feats, labels = store.read(vid.id)
    assert feats.shape == (vid.num_frames, ext.dim()) and labels.shape == (vid.num_frames,)
    assert np.isfinite(feats).all() and feats.any()


# ------------------------------------------------------- stacked motion images + backbone


def test_flow_image_colours_by_hand():
    from actrec_plugins.extractors.motion.images import flow_image

    flow = np.zeros((2, 4, 4, 2), np.float32)
    flow[0, ..., 0] = 2.0  # rightwards, 2 px: hue 0 (red), value 2 / 8 * 255 = 64
    flow[1, ..., 1] = -2.0  # upwards (y down in the image): hue 90 degrees
    rgb = flow_image(flow, scale=8.0)
    assert rgb.shape == (2, 4, 4, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0], np.broadcast_to([64, 0, 0], (4, 4, 3)))
    # HSV (90, 1, 64/255) -> RGB (32, 64, 0) (OpenCV rounds the half-way red).
    np.testing.assert_allclose(rgb[1].astype(int), np.broadcast_to([32, 64, 0], (4, 4, 3)),
                               atol=1)
    np.testing.assert_array_equal(flow_image(np.zeros((1, 2, 2, 2), np.float32), 8.0), 0)


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    """A tiny ResNet state dict (random weights, eval-mode batch norm statistics)."""
    import torch

    from actrec.nn.resnet import ResNet

    torch.manual_seed(0)
    model = ResNet([(1, 8, 8), (1, 8, 8), (1, 8, 8), (1, 8, 8)], stem=8, num_classes=3).eval()
    path = tmp_path_factory.mktemp("backbone") / "tiny.pth"
    torch.save(model.state_dict(), path)
    return path, model


def _reference_features(model, images, inflate):
    """The tiny ResNet with its first layer widened by hand, on uint8 images [B, S, S, C]."""
    import torch

    from actrec.nn.resnet import ResNet

    state = model.state_dict()
    w = state["conv1.weight"]
    c = images.shape[-1]
    state["conv1.weight"] = w.repeat(1, c // 3, 1, 1) if inflate == "tile" else \
        w.mean(dim=1, keepdim=True).repeat(1, c, 1, 1)
    wide = ResNet.from_state_dict(state)
    wide.load_state_dict(state)
    x = (images.astype(np.float32) / 255.0 - 0.449) / 0.226
    with torch.no_grad():
        return wide.eval().features(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()


def test_motion_cnn_mhi_and_framediff_stacks_by_hand(resnet_file):
    path, model = resnet_file
    video = _bar_video(frames=6, size=32)
    mhi = _make("motion-cnn", method="mhi", model=path, size=32)
    assert mhi.channels == 1 and mhi.config.window == 5 and mhi.lookahead == 0
    assert mhi.config.sha256 and mhi.config.model.is_absolute()
    rows = _run(mhi, video, batch=4)
    # Frame 4's MHI: columns 0..4 at recency 1/4, 2/4, 3/4, 1, 1 -> 64, 128, 191, 255, 255.
    image = np.zeros((1, 32, 32, 1), np.uint8)
    image[0, :, :5, 0] = [64, 128, 191, 255, 255]
    np.testing.assert_allclose(rows[4], _reference_features(model, image, "mean")[0],
                               rtol=1e-4, atol=1e-5)
    diff = _make("motion-cnn", method="framediff", model=path, size=32)
    assert diff.channels == 5 and diff.config.window == 6
    rows = _run(diff, video, batch=4)
    # Frame 5's five differences (oldest first): pair j lit columns j and j + 1.
    stack = np.zeros((1, 32, 32, 5), np.uint8)
    for j in range(5):
        stack[0, :, j:j + 2, j] = 255
    np.testing.assert_allclose(rows[5], _reference_features(model, stack, "mean")[0],
                               rtol=1e-4, atol=1e-5)
    # The replicated filters make the features blind to the stack's order: check it directly.
    from actrec_plugins.extractors.motion.fields import diff_fields, grey_frames

    grey = grey_frames(video, 32)
    np.testing.assert_array_equal(diff.images(diff_fields(grey[0], grey[1:])), stack)


def test_motion_cnn_takes_a_backbone_trained_on_the_stack_as_it_is(tmp_path):
    # The paper's motion stream is a CNN trained on the stacks, whose first layer already
    # takes the stack's channels: it is used unchanged (state dict, ONNX and .pt2 alike).
    import warnings

    import torch

    from actrec.nn.resnet import ResNet

    torch.manual_seed(3)
    model = ResNet([(1, 8, 8)] * 4, stem=8, num_classes=3, in_channels=5).eval()
    x = torch.randn(2, 5, 32, 32)
    torch.save(model.state_dict(), tmp_path / "stack.pth")
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=({0: batch},)),
                      tmp_path / "stack.pt2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(tmp_path / "stack.onnx"), dynamo=False,
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "n"}, "logits": {0: "n"}})
    # Frame 5's five differences of the bar video (oldest first): pair j lit columns j, j + 1.
    stack = np.zeros((1, 32, 32, 5), np.float32)
    for j in range(5):
        stack[0, :, j:j + 2, j] = 255
    images = (stack / 255.0 - 0.449) / 0.226
    with torch.no_grad():
        want = model.features(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
    for name in ("stack.pth", "stack.pt2", "stack.onnx"):
        ext = _make("motion-cnn", method="framediff", model=tmp_path / name, size=32)
        rows = _run(ext, _bar_video(frames=6, size=32), batch=4)
        np.testing.assert_allclose(rows[5], want[0], rtol=1e-4, atol=1e-5, err_msg=name)
    # A backbone on another number of channels (not 3, not the stack's) is refused by name.
    with pytest.raises(ConfigError, match="stack.pth.*5 channels.*6"):
        _make("motion-cnn", method="framediff", model=tmp_path / "stack.pth", size=32,
              window=7).dim()


def test_motion_cnn_flow_stack_tiles_the_rgb_filters(resnet_file):
    from actrec_plugins.extractors.motion.fields import flow_fields, grey_frames
    from actrec_plugins.extractors.motion.images import flow_image

    path, model = resnet_file
    video = _square_video(frames=5, size=32, side=8, step=(1, 0))
    ext = _make("motion-cnn", method="flow", model=path, size=32, window=3)
    assert ext.channels == 6
    rows = _run(ext, video, batch=2)
    grey = grey_frames(video, 32)
    fields = flow_fields(grey[0], grey[1:])  # fields of frames 1..4
    stack = np.concatenate([flow_image(fields[2:3], 8.0), flow_image(fields[3:4], 8.0)], -1)
    np.testing.assert_allclose(rows[4], _reference_features(model, stack, "tile")[0],
                               rtol=1e-4, atol=1e-5)


def test_motion_cnn_centred_and_bad_options(resnet_file, tmp_path):
    path, _ = resnet_file
    video = _square_video(frames=9, size=32, side=8, step=(1, 1))
    causal = _run(_make("motion-cnn", method="framediff", model=path, size=32), video, 4)
    centred_ext = _make("motion-cnn", method="framediff", model=path, size=32, centred=True)
    assert centred_ext.lookahead == 3
    centred = _run(centred_ext, video, 4)
    np.testing.assert_array_equal(centred[:-3], causal[3:])
    assert _make("motion-cnn", model=path, centred=True).lookahead == 5  # 10 flow fields
    with pytest.raises(ConfigError, match="needs a backbone file"):
        _make("motion-cnn")
    with pytest.raises(ConfigError, match="one per channel"):
        _make("motion-cnn", method="framediff", model=path, mean="0.1,0.2")
    with pytest.raises(ConfigError, match="'method'"):
        _make("motion-cnn", method="hog", model=path)
    # An exported program's first layer cannot be widened: it must be exported for the stack.
    import torch

    program = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(resnet_file[1], (torch.zeros(1, 3, 32, 32),)), program)
    with pytest.raises(ConfigError, match="export the model with 5 input channels"):
        _make("motion-cnn", method="framediff", model=program, size=32).dim()


@pytest.mark.parametrize("name", list(METHODS))
def test_real_videos_centred_stores_are_causal_stores_shifted(name, tiny_kitchen, tmp_path):
    # Through the extraction host, on the synthetic kitchen's mp4 files: the centred store's
    # frame t holds exactly the causal store's frame t + lookahead.
    from actrec.extract import extract_features
    from actrec.io.features import FeatureStore

    _, index = tiny_kitchen
    stores = {}
    for centred in ("false", "true"):
        ext = _make(name, centred=centred, resize=32, grid=2)
        report = extract_features(index, ext, tmp_path / f"{centred}.zarr", dataset_ref="tiny",
                                  batch_size=7)
        assert report.ok
        stores[centred] = FeatureStore.open(tmp_path / f"{centred}.zarr")
    k = stores["true"].attrs["lookahead"]
    assert k == (1 if name == "flow" else 2) and stores["false"].attrs["lookahead"] == 0
    for vid in index.videos:
        causal, labels = stores["false"].read(vid)
        centred, same = stores["true"].read(vid)
        np.testing.assert_array_equal(labels, same)
        np.testing.assert_array_equal(centred[:-k], causal[k:])
        assert causal.any()  # the kitchen moves: there is motion to see
