"""Image networks for patches and deployed models: a small CNN and CIFAR-style ResNets.

Every net maps ``(n, C, H, W)`` float images (values in ``[0, 1]``) to logits and exposes its
representation: ``forward(x) = head(embed(x))``, with ``embed(x)`` of shape ``(n, embed_dim)``.
The convolutions are followed by BatchNorm, which needs more than one row per training batch:
:func:`split_batches` keeps a lone last row out of a batch of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: Names of the image architectures :func:`image_net` builds.
IMAGE_NETS = ("cnn", "resnet18", "resnet34")

#: Side of the pooled feature grid of :class:`SmallCNN`.
GRID = 4


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out)]


class SmallCNN(nn.Module):
    """Three 3x3 conv + BatchNorm + ReLU blocks of ``width``, ``2 width``, ``4 width`` channels
    (2x2 max-pooling after the first two), average pooling to a ``4 x 4`` grid, a fully
    connected ReLU layer of ``4 width`` units and a linear head.

    The grid keeps where the strokes are: with global average pooling instead, three layers
    see too little of a digit's layout (coloured MNIST with random colours: 72% test accuracy
    after 10 epochs, against 97% with the grid).
    """

    def __init__(self, in_channels: int, n_outputs: int, width: int = 32) -> None:
        super().__init__()
        self.embed_dim = 4 * width
        self.features = nn.Sequential(
            *_conv_bn(in_channels, width),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
            *_conv_bn(width, 2 * width),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
            *_conv_bn(2 * width, 4 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(GRID),
            nn.Flatten(),
            nn.Linear(4 * width * GRID * GRID, self.embed_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(self.embed_dim, n_outputs)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Representation h: the fully connected layer's output, ``(n, embed_dim)``."""
        # Channels-last images take oneDNN's faster CPU convolutions (about 20% on 28x28).
        return self.features(x.contiguous(memory_format=torch.channels_last))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


class BasicBlock(nn.Module):
    """Two 3x3 conv + BatchNorm layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(c_in, c_out, stride), nn.ReLU(), *_conv_bn(c_out, c_out)
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet of :class:`BasicBlock` stages with CIFAR's stem (one 3x3 conv, no max-pool).

    Stage ``s`` has ``layers[s]`` blocks of ``width * 2**s`` channels, stride 2 from the
    second stage on; global average pooling and a linear head follow.
    """

    def __init__(
        self, layers: Sequence[int], in_channels: int, n_outputs: int, width: int = 64
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = [*_conv_bn(in_channels, width), nn.ReLU()]
        c_in = width
        for s, n_blocks in enumerate(layers):
            c_out = width * 2**s
            for i in range(n_blocks):
                blocks.append(BasicBlock(c_in, c_out, 2 if s > 0 and i == 0 else 1))
                c_in = c_out
        self.embed_dim = c_in
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(self.embed_dim, n_outputs)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Representation h: the pooled last-stage features, ``(n, embed_dim)``."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def resnet18(in_channels: int, n_outputs: int, width: int = 64) -> ResNet:
    """ResNet-18 (stages of 2, 2, 2, 2 blocks); about 11.2M parameters at width 64."""
    return ResNet([2, 2, 2, 2], in_channels, n_outputs, width)


def resnet34(in_channels: int, n_outputs: int, width: int = 64) -> ResNet:
    """ResNet-34 (stages of 3, 4, 6, 3 blocks)."""
    return ResNet([3, 4, 6, 3], in_channels, n_outputs, width)


def image_net(
    name: str, in_channels: int, n_outputs: int, width: int | None = None
) -> SmallCNN | ResNet:
    """The image net ``name`` of :data:`IMAGE_NETS`; ``width=None``: the net's default.

    >>> import torch
    >>> net = image_net("cnn", in_channels=3, n_outputs=10, width=8)
    >>> net(torch.zeros(2, 3, 28, 28)).shape, net.embed(torch.zeros(2, 3, 28, 28)).shape
    (torch.Size([2, 10]), torch.Size([2, 32]))
    """
    builders = {"cnn": SmallCNN, "resnet18": resnet18, "resnet34": resnet34}
    if name not in builders:
        raise ValueError(f"unknown image net {name!r}; expected one of {IMAGE_NETS}")
    if width is None:
        return builders[name](in_channels, n_outputs)
    if width < 1:
        raise ValueError(f"width must be a positive number of channels, got {width}")
    return builders[name](in_channels, n_outputs, width)


def image_channels(row_shape: Sequence[int], name: str) -> int:
    """The channel count C of image rows of shape ``(C, H, W)``; ``ValueError`` otherwise."""
    if len(row_shape) != 3:
        raise ValueError(
            f"{name!r} needs image rows of shape (C, H, W), i.e. X of shape (n, C, H, W); "
            f"got rows of shape {tuple(row_shape)}"
        )
    return int(row_shape[0])
