"""ResNet image backbones with torchvision's parameter names, built from a state dict.

The layout follows He et al. (2016) as torchvision implements it (``conv1``, ``bn1``,
``layer1`` .. ``layer4`` of ``BasicBlock`` or ``Bottleneck`` blocks with an optional
``downsample`` = 1x1 conv + batch norm, stride on the 3x3 conv, ``fc``), so the state dict of a
torchvision ``resnet18`` / ``resnet34`` / ``resnet50`` / ``resnet101`` / ``resnet152`` (or a wide
variant) loads unchanged: ``ResNet.from_state_dict`` reads the block kind, the number of blocks
per stage and every width from the tensors' names and shapes. Small widths make test backbones.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet_layout"]


def _conv_bn(cin: int, cout: int, kernel: int, stride: int) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)
    return conv, nn.BatchNorm2d(cout)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut (ResNet-18/34)."""

    def __init__(self, cin: int, width: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, width, 3, stride)
        self.conv2, self.bn2 = _conv_bn(width, cout, 3, 1)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, cout, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand, and a shortcut (ResNet-50 and deeper)."""

    def __init__(self, cin: int, width: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, width, 1, 1)
        self.conv2, self.bn2 = _conv_bn(width, width, 3, stride)
        self.conv3, self.bn3 = _conv_bn(width, cout, 1, 1)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, cout, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and cin == cout:
        return None
    conv, bn = _conv_bn(cin, cout, 1, stride)
    return nn.Sequential(conv, bn)


class ResNet(nn.Module):
    """A ResNet: stem (7x7/2 conv, BN, ReLU, 3x3/2 max pool), four stages, global average
    pool, ``fc``. ``stages`` gives per stage ``(blocks, width, out_channels)``; the first block
    of stages 2-4 has stride 2. ``block`` is ``"basic"`` or ``"bottleneck"``.

    ``features(x)`` maps images ``[B, in_channels, H, W]`` to the pooled penultimate
    activations ``[B, out_channels of the last stage]``; ``forward(x)`` to logits
    ``[B, num_classes]``.
    """

    def __init__(self, stages: Sequence[tuple[int, int, int]], *, block: str = "basic",
                 stem: int = 64, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}")
        if len(stages) != 4:
            raise ValueError(f"a ResNet has 4 stages, got {len(stages)}")
        kind = BasicBlock if block == "basic" else Bottleneck
        self.block = block
        self.conv1 = nn.Conv2d(in_channels, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = stem
        for i, (blocks, width, cout) in enumerate(stages):
            layer = []
            for b in range(blocks):
                layer.append(kind(cin, width, cout, 2 if (b == 0 and i > 0) else 1))
                cin = cout
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        self.feature_dim = cin
        self.stages = tuple(tuple(s) for s in stages)
        self.in_channels = in_channels

    def features(self, x: Tensor) -> Tensor:  # [B, C, H, W] -> [B, D]
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: Tensor) -> Tensor:  # [B, C, H, W] -> [B, num_classes]
        return self.fc(self.features(x))

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor]) -> ResNet:
        """A ResNet shaped to hold ``state`` (weights not yet loaded); ``ValueError`` saying
        what is missing when ``state`` is not a ResNet state dict in torchvision's naming."""
        return cls(**resnet_layout(state))


def resnet_layout(state: Mapping[str, Tensor]) -> dict:
    """``ResNet`` constructor arguments read from the names and shapes in ``state``."""
    for key in ("conv1.weight", "fc.weight"):
        if key not in state:
            raise ValueError(f"not a ResNet state dict in torchvision's naming: no {key!r} "
                             f"(first keys: {', '.join(list(state)[:4])})")
    blocks: dict[int, set[int]] = {}
    for key in state:
        m = re.match(r"layer([1-4])\.(\d+)\.", key)
        if m:
            blocks.setdefault(int(m[1]), set()).add(int(m[2]))
    if sorted(blocks) != [1, 2, 3, 4]:
        raise ValueError(f"not a ResNet state dict: stages found {sorted(blocks)}, expected "
                         f"layer1 .. layer4")
    bottleneck = "layer1.0.conv3.weight" in state
    stages = []
    for i in range(1, 5):
        count = len(blocks[i])
        if blocks[i] != set(range(count)):
            raise ValueError(f"not a ResNet state dict: layer{i} blocks {sorted(blocks[i])}")
        width = state[f"layer{i}.0.conv1.weight"].shape[0]
        last = "conv3" if bottleneck else "conv2"
        cout = state[f"layer{i}.0.{last}.weight"].shape[0]
        stages.append((count, int(width), int(cout)))
    conv1 = state["conv1.weight"]
    return {"stages": stages, "block": "bottleneck" if bottleneck else "basic",
            "stem": int(conv1.shape[0]), "in_channels": int(conv1.shape[1]),
            "num_classes": int(state["fc.weight"].shape[0])}
