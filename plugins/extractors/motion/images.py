"""Stacked motion images through a CNN backbone file: the sign-language paper's motion stream.

Per frame, the window of ``window`` frames (causal, or centred with ``centred=true``: see
``fields``) becomes a stack of motion images of ``size`` x ``size`` pixels (the grey frames are
resized to that square first, as the paper feeds 224 x 224 images), fed to a backbone file whose first convolution is widened from
3 to the stack's channels (``actrec.backbones``: ``inflate`` as the paper does), or used as it
is when it already takes them (a motion CNN trained on the stacks; the only kind a ``.pt2``
program can be):

* ``flow``: each of the window's ``window - 1`` Farneback flow fields as an RGB image whose hue
  is the flow's direction (0 degrees rightwards, counter-clockwise, y up) and whose brightness
  is its length, full at ``flow_scale`` pixels per frame; the paper stacks 10 fields
  (``window = 11``, 30 channels): the RGB filters are tiled over the stack (``inflate=tile``).
* ``mhi``: the window's motion history image (``fields.motion_history``; one channel, 255 for
  the newest change): the filters are averaged over RGB (``inflate=mean``).
* ``framediff``: the window's ``window - 1`` absolute grey differences of consecutive frames,
  one channel each; the paper stacks 5 (``window = 6``): ``inflate=mean``.

The images (uint8) are normalised with ``mean`` / ``std`` (one value, or one per channel) as
``actrec.backbones.Preprocess`` does, and the backbone's penultimate activations (or logits,
or a named ``layer``) are the features. The model file's sha256 is recorded in the config.

Where this is not the paper (Borg & Camilleri, Sec. 4.2), or the paper does not say:

* Frame rate: by default the windows run on the frames as extracted, at the dataset's label
  rate (Signing in the Wild: 5 Hz), so a 5-frame window spans 1 s there; the paper takes its
  windows at the video's own rate (25-30 fps: about 0.2 s): ``window_rate=video`` does so and
  keeps a row per label frame (``actrec.extract_video``), the look-ahead of a centred window
  recorded in label frames. (``fps=RATE`` resamples instead, a row per resampled frame.)
* ``framediff``: the paper gives both a 5-frame window and a stack of 5 difference images; 5
  consecutive differences take 6 frames (the default ``window = 6``); ``window=5`` gives the
  4 differences of a 5-frame window. It does not define the differencing: here each image is
  the absolute grey difference of two consecutive frames.
* ``mhi``: the paper does not say how the MHI is fed, nor its threshold: one image, filters
  averaged as for the differences, ``threshold`` 16 grey levels.
* ``flow``: angle -> chrominance and length -> luminance is done in HSV (hue, value, full
  saturation), as OpenCV's flow pictures are; the paper gives no scale for the length
  (``flow_scale``). Channels are RGB per field, oldest field first.
* ``mean`` / ``std`` / ``pixel_range`` / ``channels``: set them to what the backbone was
  trained with, as for the ``cnn`` extractor (the defaults are ImageNet's grey mean and std on
  0..1). The paper's Keras VGG-16 is Caffe-style: BGR images on 0..255 minus per-channel means,
  so ``pixel_range=255 channels=bgr mean=103.939,116.779,123.68 std=1`` for flow stacks (the
  three values repeat over the fields; ``channels`` orders each flow image's colours) and one
  mean for the grey stacks (which have no colour order).
* Causal by default; the paper does not say whether its windows are causal or centred.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from actrec.errors import ConfigError
from actrec.plugin_api import ExtractRuntime, FeatureExtractor, PluginConfig

from .fields import check_window_rate, motion_history, sliding_windows, window_slices

if TYPE_CHECKING:  # pragma: no cover
    from actrec.backbones import Backbone

__all__ = ["METHODS", "MotionCNN", "flow_image"]

_WHERE = "extractor 'motion-cnn'"
# method -> (fields it is built from, default window, first-layer inflation)
METHODS = {"flow": ("flow", 11, "tile"), "mhi": ("diff", 5, "mean"),
           "framediff": ("diff", 6, "mean")}


def flow_image(flow: np.ndarray, scale: float) -> np.ndarray:
    """Flow fields ``[..., S, S, 2]`` -> uint8 RGB ``[..., S, S, 3]``: hue = direction
    (counter-clockwise from rightwards, y up), full saturation, value = length / ``scale``
    (clipped to 1)."""
    import cv2

    u, v = flow[..., 0], flow[..., 1]
    angle = np.degrees(np.arctan2(-v, u)) % 360.0
    hsv = np.empty((*flow.shape[:-1], 3), dtype=np.uint8)
    hsv[..., 0] = np.round(angle / 2.0).astype(np.int64) % 180  # OpenCV hue: 0..179
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(np.hypot(u, v) / scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
    flat = hsv.reshape(-1, *hsv.shape[-3:])
    rgb = np.stack([cv2.cvtColor(img, cv2.COLOR_HSV2RGB) for img in flat])
    return rgb.reshape(hsv.shape)


class MotionCNN(FeatureExtractor):
    """CNN features of stacked motion images (see the module docstring)."""

    name = "motion-cnn"

    @dataclass(frozen=True)
    class Config(PluginConfig):
        method: str = "flow"  # flow | mhi | framediff
        model: Path | None = None  # the backbone file (required)
        format: str = "auto"  # auto (by suffix) | export | onnx | state_dict
        arch: str = "resnet"  # the architecture of a state dict
        output: str = "features"  # features (penultimate) | logits
        layer: str | None = None  # a named tensor of an exported / ONNX model instead
        size: int = 224  # motion images are size x size
        window: int | None = None  # frames per window; None: flow 11, mhi 5, framediff 6
        centred: bool = False  # centre the window on the frame: looks window // 2 ahead
        threshold: float = 16.0  # mhi: grey levels a pixel must change by to count
        flow_scale: float = 8.0  # flow: length (pixels per frame) shown at full brightness
        mean: tuple[float, ...] = (0.449,)  # per channel (one value: every channel)
        std: tuple[float, ...] = (0.226,)
        pixel_range: float = 1.0  # images scaled to [0, pixel_range] before mean/std
        channels: str = "rgb"  # rgb | bgr: the colour order of each flow image the model takes
        fps: float | None = None  # resample to this rate first; None: the dataset's rate
        # the frames a window counts: the label frames, or the video's own (a row kept per
        # label frame; see actrec.extract_video)
        window_rate: str = "labels"
        sha256: str | None = None  # the model file's digest: filled in; if given, checked

    def __init__(self, config: PluginConfig | None = None) -> None:
        from actrec.backbones import Preprocess, pin_backbone_file

        super().__init__(config)
        cfg = self.config
        if cfg.method not in METHODS:
            raise ConfigError(f"option 'method' for {_WHERE} must be one of "
                              f"{', '.join(METHODS)}, got {cfg.method!r}")
        kind, default_window, _ = METHODS[cfg.method]
        window = cfg.window if cfg.window is not None else default_window
        problems = []
        if window < 2:
            problems.append(f"'window' must be >= 2, got {window}")
        if cfg.size < 8:
            problems.append(f"'size' must be >= 8, got {cfg.size}")
        if not cfg.flow_scale > 0:
            problems.append(f"'flow_scale' must be positive, got {cfg.flow_scale}")
        if cfg.fps is not None and not cfg.fps > 0:
            problems.append(f"'fps' must be positive, got {cfg.fps}")
        if cfg.channels not in ("rgb", "bgr"):
            problems.append(f"'channels' must be rgb or bgr, got {cfg.channels!r}")
        if problems:
            raise ConfigError(f"{_WHERE}: option " + "; option ".join(problems))
        check_window_rate(cfg, _WHERE)
        if cfg.model is None:
            raise ConfigError(f"{_WHERE} needs a backbone file: -x model=PATH (.onnx, or a "
                              f"state dict .pt/.pth for arch=resnet, whose first layer is "
                              f"widened to the stack; or a .pt2/.onnx/state dict whose first "
                              f"layer already takes the stack)")
        model, digest = pin_backbone_file(cfg.model, cfg.sha256, where=_WHERE)
        # Recorded in the store: the resolved window, an absolute path and the file's digest.
        self.config = dataclasses.replace(cfg, model=model, sha256=digest, window=window)
        self.kind = kind
        colour = cfg.method == "flow"  # flow images are RGB; the other stacks are grey
        for key in ("mean", "std"):
            n = len(getattr(cfg, key))
            if n not in (1, self.channels) and not (colour and n == 3):
                per = "1 value, 3 (one per colour, for every field) " if colour else "1 value "
                raise ConfigError(f"option '{key}' for {_WHERE}: give {per}or one per "
                                  f"channel ({self.channels} for this {cfg.method} stack), got "
                                  f"{n}")
        try:
            # Grey stacks have no colour order: 'channels' orders the flow images' colours.
            self.preprocess = Preprocess(resize=0, crop=cfg.size, mean=tuple(cfg.mean),
                                         std=tuple(cfg.std), pixel_range=cfg.pixel_range,
                                         channels=cfg.channels if colour else "rgb")
        except ConfigError as exc:
            raise ConfigError(f"{_WHERE}: {exc}") from None
        self._backbone: Backbone | None = None
        self._dim: int | None = None

    @property
    def lookahead(self) -> int:  # type: ignore[override]
        return self.config.window // 2 if self.config.centred else 0

    @property
    def video_rate(self) -> bool:
        """Whether the windows run over the video's own frames (``window_rate=video``)."""
        return self.config.window_rate == "video"

    @property
    def channels(self) -> int:
        """Channels of one stacked input: 3 per flow field, 1 for the MHI, 1 per difference."""
        w1 = self.config.window - 1
        return {"flow": 3 * w1, "mhi": 1, "framediff": w1}[self.config.method]

    def setup(self, runtime: ExtractRuntime) -> None:
        """Load the backbone on ``runtime.device``, widened to the stack's channels."""
        super().setup(runtime)
        self._load(runtime.device)

    def _load(self, device: str) -> Backbone:
        from actrec.backbones import load_pinned_backbone

        c = self.config
        backbone = load_pinned_backbone(c.model, c.sha256, where=_WHERE, format=c.format,
                                        arch=c.arch, output=c.output, layer=c.layer,
                                        device=device, in_channels=self.channels,
                                        inflate=METHODS[c.method][2])
        what = f"the {c.method} stack ({self.channels} channels of {c.size} x {c.size})"
        self._dim = backbone.check_input(self.channels, c.size, c.size, what=what)
        self._backbone = backbone
        return backbone

    def dim(self) -> int:
        if self._dim is None:
            self._load(self.runtime.device)
        assert self._dim is not None
        return self._dim

    def images(self, fields: np.ndarray) -> np.ndarray:
        """The stacked motion images of each window of ``fields``, uint8 ``[B, S, S, C]``."""
        c = self.config
        if c.method == "mhi":
            mhi = motion_history(fields, c.window, c.threshold)
            return np.round(mhi * 255.0).astype(np.uint8)[..., None]
        if c.method == "flow":
            # Each field is in window - 1 windows: colour it once. [w - 2 + B, S, S, 3]
            coloured = flow_image(fields, c.flow_scale)
            return np.concatenate([img for _, img in window_slices(coloured, c.window)],
                                  axis=-1)  # oldest first
        grey = np.clip(fields + 0.5, 0, 255).astype(np.uint8)  # [w - 2 + B, S, S]
        return np.stack([d for _, d in window_slices(grey, c.window)], axis=-1)

    def extract(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """float32 ``[B', dim]`` per input batch ``[B, H, W, 3]`` uint8 RGB; one row per frame
        in total (a centred extractor's rows lag ``lookahead`` frames behind)."""
        backbone = self._backbone or self._load(self.runtime.device)

        def compute(fields: np.ndarray) -> np.ndarray:
            return backbone(self.preprocess.apply(self.images(fields)))

        yield from sliding_windows(batches, kind=self.kind, window=self.config.window,
                                   size=self.config.size, centred=self.config.centred,
                                   compute=compute, keep_aspect=False)
