"""The eraser directory: written atomically, read back checked, no pickle.

A directory holds ``eraser.json`` (parameters, classes, bias values, fit reports, the input
column names when fitted on a DataFrame, and the SHA-256 of the weights) and
``patches.safetensors`` (each patch's state, keys prefixed ``patch{j}.``). Reading runs no
code from the directory; it checks the JSON's structure and the weights against their hash,
and names the file and the field at fault. :meth:`ruleeraser.Eraser.save` and
:meth:`ruleeraser.Eraser.load` turn an eraser into these files and back, through
:func:`fitted_state` and :func:`restore_fitted` (the fitted attributes as saved, and back).

Atomic writes: the new weights go to ``patches.<hash>.safetensors`` beside the old files, then
``eraser.json`` (naming that hash) replaces the old one in one rename, the commit point, and
only then do the new weights take the name ``patches.safetensors``. A reader that finds the
JSON's hash on a pending ``patches.<hash>.safetensors`` reads that file. So a write stopped at
any point leaves the previous eraser or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from ruleeraser import fingerprint
from ruleeraser.choice import choice_from_dict, choice_to_dict
from ruleeraser.goal import Goal
from ruleeraser.inputs import plain
from ruleeraser.patch import rebuild_patch
from ruleeraser.training import FitReport

FORMAT = "rule-eraser/2"
OLD_FORMATS = ("rule-eraser/1",)  # no weights hash
CONFIG, WEIGHTS = "eraser.json", "patches.safetensors"
#: The constructor parameters an eraser file keeps (the model and the patch are given again).
SAVED_PARAMS = (
    "rule", "hidden_sizes", "max_epochs", "patience", "learning_rate", "weight_decay",
    "patch_batch_size", "query_batch_size", "holdout", "output", "eps", "strength", "prior",
    "rule_scale", "n_threads", "random_state",
)  # fmt: skip
_FIT_FIELDS = {
    "epochs", "best_epoch", "heldout_loss", "train_loss", "heldout_accuracy", "n_train",
    "n_heldout",
}  # fmt: skip


class EraserFileError(ValueError):
    """An eraser directory that cannot be read: the message names the file and the fault."""


def _pending(path: Path, digest: str) -> Path:
    return path / f"patches.{digest[:16]}.safetensors"


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _sync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system syncs directories
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_eraser(
    path: str | Path,
    config: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    *,
    overwrite: bool = True,
) -> Path:
    """Write ``config`` and ``tensors`` to directory ``path`` atomically (see the module).

    ``overwrite=False`` raises ``FileExistsError`` when ``path`` already holds an eraser.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a directory")
    path.mkdir(parents=True, exist_ok=True)
    if (path / CONFIG).exists() and not overwrite:
        raise FileExistsError(f"{path} already holds an eraser (overwrite it explicitly)")
    data = save(tensors, metadata={"format": FORMAT})
    digest = hashlib.sha256(data).hexdigest()
    pending = _pending(path, digest)
    _write_synced(pending, data)
    text = json.dumps({"format": FORMAT, "weights_sha256": digest, **config}, indent=2)
    fd, tmp = tempfile.mkstemp(prefix=".eraser-", suffix=".json.tmp", dir=path)
    os.close(fd)
    try:
        _write_synced(Path(tmp), text.encode())
        os.replace(tmp, path / CONFIG)  # the commit point
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_dir(path)
    os.replace(pending, path / WEIGHTS)
    _sync_dir(path)
    for pattern in ("patches.*.safetensors", ".eraser-*.json.tmp"):  # left by killed writes
        for stale in path.glob(pattern):
            stale.unlink(missing_ok=True)
    return path


def fitted_state(
    eraser: Any, params: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The configuration (``params``: the saved constructor parameters) and the weights that
    hold a fitted :class:`ruleeraser.Eraser`, for :func:`write_eraser`."""
    config = {
        "params": {k: plain(v) for k, v in params.items()},
        "patch": eraser.patch if isinstance(eraser.patch, str) else "custom",
        "classes": plain(eraser.classes_),
        "input_shape": list(eraser.input_shape_),
        "features": getattr(eraser, "feature_names_in_", None),
        "n_queries": eraser.n_queries_,
        "goal": None if eraser.goal is None else eraser.goal.to_dict(),
        "choice": None if eraser.goal is None else choice_to_dict(eraser.goal_fit_),
        "model_fingerprint": getattr(eraser, "model_fingerprint_", None),
        "biases": [
            {
                "name": name,
                "values": plain(values),
                "empty_cells": [plain(c) for c in eraser.empty_cells_[name]],
                "fit": report.to_dict(),
                "class_prior": plain(prior),
                "rule_scale": float(scale),
            }
            for name, values, report, prior, scale in zip(
                eraser.bias_names_,
                eraser.bias_values_,
                eraser.patch_fit_,
                eraser.class_prior_,
                eraser.rule_scale_,
                strict=True,
            )
        ],
    }
    tensors = {
        f"patch{j}.{key}": value.detach().cpu().contiguous()
        for j, module in enumerate(eraser.patches_)
        for key, value in module.state_dict().items()
    }
    return config, tensors


def restore_fitted(
    eraser: Any, config: dict[str, Any], weights: dict[str, torch.Tensor], where: str
) -> None:
    """Set the fitted attributes of ``eraser`` (its parameters and ``blackbox_`` already set)
    from a checked ``config`` and ``weights`` of :func:`read_eraser`; ``where`` names the file
    in errors. A model that names its classes must name those the eraser was fitted with."""
    eraser.classes_ = np.asarray(config["classes"])
    eraser.n_classes_ = len(eraser.classes_)
    _check_model_classes(eraser.blackbox_.classes, eraser.classes_, where)
    eraser.input_shape_ = tuple(config["input_shape"])
    if config["features"] is not None:
        eraser.feature_names_in_ = list(config["features"])
    eraser.n_queries_ = config["n_queries"]
    if config.get("choice") is not None:
        eraser.goal_fit_ = config["choice"]
    if config.get("model_fingerprint") is not None:  # older files have none
        eraser.model_fingerprint_ = config["model_fingerprint"]
    biases = config["biases"]
    eraser.bias_names_ = [b["name"] for b in biases]
    eraser.bias_values_ = [np.asarray(b["values"]) for b in biases]
    eraser.patch_fit_ = [FitReport(**b["fit"]) for b in biases]
    eraser.empty_cells_ = {b["name"]: [tuple(c) for c in b["empty_cells"]] for b in biases}
    if all("class_prior" in b for b in biases):  # older files: prior="balanced" only
        eraser.class_prior_ = np.array([b["class_prior"] for b in biases], dtype=np.float64)
    # older files: the paper's patch
    eraser.rule_scale_ = np.array([b.get("rule_scale", 1.0) for b in biases], dtype=np.float64)
    patches = []
    for j, values in enumerate(eraser.bias_values_):
        prefix = f"patch{j}."
        state = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
        try:
            module = rebuild_patch(
                eraser.patch, eraser.rule, eraser.input_shape_, eraser.n_classes_,
                len(values), state, hidden_sizes=eraser.hidden_sizes,
            )  # fmt: skip
        except ValueError as exc:
            name = eraser.bias_names_[j]
            raise EraserFileError(f"{where}patch {j} (bias {name!r}): {exc}") from None
        patches.append(module)
    eraser.patches_ = patches


def _check_model_classes(model_classes: np.ndarray | None, fitted: np.ndarray, where: str) -> None:
    if model_classes is None:
        return
    same = len(model_classes) == len(fitted) and all(
        str(a) == str(b) for a, b in zip(model_classes.tolist(), fitted.tolist(), strict=True)
    )
    if not same:
        raise ValueError(
            f"{where}the model's classes {model_classes.tolist()[:10]} are not the labels the "
            f"eraser was fitted with {fitted.tolist()[:10]}: this eraser belongs to another model"
        )


def read_eraser(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], str]:
    """The configuration and the weights of the eraser in ``path``, checked.

    Returns ``(config, tensors, where)``, ``where`` being ``"<path>/eraser.json: "`` for
    messages about the configuration's fields. Raises ``FileNotFoundError`` for a directory
    without an eraser and :class:`EraserFileError` (a ``ValueError``) for a damaged one.
    """
    path = Path(path)
    config_file = path / CONFIG
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} does not hold an eraser ({CONFIG} is missing)")
    where = f"{config_file}: "
    try:
        config = json.loads(config_file.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise EraserFileError(f"{where}not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise EraserFileError(f"{where}expected a JSON object, got a {type(config).__name__}")
    if config.get("format") not in (FORMAT, *OLD_FORMATS):
        raise EraserFileError(f"{where}not a {FORMAT} file (format {config.get('format')!r})")
    check_config(config, where)
    weights_file = path / WEIGHTS
    digest = config.get("weights_sha256")
    if config["format"] == FORMAT and not (
        isinstance(digest, str) and len(digest) == 64 and set(digest) <= set("0123456789abcdef")
    ):
        _fail(where, "weights_sha256", "the SHA-256 of the weights (64 hex digits)", digest)
    data = None
    if digest is not None:  # a write stopped (or still running) after its commit point
        with contextlib.suppress(FileNotFoundError):  # renamed since: WEIGHTS holds them
            data = _pending(path, digest).read_bytes()
            weights_file = _pending(path, digest)
    if data is None:
        if not weights_file.is_file():
            raise FileNotFoundError(f"{path} does not hold the eraser's weights ({WEIGHTS})")
        data = weights_file.read_bytes()
    if digest is not None and hashlib.sha256(data).hexdigest() != digest:
        raise EraserFileError(
            f"{weights_file}: the weights do not match the hash in {CONFIG} (the file is "
            "damaged, or was changed or written by another save)"
        )
    try:
        tensors = load(data)
    except (SafetensorError, ValueError) as exc:
        raise EraserFileError(f"{weights_file}: not a readable safetensors file ({exc})") from None
    return config, tensors, where


def _fail(where: str, field: str, expected: str, value: Any) -> None:
    raise EraserFileError(f"{where}{field} must be {expected}; got {value!r}"[:500])


def _is_label(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


def check_config(config: dict[str, Any], where: str = "") -> None:
    """:class:`EraserFileError` naming the first field of an eraser's configuration that is
    missing or of the wrong kind (the parameters' ranges are the constructor's to check)."""
    for key in ("params", "patch", "classes", "input_shape", "n_queries", "biases"):
        if key not in config:
            raise EraserFileError(f"{where}the field {key!r} is missing")
    params = config["params"]
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        _fail(where, "params", "an object", params)
    if "batch_size" in params and "patch_batch_size" not in params:  # rule-eraser/1
        params["patch_batch_size"] = params.pop("batch_size")
    params.setdefault("rule_scale", 1.0)  # written before it existed: the paper's patch
    unknown = sorted(set(params) - set(SAVED_PARAMS))
    if unknown:
        raise EraserFileError(f"{where}params holds unknown parameters {unknown}")
    if not isinstance(config["patch"], str):
        _fail(where, "patch", "a patch name or 'custom'", config["patch"])
    classes = config["classes"]
    if not isinstance(classes, list) or len(classes) < 2 or not all(map(_is_label, classes)):
        _fail(where, "classes", "a list of at least 2 labels", classes)
    if len({repr(c) for c in classes}) != len(classes):
        _fail(where, "classes", "distinct labels", classes)
    shape = config["input_shape"]
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)
    ):
        _fail(where, "input_shape", "a list of positive ints", shape)
    features = config.get("features")
    if features is not None and (
        not isinstance(features, list)
        or not all(isinstance(f, str) for f in features)
        or len(shape) != 1
        or len(features) != shape[0]
    ):
        _fail(where, "features", f"null or a list of {shape} column names", features)
    n_queries = config["n_queries"]
    if not isinstance(n_queries, int) or isinstance(n_queries, bool) or n_queries < 0:
        _fail(where, "n_queries", "a non-negative int", n_queries)
    biases = config["biases"]
    if not isinstance(biases, list) or not biases:
        _fail(where, "biases", "a non-empty list", biases)
    for j, bias in enumerate(biases):
        _check_bias(bias, f"biases[{j}]", where)
    if len({b["name"] for b in biases}) != len(biases):
        _fail(where, "biases", "bias columns of distinct names", [b["name"] for b in biases])
    _check_class_priors(biases, len(classes), params.get("prior"), where)
    _check_rule_scales(biases, where)
    if config.get("model_fingerprint") is not None:
        try:
            fingerprint.check_field(config["model_fingerprint"], len(classes), math.prod(shape))
        except ValueError as exc:
            raise EraserFileError(f"{where}model_fingerprint: {exc}") from None
    _check_goal(config, len(classes), len(biases), where)


def _check_goal(config: dict[str, Any], k: int, n_biases: int, where: str) -> None:
    """The ``goal`` and its ``choice`` (absent from files written before goals existed): both
    null or both well formed, the choice's removal of ``k`` offsets and one scale per bias; they
    are replaced by their objects."""
    goal, choice = config.get("goal"), config.get("choice")
    if (goal is None) != (choice is None):
        raise EraserFileError(f"{where}'goal' and 'choice' must both be given or both null")
    if goal is None:
        return
    try:
        config["goal"], config["choice"] = Goal.from_dict(goal), choice_from_dict(choice)
    except (TypeError, ValueError) as exc:
        raise EraserFileError(f"{where}{exc}") from None
    removal = config["choice"].removal
    if len(removal.offset) != k or len(removal.scales) != n_biases:
        _fail(where, "choice.removal", f"{k} offsets and {n_biases} scales", removal.to_dict())


def _check_rule_scales(biases: list, where: str) -> None:
    """Each bias's ``rule_scale`` (absent from files written before it existed: all or none)
    is a non-negative number, and needs the ``class_prior`` it scales around."""
    present = ["rule_scale" in b for b in biases]
    if any(present) and not all(present):
        j = present.index(False)
        raise EraserFileError(f"{where}biases[{j}] has no 'rule_scale' (the others have one)")
    for j, bias in enumerate(biases if any(present) else []):
        value = bias["rule_scale"]
        if not (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and 0 <= value < float("inf")
        ):
            _fail(where, f"biases[{j}].rule_scale", "a non-negative number", value)
        if value != 1 and "class_prior" not in bias:
            raise EraserFileError(
                f"{where}biases[{j}].rule_scale is {value} but the bias holds no 'class_prior' "
                "to scale around"
            )


def _check_class_priors(biases: list, k: int, prior: Any, where: str) -> None:
    """Each bias's ``class_prior`` (absent from files written before it was recorded: all or
    none) is k positive numbers summing to 1; ``prior="keep"`` needs them."""
    present = ["class_prior" in b for b in biases]
    if any(present) and not all(present):
        j = present.index(False)
        raise EraserFileError(f"{where}biases[{j}] has no 'class_prior' (the others have one)")
    if not any(present) and prior == "keep":
        raise EraserFileError(
            f"{where}params.prior is 'keep' but the biases hold no 'class_prior' to keep"
        )
    for j, bias in enumerate(biases if any(present) else []):
        value = bias["class_prior"]
        ok = (
            isinstance(value, list)
            and len(value) == k
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            and all(0 < v <= 1 for v in value)
            and abs(sum(value) - 1) < 1e-6
        )
        if not ok:
            _fail(where, f"biases[{j}].class_prior", f"{k} positive numbers summing to 1", value)


def _check_bias(bias: Any, field: str, where: str) -> None:
    if not isinstance(bias, dict):
        _fail(where, field, "an object", bias)
    for key in ("name", "values", "empty_cells", "fit"):
        if key not in bias:
            raise EraserFileError(f"{where}{field} has no {key!r}")
    if not isinstance(bias["name"], str):
        _fail(where, f"{field}.name", "a string", bias["name"])
    values = bias["values"]
    if not isinstance(values, list) or len(values) < 2 or not all(map(_is_label, values)):
        _fail(where, f"{field}.values", "a list of at least 2 labels", values)
    cells = bias["empty_cells"]
    if not isinstance(cells, list) or not all(isinstance(c, list) and len(c) == 2 for c in cells):
        _fail(where, f"{field}.empty_cells", "a list of [target, bias] pairs", cells)
    fit = bias["fit"]
    if not isinstance(fit, dict) or set(fit) != _FIT_FIELDS:
        _fail(where, f"{field}.fit", f"an object of {sorted(_FIT_FIELDS)}", fit)
    for key, value in fit.items():
        counts = key in ("epochs", "best_epoch", "n_train", "n_heldout")
        if counts and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            _fail(where, f"{field}.fit.{key}", "a non-negative int", value)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not counts and not number and not (key == "heldout_accuracy" and value is None):
            _fail(where, f"{field}.fit.{key}", "a number", value)
