"""Networks (docs/design.md §5), each an encoder plus a separate linear classifier.

The classifier ("decoder") is kept apart because its weight is θ of the
implicit hypergradient (docs/design.md §4). Models are found by name:

    resnet18        small CIFAR-style ResNet-18 for images under 64 px (MNIST family,
                    DIGITS), the standard ImageNet layout otherwise
    wresnet28_10    pre-activation wide ResNet, depth 28, widen factor 10
    wresnetD_K      any other depth D = 6n + 4 and widen factor K (wresnet16_4, wresnet28_2, ...)
"""
import re
from typing import Tuple

from torch import nn
import torch.nn.functional as F

from custom_common.settings import DatasetSettings


class PreActBlock(nn.Module):
    """Pre-activation wide-ResNet block: BN-CELU-conv-BN-CELU-conv, 1x1 projection on shape change.

    The released code's layout (default): the stride is in the second convolution and the
    projection sees the raw input. The layout of the pre-activation ResNet papers
    (`--paper-text wrn-block`, text_layout=True): the stride is in the first convolution
    and the projection sees the activated input."""

    def __init__(self, in_planes: int, planes: int, stride: int, text_layout: bool = False):
        super().__init__()
        self.text_layout = text_layout
        self.bn1 = nn.BatchNorm2d(in_planes, momentum=0.1)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride if text_layout else 1, 1, bias=True)
        self.bn2 = nn.BatchNorm2d(planes, momentum=0.1)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1 if text_layout else stride, 1, bias=True)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, 0, bias=True)

    def forward(self, x):
        out = F.celu(self.bn1(x))
        shortcut = x
        if self.shortcut is not None:
            shortcut = self.shortcut(out if self.text_layout else x)
        out = self.conv1(out)
        out = self.conv2(F.celu(self.bn2(out)))
        return out + shortcut


class WideResNetEncoder(nn.Module):
    def __init__(self, depth: int, widen_factor: int, in_channels: int, text_layout: bool = False):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"wide ResNet depth must be 6n+4, got {depth}")
        blocks_per_stage = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=True)
        layers, in_planes = [], widths[0]
        for stage, planes in enumerate(widths[1:]):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(PreActBlock(in_planes, planes, stride, text_layout))
                in_planes = planes
        self.blocks = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(in_planes, momentum=0.1)
        self.num_features = in_planes

    def forward(self, x):
        out = self.blocks(self.stem(x))
        out = F.celu(self.bn(out))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.celu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.celu(out + self.shortcut(x))


class ResNetEncoder(nn.Module):
    """ResNet-18 layout. small=True: CIFAR-style, 3x3 stride-1 stem, 3 stages of 2 blocks,
    widths 16/32/64 (docs/design.md §5, MNIST family). small=False: torchvision's ImageNet layout
    (7x7 stride-2 stem, max-pool, 4 stages 64..512) with CELU."""

    def __init__(self, in_channels: int, small: bool):
        super().__init__()
        widths = (16, 32, 64) if small else (64, 128, 256, 512)
        if small:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(widths[0]), nn.CELU())
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False),
                                      nn.BatchNorm2d(widths[0]), nn.CELU(), nn.MaxPool2d(3, 2, 1))
        layers, in_planes = [], widths[0]
        for stage, planes in enumerate(widths):
            for block in range(2):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
        self.blocks = nn.Sequential(*layers)
        self.num_features = in_planes

    def forward(self, x):
        return F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1).flatten(1)


_WIDE = re.compile(r"wresnet(\d+)_(\d+)")


def check_model_name(name: str) -> None:
    if name != "resnet18" and not _WIDE.fullmatch(name):
        raise ValueError(f"unknown model '{name}'; choose resnet18 or wresnetD_K "
                         f"(e.g. wresnet28_10, wresnet16_4, wresnet28_2; D = 6n+4)")
    match = _WIDE.fullmatch(name)
    if match and (int(match.group(1)) - 4) % 6 != 0:
        raise ValueError(f"model '{name}': wide ResNet depth must be 6n+4 (10, 16, 22, 28, ...)")


def build_network(name: str, settings: DatasetSettings,
                  text_wide_block: bool = False) -> Tuple[nn.Module, nn.Linear]:
    """Returns (encoder, decoder): features = encoder(images); logits = decoder(features).

    A wide ResNet keeps PyTorch's default initialisation, as in the released code, unless
    `text_wide_block` (then its block layout and initialisation are those of the
    pre-activation ResNet papers, Kaiming fan-out); the ResNet-18 is always Kaiming fan-out."""
    check_model_name(name)
    match = _WIDE.fullmatch(name)
    if match:
        encoder = WideResNetEncoder(int(match.group(1)), int(match.group(2)), settings.channels,
                                    text_wide_block)
    else:
        encoder = ResNetEncoder(settings.channels, small=settings.image_size < 64)
    decoder = nn.Linear(encoder.num_features, settings.num_classes)
    if match and not text_wide_block:
        return encoder, decoder
    for module in encoder.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return encoder, decoder
