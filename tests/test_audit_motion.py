"""Audit of the motion stream against Borg & Camilleri Sec. 4.2 and Davis & Bradski's MHI, on a
real mp4: a textured square moving a known displacement gives the known flow (direction as hue,
length as value, in RGB order) and the MHI values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cv2")

SIDE, SIZE = 32, 128
STEP = (3, -2)  # pixels per frame, x right, y down: up and to the right


def _origin(t):
    return 30 + STEP[0] * t, 70 + STEP[1] * t


@pytest.fixture(scope="module")
def square_frames(tmp_path_factory):
    """The decoded frames (RGB) of a real mp4 of the moving square, 12 frames at 25 fps."""
    import cv2

    from conftest import _write_mp4

    rng = np.random.default_rng(0)
    background = rng.integers(0, 60, (SIZE, SIZE), dtype=np.uint8)
    texture = cv2.GaussianBlur(rng.integers(120, 256, (SIDE, SIDE)).astype(np.uint8), (3, 3), 0)
    frames = []
    for t in range(12):
        img = background.copy()
        x, y = _origin(t)
        img[y:y + SIDE, x:x + SIDE] = texture
        frames.append(np.repeat(img[..., None], 3, axis=2))
    path = _write_mp4(tmp_path_factory.mktemp("audit_motion") / "square.mp4", np.stack(frames),
                      fps=25.0)
    from actrec.io.video import open_video

    reader = open_video(path, fps=None)
    return reader.read(np.arange(len(reader)))


def _inside(t, margin=8):
    """The pixels well inside the square of frame ``t`` (rows, columns)."""
    x, y = _origin(t)
    return slice(y + margin, y + SIDE - margin), slice(x + margin, x + SIDE - margin)


def test_farneback_field_of_a_known_displacement(square_frames):
    from actrec_plugins.extractors.motion.fields import flow_fields, grey_frames

    grey = grey_frames(square_frames, SIZE, keep_aspect=False)
    assert grey.shape == (12, SIZE, SIZE)
    flow = flow_fields(grey[0], grey[1:])  # field i: frame i -> i + 1
    inside = flow[5][_inside(6)]  # frame 5 -> 6: in pixels of the resized frame, y down
    np.testing.assert_allclose(np.median(inside[..., 0]), STEP[0], atol=0.05)
    np.testing.assert_allclose(np.median(inside[..., 1]), STEP[1], atol=0.05)


def test_flow_image_angle_is_hue_and_length_is_value_in_rgb_order(square_frames):
    import cv2

    from actrec_plugins.extractors.motion.fields import flow_fields, grey_frames
    from actrec_plugins.extractors.motion.images import flow_image

    grey = grey_frames(square_frames, SIZE, keep_aspect=False)
    rgb = flow_image(flow_fields(grey[5], grey[6:7]), 8.0)[0][_inside(6)]
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV).reshape(-1, 3)
    # Up and to the right, y up: atan2(2, 3) = 33.7 degrees -> OpenCV hue 17 (degrees / 2);
    # length sqrt(13) = 3.61 px of flow_scale 8 -> value 115; full saturation.
    angle = np.degrees(np.arctan2(-STEP[1], STEP[0]))
    assert abs(np.median(hsv[:, 0]) - round(angle / 2)) <= 1
    assert abs(np.median(hsv[:, 2]) - np.hypot(*STEP) / 8 * 255) <= 2
    assert np.median(hsv[:, 1]) == 255
    # RGB order (what an RGB backbone's tiled filters expect): an orange-red hue has its
    # largest component first and no blue.
    r, g, b = np.median(rgb.reshape(-1, 3), axis=0)
    assert r > g > b == 0


def test_motion_history_of_the_square_by_hand(square_frames):
    # Davis & Bradski with a duration of window - 1 = 4 frame pairs: a pixel last changed in
    # the newest pair holds 1, one whose last change was 4 pairs ago (the oldest of the
    # window) 1/4, never changed 0.
    from actrec_plugins.extractors.motion.fields import (
        diff_fields,
        grey_frames,
        motion_history,
    )

    grey = grey_frames(square_frames, SIZE, keep_aspect=False)
    t = 6
    mhi = motion_history(diff_fields(grey[t - 4], grey[t - 3:t + 1]), 5, 16.0)[0]
    assert mhi.shape == (SIZE, SIZE)
    x, y = _origin(t - 4)
    # bottom-left corner of the square at t - 4: uncovered in pair (t-4, t-3) only -> 1/4
    assert mhi[y + SIDE - 2, x + 1] == pytest.approx(0.25)
    x, y = _origin(t)
    # top-right corner at t: covered in pair (t-1, t) -> 1
    assert mhi[y + 1, x + SIDE - 2] == pytest.approx(1.0)
    assert mhi[2, 2] == 0.0  # the still background corner


def test_motion_cnn_images_of_the_real_video(square_frames, tmp_path):
    # The stacks the backbone gets: 10 flow images (30 channels, oldest first) for the flow
    # window of 11, the MHI as 255 x its value, 5 difference images for framediff.
    import torch

    from actrec import registry
    from actrec.nn.resnet import ResNet
    from actrec_plugins.extractors.motion.fields import diff_fields, flow_fields, grey_frames

    model = ResNet([(1, 8, 8), (1, 8, 8), (1, 8, 8), (1, 8, 8)], stem=8, num_classes=3).eval()
    path = tmp_path / "tiny.pth"
    torch.save(model.state_dict(), path)
    grey = grey_frames(square_frames, SIZE, keep_aspect=False)

    flow = registry.create("extractors", "motion-cnn", {"method": "flow", "model": str(path),
                                                         "size": str(SIZE)})
    assert flow.config.window == 11 and flow.channels == 30
    stack = flow.images(flow_fields(grey[0], grey[1:11]))[0]  # frame 10's window: fields 1..10
    assert stack.shape == (SIZE, SIZE, 30)
    from actrec_plugins.extractors.motion.images import flow_image

    np.testing.assert_array_equal(stack[..., :3], flow_image(flow_fields(grey[0], grey[1:2]),
                                                             8.0)[0])  # oldest: 0 -> 1
    np.testing.assert_array_equal(stack[..., 27:], flow_image(flow_fields(grey[9], grey[10:11]),
                                                              8.0)[0])  # newest: 9 -> 10

    mhi = registry.create("extractors", "motion-cnn", {"method": "mhi", "model": str(path),
                                                        "size": str(SIZE)})
    t = 6
    image = mhi.images(diff_fields(grey[t - 4], grey[t - 3:t + 1]))[0, ..., 0]
    x, y = _origin(t - 4)
    assert image[y + SIDE - 2, x + 1] == 64  # 1/4 of 255, rounded
    x, y = _origin(t)
    assert image[y + 1, x + SIDE - 2] == 255

    diff = registry.create("extractors", "motion-cnn", {"method": "framediff",
                                                         "model": str(path), "size": str(SIZE)})
    assert diff.config.window == 6 and diff.channels == 5
    stack = diff.images(diff_fields(grey[0], grey[1:6]))[0]  # frame 5: pairs (0,1) .. (4,5)
    for j in range(5):
        np.testing.assert_array_equal(stack[..., j],
                                      np.abs(grey[j + 1].astype(int) - grey[j]).astype(np.uint8))
