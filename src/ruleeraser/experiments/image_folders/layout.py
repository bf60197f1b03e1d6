"""What the folder loaders share: finding a dataset's files, matching attribute names, leaving
out (or refusing) listed images that are absent, and drawing a random subset."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from ruleeraser.experiments.image_folders.dataset import ImageFolderDataset

__all__ = [
    "OnMissing",
    "attribute_dataset",
    "check_on_missing",
    "dataset_folder",
    "few",
    "find_path",
    "keep_present",
    "match_attribute",
    "sample_rows",
]

#: What a loader does with images listed in a label file but absent from the folder.
OnMissing = Literal["raise", "skip"]
_SHOWN = 5  # file names quoted in a message


def few(names: Sequence[str]) -> str:
    """The first five ``names``, comma-separated, "..." when there are more."""
    shown = ", ".join(names[:_SHOWN])
    return shown + (", ..." if len(names) > _SHOWN else "")


def dataset_folder(root: str | Path, dataset: str) -> Path:
    """``root`` as a Path; ``FileNotFoundError`` naming ``dataset`` when it is no folder."""
    folder = Path(root)
    if not folder.is_dir():
        raise FileNotFoundError(f"{dataset}: folder {folder} not found")
    return folder


def find_path(root: Path, name: str, subfolder: str, dataset: str, *, is_dir: bool = False) -> Path:
    """``root/name``, or ``root/subfolder/name``; a clear error naming both otherwise."""
    for path in (root / name, root / subfolder / name):
        if path.is_dir() if is_dir else path.is_file():
            return path
    kind = "folder" if is_dir else "file"
    raise FileNotFoundError(
        f"{dataset}: expected the {kind} {name!r} in {root} (or in {root / subfolder})"
    )


def _normalised(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def match_attribute(name: str, valid: Sequence[str], dataset: str) -> str:
    """``name`` among ``valid``; case, spaces and underscores aside ("big nose" = "Big_Nose")."""
    if name in valid:
        return name
    matches = [v for v in valid if _normalised(v) == _normalised(name)]
    if len(matches) == 1:
        return matches[0]
    raise ValueError(f"{dataset}: unknown attribute {name!r}; valid: {', '.join(valid)}")


def attribute_dataset(
    paths: list[Path],
    table: pd.DataFrame,
    target: str,
    bias: str,
    size: int,
    crop_fraction: float,
    name: str,
) -> ImageFolderDataset:
    """Images with a binary target and bias read off attribute scores (present where > 0)."""
    return ImageFolderDataset(
        paths,
        (table[target].to_numpy() > 0).astype(np.int64),
        (table[bias].to_numpy() > 0).astype(np.int64),
        target_name=target,
        target_labels=_binary_labels(target),
        bias_name=bias,
        bias_labels=_binary_labels(bias),
        size=size,
        crop_fraction=crop_fraction,
        name=name,
    )


def _binary_labels(attribute: str) -> list[str]:
    return ["female", "male"] if attribute == "Male" else [f"not {attribute}", attribute]


def _existing(folder: Path, names: Sequence[str]) -> np.ndarray:
    """Whether each ``folder/name`` exists, listing each parent folder once."""
    listings: dict[str, set[str]] = {}
    found = np.empty(len(names), dtype=bool)
    for i, name in enumerate(names):
        parent, _, base = name.rpartition("/")
        if parent not in listings:
            where = folder / parent
            listings[parent] = set(os.listdir(where)) if where.is_dir() else set()
        found[i] = base in listings[parent]
    return found


def keep_present(
    folder: Path, names: Sequence[str], listed_in: str, on_missing: OnMissing, dataset: str
) -> np.ndarray:
    """Mask of the listed images present on disk; raise or warn about the others."""
    found = _existing(folder, names)
    if found.all():
        return found
    missing = [names[i] for i in np.flatnonzero(~found)]
    message = (
        f"{dataset}: {len(missing)} of {len(names)} images listed in {listed_in} are missing "
        f"from {folder}: {few(missing)}"
    )
    if on_missing == "raise":
        raise FileNotFoundError(message + " (on_missing='skip' leaves them out with a warning)")
    warnings.warn(message + "; left out", stacklevel=3)
    return found


def check_on_missing(on_missing: str) -> None:
    """``ValueError`` unless ``on_missing`` is "raise" or "skip"."""
    if on_missing not in ("raise", "skip"):
        raise ValueError(f"on_missing must be 'raise' or 'skip', got {on_missing!r}")


def sample_rows(n: int, max_items: int | None, seed: int) -> np.ndarray:
    """Sorted positions of ``max_items`` rows drawn at random (all rows when None or more)."""
    if max_items is not None and max_items < 1:
        raise ValueError(f"max_items must be positive or None, got {max_items}")
    if max_items is None or max_items >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_items, replace=False))
