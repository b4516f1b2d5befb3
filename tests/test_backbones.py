"""actrec.backbones and actrec.nn.resnet: one set of weights as a state dict, a torch.export
program and an ONNX model (real files) gives the same features; preprocessing by hand."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pytest
import torch

from actrec.backbones import InputSpec, Preprocess, load_backbone
from actrec.errors import ConfigError, DataError
from actrec.nn.resnet import ResNet, resnet_layout
from actrec.nn.vgg import VGG, vgg_layout

SMALL = [(1, 8, 8), (2, 16, 16), (1, 16, 16), (1, 24, 24)]


def small_resnet(seed: int = 0, num_classes: int = 5, block: str = "basic") -> ResNet:
    """A small ResNet with random weights AND random batch-norm statistics (so eval-mode
    batch norm is not the identity and a format that ignored it would show)."""
    torch.manual_seed(seed)
    stages = SMALL if block == "basic" else [(1, 4, 16), (1, 8, 32), (1, 8, 32), (1, 8, 32)]
    model = ResNet(stages, stem=8, num_classes=num_classes, block=block)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
    return model.eval()


def export_all(model: ResNet, folder, size: int = 32, batch: int | None = None):
    """The model saved three ways: state dict (.pth), torch.export (.pt2), ONNX (.onnx)."""
    x = torch.randn(batch or 2, 3, size, size)
    torch.save(model.state_dict(), folder / "m.pth")
    dyn = None if batch else ({0: torch.export.Dim("batch", min=1, max=4096)},)
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=dyn), folder / "m.pt2")
    axes = None if batch else {"images": {0: "n"}, "logits": {0: "n"}}
    with _quiet():
        torch.onnx.export(model, (x,), str(folder / "m.onnx"), dynamo=False,
                          input_names=["images"], output_names=["logits"], dynamic_axes=axes)
    return folder / "m.pth", folder / "m.pt2", folder / "m.onnx"


@contextlib.contextmanager
def _quiet():
    """torch.onnx's legacy exporter warns that it is deprecated: it works offline."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ------------------------------------------------------------------ the architecture


def test_resnet18_and_resnet50_have_torchvisions_names_and_sizes():
    with torch.device("meta"):
        r18 = ResNet([(2, 64, 64), (2, 128, 128), (2, 256, 256), (2, 512, 512)])
        r50 = ResNet([(3, 64, 256), (4, 128, 512), (6, 256, 1024), (3, 512, 2048)],
                     block="bottleneck")
    # Parameter counts of torchvision's resnet18 and resnet50.
    assert sum(p.numel() for p in r18.parameters()) == 11_689_512
    assert sum(p.numel() for p in r50.parameters()) == 25_557_032
    keys = list(r18.state_dict())
    assert len(keys) == 122 and keys[:6] == ["conv1.weight", "bn1.weight", "bn1.bias",
                                             "bn1.running_mean", "bn1.running_var",
                                             "bn1.num_batches_tracked"]
    assert "layer2.0.downsample.0.weight" in keys and "layer2.0.downsample.1.running_var" in keys
    assert "layer1.0.downsample.0.weight" not in keys and keys[-2:] == ["fc.weight", "fc.bias"]
    assert "layer4.2.conv3.weight" in r50.state_dict() and r50.feature_dim == 2048
    layout = resnet_layout(r50.state_dict())
    assert layout["block"] == "bottleneck" and layout["stages"][2] == (6, 256, 1024)
    assert resnet_layout(r18.state_dict())["stages"][3] == (2, 512, 512)


def test_resnet_from_state_dict_rebuilds_the_same_network():
    model = small_resnet(3, block="bottleneck")
    again = ResNet.from_state_dict(model.state_dict())
    again.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 40, 40)
    torch.testing.assert_close(again.eval()(x), model(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="no 'fc.weight'"):
        resnet_layout({"conv1.weight": torch.zeros(1)})


# ------------------------------------------------------------------ three formats, one network


@pytest.mark.parametrize("output", ["features", "logits"])
def test_state_dict_export_and_onnx_give_the_same_rows(tmp_path, output):
    model = small_resnet()
    images = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        x = torch.from_numpy(images)
        want = (model.features(x) if output == "features" else model(x)).numpy()
    assert want.shape == (5, 24 if output == "features" else 5)
    for path in export_all(model, tmp_path):
        backbone = load_backbone(path, output=output)
        got = backbone(images)
        assert got.dtype == np.float32 and got.shape == want.shape, path
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=str(path))
        assert backbone.check_input(3, 32, 32) == want.shape[1]
    assert load_backbone(tmp_path / "m.pth").input_spec == InputSpec(3)  # any size
    assert load_backbone(tmp_path / "m.onnx").input_spec == InputSpec(3, 32, 32)
    assert load_backbone(tmp_path / "m.pt2").format == "export"


def test_state_dict_wrappers_load(tmp_path):
    model = small_resnet()
    state = {"module." + k: v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ckpt.pth")
    images = np.ones((1, 3, 32, 32), np.float32)
    with torch.no_grad():
        want = model.features(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(load_backbone(tmp_path / "ckpt.pth")(images), want, rtol=1e-6)


def test_fixed_batch_onnx_model_is_fed_in_padded_pieces(tmp_path):
    model = small_resnet()
    _, _, onnx_path = export_all(model, tmp_path, batch=2)
    backbone = load_backbone(onnx_path)
    assert backbone.input_spec == InputSpec(3, 32, 32, batch=2)
    images = np.random.default_rng(1).standard_normal((5, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = model.features(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(backbone(images), want, rtol=1e-4, atol=1e-5)


def test_named_layer_and_models_without_a_final_linear_layer(tmp_path):
    headless = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
                                   torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    x = torch.randn(2, 3, 16, 16)
    with _quiet():
        torch.onnx.export(headless, (x,), str(tmp_path / "h.onnx"), dynamo=False,
                          input_names=["images"], output_names=["pooled"])
    torch.export.save(torch.export.export(headless, (x,)), tmp_path / "h.pt2")
    with torch.no_grad():
        want = headless(x).numpy()
    for path, name in ((tmp_path / "h.onnx", "pooled"), (tmp_path / "h.pt2", "flatten")):
        with pytest.raises(ConfigError, match="not .*linear layer.*layer=NAME"):
            load_backbone(path)  # output=features: the penultimate layer is unknown
        got = load_backbone(path, layer=name)(x.numpy())
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(load_backbone(path, output="logits")(x.numpy()), want,
                                   rtol=1e-5, atol=1e-6)
        with pytest.raises(ConfigError, match="no (tensor|node) named 'nope'"):
            load_backbone(path, layer="nope")


# ------------------------------------------------------------------ stacked motion images


@pytest.mark.parametrize("channels,inflate", [(9, "tile"), (5, "mean")])
def test_first_layer_widened_for_stacked_images(tmp_path, channels, inflate):
    model = small_resnet()
    pth, _, onnx_path = export_all(model, tmp_path)
    w = model.conv1.weight.detach()
    wide = w.repeat(1, channels // 3, 1, 1) if inflate == "tile" else \
        w.mean(dim=1, keepdim=True).repeat(1, channels, 1, 1)
    reference = ResNet.from_state_dict({**model.state_dict(), "conv1.weight": wide})
    reference.load_state_dict({**model.state_dict(), "conv1.weight": wide})
    images = np.random.default_rng(2).standard_normal((3, channels, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = reference.eval().features(torch.from_numpy(images)).numpy()
    for path in (pth, onnx_path):
        backbone = load_backbone(path, in_channels=channels, inflate=inflate)
        assert backbone.input_spec.channels == channels
        np.testing.assert_allclose(backbone(images), want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="multiple of 3"):
        load_backbone(pth, in_channels=5, inflate="tile")
    with pytest.raises(ConfigError, match="export the model with 9 input channels"):
        load_backbone(tmp_path / "m.pt2", in_channels=9)


# ------------------------------------------------------------------ errors


def test_input_shape_mismatch_names_both_shapes(tmp_path):
    _, pt2, onnx_path = export_all(small_resnet(), tmp_path, size=64)
    for path in (pt2, onnx_path):
        backbone = load_backbone(path)
        with pytest.raises(ConfigError) as err:
            backbone.check_input(3, 32, 32, what="the preprocessing (resize=40, crop=32)")
        text = str(err.value)
        assert "[any, 3, 64, 64]" in text and "[N, 3, 32, 32]" in text and "crop=32" in text
        with pytest.raises(ConfigError, match=r"\[N, 1, 64, 64\]"):
            backbone.check_input(1, 64, 64)


def test_bad_files_and_options(tmp_path):
    with pytest.raises(DataError, match="backbone file not found"):
        load_backbone(tmp_path / "none.pt2")
    (tmp_path / "w.xyz").write_bytes(b"x")
    with pytest.raises(ConfigError, match="cannot tell the backbone format"):
        load_backbone(tmp_path / "w.xyz")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(DataError, match="junk.onnx"):
        load_backbone(tmp_path / "junk.onnx", output="logits")
    (tmp_path / "junk.pt2").write_bytes(b"not a program")
    with pytest.raises(DataError, match="junk.pt2: cannot load it as a torch.export program"):
        load_backbone(tmp_path / "junk.pt2")
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(DataError, match="other.pth: not a ResNet state dict"):
        load_backbone(tmp_path / "other.pth")
    state = small_resnet().state_dict()
    state["fc.bias"] = torch.zeros(7)  # fc.weight says 5 classes
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(DataError, match="bad.pth: the weights do not fit a resnet"):
        load_backbone(tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match="unknown architecture 'vit'"):
        load_backbone(tmp_path / "bad.pth", arch="vit")
    with pytest.raises(ConfigError, match="output must be 'features' or 'logits'"):
        load_backbone(tmp_path / "bad.pth", output="probs")


# ------------------------------------------------------------------ preprocessing


def test_preprocess_resize_crop_and_normalise_by_hand():
    # A 40 x 60 frame: the shorter side goes 40 -> 20, the longer 60 -> 30, then the centre
    # 20 x 20 is cut: columns 5..24 of the resized frame = source columns 10..49.
    frame = np.zeros((40, 60, 3), np.uint8)
    frame[:, :, 0] = (np.arange(60) * 4)[None, :]  # red rises along x
    frame[:, :, 1] = 100
    frame[:, :, 2] = 200
    pre = Preprocess(resize=20, crop=20, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))
    out = pre.apply(frame[None])
    assert out.shape == (1, 3, 20, 20) and out.dtype == np.float32
    # Area resizing by 2 averages 2 x 2 blocks: column j of the crop is source columns
    # 10 + 2j and 11 + 2j, red (4 * (10 + 2j) + 4 * (11 + 2j)) / 2 = 42 + 8 j.
    red = (42 + 8 * np.arange(20)) / 255.0
    np.testing.assert_allclose(out[0, 0, 7], (red - 0.5) / 0.5, rtol=1e-5)
    np.testing.assert_allclose(out[0, 1], (100 / 255 - 0.25) / 0.25, rtol=1e-5)
    np.testing.assert_allclose(out[0, 2], (200 / 255) / 2.0, rtol=1e-5)
    # BGR, 0..255 values, the whole frame squashed to 20 x 20 (resize=0).
    caffe = Preprocess(resize=0, crop=20, mean=(10.0,), std=(1.0,), pixel_range=255.0,
                       channels="bgr")
    out = caffe.apply(frame[None])
    np.testing.assert_allclose(out[0, 0], 200 - 10.0)
    np.testing.assert_allclose(out[0, 1], 100 - 10.0)
    assert out[0, 2, 0, 0] == pytest.approx((0 + 4 + 8) / 3 - 10, abs=0.01)  # 3 columns -> 1
    # Caffe's mean is given in the model's (BGR) order: blue 200 - 103.939 first.
    caffe = Preprocess(resize=0, crop=20, mean=(103.939, 116.779, 123.68), std=(1.0,),
                       pixel_range=255.0, channels="bgr")
    out = caffe.apply(frame[None])
    np.testing.assert_allclose(out[0, 0], 200 - 103.939, rtol=1e-5)
    np.testing.assert_allclose(out[0, 1], 100 - 116.779, rtol=1e-5)
    stacked = Preprocess(resize=0, crop=8, mean=(0.5,), std=(0.5,)).apply(
        np.full((2, 16, 16, 10), 255, np.uint8))
    assert stacked.shape == (2, 10, 8, 8) and np.all(stacked == 1.0)


def test_preprocess_rejects_bad_settings():
    with pytest.raises(ConfigError, match="crop .*must not exceed resize"):
        Preprocess(resize=100, crop=224)
    with pytest.raises(ConfigError, match="std must be positive"):
        Preprocess(std=(0.0,))
    with pytest.raises(ConfigError, match="mean has 2 values for 3-channel"):
        Preprocess(mean=(0.1, 0.2)).apply(np.zeros((1, 300, 300, 3), np.uint8))


# ------------------------------------------------------------------ VGG


def small_vgg(seed: int = 0, batch_norm: bool = False) -> VGG:
    torch.manual_seed(seed)
    return VGG([8, "M", 16, 16, "M", 16, "M"], batch_norm=batch_norm, hidden=32, pool=2,
               num_classes=5).eval()


def test_vgg16_has_torchvisions_names_and_size():
    cfg16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
             512, 512, 512, "M"]
    with torch.device("meta"):
        vgg16 = VGG(cfg16)
        vgg16_bn = VGG(cfg16, batch_norm=True)
    # Parameter counts of torchvision's vgg16 and vgg16_bn.
    assert sum(p.numel() for p in vgg16.parameters()) == 138_357_544
    assert sum(p.numel() for p in vgg16_bn.parameters()) == 138_365_992
    keys = list(vgg16.state_dict())
    assert keys[:2] == ["features.0.weight", "features.0.bias"]
    assert "features.28.weight" in keys and keys[-2:] == ["classifier.6.weight",
                                                          "classifier.6.bias"]
    assert vgg_layout(vgg16.state_dict()) == {"cfg": cfg16, "batch_norm": False,
                                              "in_channels": 3, "hidden": 4096, "pool": 7,
                                              "num_classes": 1000}
    assert vgg_layout(vgg16_bn.state_dict())["batch_norm"] is True
    assert vgg_layout(vgg16_bn.state_dict())["cfg"] == cfg16


def test_vgg_state_dict_export_and_onnx_give_the_same_rows(tmp_path):
    model = small_vgg()
    x = torch.randn(2, 3, 32, 32)
    torch.save(model.state_dict(), tmp_path / "v.pth")
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=(
        {0: torch.export.Dim("batch", min=1, max=4096)},)), tmp_path / "v.pt2")
    with _quiet():
        torch.onnx.export(model, (x,), str(tmp_path / "v.onnx"), dynamo=False,
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "n"}, "logits": {0: "n"}})
    images = np.random.default_rng(3).standard_normal((3, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        t = torch.from_numpy(images)
        fc1, fc2, logits = model.fc1(t).numpy(), model.fc2(t).numpy(), model(t).numpy()
        pool5 = model.pool5(t).numpy()
    # By hand, Keras' fc1 and fc2: dense layers with their ReLU.
    w = {k: v.numpy() for k, v in model.state_dict().items()}
    np.testing.assert_allclose(fc1, np.maximum(pool5 @ w["classifier.0.weight"].T
                                               + w["classifier.0.bias"], 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fc2, np.maximum(fc1 @ w["classifier.3.weight"].T
                                               + w["classifier.3.bias"], 0), rtol=1e-5, atol=1e-6)
    for path in (tmp_path / "v.pth", tmp_path / "v.pt2", tmp_path / "v.onnx"):
        got = load_backbone(path, arch="vgg")(images)  # penultimate: fc2 after its ReLU
        np.testing.assert_allclose(got, fc2, rtol=1e-4, atol=1e-5, err_msg=str(path))
        np.testing.assert_allclose(load_backbone(path, arch="vgg", output="logits")(images),
                                   logits, rtol=1e-4, atol=1e-5, err_msg=str(path))
    np.testing.assert_allclose(load_backbone(tmp_path / "v.pth", arch="vgg", layer="fc1")(images),
                               fc1, rtol=1e-5, atol=1e-6)
    assert load_backbone(tmp_path / "v.pth", arch="vgg", layer="pool5")(images).shape == (3, 64)
    with pytest.raises(ConfigError, match="must be one of pool5, fc1, fc2"):
        load_backbone(tmp_path / "v.pth", arch="vgg", layer="conv5")
    with pytest.raises(ConfigError, match="for a resnet state dict .* must be none"):
        load_backbone(tmp_path / "v.pth", layer="fc1")
    with pytest.raises(DataError, match="v.pth: not a ResNet state dict"):
        load_backbone(tmp_path / "v.pth")  # arch=resnet is the default
    wide = load_backbone(tmp_path / "v.pth", arch="vgg", in_channels=6)
    assert wide.input_spec.channels == 6
    doubled = np.concatenate([images, images], axis=1)
    state = {**model.state_dict(),
             "features.0.weight": model.features[0].weight.detach().repeat(1, 2, 1, 1)}
    reference = VGG.from_state_dict(state)
    reference.load_state_dict(state)
    with torch.no_grad():
        want = reference.eval().fc2(torch.from_numpy(doubled)).numpy()
    np.testing.assert_allclose(wide(doubled), want, rtol=1e-4, atol=1e-5)


def test_vgg_with_batch_norm_loads(tmp_path):
    model = small_vgg(1, batch_norm=True)
    torch.save(model.state_dict(), tmp_path / "bn.pth")
    images = np.random.default_rng(4).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = model.fc2(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(load_backbone(tmp_path / "bn.pth", arch="vgg")(images), want,
                               rtol=1e-5, atol=1e-6)


class _WithSoftmax(torch.nn.Module):
    """A classifier exported with its softmax, returning (probabilities, logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
                                        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        logits = self.fc(self.body(x))
        return logits.softmax(dim=1), logits


def test_penultimate_found_behind_a_final_softmax_and_beside_other_outputs(tmp_path):
    torch.manual_seed(5)
    model = _WithSoftmax().eval()
    x = torch.randn(2, 3, 16, 16)
    with _quiet():
        torch.onnx.export(model, (x,), str(tmp_path / "s.onnx"), dynamo=False,
                          input_names=["images"], output_names=["probs", "logits"])
    torch.export.save(torch.export.export(model, (x,)), tmp_path / "s.pt2")
    with torch.no_grad():
        feats, (probs, _) = model.body(x).numpy(), model(x)
    for path in (tmp_path / "s.onnx", tmp_path / "s.pt2"):
        np.testing.assert_allclose(load_backbone(path)(x.numpy()), feats, rtol=1e-5, atol=1e-6,
                                   err_msg=str(path))
        np.testing.assert_allclose(load_backbone(path, output="logits")(x.numpy()),
                                   probs.numpy(), rtol=1e-5, atol=1e-6, err_msg=str(path))


def test_onnx_built_with_the_helper_api_matmul_add_classifier(tmp_path):
    """A model as the dynamo exporter writes classifiers (MatMul + Add), made with onnx.helper:
    features are the MatMul's input, here the globally pooled channels."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(6)
    w = rng.standard_normal((3, 5)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    nodes = [helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w"], ["mm"]),
             helper.make_node("Add", ["mm", "b"], ["scores"])]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                      ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 5])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, tmp_path / "tiny.onnx")
    images = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    pooled = images.mean(axis=(2, 3))  # by hand
    backbone = load_backbone(tmp_path / "tiny.onnx")
    assert backbone.input_spec == InputSpec(3, 8, 8) and backbone.check_input(3, 8, 8) == 3
    np.testing.assert_allclose(backbone(images), pooled, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(load_backbone(tmp_path / "tiny.onnx", output="logits")(images),
                               pooled @ w + b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="needs the image input to feed one Conv"):
        load_backbone(tmp_path / "tiny.onnx", in_channels=4, inflate="mean")  # no first conv


class _BatchNormNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.c(x))).mean((2, 3)))


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_backbone_exported_in_training_mode_is_refused(tmp_path, fmt):
    """Batch norm on the batch's statistics: frame t's features would depend on the frames
    extracted with it (future ones). The same network exported after eval() loads."""
    torch.manual_seed(0)
    for mode in ("train", "eval"):
        net = getattr(_BatchNormNet(), mode)()
        x = torch.randn(2, 3, 16, 16)
        path = tmp_path / f"{mode}.{fmt}"
        if fmt == "pt2":
            dyn = ({0: torch.export.Dim("n", min=1, max=64)},)
            torch.export.save(torch.export.export(net, (x,), dynamic_shapes=dyn), path)
        else:
            with _quiet():
                torch.onnx.export(net, (x,), str(path), dynamo=False, input_names=["x"],
                                  output_names=["y"], dynamic_axes={"x": {0: "n"}},
                                  training=torch.onnx.TrainingMode.TRAINING if mode == "train"
                                  else torch.onnx.TrainingMode.EVAL)
        backbone = load_backbone(path, output="logits")
        if mode == "train":
            with pytest.raises(ConfigError, match="depends on the other images of its batch"):
                backbone.check_input(3, 16, 16)
        else:
            assert backbone.check_input(3, 16, 16) == 5


def test_backbone_whose_output_changes_between_calls_is_refused(tmp_path):
    """Dropout kept active by a training-mode export: features would be random draws."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 6),
                              torch.nn.Dropout(0.5)).train()
    path = tmp_path / "drop.pt2"
    torch.export.save(torch.export.export(
        net, (torch.randn(2, 3, 8, 8),), dynamic_shapes=({0: torch.export.Dim("n", max=64)},)),
        path)
    with pytest.raises(ConfigError, match="changes from call to call"):
        load_backbone(path, output="logits").check_input(3, 8, 8)
