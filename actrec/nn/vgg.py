"""VGG image backbones with torchvision's parameter names, built from a state dict.

Simonyan & Zisserman (2015) as torchvision implements it: ``features`` (3x3 convolutions with
ReLU, optionally batch norm, and 2x2 max pools), ``avgpool`` (adaptive, to 7 x 7) and
``classifier`` (fc1 4096, ReLU, dropout, fc2 4096, ReLU, dropout, fc3). ``VGG.from_state_dict``
reads the convolution widths, where the pools fall, batch norm, the hidden width and the
classes from the tensors, so torchvision's ``vgg11`` ... ``vgg19`` and ``*_bn`` state dicts
load unchanged. The sign-language paper's features are VGG-16's ``fc1`` activations.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

__all__ = ["VGG", "VGG_LAYERS", "vgg_layout"]

# Activations a VGG gives besides its logits, by name (Keras' names for the paper's layers).
VGG_LAYERS = ("pool5", "fc1", "fc2")


class VGG(nn.Module):
    """``cfg`` lists output channels of each 3x3 convolution and ``"M"`` for each max pool.

    ``pool5(x)``: the flattened pooled convolution maps ``[B, C * pool * pool]``;
    ``fc1(x)`` / ``fc2(x)``: the hidden layers after their ReLU ``[B, hidden]`` (``fc2`` is
    the penultimate layer); ``forward(x)``: logits ``[B, num_classes]``.
    """

    def __init__(self, cfg: Sequence[int | str], *, batch_norm: bool = False,
                 num_classes: int = 1000, in_channels: int = 3, hidden: int = 4096,
                 pool: int = 7) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers.append(nn.Conv2d(cin, int(v), 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(int(v)))
            layers.append(nn.ReLU(inplace=True))
            cin = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(pool)
        self.classifier = nn.Sequential(
            nn.Linear(cin * pool * pool, hidden), nn.ReLU(True), nn.Dropout(),
            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(),
            nn.Linear(hidden, num_classes))
        self.in_channels = in_channels
        self.feature_dim = hidden

    def pool5(self, x: Tensor) -> Tensor:  # [B, C, H, W] -> [B, C' * pool * pool]
        return torch.flatten(self.avgpool(self.features(x)), 1)

    def fc1(self, x: Tensor) -> Tensor:  # -> [B, hidden]
        return self.classifier[1](self.classifier[0](self.pool5(x)))

    def fc2(self, x: Tensor) -> Tensor:  # -> [B, hidden]; dropout is the identity in eval
        return self.classifier[4](self.classifier[3](self.classifier[2](self.fc1(x))))

    def forward(self, x: Tensor) -> Tensor:  # -> [B, num_classes]
        return self.classifier[6](self.classifier[5](self.fc2(x)))

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor]) -> VGG:
        """A VGG shaped to hold ``state`` (weights not yet loaded); ``ValueError`` saying
        what is missing when ``state`` is not a VGG state dict in torchvision's naming."""
        return cls(**vgg_layout(state))


def vgg_layout(state: Mapping[str, Tensor]) -> dict:
    """``VGG`` constructor arguments read from the names and shapes in ``state``. Every
    torchvision configuration ends its convolutions with a max pool; so does this one."""
    convs = sorted(int(m[1]) for k in state
                   if (m := re.fullmatch(r"features\.(\d+)\.weight", k))
                   and state[k].ndim == 4)
    for key in ("classifier.0.weight", "classifier.3.weight", "classifier.6.weight"):
        if key not in state:
            raise ValueError(f"not a VGG state dict in torchvision's naming: no {key!r} "
                             f"(first keys: {', '.join(list(state)[:4])})")
    if not convs or convs[0] != 0:
        raise ValueError("not a VGG state dict: no convolution features.0")
    batch_norm = f"features.{convs[0] + 1}.running_mean" in state
    step = 3 if batch_norm else 2  # conv [+ bn] + relu
    cfg: list[int | str] = []
    for i, c in enumerate(convs):
        if i > 0:
            gap = c - convs[i - 1]
            if gap == step + 1:
                cfg.append("M")
            elif gap != step:
                raise ValueError(f"not a VGG state dict: convolutions features.{convs[i - 1]} "
                                 f"and features.{c} are neither adjacent nor one pool apart")
        cfg.append(int(state[f"features.{c}.weight"].shape[0]))
    cfg.append("M")
    last = int(cfg[-2])
    fc1 = state["classifier.0.weight"]
    pool = math.isqrt(fc1.shape[1] // last)
    if pool * pool * last != fc1.shape[1]:
        raise ValueError(f"not a VGG state dict: classifier.0 takes {fc1.shape[1]} inputs, not "
                         f"{last} channels x a square pool")
    return {"cfg": cfg, "batch_norm": batch_norm,
            "in_channels": int(state["features.0.weight"].shape[1]),
            "hidden": int(fc1.shape[0]), "pool": pool,
            "num_classes": int(state["classifier.6.weight"].shape[0])}
