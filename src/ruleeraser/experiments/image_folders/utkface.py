"""UTKFace from its release folder: target gender, bias race, labels in the file names."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import numpy as np

from ruleeraser.experiments.image_folders.dataset import ImageFolderDataset
from ruleeraser.experiments.image_folders.layout import (
    dataset_folder,
    few,
    sample_rows,
)

__all__ = ["UTKFACE_RACES", "load_utkface"]

#: UTKFace race codes 0-4.
UTKFACE_RACES = ["White", "Black", "Asian", "Indian", "Others"]


def _utkface_labels(filename: str) -> tuple[int, int] | None:
    """(gender, race) from ``[age]_[gender]_[race]_[date&time].jpg``; None if malformed."""
    fields = filename.split("_")
    if len(fields) < 4:
        return None
    try:
        age, gender, race = (int(field) for field in fields[:3])
    except ValueError:
        return None
    if age < 0 or gender not in (0, 1) or not 0 <= race < len(UTKFACE_RACES):
        return None
    return gender, race


def load_utkface(
    root: str | Path,
    *,
    race_groups: Literal["binary", "five"] = "binary",
    size: int = 64,
    crop_fraction: float = 1.0,
    max_items: int | None = None,
    seed: int = 0,
) -> ImageFolderDataset:
    """UTKFace (Zhang et al. 2017): target gender, bias race (the paper's Table I(d)).

    ``y``: 0 male, 1 female. ``race_groups="binary"``: ``bias`` 0 White, 1 non-White, the
    split of the bias-contrastive learning UTKFace setup (Hong & Yang 2021, the paper's
    ConDebias [39]) and what Eq. 20's two bias groups need; ``"five"``: the five races.

    Layout of the release (susanqq.github.io/UTKFace): one folder of faces whose labels are
    in the file names, ``[age]_[gender]_[race]_[date&time].jpg`` -- gender 0 male, 1 female;
    race 0-4 White, Black, Asian, Indian, Others; the aligned-and-cropped faces of
    ``UTKFace.tar.gz`` end in ``.jpg.chip.jpg`` (200 x 200). ``root`` is that folder or its
    parent holding ``UTKFace/``. Files whose names break the pattern (a few real ones lack
    the race field) are skipped with a warning naming them. ``max_items`` images are then
    drawn at random (``seed``).
    """
    if race_groups not in ("binary", "five"):
        raise ValueError(f"race_groups must be 'binary' or 'five', got {race_groups!r}")
    root = dataset_folder(root, "UTKFace")
    folder = root / "UTKFace" if (root / "UTKFace").is_dir() else root
    files = sorted(p.name for p in folder.iterdir() if p.suffix.lower() == ".jpg" and p.is_file())
    if not files:
        raise FileNotFoundError(
            f"UTKFace: no .jpg files in {folder}; expected faces named "
            "[age]_[gender]_[race]_[date&time].jpg"
        )
    parsed = [_utkface_labels(f) for f in files]
    malformed = [f for f, labels in zip(files, parsed, strict=True) if labels is None]
    if malformed:
        warnings.warn(
            f"UTKFace: skipped {len(malformed)} of {len(files)} files whose names do not follow "
            f"[age]_[gender]_[race]_[date&time].jpg: {few(malformed)}",
            stacklevel=2,
        )
    kept = [(f, labels) for f, labels in zip(files, parsed, strict=True) if labels is not None]
    if not kept:
        raise ValueError(f"UTKFace: no file name in {folder} carries the labels")
    kept = [kept[i] for i in sample_rows(len(kept), max_items, seed)]
    gender = np.array([labels[0] for _, labels in kept], dtype=np.int64)
    race = np.array([labels[1] for _, labels in kept], dtype=np.int64)
    binary = race_groups == "binary"
    return ImageFolderDataset(
        [folder / f for f, _ in kept],
        gender,
        (race != 0).astype(np.int64) if binary else race,
        target_name="gender",
        target_labels=["male", "female"],
        bias_name="race",
        bias_labels=["White", "non-White"] if binary else list(UTKFACE_RACES),
        size=size,
        crop_fraction=crop_fraction,
        name="utkface",
    )
