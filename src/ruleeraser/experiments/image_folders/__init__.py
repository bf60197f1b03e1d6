"""The paper's face and scene image datasets, read from a local folder: CelebA, UTKFace,
UrbanCars and LFW (with attributes).

Nothing is downloaded. Each loader reads the dataset's own label files (or its folder and file
names) and returns an :class:`ImageFolderDataset`: image paths and int64 labels held in memory,
pixels read with Pillow only when an item is indexed or a subset is materialised. An image is
cropped to its centred square (optionally tighter, ``crop_fraction``), resized to
``size`` x ``size`` and returned as float32 ``(3, size, size)`` in [0, 1].
"""

from __future__ import annotations

from ruleeraser.experiments.image_folders.celeba import CELEBA_PARTITIONS, load_celeba
from ruleeraser.experiments.image_folders.dataset import ImageFolderDataset, read_image
from ruleeraser.experiments.image_folders.lfw import load_lfw
from ruleeraser.experiments.image_folders.urbancars import URBANCARS_SPLITS, load_urbancars
from ruleeraser.experiments.image_folders.utkface import UTKFACE_RACES, load_utkface

__all__ = [
    "CELEBA_PARTITIONS",
    "URBANCARS_SPLITS",
    "UTKFACE_RACES",
    "ImageFolderDataset",
    "load_celeba",
    "load_lfw",
    "load_urbancars",
    "load_utkface",
    "read_image",
]
