"""UrbanCars from the folders its authors' generator writes: car type with two biases."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from ruleeraser.experiments.image_folders.dataset import ImageFolderDataset
from ruleeraser.experiments.image_folders.layout import (
    dataset_folder,
    sample_rows,
)

__all__ = ["URBANCARS_SPLITS", "load_urbancars"]

#: UrbanCars split -> folder of its (background, co-occurring object) correlation.
URBANCARS_SPLITS = {
    "train": "bg-0.95_co_occur_obj-0.95",
    "val": "bg-0.5_co_occur_obj-0.5",
    "test": "bg-0.5_co_occur_obj-0.5",
}
_URBANCARS_CLASSES = ["urban", "country"]


def load_urbancars(
    root: str | Path,
    split: Literal["train", "val", "test"] = "train",
    *,
    size: int = 64,
    crop_fraction: float = 1.0,
    max_items: int | None = None,
    seed: int = 0,
) -> ImageFolderDataset:
    """UrbanCars (Li et al. 2023, "A Whac-A-Mole Dilemma"): car type with two biases.

    ``y``: 0 urban car, 1 country car. ``bias`` is a dict: ``"background"`` and
    ``"co_occurring_object"``, each 0 urban, 1 country (the paper's BG and Co-obj).

    Layout written by the authors' generator (``create_datasets/urbancars/gen_urbancars.py``
    in facebookresearch/Whac-A-Mole) and read by their ``dataset/urbancars.py``::

        root/bg-0.95_co_occur_obj-0.95/train/obj-{o}_bg-{b}_co_occur_obj-{c}/000.jpg ...
        root/bg-0.5_co_occur_obj-0.5/val/...   and   .../test/...

    with ``o``, ``b``, ``c`` each ``urban`` or ``country`` (8 folders per split). In train,
    95% of cars have a background, and 95% a co-occurring object, of their own type; val and
    test are balanced. ``root`` is the ``urbancars`` folder or its parent. The masks saved
    beside the images (``000_mask.png``, ``000_co_occur_obj_mask.png``) are not read.
    ``max_items`` images are drawn at random (``seed``).
    """
    if split not in URBANCARS_SPLITS:
        raise ValueError(f"unknown UrbanCars split {split!r}; valid: {', '.join(URBANCARS_SPLITS)}")
    root = dataset_folder(root, "UrbanCars")
    if (root / "urbancars").is_dir():
        root = root / "urbancars"
    split_dir = root / URBANCARS_SPLITS[split] / split
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"UrbanCars: expected the {split} split in {split_dir} "
            f"(<urbancars>/{URBANCARS_SPLITS[split]}/{split}/obj-*_bg-*_co_occur_obj-*/*.jpg)"
        )
    paths: list[Path] = []
    labels: list[tuple[int, int, int]] = []
    for o, obj in enumerate(_URBANCARS_CLASSES):
        for b, bg in enumerate(_URBANCARS_CLASSES):
            for c, co in enumerate(_URBANCARS_CLASSES):
                group = split_dir / f"obj-{obj}_bg-{bg}_co_occur_obj-{co}"
                if not group.is_dir():
                    raise FileNotFoundError(f"UrbanCars: expected the folder {group}")
                images = sorted(p for p in group.glob("*.jpg") if p.is_file())
                paths += images
                labels += [(o, b, c)] * len(images)
    if not paths:
        raise FileNotFoundError(f"UrbanCars: no .jpg images under {split_dir}")
    rows = sample_rows(len(paths), max_items, seed)
    codes = np.array(labels, dtype=np.int64)[rows]
    return ImageFolderDataset(
        [paths[i] for i in rows],
        codes[:, 0],
        {"background": codes[:, 1], "co_occurring_object": codes[:, 2]},
        target_name="car_type",
        target_labels=list(_URBANCARS_CLASSES),
        bias_name="background+co_occurring_object",
        bias_labels={
            "background": list(_URBANCARS_CLASSES),
            "co_occurring_object": list(_URBANCARS_CLASSES),
        },
        size=size,
        crop_fraction=crop_fraction,
        name=f"urbancars-{split}",
    )
