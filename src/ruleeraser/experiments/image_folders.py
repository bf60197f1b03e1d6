"""The paper's face and scene image datasets, read from a local folder: CelebA, UTKFace,
UrbanCars and LFW (with attributes).

Nothing is downloaded. Each loader reads the dataset's own label files (or its folder and file
names) and returns an :class:`ImageFolderDataset`: image paths and int64 labels held in memory,
pixels read with Pillow only when an item is indexed or a subset is materialised. An image is
cropped to its centred square (optionally tighter, ``crop_fraction``), resized to
``size`` x ``size`` and returned as float32 ``(3, size, size)`` in [0, 1].
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

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

OnMissing = Literal["raise", "skip"]

#: ``list_eval_partition.txt`` codes.
CELEBA_PARTITIONS = {"train": 0, "valid": 1, "test": 2}
#: UTKFace race codes 0-4.
UTKFACE_RACES = ["White", "Black", "Asian", "Indian", "Others"]
#: UrbanCars split -> folder of its (background, co-occurring object) correlation.
URBANCARS_SPLITS = {
    "train": "bg-0.95_co_occur_obj-0.95",
    "val": "bg-0.5_co_occur_obj-0.5",
    "test": "bg-0.5_co_occur_obj-0.5",
}
_URBANCARS_CLASSES = ["urban", "country"]
_SHOWN = 5  # file names quoted in a message


def read_image(path: str | Path, size: int, crop_fraction: float = 1.0) -> np.ndarray:
    """One image as float32 ``(3, size, size)`` in [0, 1]: RGB, centred square crop (its side
    ``crop_fraction`` of the shorter side), resized bilinearly."""
    _check_geometry(size, crop_fraction)
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
        _check_geometry(size, crop_fraction)
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


# ---------------------------------------------------------------------------- helpers


def _check_geometry(size: int, crop_fraction: float) -> None:
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


def _few(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (", ..." if len(names) > _SHOWN else "")


def _folder(root: str | Path, dataset: str) -> Path:
    folder = Path(root)
    if not folder.is_dir():
        raise FileNotFoundError(f"{dataset}: folder {folder} not found")
    return folder


def _find(root: Path, name: str, subfolder: str, dataset: str, *, is_dir: bool = False) -> Path:
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


def _attribute(name: str, valid: Sequence[str], dataset: str) -> str:
    """``name`` among ``valid``; case, spaces and underscores aside ("big nose" = "Big_Nose")."""
    if name in valid:
        return name
    matches = [v for v in valid if _normalised(v) == _normalised(name)]
    if len(matches) == 1:
        return matches[0]
    raise ValueError(f"{dataset}: unknown attribute {name!r}; valid: {', '.join(valid)}")


def _attribute_dataset(
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


def _keep_present(
    folder: Path, names: Sequence[str], listed_in: str, on_missing: OnMissing, dataset: str
) -> np.ndarray:
    """Mask of the listed images present on disk; raise or warn about the others."""
    found = _existing(folder, names)
    if found.all():
        return found
    missing = [names[i] for i in np.flatnonzero(~found)]
    message = (
        f"{dataset}: {len(missing)} of {len(names)} images listed in {listed_in} are missing "
        f"from {folder}: {_few(missing)}"
    )
    if on_missing == "raise":
        raise FileNotFoundError(message + " (on_missing='skip' leaves them out with a warning)")
    warnings.warn(message + "; left out", stacklevel=3)
    return found


def _check_on_missing(on_missing: str) -> None:
    if on_missing not in ("raise", "skip"):
        raise ValueError(f"on_missing must be 'raise' or 'skip', got {on_missing!r}")


def _sample(n: int, max_items: int | None, seed: int) -> np.ndarray:
    """Sorted positions of ``max_items`` rows drawn at random (all rows when None or more)."""
    if max_items is not None and max_items < 1:
        raise ValueError(f"max_items must be positive or None, got {max_items}")
    if max_items is None or max_items >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_items, replace=False))


# ----------------------------------------------------------------------------- CelebA


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
    _check_on_missing(on_missing)
    if partition != "all" and partition not in CELEBA_PARTITIONS:
        raise ValueError(
            f"unknown CelebA partition {partition!r}; valid: all, {', '.join(CELEBA_PARTITIONS)}"
        )
    root = _folder(root, "CelebA")
    attr_path = _find(root, "list_attr_celeba.txt", "Anno", "CelebA")
    with open(attr_path, encoding="utf-8") as f:
        first, names = f.readline().strip(), f.readline().split()
    if not first.isdigit():
        raise ValueError(f"{attr_path}: line 1 should be the image count, got {first!r}")
    target, bias = (_attribute(a, names, "CelebA") for a in (target, bias))
    if target == bias:
        raise ValueError(f"the target and the bias are the same attribute {target!r}")
    table = pd.read_csv(
        attr_path,
        sep=r"\s+",
        skiprows=2,
        header=None,
        names=["filename", *names],
        usecols=["filename", target, bias],
        dtype={"filename": str},
    )
    if len(table) != int(first):
        raise ValueError(
            f"{attr_path}: line 1 announces {first} images, the table has {len(table)}"
        )
    if not table[[target, bias]].isin([-1, 1]).all().all():
        raise ValueError(f"{attr_path}: the {target} and {bias} columns must hold 1 or -1 only")

    if partition != "all":
        part_path = _find(root, "list_eval_partition.txt", "Eval", "CelebA")
        part = pd.read_csv(
            part_path, sep=r"\s+", header=None, names=["filename", "code"], dtype={"filename": str}
        )
        codes = table["filename"].map(pd.Series(part["code"].to_numpy(), index=part["filename"]))
        if codes.isna().any():
            absent = table["filename"][codes.isna()].tolist()
            raise ValueError(
                f"CelebA: {len(absent)} images of {attr_path.name} are not in "
                f"{part_path.name}: {_few(absent)}"
            )
        table = table[codes == CELEBA_PARTITIONS[partition]]

    images = _find(root, "img_align_celeba", "Img", "CelebA", is_dir=True)
    filenames = table["filename"].tolist()
    table = table[_keep_present(images, filenames, attr_path.name, on_missing, "CelebA")]
    table = table.iloc[_sample(len(table), max_items, seed)]
    paths = [images / f for f in table["filename"]]
    return _attribute_dataset(
        paths, table, target, bias, size, crop_fraction, f"celeba-{partition}"
    )


# ---------------------------------------------------------------------------- UTKFace


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
    root = _folder(root, "UTKFace")
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
            f"[age]_[gender]_[race]_[date&time].jpg: {_few(malformed)}",
            stacklevel=2,
        )
    kept = [(f, labels) for f, labels in zip(files, parsed, strict=True) if labels is not None]
    if not kept:
        raise ValueError(f"UTKFace: no file name in {folder} carries the labels")
    kept = [kept[i] for i in _sample(len(kept), max_items, seed)]
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


# -------------------------------------------------------------------------- UrbanCars


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
    root = _folder(root, "UrbanCars")
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
    rows = _sample(len(paths), max_items, seed)
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


# -------------------------------------------------------------------------------- LFW


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
    _check_on_missing(on_missing)
    root = _folder(root, "LFW")
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
    target, bias = (_attribute(a, attributes, "LFW") for a in (target, bias))
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
    keep = _keep_present(images, names, attr_path.name, on_missing, "LFW")
    table, names = table[keep], [n for n, k in zip(names, keep, strict=True) if k]
    rows = _sample(len(table), max_items, seed)
    table = table.iloc[rows]
    paths = [images / names[i] for i in rows]
    return _attribute_dataset(paths, table, target, bias, size, crop_fraction, "lfw")
