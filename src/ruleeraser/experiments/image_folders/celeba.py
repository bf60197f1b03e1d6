"""CelebA from its official release folder: one face attribute as target, another as bias."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd

from ruleeraser.experiments.image_folders.dataset import ImageFolderDataset
from ruleeraser.experiments.image_folders.layout import (
    OnMissing,
    attribute_dataset,
    check_on_missing,
    dataset_folder,
    few,
    find_path,
    keep_present,
    match_attribute,
    sample_rows,
)

__all__ = ["CELEBA_PARTITIONS", "load_celeba"]

#: ``list_eval_partition.txt`` codes.
CELEBA_PARTITIONS = {"train": 0, "valid": 1, "test": 2}


def load_celeba(
    root: str | Path,
    *,
    target: str = "Big_Nose",
    bias: str = "Male",
    partition: Literal["train", "valid", "test", "all"] = "all",
    size: int = 64,
    crop_fraction: float = 1.0,
    max_items: int | None = None,
    seed: int = 0,
    on_missing: OnMissing = "raise",
) -> ImageFolderDataset:
    """CelebA (Liu et al. 2015): one of the 40 face attributes as target, another as bias.

    The paper's tasks: target ``Big_Nose``, ``Blond_Hair`` or ``Attractive``, bias ``Male``.
    ``y``/``bias`` are 1 where the attribute is present (labels ``["not X", "X"]``,
    ``["female", "male"]`` for ``Male``). Names match regardless of case and ``_`` vs space.

    Layout of the official release (also what torchvision's ``CelebA`` reads)::

        root/img_align_celeba/000001.jpg ...   178 x 218 aligned faces
        root/list_attr_celeba.txt     line 1: the image count; line 2: the 40 attribute
                                      names; then "000001.jpg -1  1 ..." (1 present,
                                      -1 absent), whitespace separated
        root/list_eval_partition.txt  "000001.jpg 0" (0 train, 1 valid, 2 test)

    Each may instead sit in the release's Drive folders ``root/Img/``, ``root/Anno/`` and
    ``root/Eval/``. ``partition`` keeps one official partition (``"all"``: every image; the
    partition file is then not needed). Images listed but absent raise, or with
    ``on_missing="skip"`` are left out with a warning. ``max_items`` images are then drawn
    at random (``seed``).
    """
    check_on_missing(on_missing)
    if partition != "all" and partition not in CELEBA_PARTITIONS:
        raise ValueError(
            f"unknown CelebA partition {partition!r}; valid: all, {', '.join(CELEBA_PARTITIONS)}"
        )
    root = dataset_folder(root, "CelebA")
    attr_path = find_path(root, "list_attr_celeba.txt", "Anno", "CelebA")
    table, target, bias = _attribute_table(attr_path, target, bias)
    if partition != "all":
        table = _in_partition(table, root, partition, attr_path.name)

    images = find_path(root, "img_align_celeba", "Img", "CelebA", is_dir=True)
    filenames = table["filename"].tolist()
    table = table[keep_present(images, filenames, attr_path.name, on_missing, "CelebA")]
    table = table.iloc[sample_rows(len(table), max_items, seed)]
    paths = [images / f for f in table["filename"]]
    return attribute_dataset(paths, table, target, bias, size, crop_fraction, f"celeba-{partition}")


def _attribute_table(path: Path, target: str, bias: str) -> tuple[pd.DataFrame, str, str]:
    """The ``filename``, target and bias columns of ``list_attr_celeba.txt``, checked, and the
    two attributes' names as the file spells them."""
    with open(path, encoding="utf-8") as f:
        first, names = f.readline().strip(), f.readline().split()
    if not first.isdigit():
        raise ValueError(f"{path}: line 1 should be the image count, got {first!r}")
    target, bias = (match_attribute(a, names, "CelebA") for a in (target, bias))
    if target == bias:
        raise ValueError(f"the target and the bias are the same attribute {target!r}")
    table = pd.read_csv(
        path,
        sep=r"\s+",
        skiprows=2,
        header=None,
        names=["filename", *names],
        usecols=["filename", target, bias],
        dtype={"filename": str},
    )
    if len(table) != int(first):
        raise ValueError(f"{path}: line 1 announces {first} images, the table has {len(table)}")
    if not table[[target, bias]].isin([-1, 1]).all().all():
        raise ValueError(f"{path}: the {target} and {bias} columns must hold 1 or -1 only")
    return table, target, bias


def _in_partition(table: pd.DataFrame, root: Path, partition: str, listed_in: str) -> pd.DataFrame:
    """The rows of ``table`` in one official partition of ``list_eval_partition.txt``."""
    part_path = find_path(root, "list_eval_partition.txt", "Eval", "CelebA")
    part = pd.read_csv(
        part_path, sep=r"\s+", header=None, names=["filename", "code"], dtype={"filename": str}
    )
    codes = table["filename"].map(pd.Series(part["code"].to_numpy(), index=part["filename"]))
    if codes.isna().any():
        absent = table["filename"][codes.isna()].tolist()
        raise ValueError(
            f"CelebA: {len(absent)} images of {listed_in} are not in {part_path.name}: "
            f"{few(absent)}"
        )
    return table[codes == CELEBA_PARTITIONS[partition]]
