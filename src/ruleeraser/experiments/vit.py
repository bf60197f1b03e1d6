"""A small vision transformer for small images, on torch's own ``nn.TransformerEncoder``.

The backbone of Table V's transformer row at CPU scale (the paper uses ViT-B/32): timm and
vit-pytorch need torchvision, which does not import beside a CPU-only torch build. Like the
nets of :mod:`ruleeraser.nets` it exposes ``forward(x) = head(embed(x))``.

Example
-------
>>> import torch
>>> vit = SmallViT(3, 10, image_size=(28, 28))
>>> vit(torch.rand(2, 3, 28, 28)).shape, vit.embed(torch.rand(2, 3, 28, 28)).shape
(torch.Size([2, 10]), torch.Size([2, 64]))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["SmallViT"]


class SmallViT(nn.Module):
    """Patch embedding, a class token, learnt position embeddings, a pre-norm
    ``nn.TransformerEncoder`` and a linear head on the class token.

    Parameters
    ----------
    in_channels: the images' channels.
    n_outputs: the head's logits.
    image_size: ``(H, W)``, each a multiple of ``patch``.
    patch: side of the square patches, each one token (4: 49 tokens for 28x28 images).
    width: the tokens' dimension.
    depth: encoder layers.
    heads: attention heads per layer (``width`` must be a multiple).

    Attributes
    ----------
    embed_dim: ``width``, the size of the representation :meth:`embed` returns.
    head: the linear layer on the representation.
    """

    def __init__(
        self,
        in_channels: int,
        n_outputs: int,
        *,
        image_size: Sequence[int],
        patch: int = 4,
        width: int = 64,
        depth: int = 4,
        heads: int = 4,
    ) -> None:
        super().__init__()
        height, breadth = image_size
        if height % patch or breadth % patch:
            raise ValueError(f"image_size {tuple(image_size)} is not a multiple of patch={patch}")
        if width % heads:
            raise ValueError(f"width={width} is not a multiple of heads={heads}")
        n_tokens = (height // patch) * (breadth // patch)
        self.embed_dim = width
        self.patches = nn.Conv2d(in_channels, width, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.position = nn.Parameter(torch.randn(1, n_tokens + 1, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=2 * width, dropout=0.0, batch_first=True,
            norm_first=True,
        )  # fmt: skip
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, n_outputs)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Representation h: the class token after the encoder, ``(n, embed_dim)``."""
        tokens = self.patches(x).flatten(2).transpose(1, 2)  # (n, tokens, width)
        cls = self.cls.expand(len(x), -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.position
        return self.norm(self.encoder(tokens)[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))
