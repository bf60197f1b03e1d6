"""The experiments' data containers and the paper's split into deployed-model training,
calibration and test parts.

A :class:`TabularDataset` is a whole table with one discrete bias attribute; a :class:`Splits`
holds its three parts (:class:`Split`), the shape every runner works on. Image builders
(:mod:`ruleeraser.experiments.image_bias`) fill the same :class:`Splits`.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> y = rng.integers(0, 2, 600); b = rng.integers(0, 2, 600)
>>> ds = TabularDataset(
...     name="toy", X=np.c_[y + rng.normal(size=600), b], y=y, bias=b,
...     feature_names=["score", "group"], target_name="label", target_labels=["no", "yes"],
...     bias_name="group", bias_labels=["a", "b"], bias_feature_index=[1],
... )
>>> parts = split_dataset(ds, seed=0)
>>> len(parts.train.y), len(parts.calibration.y), len(parts.test.y)
(400, 80, 120)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Split", "Splits", "TabularDataset", "split_dataset"]


@dataclass(frozen=True)
class TabularDataset:
    """A tabular classification dataset with one discrete bias attribute.

    Attributes
    ----------
    name: the dataset's name.
    X: float32 features ``(n, d)``, finite.
    y, bias: int64 class indices ``(n,)``; ``target_labels[k]`` / ``bias_labels[k]`` name
        index ``k``.
    feature_names: one name per column of ``X``.
    target_name, bias_name: what the target and the bias are.
    bias_feature_index: the columns of ``X`` that encode the bias (empty when the bias is not
        an input).
    """

    name: str
    X: np.ndarray
    y: np.ndarray
    bias: np.ndarray
    feature_names: list[str]
    target_name: str
    target_labels: list[str]
    bias_name: str
    bias_labels: list[str]
    bias_feature_index: list[int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "X", np.asarray(self.X, dtype=np.float32))
        object.__setattr__(self, "y", np.asarray(self.y, dtype=np.int64))
        object.__setattr__(self, "bias", np.asarray(self.bias, dtype=np.int64))
        if self.X.ndim != 2:
            raise ValueError(f"X must be 2-D (n x d), got shape {self.X.shape}")
        n = self.X.shape[0]
        if self.y.shape != (n,) or self.bias.shape != (n,):
            raise ValueError(
                f"y {self.y.shape} and bias {self.bias.shape} must both have shape ({n},)"
            )
        if len(self.feature_names) != self.X.shape[1]:
            raise ValueError(
                f"{len(self.feature_names)} feature names for {self.X.shape[1]} columns"
            )
        for field, values, labels in (
            ("y", self.y, self.target_labels),
            ("bias", self.bias, self.bias_labels),
        ):
            if n and (values.min() < 0 or values.max() >= len(labels)):
                raise ValueError(f"{field} must lie in 0..{len(labels) - 1}")
        if not all(0 <= i < self.X.shape[1] for i in self.bias_feature_index):
            raise ValueError(f"invalid bias_feature_index {self.bias_feature_index}")
        if not np.isfinite(self.X).all():
            raise ValueError("X contains NaN or infinite values")


@dataclass
class Split:
    """One part of a split.

    Attributes
    ----------
    X: the inputs, ``(n, d)`` features or ``(n, C, H, W)`` images.
    y: int64 targets ``(n,)``.
    bias: int64 bias labels, ``(n,)`` or ``(n, n_biases)``.
    index: the rows' positions in the source dataset (None when unknown).
    """

    X: np.ndarray
    y: np.ndarray
    bias: np.ndarray
    index: np.ndarray | None = None


@dataclass
class Splits:
    """Deployed-model training part, calibration part (for the eraser) and test part.

    Attributes
    ----------
    train, calibration, test: the three :class:`Split` s.
    feature_names: the columns' names (empty for images).
    """

    train: Split
    calibration: Split
    test: Split
    feature_names: list[str]


def split_dataset(ds: TabularDataset, *, seed: int, test_size: float = 0.2) -> Splits:
    """Split into deployed-training, calibration and test parts, stratified by (y, bias).

    ``test_size`` of the rows form the test part; of the rest, 5/6 train the deployed model
    and 1/6 is the eraser's calibration set (as in the paper). Continuous (non-binary)
    columns are standardised with the mean and std of the deployed-training part only,
    applied to all three parts: this is the deployed model's own preprocessing, and the
    eraser sees the same inputs. Binary columns are left as 0/1.

    Parameters
    ----------
    ds: the dataset.
    seed: seed of the stratified draws (scikit-learn's ``train_test_split``).
    test_size: the test part's share of the rows, in (0, 1).

    Returns
    -------
    The :class:`Splits`; each part's ``index`` holds its rows' positions in ``ds``.
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    rows = np.arange(len(ds.y))
    strata = ds.y * len(ds.bias_labels) + ds.bias
    rest, test = train_test_split(rows, test_size=test_size, random_state=seed, stratify=strata)
    train, calibration = train_test_split(
        rest, test_size=1 / 6, random_state=seed, stratify=strata[rest]
    )

    X = ds.X.astype(np.float64)
    binary = np.all((X == 0) | (X == 1), axis=0)
    mean = np.where(binary, 0.0, X[train].mean(axis=0))
    std = X[train].std(axis=0)
    std = np.where(binary | (std == 0), 1.0, std)

    def part(idx: np.ndarray) -> Split:
        X_part = ((X[idx] - mean) / std).astype(np.float32)
        return Split(X=X_part, y=ds.y[idx], bias=ds.bias[idx], index=idx)

    return Splits(
        train=part(train),
        calibration=part(calibration),
        test=part(test),
        feature_names=list(ds.feature_names),
    )
