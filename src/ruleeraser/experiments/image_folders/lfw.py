"""LFW with Kumar et al.'s attribute scores, the paper's out-of-distribution calibration set
for CelebA (Table VI)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ruleeraser.experiments.image_folders.dataset import ImageFolderDataset
from ruleeraser.experiments.image_folders.layout import (
    OnMissing,
    attribute_dataset,
    check_on_missing,
    dataset_folder,
    keep_present,
    match_attribute,
    sample_rows,
)

__all__ = ["load_lfw"]


def _lfw_header(path: Path) -> tuple[list[str], int]:
    """Column names (from the ``#`` line ``person imagenum ...``) and the number of ``#``
    lines before the table."""
    header: list[str] | None = None
    comments = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.startswith("#"):
                break
            comments += 1
            fields = [field.strip() for field in line[1:].split("\t") if field.strip()]
            if fields[:2] == ["person", "imagenum"]:
                header = fields
    if header is None:
        raise ValueError(
            f"{path}: no header line '#<TAB>person<TAB>imagenum<TAB>...' among the leading "
            "'#' lines"
        )
    return header, comments


def load_lfw(
    root: str | Path,
    *,
    target: str = "Big Nose",
    bias: str = "Male",
    image_folder: str = "lfw",
    size: int = 64,
    crop_fraction: float = 1.0,
    max_items: int | None = None,
    seed: int = 0,
    on_missing: OnMissing = "raise",
) -> ImageFolderDataset:
    """LFW with Kumar et al.'s (2009) attribute scores; binary target and bias by sign.

    The paper uses LFW as an out-of-distribution calibration set for CelebA (Table VI), so
    CelebA's names work too (``"Big_Nose"`` finds ``Big Nose``; case, ``_`` and spaces
    aside). A score is a classifier output: ``y``/``bias`` = 1 where it is > 0.

    Layout: ``root/lfw_attributes.txt`` (from the PubFig site) and the LFW images::

        root/lfw_attributes.txt   '#' comment lines, the last one the tab-separated header
                                  "#  person  imagenum  Male  Asian  White ..." (73
                                  attributes), then rows "Aaron Eckhart  1  1.568  ..."
        root/lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg ...   250 x 250

    ``image_folder`` names the image variant (``lfw``, or e.g. ``lfw-deepfunneled``). An LFW
    image shows far more than the face (LFWcrop keeps the fixed box (83, 92)-(166, 175),
    a third of the side), CelebA's aligned faces are framed tighter: a ``crop_fraction``
    below 1 brings LFW closer to what a CelebA model saw. Rows whose image is absent raise,
    or with ``on_missing="skip"`` are left out with a warning. ``max_items`` images are then
    drawn at random (``seed``).
    """
    check_on_missing(on_missing)
    root = dataset_folder(root, "LFW")
    attr_path = root / "lfw_attributes.txt"
    if not attr_path.is_file():
        raise FileNotFoundError(f"LFW: expected the file 'lfw_attributes.txt' in {root}")
    images = root / image_folder
    if not images.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise FileNotFoundError(
            f"LFW: image folder {images} not found (folders in {root}: "
            f"{', '.join(present) or 'none'}; pass image_folder=)"
        )
    header, comments = _lfw_header(attr_path)
    attributes = header[2:]
    target, bias = (match_attribute(a, attributes, "LFW") for a in (target, bias))
    if target == bias:
        raise ValueError(f"the target and the bias are the same attribute {target!r}")
    table = pd.read_csv(
        attr_path,
        sep="\t",
        skiprows=comments,
        header=None,
        names=header,
        usecols=["person", "imagenum", target, bias],
        dtype={"person": str},
    )
    if table.isna().any().any():
        raise ValueError(f"{attr_path}: missing values in person, imagenum, {target} or {bias}")
    people = table["person"].str.replace(" ", "_")
    names = [f"{p}/{p}_{int(n):04d}.jpg" for p, n in zip(people, table["imagenum"], strict=True)]
    keep = keep_present(images, names, attr_path.name, on_missing, "LFW")
    table, names = table[keep], [n for n, k in zip(names, keep, strict=True) if k]
    rows = sample_rows(len(table), max_items, seed)
    table = table.iloc[rows]
    paths = [images / names[i] for i in rows]
    return attribute_dataset(paths, table, target, bias, size, crop_fraction, "lfw")
