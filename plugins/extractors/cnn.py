"""The built-in ``cnn`` extractor: a CNN backbone from a file, one feature row per frame.

The backbone is a ``torch.export`` program (``.pt2``), an ONNX model (``.onnx``, run by
onnxruntime) or a state dict of an architecture actrec defines (``arch=resnet`` or ``vgg``, in
torchvision's naming); see ``actrec.backbones`` for how the file is read and which tensor
``output=features|logits`` (or ``layer=NAME``) takes. Each frame is preprocessed as
``actrec.backbones.Preprocess`` says (resize the shorter side, centre crop, scale to
``pixel_range``, subtract ``mean``, divide by ``std``, ``channels`` order); all of it is part of
the config, which the feature store records, together with the model file's sha256 so that a
store never mixes features of two different files.

Frames are independent: the extractor is causal (``lookahead = 0``) and its output does not
depend on how frames are batched. Constructing the extractor checks the backbone on the CPU
(its file, and that it takes the preprocessed frames: a ``ConfigError`` naming both shapes
otherwise); the device and threads come from the host (``FeatureExtractor.setup``), which is
where the backbone is loaded for extraction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from actrec.errors import ConfigError
from actrec.plugin_api import ExtractRuntime, FeatureExtractor, PluginConfig

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from actrec.backbones import Backbone, Preprocess

__all__ = ["CNNExtractor"]

_WHERE = "extractor 'cnn'"


class CNNExtractor(FeatureExtractor):
    """Penultimate activations or logits of a backbone file, per frame."""

    name = "cnn"
    lookahead = 0

    @dataclass(frozen=True)
    class Config(PluginConfig):
        model: Path | None = None  # the backbone file (required)
        format: str = "auto"  # auto (by suffix) | export | onnx | state_dict
        arch: str = "resnet"  # the architecture of a state dict: resnet | vgg
        output: str = "features"  # features (penultimate) | logits
        layer: str | None = None  # a named tensor instead (ONNX / .pt2; vgg: fc1, fc2, pool5)
        resize: int = 256  # shorter side; 0: the whole frame to crop x crop
        crop: int = 224  # centre square
        mean: tuple[float, ...] = (0.485, 0.456, 0.406)
        std: tuple[float, ...] = (0.229, 0.224, 0.225)
        pixel_range: float = 1.0  # pixels scaled to [0, pixel_range] before mean/std
        channels: str = "rgb"  # rgb | bgr: the order the model expects
        interpolation: str = "area"  # area | linear | cubic
        fps: float | None = None  # resample to this rate first; None: the dataset's rate
        sha256: str | None = None  # the model file's digest: filled in; if given, checked

    def __init__(self, config: PluginConfig | None = None) -> None:
        from actrec.backbones import detect_format, pin_backbone_file

        super().__init__(config)
        cfg = self.config
        if cfg.model is None:
            raise ConfigError(f"{_WHERE} needs a backbone file: -x model=PATH (.pt2, .onnx, or "
                              f"a state dict .pt/.pth for arch=resnet|vgg)")
        model, digest = pin_backbone_file(cfg.model, cfg.sha256, where=_WHERE)
        if cfg.output not in ("features", "logits"):
            raise ConfigError(f"option 'output' for {_WHERE} must be 'features' or 'logits', "
                              f"got {cfg.output!r}")
        if cfg.fps is not None and cfg.fps <= 0:
            raise ConfigError(f"option 'fps' for {_WHERE} must be positive, got {cfg.fps}")
        try:
            detect_format(model, cfg.format)
            self.preprocess = self._preprocess()
        except ConfigError as exc:
            raise ConfigError(f"{_WHERE}: {exc}") from None
        # The store records the config: an absolute path and the file's digest name the model.
        self.config = dataclasses.replace(cfg, model=model, sha256=digest)
        self._backbone: Backbone | None = None
        self._dim: int | None = None
        # Whether the backbone takes the preprocessed frames is an option check: done here,
        # on the CPU, before any store is made; setup() loads it again where it will run.
        self._load("cpu")
        self._backbone = None

    def _preprocess(self) -> Preprocess:
        from actrec.backbones import Preprocess

        c = self.config
        return Preprocess(resize=c.resize, crop=c.crop, mean=tuple(c.mean), std=tuple(c.std),
                          pixel_range=c.pixel_range, channels=c.channels,
                          interpolation=c.interpolation)

    def setup(self, runtime: ExtractRuntime) -> None:
        """Load the backbone on ``runtime.device`` and check it takes the preprocessed frames."""
        super().setup(runtime)
        self._load(runtime.device)

    def _load(self, device: str) -> Backbone:
        from actrec.backbones import load_pinned_backbone

        c = self.config
        backbone = load_pinned_backbone(c.model, c.sha256, where=_WHERE, format=c.format,
                                        arch=c.arch, output=c.output, layer=c.layer,
                                        device=device)
        channels, size, _ = self.preprocess.output_shape(3)
        what = f"the preprocessing (resize={c.resize}, crop={c.crop})"
        self._dim = backbone.check_input(channels, size, size, what=what)
        self._backbone = backbone
        return backbone

    def dim(self) -> int:
        """The backbone's output length (found when the extractor was configured)."""
        if self._dim is None:
            self._load(self.runtime.device)
        assert self._dim is not None
        return self._dim

    def extract(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """float32 ``[B, dim]`` per input batch ``[B, H, W, 3]`` uint8 RGB."""
        backbone = self._backbone or self._load(self.runtime.device)
        for batch in batches:
            if len(batch) == 0:
                continue
            yield backbone(self.preprocess.apply(batch))
