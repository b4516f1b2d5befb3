"""Image backbones from files, and the preprocessing that feeds them.

torchvision and timm are not used and no weights are downloaded: a backbone reaches actrec as
a file, in one of three formats (``load_backbone``; ``format="auto"`` picks by suffix):

* ``export``: a ``torch.export`` program (``.pt2``, ``torch.export.save``), run as exported;
* ``onnx``: an ONNX model (``.onnx``) run by onnxruntime (extra ``onnx``);
* ``state_dict``: weights (``.pt``, ``.pth``, ``.bin``, ``.ckpt``; a ``torch.save``d dict of
  tensors, possibly under ``state_dict``/``model`` and with DataParallel's ``module.``) for an
  architecture this project defines, in torchvision's parameter names so that torchvision's
  state dicts load unchanged: ``arch="resnet"`` (``actrec.nn.resnet``) or ``arch="vgg"``
  (``actrec.nn.vgg``).

Which output is taken (``output``):

* ``logits``: the model's output as given (the first output if there are several; for a state
  dict, the ``fc`` layer's output);
* ``features``: the penultimate activations. For a state dict, the pooled activations before
  ``fc`` (ResNet) or ``fc2`` after its ReLU (VGG; ``layer="fc1"`` or ``"pool5"`` for the
  others, ``fc1`` being the sign-language paper's). For a file, the tensor named ``layer`` if
  given (an ONNX tensor name, or a node name of the exported graph,
  ``print(torch.export.load(path).graph)``), else the input of the final linear layer that
  produces the model's first output (ONNX ``Gemm``, or ``MatMul`` + ``Add``; ``aten.linear`` /
  ``aten.addmm`` in an exported graph). A model whose output is not made by a
  linear layer (a backbone exported without its classifier) needs ``layer=<its output name>``.

``in_channels=C`` widens the first convolution from 3 to C input channels for stacked motion
images (the sign-language paper's cross-modality start): ``inflate="tile"`` repeats the RGB
filters C/3 times (stacks of 3-channel flow images), ``"mean"`` averages the filters over RGB
and repeats that C times (stacks of single-channel images). Not possible for ``.pt2`` programs
(their shapes are fixed when exported): export them with C channels instead. A model whose
first layer already takes C channels (trained on the stacks) is used as it is, in every format.

Threads: torch runs with ``torch.get_num_threads()`` (the extraction host sets each worker's
share); an onnxruntime session is given the same number when it is created.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from actrec.errors import ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "ARCHITECTURES",
    "FORMATS",
    "Backbone",
    "InputSpec",
    "Preprocess",
    "detect_format",
    "file_digest",
    "inflate_first_conv",
    "load_backbone",
    "load_pinned_backbone",
    "pin_backbone_file",
]

FORMATS = ("export", "onnx", "state_dict")
ARCHITECTURES = ("resnet", "vgg")
_SUFFIXES = {".pt2": "export", ".onnx": "onnx", ".pt": "state_dict", ".pth": "state_dict",
             ".bin": "state_dict", ".ckpt": "state_dict"}
_INTERPOLATIONS = ("area", "linear", "cubic")


def file_digest(path: Path) -> str:
    """The sha256 of the file at ``path`` (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pin_backbone_file(model: str | Path, sha256: str | None, *, where: str) -> tuple[Path, str]:
    """The absolute path of the backbone file ``model`` and its sha256, which an extractor
    records in its config so that a store names the exact weights. ``DataError`` naming
    ``where`` when the file is missing, or when ``sha256`` is given and the file's differs."""
    path = Path(model).expanduser().resolve()
    if not path.is_file():
        raise DataError(f"{where}: backbone file not found: {path}")
    digest = file_digest(path)
    if sha256 is not None and sha256.lower() != digest:
        raise DataError(f"{where}: backbone file {path} has sha256 {digest}, but "
                        f"sha256={sha256} was asked for (a different file)")
    return path, digest


def load_pinned_backbone(path: Path, sha256: str, *, where: str, **options: Any) -> Backbone:
    """``load_backbone(path, **options)`` of a file pinned by ``pin_backbone_file``;
    ``DataError`` naming ``where`` when the file changed since (another digest)."""
    backbone = load_backbone(path, **options)
    if backbone.digest != sha256:
        raise DataError(f"{where}: backbone file {path} changed since the extractor was "
                        f"configured (sha256 {backbone.digest}, expected {sha256})")
    return backbone


def detect_format(path: Path, format: str = "auto") -> str:
    """``format`` checked, or (for ``"auto"``) the format that ``path``'s suffix implies;
    ``ConfigError`` naming the file for an unknown suffix or format."""
    if format != "auto":
        if format not in FORMATS:
            raise ConfigError(f"backbone format must be 'auto' or one of {', '.join(FORMATS)}; "
                              f"got {format!r}")
        return format
    found = _SUFFIXES.get(Path(path).suffix.lower())
    if found is None:
        known = ", ".join(sorted(_SUFFIXES))
        raise ConfigError(f"{path}: cannot tell the backbone format from the suffix (known: "
                          f"{known}); give format=export|onnx|state_dict")
    return found


# --------------------------------------------------------------------------------------------
# Input spec and preprocessing


@dataclass(frozen=True)
class InputSpec:
    """The image batch a backbone accepts: ``[batch, channels, height, width]``, ``None``
    where any size is accepted (a dynamic dimension)."""

    channels: int
    height: int | None = None
    width: int | None = None
    batch: int | None = None

    def describe(self) -> str:
        def d(v: int | None) -> str:
            return "any" if v is None else str(v)

        return f"[{d(self.batch)}, {self.channels}, {d(self.height)}, {d(self.width)}]"


@dataclass(frozen=True)
class Preprocess:
    """Frames to a backbone's input, as torchvision's ``Resize(resize)`` + ``CenterCrop(crop)``
    + ``Normalize(mean, std)`` do: the shorter side is resized to ``resize`` (the longer one
    to ``int(resize * long / short)``), then the centre ``crop`` x ``crop`` square is cut
    (``resize=0``: the whole frame is resized to ``crop`` x ``crop`` instead). Pixel values
    ``v`` in 0..255 become ``(v / 255 * pixel_range - mean) / std`` per channel
    (``pixel_range`` 1 for torchvision models, 255 for Caffe-style ones); ``channels="bgr"``
    reverses each group of three channels (the frames arrive RGB).

    ``mean`` / ``std`` have one value, three (repeated over stacked groups of three) or one per
    channel, in the order the model takes its channels: BGR for ``channels="bgr"`` (Caffe's
    ``103.939, 116.779, 123.68``), RGB otherwise.
    """

    resize: int = 256
    crop: int = 224
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    pixel_range: float = 1.0
    channels: str = "rgb"
    interpolation: str = "area"

    def __post_init__(self) -> None:
        if self.crop < 1 or self.resize < 0:
            raise ConfigError(f"preprocessing: crop must be >= 1 and resize >= 0 (0: resize "
                              f"the whole frame to crop x crop), got crop={self.crop}, "
                              f"resize={self.resize}")
        if 0 < self.resize < self.crop:
            raise ConfigError(f"preprocessing: crop ({self.crop}) must not exceed resize "
                              f"({self.resize}), the shorter side after resizing")
        if self.channels not in ("rgb", "bgr"):
            raise ConfigError(f"preprocessing: channels must be 'rgb' or 'bgr', got "
                              f"{self.channels!r}")
        if self.interpolation not in _INTERPOLATIONS:
            raise ConfigError(f"preprocessing: interpolation must be one of "
                              f"{', '.join(_INTERPOLATIONS)}, got {self.interpolation!r}")
        if not self.mean or not self.std or any(s <= 0 for s in self.std):
            raise ConfigError(f"preprocessing: mean and std need at least one value each and "
                              f"std must be positive, got mean={self.mean}, std={self.std}")
        if not self.pixel_range > 0:
            raise ConfigError(f"preprocessing: pixel_range must be positive, got "
                              f"{self.pixel_range}")

    def describe(self) -> str:
        size = f"resize={self.resize}, crop={self.crop}" if self.resize else \
            f"resize to {self.crop}x{self.crop}"
        return f"preprocessing {size}"

    def output_shape(self, channels: int = 3) -> tuple[int, int, int]:
        """``(channels, crop, crop)``: one preprocessed image."""
        return channels, self.crop, self.crop

    def _per_channel(self, values: tuple[float, ...], channels: int, what: str) -> np.ndarray:
        if len(values) == channels or len(values) == 1:
            out = np.asarray(values, dtype=np.float32)
        elif len(values) == 3 and channels % 3 == 0:
            out = np.tile(np.asarray(values, dtype=np.float32), channels // 3)
        else:
            raise ConfigError(f"preprocessing: {what} has {len(values)} values for "
                              f"{channels}-channel images; give 1, 3 or {channels}")
        return np.broadcast_to(out, (channels,))

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames ``[B, H, W, C]`` -> float32 ``[B, C, crop, crop]`` (C-contiguous)."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[..., None]
        if frames.ndim != 4:
            raise ValueError(f"expected frames [B, H, W, C], got shape {frames.shape}")
        b, _, _, c = frames.shape
        if self.channels == "bgr" and c % 3:
            raise ConfigError(f"preprocessing: channels='bgr' needs a multiple of 3 "
                              f"channels, got {c}")
        mean = self._per_channel(self.mean, c, "mean")
        std = self._per_channel(self.std, c, "std")
        images = np.stack([self._geometry(f) for f in frames]) if b else \
            np.zeros((0, self.crop, self.crop, c), np.uint8)  # [B, crop, crop, C]
        if images.ndim == 3:
            images = images[..., None]  # cv2 drops a single channel
        if self.channels == "bgr":
            images = images.reshape(*images.shape[:3], c // 3, 3)[..., ::-1].reshape(
                *images.shape[:3], c)
        # (v / 255 * range - mean) / std as one multiply-add per value.
        scale = (self.pixel_range / 255.0 / std).astype(np.float32)
        shift = (-mean / std).astype(np.float32)
        out = images.astype(np.float32) * scale + shift  # [B, crop, crop, C]
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))

    def _geometry(self, frame: np.ndarray) -> np.ndarray:
        import cv2

        flag = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR,
                "cubic": cv2.INTER_CUBIC}[self.interpolation]
        h, w = frame.shape[:2]
        if self.resize == 0:
            if (h, w) == (self.crop, self.crop):
                return frame
            return _resize(frame, self.crop, self.crop, flag)
        if h <= w:
            nh, nw = self.resize, self.resize * w // h
        else:
            nh, nw = self.resize * h // w, self.resize
        if (nh, nw) != (h, w):
            frame = _resize(frame, nw, nh, flag)
        top = round((nh - self.crop) / 2.0)
        left = round((nw - self.crop) / 2.0)
        return frame[top:top + self.crop, left:left + self.crop]


def _resize(frame: np.ndarray, w: int, h: int, flag: int) -> np.ndarray:
    import cv2

    if frame.shape[2] <= 4:
        return cv2.resize(frame, (w, h), interpolation=flag)
    # OpenCV resizes at most 4 channels at once in some modes: go in groups.
    parts = [cv2.resize(np.ascontiguousarray(frame[:, :, i:i + 4]), (w, h), interpolation=flag)
             for i in range(0, frame.shape[2], 4)]
    return np.concatenate([p if p.ndim == 3 else p[..., None] for p in parts], axis=2)


# --------------------------------------------------------------------------------------------
# Backbones


class Backbone:
    """A loaded backbone: preprocessed images float32 ``[B, C, H, W]`` in, one float32 row per
    image out (``__call__``). Built by ``load_backbone``."""

    format: str = ""

    def __init__(self, path: Path, *, output: str, layer: str | None, device: str,
                 digest: str, spec: InputSpec) -> None:
        self.path = Path(path)
        self.output = output
        self.layer = layer
        self.device = device
        self.digest = digest
        self.input_spec = spec

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Rows float32 ``[B, D]`` for images ``[B, C, H, W]`` (a fixed-batch model is fed in
        pieces of its batch, the last one padded)."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        fixed = self.input_spec.batch
        if fixed is None or images.shape[0] == fixed:
            return self._flat(self._run(images))
        parts = []
        for i in range(0, images.shape[0], fixed):
            piece = images[i:i + fixed]
            n = piece.shape[0]
            if n < fixed:
                pad = np.zeros((fixed - n, *piece.shape[1:]), np.float32)
                piece = np.concatenate([piece, pad])
            parts.append(self._flat(self._run(piece))[:n])
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    @staticmethod
    def _flat(out: np.ndarray) -> np.ndarray:
        out = np.asarray(out, dtype=np.float32)
        return out.reshape(out.shape[0], -1)

    def _run(self, images: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_input(self, channels: int, height: int, width: int, *,
                    what: str = "the preprocessing") -> int:
        """The output length D for images ``[*, channels, height, width]``, found by running
        one zero image; ``ConfigError`` naming the file, its input shape and ``what`` gives
        when they do not fit, or when an image's output depends on the other images of its
        batch or changes from call to call (see ``check_independent``)."""
        spec = self.input_spec
        given = f"[N, {channels}, {height}, {width}]"
        if spec.channels != channels or spec.height not in (None, height) \
                or spec.width not in (None, width):
            raise ConfigError(f"backbone {self.path} takes input {spec.describe()} but {what} "
                              f"gives {given}")
        try:
            out = self(np.zeros((1, channels, height, width), np.float32))
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - the model's own shape checks
            # (torch, onnxruntime and export guards raise various types): name both shapes
            raise ConfigError(f"backbone {self.path} (input {spec.describe()}) fails on {what}'s "
                              f"{given}: {_first_line(exc)}") from None
        self.check_independent(channels, height, width)
        return int(out.shape[1])

    def check_independent(self, channels: int, height: int, width: int) -> None:
        """``ConfigError`` unless each image's output is a function of that image alone: the
        same when run alone, again, or beside another image. A model exported in training
        mode fails it (batch norm on the batch's statistics, dropout): a frame's features
        would depend on the frames extracted with it, future ones included, while the store
        records no look-ahead, and live recognition (one frame at a time) would see others."""
        rng = np.random.default_rng(0)
        pair = rng.standard_normal((2, channels, height, width)).astype(np.float32)
        first = self(pair[:1])
        again = self(pair[:1])
        both = self(pair)
        scale = max(float(np.abs(first).max(initial=0.0)), 1.0)

        def same(a: np.ndarray, b: np.ndarray) -> bool:
            return np.allclose(a, b, rtol=1e-3, atol=1e-4 * scale)

        if not (np.isfinite(first).all() and np.isfinite(both).all()):
            # (NaN never equals itself: the checks below would blame dropout)
            raise ConfigError(f"backbone {self.path}: gives NaN or infinite outputs for random "
                              f"input images (damaged weights, e.g. a negative batch-norm "
                              f"running variance?)")
        fix = "export it after model.eval() (torch.export, torch.onnx: TrainingMode.EVAL)"
        if not same(first, again):
            raise ConfigError(f"backbone {self.path}: one image's output changes from call to "
                              f"call (dropout in training mode?); {fix}")
        if not same(first, both[:1]):
            raise ConfigError(f"backbone {self.path}: an image's output depends on the other "
                              f"images of its batch (batch norm in training mode?): a frame's "
                              f"features would see the frames extracted with it, future ones "
                              f"included; {fix}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class _TorchBackbone(Backbone):
    def __init__(self, module: torch.nn.Module, **kw: Any) -> None:
        super().__init__(**kw)
        self.module = module

    def _run(self, images: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(images).to(self.device)
            out = self.module(x)
            if isinstance(out, (tuple, list)):
                out = out[0]
            return out.float().cpu().numpy()


class _OnnxBackbone(Backbone):
    format = "onnx"

    def __init__(self, session: Any, input_name: str, output_name: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.session = session
        self.input_name = input_name
        self.output_name = output_name

    def _run(self, images: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: images})[0]


def load_backbone(path: str | Path, *, format: str = "auto", arch: str = "resnet",
                  output: str = "features", layer: str | None = None, device: str = "cpu",
                  in_channels: int | None = None, inflate: str = "tile") -> Backbone:
    """Load the backbone in the file ``path`` (see the module docstring for formats, outputs,
    ``layer`` and ``in_channels`` / ``inflate``), ready to run on ``device`` in eval mode.

    Raises ``DataError`` naming the file when it is missing or cannot be read as ``format``
    (or its weights do not fit ``arch``), ``ConfigError`` for options that do not apply.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"backbone file not found: {path}")
    fmt = detect_format(path, format)
    if output not in ("features", "logits"):
        raise ConfigError(f"backbone output must be 'features' or 'logits', got {output!r}")
    if inflate not in ("tile", "mean"):
        raise ConfigError(f"inflate must be 'tile' or 'mean', got {inflate!r}")
    if in_channels is not None and in_channels < 1:
        raise ConfigError(f"in_channels must be >= 1, got {in_channels}")
    device = _check_device(device)
    common = {"path": path, "output": output, "layer": layer, "device": device,
              "digest": file_digest(path)}
    if fmt == "state_dict":
        backbone: Backbone = _load_state_dict(path, arch, output, layer, in_channels, inflate,
                                              common)
    elif fmt == "export":
        backbone = _load_export(path, output, layer, in_channels, common)
    else:
        backbone = _load_onnx(path, output, layer, in_channels, inflate, common)
    backbone.format = fmt
    return backbone


def _check_device(device: str) -> str:
    if device == "cpu":
        return device
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r}: this torch has no CUDA device available "
                              f"(use device=cpu)")
        return device
    raise ConfigError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")


def inflate_first_conv(weight: np.ndarray, channels: int, mode: str, *, where: str) -> np.ndarray:
    """First-layer filters ``[O, 3, k, k]`` widened to ``[O, channels, k, k]``: ``tile``
    repeats them ``channels / 3`` times, ``mean`` repeats their mean over RGB ``channels``
    times. Filters that already take ``channels`` (a model trained on such stacks; other
    than 3) are returned unchanged. ``ConfigError`` naming ``where`` when neither applies."""
    if weight.ndim == 4 and weight.shape[1] == channels and channels != 3:
        return weight  # trained on the stacks: used as it is
    if weight.ndim != 4 or weight.shape[1] != 3:
        took = f"{weight.shape[1]} channels" if weight.ndim == 4 else \
            f"weights of shape {list(weight.shape)}"
        raise ConfigError(f"{where}: the first convolution takes {took}; in_channels="
                          f"{channels} needs one on 3 channels (widened) or on {channels} "
                          f"(used as it is)")
    if mode == "mean":
        return np.repeat(weight.mean(axis=1, keepdims=True), channels, axis=1)
    if channels % 3:
        raise ConfigError(f"{where}: inflate='tile' repeats the RGB filters, so in_channels "
                          f"must be a multiple of 3, got {channels} (use inflate='mean')")
    return np.tile(weight, (1, channels // 3, 1, 1))


# ------------------------------------------------------------------ state dicts


# Per architecture: (its module and class, the first convolution's weight, named layers).
_ARCH = {
    "resnet": ("actrec.nn.resnet", "ResNet", "conv1.weight", ()),
    "vgg": ("actrec.nn.vgg", "VGG", "features.0.weight", ("pool5", "fc1", "fc2")),
}


def _load_state_dict(path: Path, arch: str, output: str, layer: str | None,
                     in_channels: int | None, inflate: str, common: dict) -> Backbone:
    import importlib

    import torch

    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {arch!r} for state dict {path}; expected one "
                          f"of: {', '.join(ARCHITECTURES)}")
    module_name, class_name, first_conv, layers = _ARCH[arch]
    if layer is not None and layer not in layers:
        named = f"one of {', '.join(layers)}" if layers else "none"
        raise ConfigError(f"option 'layer' for a {arch} state dict ({path}) must be {named} "
                          f"(got {layer!r}); output=features or output=logits take the "
                          f"penultimate layer or the logits")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - loaders raise many types; all mean unreadable
        raise DataError(f"{path}: cannot read it as a torch state dict: "
                        f"{_first_line(exc)}") from None
    state = _unwrap_state(obj, path)
    if in_channels is not None:
        weight = state[first_conv].numpy() if first_conv in state else np.zeros(0)
        state[first_conv] = torch.from_numpy(inflate_first_conv(
            weight, in_channels, inflate, where=str(path)))
    kind = getattr(importlib.import_module(module_name), class_name)
    try:
        model = kind.from_state_dict(state)
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DataError(f"{path}: the weights do not fit a {arch}: "
                        f"{' '.join(str(exc).split())[:300]}") from None
    model = model.eval().to(common["device"])
    if layer is not None:
        module = _Method(model, layer)
    elif output == "features":
        module = _Method(model, "features" if arch == "resnet" else "fc2")
    else:
        module = model
    spec = InputSpec(channels=model.in_channels)
    return _TorchBackbone(module, spec=spec, **common)


class _Method:
    """Callable view of a model giving one of its named activations (``model.<name>(x)``)."""

    def __init__(self, model: Any, name: str) -> None:
        self.model = model
        self.name = name

    def __call__(self, x: Any) -> Any:
        return getattr(self.model, self.name)(x)


def _unwrap_state(obj: Any, path: Path) -> dict:
    import torch

    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or \
            not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DataError(f"{path}: expected a state dict (names -> tensors, possibly under "
                        f"'state_dict' or 'model'), found {type(obj).__name__}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}  # saved from DataParallel
    return dict(obj)


# ------------------------------------------------------------------ torch.export programs


def _load_export(path: Path, output: str, layer: str | None, in_channels: int | None,
                 common: dict) -> Backbone:
    import torch

    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # noqa: BLE001 - loaders raise many types; all mean unreadable
        raise DataError(f"{path}: cannot load it as a torch.export program (.pt2): "
                        f"{_first_line(exc)}") from None
    inputs = [n for n in program.graph.nodes if n.op == "placeholder"
              and n.name in program.graph_signature.user_inputs]
    if len(inputs) != 1:
        raise DataError(f"{path}: expected a program with one input (the images), found "
                        f"{len(inputs)}")
    shape = inputs[0].meta["val"].shape
    if len(shape) != 4:
        raise DataError(f"{path}: expected a 4-d image input [N, C, H, W], found "
                        f"{len(shape)} dimensions")
    spec = InputSpec(*(int(d) if isinstance(d, int) else None for d in
                       (shape[1], shape[2], shape[3], shape[0])))
    if spec.channels is None:
        raise DataError(f"{path}: the program's channel dimension is dynamic; expected a fixed "
                        f"number of channels")
    if in_channels is not None and in_channels != spec.channels:
        raise ConfigError(f"{path}: in_channels cannot widen an exported program (its shapes "
                          f"are fixed; it takes {spec.channels} channels); export the model "
                          f"with {in_channels} input channels")
    if common["device"] != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, common["device"])
    module = program.module()
    if output == "features" or layer is not None:
        _cut_graph(module, layer, path)
    return _TorchBackbone(module, spec=spec, **common)


def _cut_graph(module: Any, layer: str | None, path: Path) -> None:
    """Make the exported ``module`` return the tensor ``layer`` (a node name), or the input of
    the final linear layer of its first output."""
    import torch

    graph = module.graph
    out = next(n for n in graph.nodes if n.op == "output")
    outputs = out.args[0] if isinstance(out.args[0], (tuple, list)) else (out.args[0],)
    if layer is not None:
        nodes = {n.name: n for n in graph.nodes if n.op in ("call_function", "placeholder",
                                                             "call_module")}
        if layer not in nodes:
            names = [n for n in nodes if not n.startswith(("p_", "b_", "_"))]
            raise ConfigError(f"{path}: no node named {layer!r} in the exported graph (e.g. "
                              f"{', '.join(names[-6:])})")
        target = nodes[layer]
    else:
        final = outputs[0]
        aten = torch.ops.aten
        after_linear = (aten.softmax.int, aten._softmax.default, aten.log_softmax.int,
                        aten._log_softmax.default)
        while getattr(final, "target", None) in after_linear:  # exported with its softmax
            final = final.args[0]
        if getattr(final, "target", None) == aten.linear.default:
            target = final.args[0]
        elif getattr(final, "target", None) == aten.addmm.default:
            target = final.args[1]
        else:
            raise ConfigError(
                f"{path}: the program's output is not made by a linear layer, so its "
                f"penultimate activations are unknown; name the tensor with layer=NAME (its "
                f"output is {getattr(final, 'name', final)!r}) or take output=logits")
    # The output spec (pytree) keeps the original structure: replace the first output only
    # (``_TorchBackbone`` reads the first of several).
    if isinstance(out.args[0], (tuple, list)):
        out.args = (type(out.args[0])([target, *outputs[1:]]),)
    else:
        out.args = (target,)
    graph.eliminate_dead_code()
    module.recompile()


# ------------------------------------------------------------------ ONNX


def _load_onnx(path: Path, output: str, layer: str | None, in_channels: int | None,
               inflate: str, common: dict) -> Backbone:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("ONNX backbones need onnxruntime: pip install 'actrec[onnx]'") from None
    model_bytes = path.read_bytes()
    output_name = None
    if output == "features" or layer is not None or in_channels is not None:
        model_bytes, output_name = _edit_onnx(model_bytes, path, output, layer, in_channels,
                                              inflate)
    options = ort.SessionOptions()
    import torch

    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if common["device"].startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ConfigError(f"device {common['device']!r}: this onnxruntime has no CUDA "
                              f"provider (install onnxruntime-gpu, or use device=cpu)")
        index = common["device"].partition(":")[2] or "0"
        providers = [("CUDAExecutionProvider", {"device_id": int(index)}),
                     "CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(model_bytes, sess_options=options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - loaders raise many types; all mean unreadable
        raise DataError(f"{path}: onnxruntime cannot load it: {_first_line(exc)}") from None
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise DataError(f"{path}: expected one 4-d image input [N, C, H, W], found "
                        f"{[(i.name, i.shape) for i in inputs]}")
    shape = inputs[0].shape
    if not isinstance(shape[1], int):
        raise DataError(f"{path}: the model's channel dimension is dynamic ({shape[1]!r}); "
                        f"expected a fixed number of channels")
    spec = InputSpec(*(d if isinstance(d, int) and d > 0 else None for d in
                       (shape[1], shape[2], shape[3], shape[0])))
    if output_name is None:
        output_name = session.get_outputs()[0].name
    return _OnnxBackbone(session, inputs[0].name, output_name, spec=spec, **common)


def _edit_onnx(model_bytes: bytes, path: Path, output: str, layer: str | None,
               in_channels: int | None, inflate: str) -> tuple[bytes, str | None]:
    """The model with the wanted tensor exposed as an output (and the first conv widened);
    returns the serialized model and the output's name (``None``: the first output)."""
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise ConfigError("picking an ONNX model's inner tensors needs the onnx package: "
                          "pip install 'actrec[onnx]'") from None
    try:
        model = onnx.load_from_string(model_bytes)
    except Exception as exc:  # noqa: BLE001 - loaders raise many types; all mean unreadable
        raise DataError(f"{path}: not a readable ONNX model: {_first_line(exc)}") from None
    graph = model.graph
    init_names = {t.name for t in graph.initializer}
    real_inputs = [i for i in graph.input if i.name not in init_names]
    if in_channels is not None:
        _widen_onnx(graph, real_inputs, in_channels, inflate, path, numpy_helper)
    name = None
    if layer is not None:
        produced = {o for n in graph.node for o in n.output} | {i.name for i in real_inputs}
        if layer not in produced:
            names = [o for n in graph.node for o in n.output][-6:]
            raise ConfigError(f"{path}: no tensor named {layer!r} in the ONNX graph (e.g. "
                              f"{', '.join(names)})")
        name = layer
    elif output == "features":
        name = _onnx_penultimate(graph, path)
    if name is not None and name not in {o.name for o in graph.output}:
        graph.output.insert(0, helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return model.SerializeToString(), name


_AFTER_LINEAR = ("Softmax", "LogSoftmax", "Identity", "Reshape", "Flatten", "Squeeze")


def _onnx_penultimate(graph: Any, path: Path) -> str:
    producer = {o: n for n in graph.node for o in n.output}
    first = graph.output[0].name
    node = producer.get(first)
    # A classifier exported with its softmax (or a reshape) after the linear layer.
    while node is not None and node.op_type in _AFTER_LINEAR and node.input[0] in producer:
        node = producer[node.input[0]]
    if node is not None and node.op_type == "Add":  # MatMul + Add: a linear layer
        node = next((producer[i] for i in node.input if i in producer
                     and producer[i].op_type == "MatMul"), node)
    if node is None or node.op_type not in ("Gemm", "MatMul"):
        made_by = node.op_type if node is not None else "an input"
        raise ConfigError(
            f"{path}: the model's output {first!r} is made by {made_by}, not a linear layer, "
            f"so its penultimate activations are unknown; name the tensor with layer=NAME "
            f"(layer={first} takes the output itself) or take output=logits")
    return node.input[0]


def _widen_onnx(graph: Any, inputs: Sequence[Any], channels: int, inflate: str, path: Path,
                numpy_helper: Any) -> None:
    if len(inputs) != 1:
        raise DataError(f"{path}: expected one image input, found {len(inputs)}")
    image = inputs[0].name
    users = [n for n in graph.node if image in n.input]
    if len(users) != 1 or users[0].op_type != "Conv":
        raise ConfigError(f"{path}: in_channels needs the image input to feed one Conv, found "
                          f"{[n.op_type for n in users]}")
    weights = {t.name: t for t in graph.initializer}
    w_name = users[0].input[1]
    if w_name not in weights:
        raise ConfigError(f"{path}: the first Conv's weights are not a constant of the model")
    tensor = weights[w_name]
    wide = inflate_first_conv(numpy_helper.to_array(tensor), channels, inflate, where=str(path))
    tensor.CopyFrom(numpy_helper.from_array(wide.astype(np.float32), w_name))
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) == 4:
        dims[1].ClearField("dim_param")
        dims[1].dim_value = channels
