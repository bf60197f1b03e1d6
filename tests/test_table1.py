import numpy as np
import pytest

from ruleeraser.experiments import setup, table1, table3


@pytest.fixture(scope="module")
def face_rows():
    return table1.run_table1([0], datasets=["celeba-bignose"], recipes=["vanilla"], jobs=1)


def _row(rows, deployed, method):
    return next(r for r in rows if (r["deployed"], r["method"]) == (deployed, method))


def test_table1_face_task_is_debiased_with_a_sigmoid_twin(face_rows):
    keys = {(r["deployed"], r["method"]) for r in face_rows}
    assert keys == {
        ("vanilla", "none"),
        ("vanilla", "eraser"),
        ("vanilla", "eraser-paper"),
        ("vanilla", "oracle"),
        ("vanilla-sigmoid", "none"),
        ("vanilla-sigmoid", "eraser"),
    }
    for deployed in ("vanilla", "vanilla-sigmoid"):
        before, after = _row(face_rows, deployed, "none"), _row(face_rows, deployed, "eraser")
        assert after["model_bias"]["mean"] < 0.5 * before["model_bias"]["mean"]
        assert after["worst_acc"]["mean"] > before["worst_acc"]["mean"]
    row = _row(face_rows, "vanilla", "eraser")
    assert row["seeds"] == [0] and row["model_bias"]["runs"] == [row["model_bias"]["mean"]]
    text = table1.to_markdown(face_rows)
    assert "Sigmoid twin (CelebA BigNose, vanilla)" in text and "| CelebA BigNose |" in text


def test_table1_image_task_runs_end_to_end(monkeypatch):
    from ruleeraser.experiments.coloured_mnist import coloured_mnist

    monkeypatch.setitem(setup.IMAGE_TRAINING, "epochs", 2)
    monkeypatch.setitem(setup.IMAGE_PATCH, "max_epochs", 3)
    splits = coloured_mnist(alignment=0.9, seed=0, n_per_class=40).splits
    summary = table1.run_one("coloured-mnist", "vanilla", 0, splits)
    assert set(summary) == {"none", "eraser", "eraser-paper", "oracle"}
    for values in summary.values():
        assert set(values) == set(table1.METRICS)
        assert 0 <= values["avg_acc"] <= 100 and 0 <= values["model_bias"] <= 100


def test_table3_measures_each_patch_and_both(monkeypatch):
    monkeypatch.setitem(setup.IMAGE_TRAINING, "epochs", 3)
    monkeypatch.setitem(setup.IMAGE_PATCH, "max_epochs", 5)
    summary = table3.run_one(0, alignment=0.95, n_per_class=40, copies=2)
    assert list(summary) == list(table3.METHODS)
    for row in summary.values():
        assert row["bias_mean"] == pytest.approx((row["bias_background"] + row["bias_object"]) / 2)
    rows = [
        {"method": m, "seeds": [0], "alignment": 0.95}
        | {k: {"mean": v, "std": 0.0, "runs": [v]} for k, v in summary[m].items()}
        for m in table3.METHODS
    ]
    text = table3.to_markdown(rows)
    assert text.count("\n| eraser-") == 4 and "cut (background / object)" in text
    assert np.isfinite([summary[m]["avg_acc"] for m in table3.METHODS]).all()


def test_reproduce_table1_command_writes_json_and_markdown(tmp_path, capsys):
    import json

    from ruleeraser.cli import main

    args = ["reproduce", "table1", "--datasets", "celeba-attractive", "--deployed", "vanilla"]
    assert main([*args, "--seeds", "1", "--jobs", "1", "--out", str(tmp_path), "--quiet"]) == 0
    rows = json.loads((tmp_path / "table1.json").read_text())
    assert {r["method"] for r in rows} == {"none", "eraser", "eraser-paper", "oracle"}
    assert (tmp_path / "table1.md").read_text() in capsys.readouterr().out
