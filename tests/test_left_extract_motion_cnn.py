"""``motion-cnn`` takes the ``cnn`` extractor's ``pixel_range`` and ``channels``: a Caffe-style
backbone (Borg & Camilleri's Keras VGG-16: BGR on 0..255 minus per-channel means) gets its flow
images as it expects, recorded in the store's config; grey stacks have no colour order."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cv2")
torch = pytest.importorskip("torch")

CAFFE_MEAN = (103.939, 116.779, 123.68)  # B, G, R


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from actrec.nn.resnet import ResNet

    torch.manual_seed(0)
    model = ResNet([(1, 8, 8), (1, 8, 8), (1, 8, 8), (1, 8, 8)], stem=8, num_classes=3).eval()
    path = tmp_path_factory.mktemp("mcnn") / "tiny.pth"
    torch.save(model.state_dict(), path)
    return path


def _frames(count=6, size=32):
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (size + 3 * count, size + 3 * count, 3), dtype=np.uint8)
    return np.stack([base[2 * t:2 * t + size, 3 * t:3 * t + size] for t in range(count)])


def test_caffe_style_flow_stack_is_bgr_on_0_255_minus_the_means(tiny_model):
    from actrec import registry

    ext = registry.create("extractors", "motion-cnn", {
        "method": "flow", "model": str(tiny_model), "size": "32", "window": "3",
        "pixel_range": "255", "channels": "bgr", "mean": ",".join(map(str, CAFFE_MEAN)),
        "std": "1"})
    recorded = ext.config.to_dict()
    assert (recorded["pixel_range"], recorded["channels"]) == (255.0, "bgr")
    from actrec_plugins.extractors.motion.fields import flow_fields, grey_frames

    grey = grey_frames(_frames(), 32, keep_aspect=False)
    stack = ext.images(flow_fields(grey[0], grey[1:4]))  # [2, 32, 32, 6]: two RGB images
    got = ext.preprocess.apply(stack)  # [2, 6, 32, 32]
    for field in range(2):
        for c, colour in enumerate((2, 1, 0)):  # B, G, R of this field's RGB image
            np.testing.assert_allclose(
                got[:, 3 * field + c],
                stack[..., 3 * field + colour].astype(np.float32) - CAFFE_MEAN[c], atol=1e-4)
    # the features are the backbone's on those inputs
    ext.setup(ext.runtime)
    frames = _frames()
    rows = np.concatenate(list(ext.extract([frames[:4], frames[4:]])))
    fields = flow_fields(grey[0], grey[1:])  # causal window 3: frame t sees fields t-1, t
    padded = np.concatenate([np.zeros_like(fields[:1]), np.zeros_like(fields[:1]), fields])
    hand = ext._backbone(ext.preprocess.apply(ext.images(padded)))
    np.testing.assert_allclose(rows, hand, rtol=1e-5, atol=1e-5)


def test_grey_stacks_take_pixel_range_and_any_channel_order(tiny_model):
    from actrec import registry

    def diff(**extra):
        return registry.create("extractors", "motion-cnn", {
            "method": "framediff", "model": str(tiny_model), "size": "32", "window": "3",
            "pixel_range": "255", "mean": "114.8", "std": "1", **extra})

    stack = np.arange(2 * 32 * 32 * 2, dtype=np.int64).reshape(2, 32, 32, 2).astype(np.uint8)
    plain = diff().preprocess.apply(stack)
    np.testing.assert_allclose(plain, stack.transpose(0, 3, 1, 2) - np.float32(114.8), atol=1e-4)
    np.testing.assert_array_equal(diff(channels="bgr").preprocess.apply(stack), plain)


def test_motion_cnn_channel_options_are_checked(tiny_model):
    from actrec import registry
    from actrec.errors import ConfigError

    base = {"method": "flow", "model": str(tiny_model), "size": "32", "window": "3"}
    with pytest.raises(ConfigError, match="'channels' must be rgb or bgr"):
        registry.create("extractors", "motion-cnn", {**base, "channels": "rbg"})
    with pytest.raises(ConfigError, match="pixel_range must be positive"):
        registry.create("extractors", "motion-cnn", {**base, "pixel_range": "0"})
    with pytest.raises(ConfigError, match="give 1 value, 3"):
        registry.create("extractors", "motion-cnn", {**base, "mean": "1,2"})
