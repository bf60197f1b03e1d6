"""Save and load a fitted Eraser without pickle: weights in safetensors, the rest in JSON.

A directory holds ``eraser.json`` (parameters, classes, bias values, fit reports, and the
input column names when the eraser was fitted on a DataFrame) and
``patches.safetensors`` (each patch's state, keys prefixed ``patch{j}.``, BatchNorm statistics
included). The built-in patches (``"mlp"`` and the image nets of :mod:`ruleeraser.nets`) are
rebuilt from the JSON configuration and input shape. Loading runs no code from the directory.
The deployed model is not saved: it is passed again on load.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import load_file, save_file
from torch import nn

from ruleeraser.blackbox import as_blackbox
from ruleeraser.eraser import Eraser
from ruleeraser.nets import IMAGE_NETS, image_channels, image_net
from ruleeraser.patch import MLP, FitReport, RuleMixture

FORMAT = "rule-eraser/1"
CONFIG, WEIGHTS = "eraser.json", "patches.safetensors"
_SAVED_PARAMS = (
    "rule", "hidden_sizes", "max_epochs", "patience", "learning_rate", "weight_decay",
    "batch_size", "holdout", "output", "eps", "strength", "random_state",
)  # fmt: skip


def _plain(value: Any) -> Any:
    """Numpy scalars and arrays as JSON values."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if hasattr(value, "item") else value


def save_eraser(eraser: Eraser, path: str | Path) -> Path:
    """Write a fitted eraser to directory ``path`` (created if needed)."""
    eraser._check_fitted()
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = {
        "format": FORMAT,
        "params": {name: _plain(getattr(eraser, name)) for name in _SAVED_PARAMS},
        "patch": eraser.patch if isinstance(eraser.patch, str) else "custom",
        "classes": _plain(eraser.classes_),
        "input_shape": list(eraser.input_shape_),
        "features": getattr(eraser, "feature_names_in_", None),
        "n_queries": eraser.n_queries_,
        "biases": [
            {
                "name": name,
                "values": _plain(values),
                "empty_cells": [_plain(c) for c in eraser.empty_cells_[name]],
                "fit": report.to_dict(),
            }
            for name, values, report in zip(
                eraser.bias_names_, eraser.bias_values_, eraser.patch_fit_, strict=True
            )
        ],
    }
    tensors = {
        f"patch{j}.{key}": value.detach().cpu().contiguous()
        for j, module in enumerate(eraser.patches_)
        for key, value in module.state_dict().items()
    }
    save_file(tensors, str(path / WEIGHTS), metadata={"format": FORMAT})
    (path / CONFIG).write_text(json.dumps(config, indent=2))
    return path


def load_eraser(path: str | Path, model: Any, *, patch: nn.Module | None = None) -> Eraser:
    """Read an eraser written by :func:`save_eraser`, to stand in front of ``model``."""
    path = Path(path)
    if not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
        raise FileNotFoundError(f"{path} does not hold {CONFIG} and {WEIGHTS}")
    config = json.loads((path / CONFIG).read_text())
    if config.get("format") != FORMAT:
        raise ValueError(f"{path / CONFIG} is not a {FORMAT} file: {config.get('format')!r}")
    if config["patch"] not in ("mlp", "custom", *IMAGE_NETS):
        raise ValueError(f"{path / CONFIG} names an unknown patch {config['patch']!r}")
    if config["patch"] == "custom" and patch is None:
        raise ValueError("this eraser was fitted with a custom patch: pass patch=<module>")
    params = config["params"]
    eraser = Eraser(model, patch=config["patch"] if patch is None else patch, **params)
    weights = load_file(str(path / WEIGHTS))
    eraser.blackbox_ = as_blackbox(model, output=params["output"])
    eraser.classes_ = np.asarray(config["classes"])
    eraser.n_classes_ = len(eraser.classes_)
    eraser.input_shape_ = tuple(config["input_shape"])
    if config.get("features") is not None:  # absent from files written before it was saved
        eraser.feature_names_in_ = list(config["features"])
    eraser.n_queries_ = config["n_queries"]
    eraser.bias_names_ = [b["name"] for b in config["biases"]]
    eraser.bias_values_ = [np.asarray(b["values"]) for b in config["biases"]]
    eraser.patch_fit_ = [FitReport(**b["fit"]) for b in config["biases"]]
    eraser.empty_cells_ = {
        b["name"]: [tuple(c) for c in b["empty_cells"]] for b in config["biases"]
    }
    eraser.patches_ = []
    for j, values in enumerate(eraser.bias_values_):
        prefix = f"patch{j}."
        state = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
        n_out = len(values) if params["rule"] == "group" else eraser.n_classes_
        module = _skeleton(eraser, patch, n_out)
        if params["rule"] == "group":
            module = RuleMixture(module, state["rules"])
        module.load_state_dict(state)
        eraser.patches_.append(module.eval())
    return eraser


def _skeleton(eraser: Eraser, patch: nn.Module | None, n_out: int) -> nn.Module:
    """An untrained patch of the saved architecture, to load weights into."""
    if patch is not None:
        return copy.deepcopy(patch)
    if eraser.patch in IMAGE_NETS:
        return image_net(eraser.patch, image_channels(eraser.input_shape_, eraser.patch), n_out)
    n_in = int(np.prod(eraser.input_shape_))
    return MLP(n_in, n_out, eraser.hidden_sizes)
