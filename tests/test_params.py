"""Every Eraser parameter is checked where it is given (constructor, set_params, fit), by one
table: a new parameter without a row here fails ``test_every_parameter_has_a_row``."""

import math
import re
import warnings

import numpy as np
import pytest
import torch

from ruleeraser import BlackBox, Eraser, as_blackbox
from ruleeraser.fingerprint import N_PROBES
from ruleeraser.params import Interval, Options, Satisfies, validate_params

#: name -> (a value of the wrong type, a value of the right type out of range or None).
BAD = {
    "model": (None, None),
    "patch": (5, "transformer"),
    "rule": (3, "oracle"),
    "hidden_sizes": ("64", [64, 0]),
    "max_epochs": (2.5, 0),
    "patience": ("10", 0),
    "learning_rate": ("fast", 0.0),
    "weight_decay": ([0.1], -1e-3),
    "patch_batch_size": (32.0, 0),
    "query_batch_size": ("4096", 0),
    "holdout": ([0.2], 1.0),
    "output": (1, "probabilities"),
    "classes": (5, ["only one"]),
    "eps": ("1e-6", 0.5),
    "strength": ("high", math.nan),
    "prior": (1, "uniform"),
    "rule_scale": ([1.0], -0.5),
    "goal": ({"constraint": "equalized_odds"}, None),
    "n_threads": (2.0, 0),
    "random_state": (1.5, -1),
    "progress": ("yes", None),
    "batch_size": (2.5, 0),
}
#: More values out of range, each refused.
MORE_OUT_OF_RANGE = [
    ("strength", math.inf),
    ("strength", -0.5),
    ("learning_rate", math.nan),
    ("eps", 0.0),
    ("holdout", 0.0),
    ("classes", ["a", "a"]),
    ("hidden_sizes", []),
    ("random_state", 2**32),
    ("rule_scale", "auto"),
    ("rule_scale", math.inf),
]
MORE_WRONG_TYPE = [("max_epochs", True), ("classes", "ab"), ("progress", 1), ("strength", None)]


def wrong_types():
    return [(name, bad) for name, (bad, _) in BAD.items()] + MORE_WRONG_TYPE


def out_of_range():
    return [(name, bad) for name, (_, bad) in BAD.items() if bad is not None] + MORE_OUT_OF_RANGE


def re_repr(value):
    return re.escape(repr(value))


def _kwargs(name, value):
    return {"model": value} if name == "model" else {"model": lambda x: x, name: value}


def test_every_parameter_has_a_row():
    """The constraints cover the constructor's parameters, and this table covers both."""
    names = set(Eraser(lambda x: x).get_params())
    assert set(Eraser._parameter_constraints) == names
    assert set(BAD) == names, f"rows missing for {names - set(BAD)}, stale {set(BAD) - names}"


@pytest.mark.parametrize(("name", "value"), wrong_types())
def test_a_wrong_type_is_a_type_error_naming_the_parameter(name, value):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(TypeError, match=rf"^{name} must be .*; got {re_repr(value)}$"):
            Eraser(**_kwargs(name, value))


@pytest.mark.parametrize(("name", "value"), out_of_range())
def test_a_value_out_of_range_is_a_value_error_naming_the_parameter(name, value):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(ValueError, match=rf"^{name} must be .*; got {re_repr(value)}$"):
            Eraser(**_kwargs(name, value))


@pytest.mark.parametrize(("name", "value"), wrong_types() + out_of_range())
def test_set_params_checks_like_the_constructor_and_changes_nothing_on_error(name, value):
    eraser = Eraser(lambda x: x)
    before = eraser.get_params()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises((TypeError, ValueError), match=rf"^{name} must be"):
            eraser.set_params(**{name: value})
    assert eraser.get_params().keys() == before.keys()
    assert all(eraser.get_params()[k] is v for k, v in before.items())


def test_set_params_names_an_unknown_parameter_and_accepts_good_values():
    eraser = Eraser(lambda x: x)
    with pytest.raises(ValueError, match="unknown parameter 'strenght'"):
        eraser.set_params(strenght=0.5)
    assert eraser.set_params(strength=0.5, max_epochs=3) is eraser
    assert (eraser.strength, eraser.max_epochs) == (0.5, 3)


def test_fit_checks_parameters_changed_behind_its_back(setup):
    model, (Xc, yc, bc), _ = setup
    eraser = Eraser(model)
    eraser.strength = "high"  # an attribute set directly, not through set_params
    with pytest.raises(TypeError, match="^strength must be"):
        eraser.fit(Xc, yc, bias=bc)
    assert not hasattr(eraser, "blackbox_")  # refused before the model was queried


def test_numpy_numbers_and_sequences_are_accepted():
    eraser = Eraser(
        lambda x: x,
        max_epochs=np.int64(5),
        strength=np.float32(0.5),
        hidden_sizes=(np.int64(8),),
        classes=np.array(["no", "yes"]),
        random_state=np.uint32(7),
    )
    assert eraser.max_epochs == 5


def test_deprecated_batch_size_warns_and_still_sets_the_patch_batch(setup, tmp_path):
    model, (Xc, yc, bc), (Xt, _, _) = setup
    with pytest.warns(DeprecationWarning, match="patch_batch_size") as caught:
        old = Eraser(model, batch_size=64, max_epochs=3, random_state=0)
    assert caught[0].filename == __file__  # the warning points at the caller's line
    new = Eraser(model, patch_batch_size=64, max_epochs=3, random_state=0)
    old.fit(Xc, yc, bias=bc)
    new.fit(Xc, yc, bias=bc)
    np.testing.assert_array_equal(old.predict_proba(Xt), new.predict_proba(Xt))
    other = Eraser(model, patch_batch_size=16, max_epochs=3, random_state=0).fit(Xc, yc, bias=bc)
    assert not np.allclose(other.predict_proba(Xt), new.predict_proba(Xt))  # it does matter
    old.save(tmp_path)
    assert Eraser.load(tmp_path, model).patch_batch_size == 64  # saved under its new name


def test_deprecated_and_new_batch_size_together_are_refused():
    with pytest.raises(ValueError, match="^batch_size is the deprecated name .* pass only patch_"):
        Eraser(lambda x: x, batch_size=64, patch_batch_size=32)


def test_query_batch_size_sets_the_rows_per_model_call(setup):
    model, (Xc, yc, bc), _ = setup
    sizes = []

    def counted(x):
        sizes.append(len(x))
        return model.predict_proba(x)

    Eraser(counted, query_batch_size=300, max_epochs=1).fit(Xc, yc, bias=bc)
    assert sizes == [300, 300, 200, N_PROBES]  # then the fingerprint's probe rows


@pytest.mark.parametrize("make", [BlackBox, as_blackbox], ids=["BlackBox", "as_blackbox"])
def test_blackbox_deprecated_batch_size_warns_and_works(make):
    sizes = []

    def fn(x):
        sizes.append(len(x))
        return np.full((len(x), 2), 0.5)

    with pytest.warns(DeprecationWarning, match="query_batch_size") as caught:
        box = make(fn, batch_size=3)
    assert caught[0].filename == __file__
    assert box.query_batch_size == 3
    box(np.zeros((7, 2)))
    assert sizes == [3, 3, 1] and box.n_queries == 7


@pytest.mark.parametrize(
    ("bad", "error"), [(0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError),
                       ("8", TypeError)]
)  # fmt: skip
def test_blackbox_refuses_a_bad_query_batch_size(bad, error):
    with pytest.raises(error, match="query_batch_size must be an int >= 1"):
        BlackBox(lambda x: x, query_batch_size=bad)
    with pytest.raises(ValueError, match="output must be one of 'proba', 'logits'"):
        BlackBox(lambda x: x, output="scores")


def test_a_torch_module_as_model_gets_the_query_batch(setup):
    _, (Xc, _, _), _ = setup
    module = torch.nn.Linear(4, 2)
    box = as_blackbox(module, query_batch_size=500)
    assert box.query_batch_size == 500 and box(Xc).shape == (800, 2)


def test_validate_params_kinds():
    constraints = {
        "n": [Interval(int, 1, 10)],
        "how": [None, Options(("a", "b"))],
        "seq": [Satisfies(lambda v: len(v) == 2, "a pair", (list,))],
    }
    validate_params({"n": 10, "how": None, "seq": [1, 2]}, constraints)
    for params, error in [
        ({"n": 11}, ValueError),
        ({"n": 1.0}, TypeError),
        ({"how": "c"}, ValueError),
        ({"how": 1}, TypeError),
        ({"seq": [1]}, ValueError),
        ({"seq": 5}, TypeError),
    ]:
        with pytest.raises(error, match=f"^file.json: {next(iter(params))} must be"):
            validate_params(params, constraints, where="file.json: ")
