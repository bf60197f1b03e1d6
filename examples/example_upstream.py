"""A small deployed model to put the fair proxy in front of (README, tests, benchmark).

    python examples/example_upstream.py --port 9000 --eraser-out demo-eraser

fits an eraser for the demo model, saves it to ``demo-eraser``, and serves the model on
``POST http://127.0.0.1:9000/predict`` (``--features N`` for a wider, COMPAS-shaped demo).

:func:`create_upstream_app` serves any classifier with ``predict_proba`` over the instances
protocol (``{"instances": [[...]]}`` -> ``{"predictions": [[...]]}``); :func:`make_demo` builds
a biased tabular task and a logistic regression that learned the bias.
"""

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from fastapi import FastAPI

#: Columns of the narrow demo: a noisy view of the target, two noise columns, the bias.
BASE_FEATURES = 4


def create_upstream_app(model: Any) -> "FastAPI":
    """A FastAPI app answering ``POST /predict`` with ``model.predict_proba`` of the instances."""
    from fastapi import FastAPI
    from pydantic import BaseModel, Field, FiniteFloat

    class Instances(BaseModel):
        instances: list[list[FiniteFloat]] = Field(min_length=1)

    app = FastAPI(title="example upstream model")

    @app.post("/predict")
    async def predict(body: Instances) -> dict[str, list[list[float]]]:
        return {"predictions": model.predict_proba(np.asarray(body.instances)).tolist()}

    return app


@dataclass(frozen=True)
class Demo:
    """A deployed model that decides on the bias, with calibration and test sets.

    Columns of ``X``: a noisy view of the target, two noise columns, and the bias ``b``, which
    agrees with the target ``align`` of the time in the model's training and calibration data
    and half of the time in the test set; with ``n_features`` above 4, then the one-hot
    columns of a categorical variable of ``n_features - 4`` levels that leans on the target
    (as COMPAS's charge descriptions), and every column standardised on the training rows.
    """

    model: Any
    X_calib: np.ndarray
    y_calib: np.ndarray
    bias_calib: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    bias_test: np.ndarray


def _biased(n: int, align: float, levels: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    y = rng.integers(0, 2, n)
    b = np.where(rng.random(n) < align, y, 1 - y)
    X = np.c_[y + rng.normal(0, 1, n), rng.normal(0, 1, (n, 2)), b]
    if levels:
        weights = 1.0 / np.arange(1, levels + 1)  # a few common levels, many rare ones
        shift = rng.integers(0, max(levels // 10, 1), n) * y  # the target moves the level
        level = (rng.choice(levels, n, p=weights / weights.sum()) + shift) % levels
        X = np.c_[X, np.eye(levels)[level]]
    return X, y, b


def make_demo(
    seed: int = 0,
    *,
    n_train: int = 4000,
    n_calib: int = 800,
    n_test: int = 2000,
    align: float = 0.85,
    n_features: int = BASE_FEATURES,
) -> Demo:
    """Train the demo's logistic regression (scikit-learn) on biased data; see :class:`Demo`."""
    from sklearn.linear_model import LogisticRegression

    if n_features < BASE_FEATURES:
        raise ValueError(f"n_features must be at least {BASE_FEATURES}, got {n_features}")
    levels = n_features - BASE_FEATURES
    rng = np.random.default_rng(seed)
    X, y, _ = _biased(n_train, align, levels, rng)
    calib, test = _biased(n_calib, align, levels, rng), _biased(n_test, 0.5, levels, rng)
    if levels:  # the rows a scaler in front of the model would pass it
        mean, std = X.mean(axis=0), np.where(X.std(axis=0) > 0, X.std(axis=0), 1.0)
        X = (X - mean) / std
        calib = ((calib[0] - mean) / std, *calib[1:])
        test = ((test[0] - mean) / std, *test[1:])
    model = LogisticRegression(max_iter=1000).fit(X, y)
    return Demo(model, *calib, *test)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from ruleeraser import Eraser

    parser = argparse.ArgumentParser(description="Serve the demo model on POST /predict.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--features", type=int, default=BASE_FEATURES, help="row width (4)")
    parser.add_argument("--eraser-out", help="fit an eraser for the demo model, save it here")
    args = parser.parse_args(argv)
    demo = make_demo(args.seed, n_features=args.features)
    if args.eraser_out:
        eraser = Eraser(demo.model, random_state=args.seed)
        eraser.fit(demo.X_calib, demo.y_calib, bias=demo.bias_calib).save(args.eraser_out)
        print(f"saved an eraser for the demo model to {args.eraser_out}")
    uvicorn.run(create_upstream_app(demo.model), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
