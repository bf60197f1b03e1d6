"""Images on disk with a target and bias labels, read lazily: :class:`ImageFolderDataset` and
:func:`read_image` (centred square crop, resize, float32 ``(3, size, size)`` in [0, 1])."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

__all__ = ["ImageFolderDataset", "check_geometry", "read_image"]


def read_image(path: str | Path, size: int, crop_fraction: float = 1.0) -> np.ndarray:
    """One image as float32 ``(3, size, size)`` in [0, 1]: RGB, centred square crop (its side
    ``crop_fraction`` of the shorter side), resized bilinearly."""
    check_geometry(size, crop_fraction)
    with Image.open(path) as img:
        # JPEG: decode at a reduced scale that still leaves the crop at least `size` wide.
        img.draft("RGB", (math.ceil(size / crop_fraction),) * 2)
        rgb = img.convert("RGB")
    width, height = rgb.size
    side = max(1, round(min(width, height) * crop_fraction))
    left, top = (width - side) // 2, (height - side) // 2
    square = rgb.crop((left, top, left + side, top + side))
    small = square.resize((size, size), Image.Resampling.BILINEAR)
    pixels = np.ascontiguousarray(np.asarray(small).transpose(2, 0, 1), dtype=np.float32)
    pixels /= 255.0
    return pixels


class ImageFolderDataset(Dataset):
    """Images on disk with a target and one or several bias attributes, read lazily.

    ``y`` and ``bias`` are int64 class indices; ``target_labels[k]`` / ``bias_labels[k]`` name
    index ``k``. With several biases (UrbanCars) ``bias`` and ``bias_labels`` are dicts keyed
    by bias name. ``dataset[i]`` is ``(image, y, bias)``: a float32 tensor
    ``(3, size, size)`` in [0, 1], the target and the bias (an int, or a dict of ints), which
    PyTorch's default collate batches. :meth:`materialise` gives an array for the eraser.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        y: np.ndarray,
        bias: np.ndarray | Mapping[str, np.ndarray],
        *,
        target_name: str,
        target_labels: list[str],
        bias_name: str,
        bias_labels: list[str] | Mapping[str, list[str]],
        size: int = 64,
        crop_fraction: float = 1.0,
        name: str = "images",
    ) -> None:
        check_geometry(size, crop_fraction)
        self.paths = [str(p) for p in paths]
        n = len(self.paths)
        self.y = _labels(y, target_labels, "y", n)
        if isinstance(bias, Mapping):
            if not isinstance(bias_labels, Mapping) or set(bias) != set(bias_labels):
                raise ValueError("a dict of biases needs a dict of bias labels with the same keys")
            self.bias: np.ndarray | dict[str, np.ndarray] = {
                key: _labels(values, bias_labels[key], f"bias[{key!r}]", n)
                for key, values in bias.items()
            }
            self.bias_labels: list[str] | dict[str, list[str]] = {
                key: list(bias_labels[key]) for key in bias
            }
        else:
            if isinstance(bias_labels, Mapping):
                raise ValueError("a single bias needs a list of bias labels, not a dict")
            self.bias = _labels(bias, bias_labels, "bias", n)
            self.bias_labels = list(bias_labels)
        self.target_name = target_name
        self.target_labels = list(target_labels)
        self.bias_name = bias_name
        self.size = size
        self.crop_fraction = crop_fraction
        self.name = name

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int | dict[str, int]]:
        if isinstance(self.bias, dict):
            bias: int | dict[str, int] = {key: int(v[i]) for key, v in self.bias.items()}
        else:
            bias = int(self.bias[i])
        return torch.from_numpy(self.image(i)), int(self.y[i]), bias

    def __repr__(self) -> str:
        return (
            f"ImageFolderDataset({self.name!r}, n={len(self)}, size={self.size}, "
            f"target={self.target_name!r}, bias={self.bias_name!r})"
        )

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` as float32 ``(3, size, size)`` in [0, 1]."""
        return read_image(self.paths[i], self.size, self.crop_fraction)

    def materialise(
        self,
        indices: Sequence[int] | np.ndarray | None = None,
        *,
        chunk_size: int = 512,
        progress: bool = False,
    ) -> np.ndarray:
        """Images ``indices`` (default all) as one float32 array ``(n, 3, size, size)``.

        Takes ``n * 3 * size**2 * 4`` bytes (200,000 CelebA faces at 64 pixels: 9.8 GB);
        for more than fits, use :meth:`iter_chunks`.
        """
        rows = self._rows(indices)
        out = np.empty((len(rows), 3, self.size, self.size), dtype=np.float32)
        start = 0
        for chunk in self.iter_chunks(rows, chunk_size=chunk_size, progress=progress):
            out[start : start + len(chunk)] = chunk
            start += len(chunk)
        return out

    def iter_chunks(
        self,
        indices: Sequence[int] | np.ndarray | None = None,
        *,
        chunk_size: int = 512,
        progress: bool = False,
    ) -> Iterator[np.ndarray]:
        """Images ``indices`` (default all), in order, as arrays of at most ``chunk_size``."""
        from tqdm.auto import tqdm

        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        rows = self._rows(indices)
        with tqdm(total=len(rows), unit="img", desc=self.name, disable=not progress) as bar:
            for start in range(0, len(rows), chunk_size):
                part = rows[start : start + chunk_size]
                yield np.stack([self.image(int(i)) for i in part])
                bar.update(len(part))

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageFolderDataset:
        """The rows ``indices`` as a new dataset (labels and settings kept)."""
        rows = self._rows(indices)
        if isinstance(self.bias, dict):
            bias: np.ndarray | dict[str, np.ndarray] = {k: v[rows] for k, v in self.bias.items()}
        else:
            bias = self.bias[rows]
        return ImageFolderDataset(
            [self.paths[i] for i in rows],
            self.y[rows],
            bias,
            target_name=self.target_name,
            target_labels=self.target_labels,
            bias_name=self.bias_name,
            bias_labels=self.bias_labels,
            size=self.size,
            crop_fraction=self.crop_fraction,
            name=self.name,
        )

    def _rows(self, indices: Sequence[int] | np.ndarray | None) -> np.ndarray:
        if indices is None:
            return np.arange(len(self))
        rows = np.asarray(indices)
        if rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
            raise ValueError(f"indices must be a 1-D sequence of integers, got shape {rows.shape}")
        rows = rows.astype(np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise ValueError(f"indices must lie in 0..{len(self) - 1}")
        return rows


def check_geometry(size: int, crop_fraction: float) -> None:
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction}")


def _labels(values: np.ndarray, labels: Sequence[str], what: str, n: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.int64)
    if array.shape != (n,):
        raise ValueError(f"{what} has shape {array.shape}; expected ({n},), one per image")
    if n and (array.min() < 0 or array.max() >= len(labels)):
        raise ValueError(f"{what} must lie in 0..{len(labels) - 1}")
    return array
