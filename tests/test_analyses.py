"""The paper's analyses (``ruleeraser reproduce calibration-size | severity | backbones |
cross-source | attention | tsne``) on tiny data: the files they write and the properties their
figures rest on."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ruleeraser.cli import main
from ruleeraser.experiments import (
    attention,
    backbones,
    calibration_size,
    cross_source,
    setup,
    severity,
    tsne,
)


@pytest.fixture(autouse=True)
def tiny_images(monkeypatch):
    """One torch thread; image models trained one epoch, patches two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setitem(setup.IMAGE_TRAINING, "epochs", 1)
    monkeypatch.setitem(setup.IMAGE_PATCH, "max_epochs", 2)
    yield
    torch.set_num_threads(before)


def _small(module, monkeypatch, **options):
    """Let ``module`` load its tasks with fewer digits, copies or faces."""
    monkeypatch.setattr(module, "load_splits", functools.partial(setup.load_splits, **options))


def _written(out: Path, name: str) -> dict:
    for suffix in ("json", "md", "png"):
        assert (out / f"{name}.{suffix}").stat().st_size > 0
    return json.loads((out / f"{name}.json").read_text())


# ------------------------------------------------------------------------ calibration size


def test_calibration_size_command_keeps_ratios_with_enough_rows(tmp_path, capsys):
    argv = ["reproduce", "calibration-size", "--datasets", "compas", "--seeds", "1"]
    assert main([*argv, "--jobs", "1", "--out", str(tmp_path), "--quiet"]) == 0
    result = _written(tmp_path, "calibration-size")
    (run,) = result["runs"]
    ratios = [p["ratio"] for p in run["points"]]
    assert ratios == [r for r in calibration_size.RATIOS if round(r * run["n_train"]) >= 20]
    assert 1 / 1000 not in ratios and 1 / 5 in ratios  # COMPAS: 4,111 training rows
    for point in run["points"]:
        assert point["n"] == round(point["ratio"] * run["n_train"])
    largest = run["points"][-1]
    assert largest["model_bias"] < run["before"]["model_bias"]
    assert "| COMPAS | 1/5 |" in (tmp_path / "calibration-size.md").read_text()
    assert "| COMPAS | none (deployed) |" in capsys.readouterr().out


# -------------------------------------------------------------------------------- severity


def test_severity_pool_has_the_asked_share_of_conflicting_rows(monkeypatch):
    _small(severity, monkeypatch, face_rows=6000)
    for alpha in (0.5, 0.05):
        parts = severity.severity_splits("celeba-bignose", alpha, seed=0)
        y = np.r_[parts.train.y, parts.calibration.y]
        b = np.r_[parts.train.bias, parts.calibration.bias]
        for group in (0, 1):
            share = np.mean(y[b == group] != group)
            assert share == pytest.approx(alpha, abs=1 / (b == group).sum())
    with pytest.raises(ValueError, match="bias group 0 has"):
        severity.conflicting_pool(y, b, 0.5, {0: len(y)}, np.random.default_rng(0))


def test_severity_command_measures_every_setting(tmp_path, monkeypatch):
    _small(severity, monkeypatch, face_rows=6000, n_per_class=20, copies=1)
    monkeypatch.setitem(severity.ALPHAS, "celeba-bignose", (0.5, 0.05))
    monkeypatch.setitem(severity.ALPHAS, "coloured-mnist", (0.1,))
    argv = ["reproduce", "severity", "--seeds", "1", "--jobs", "1", "--quiet"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    result = _written(tmp_path, "severity")
    keys = [(r["dataset"], r["alpha"], r["method"]) for r in result["rows"]]
    assert keys == [
        (task, alpha, method)
        for task, alphas in (("celeba-bignose", (0.5, 0.05)), ("coloured-mnist", (0.1,)))
        for alpha in alphas
        for method in severity.METHODS
    ]
    by_key = {(r["dataset"], r["alpha"]): r for r in result["runs"]}
    severe, mild = by_key[("celeba-bignose", 0.05)], by_key[("celeba-bignose", 0.5)]
    assert severe["none"]["model_bias"] > mild["none"]["model_bias"]  # more bias, more severe
    erased = next(r for r in result["rows"] if r["method"] == "eraser")
    cut = 100 * (1 - mild["eraser"]["model_bias"] / mild["none"]["model_bias"])
    assert erased["bias_cut"]["runs"] == [pytest.approx(cut)]


# ------------------------------------------------------------------------------- backbones


@pytest.mark.parametrize("backbone", ["resnet18", "vit", "gradient-boosting", "logistic"])
def test_every_backbone_is_erased_through_its_outputs(backbone, monkeypatch):
    _small(backbones, monkeypatch, n_per_class=20, copies=1, face_rows=4000)
    if backbone in backbones.IMAGE_BACKBONES:
        settings = backbones.IMAGE_BACKBONES[backbone] | {"epochs": 1}
        monkeypatch.setitem(backbones.IMAGE_BACKBONES, backbone, settings)
    task = "coloured-mnist" if backbone in backbones.IMAGE_BACKBONES else "celeba-bignose"
    out = backbones.run_one((task, backbone, 0))
    assert (out["dataset"], out["backbone"]) == (task, backbone)
    for method in backbones.METHODS:
        assert 0 <= out[method]["avg_acc"] <= 100 and out[method]["model_bias"] >= 0
    if task == "celeba-bignose":  # real models on real attributes: the eraser cuts the bias
        assert out["eraser"]["model_bias"] < out["none"]["model_bias"]


def test_backbones_command_writes_table_five(tmp_path, monkeypatch):
    _small(backbones, monkeypatch, face_rows=4000)
    monkeypatch.setitem(backbones.BACKBONES, "lsac", ("logistic",))
    argv = ["reproduce", "backbones", "--datasets", "celeba-bignose", "lsac", "--seeds", "1"]
    assert main([*argv, "--jobs", "1", "--quiet", "--out", str(tmp_path)]) == 0
    result = _written(tmp_path, "backbones")
    assert {(r["dataset"], r["backbone"]) for r in result["rows"]} == {
        ("celeba-bignose", "mlp"),
        ("celeba-bignose", "gradient-boosting"),
        ("celeba-bignose", "logistic"),
        ("lsac", "logistic"),
    }
    assert "| LSAC | logistic regression | eraser |" in (tmp_path / "backbones.md").read_text()


# ---------------------------------------------------------------------------- cross-source


def test_uci_digits_take_coloured_mnists_scheme():
    from ruleeraser.experiments.coloured_mnist import COLOURS

    part = cross_source.uci_digits(0.9, seed=0, copies=2)
    assert part.X.shape == (2 * 1797, 3, 28, 28) and part.X.min() >= 0 and part.X.max() <= 1
    assert np.bincount(part.index).tolist() == [2] * 1797  # every digit twice
    assert abs(np.mean(part.bias == part.y) - 0.9) < 0.02
    palette = np.array(list(COLOURS.values()), np.float32)
    corner = part.X[:, :, 0, 0]  # the border is background: the colour of the bias label
    assert np.allclose(corner, palette[part.bias], atol=1e-6)


def test_cross_source_digits_calibrate_on_the_other_source(tmp_path, monkeypatch):
    _small(cross_source, monkeypatch, n_per_class=20, copies=1)
    monkeypatch.setattr(
        cross_source, "uci_digits", functools.partial(cross_source.uci_digits, copies=1)
    )
    argv = ["reproduce", "cross-source", "--seeds", "1", "--jobs", "1", "--quiet"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    result = _written(tmp_path, "cross-source")
    assert result["setting"] == "digits"
    assert result["runs"][0]["calibration_rows"] == {"same": 30, "other": 1797}
    assert [r["method"] for r in result["rows"]] == list(cross_source.METHODS)


def _jpeg(path: Path, rgb: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 12), rgb).save(path, quality=95)


def _faces(root: Path, n: int, rng: np.random.Generator) -> tuple[Path, Path]:
    """A CelebA folder of ``n`` faces and an LFW folder of 40, in their release layouts; a
    face is red when male, its green channel says whether it has a big nose."""
    celeba, lfw = root / "celeba", root / "lfw-root"
    male = rng.random(n) < 0.5
    nose = np.where(rng.random(n) < 0.85, male, ~male)
    lines = [str(n), "Big_Nose Male Smiling"]
    for i in range(n):
        name = f"{i + 1:06d}.jpg"
        lines.append(f"{name} {1 if nose[i] else -1:2d} {1 if male[i] else -1:2d} -1")
        _jpeg(celeba / "img_align_celeba" / name, (220 * int(male[i]), 120 * int(nose[i]) + 60, 90))
    (celeba / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    rows = ["# attributes", "#\tperson\timagenum\tMale\tBig Nose"]
    for i in range(40):
        person, is_male, has_nose = f"Person {i}", i % 2 == 0, i % 4 < 2
        rows.append(f"{person}\t1\t{1.5 if is_male else -1.5}\t{0.8 if has_nose else -0.8}")
        folder = person.replace(" ", "_")
        colour = (220 * int(is_male), 120 * int(has_nose) + 60, 90)
        _jpeg(lfw / "lfw" / folder / f"{folder}_0001.jpg", colour)
    (lfw / "lfw_attributes.txt").write_text("\n".join(rows) + "\n")
    return celeba, lfw


def test_cross_source_faces_read_lfw_and_celeba_folders(tmp_path):
    celeba, lfw = _faces(tmp_path, 160, np.random.default_rng(0))
    argv = ["reproduce", "cross-source", "--test-root", str(celeba), "--calibration-root"]
    argv += [str(lfw), "--size", "8", "--max-items", "150", "--seeds", "1", "--jobs", "1"]
    assert main([*argv, "--quiet", "--out", str(tmp_path / "out")]) == 0
    result = _written(tmp_path / "out", "cross-source")
    assert result["setting"] == "faces"
    rows = result["runs"][0]["calibration_rows"]
    assert rows["other"] == 40 and 15 <= rows["same"] <= 25  # a sixth of 80% of 150
    for row in result["rows"]:
        assert 0 <= row["avg_acc"]["mean"] <= 100


def test_cross_source_needs_both_roots(tmp_path, capsys):
    argv = ["reproduce", "cross-source", "--test-root", str(tmp_path), "--out", str(tmp_path)]
    assert main(argv) != 0
    assert "--calibration-root" in capsys.readouterr().err


# ------------------------------------------------------------------- attention and t-SNE


def test_regions_split_each_image_into_box_strokes_and_background():
    from ruleeraser.experiments.two_biases import stamp_objects

    X = np.zeros((2, 3, 32, 32), np.float32)
    digits = np.zeros((2, 32, 32))
    digits[:, 10:20, 14:17] = 1.0  # a stroke
    stamp_objects(X, np.array([0, 1]), np.array([0, 3]))  # a square top-left, a cross
    masks = attention.regions(X, digits)
    assert masks["object box"][0, 1:8, 1:8].all() and masks["object box"][0].sum() == 49
    assert masks["object box"][1, 24:31, 24:31].all() and masks["object box"][1].sum() == 49
    assert masks["strokes"].sum() == 2 * 30
    total = sum(m.astype(int) for m in masks.values())
    assert (total == 1).all()  # the regions split every pixel once


def test_attention_maps_and_shares(tmp_path, monkeypatch):
    pytest.importorskip("captum")
    monkeypatch.setattr(
        attention, "run_attention",
        functools.partial(attention.run_attention, n_per_class=20, copies=1),
    )  # fmt: skip
    argv = ["reproduce", "attention", "--seeds", "1", "--jobs", "1", "--quiet"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    result = _written(tmp_path, "attention")
    assert (tmp_path / "attention-shares.png").stat().st_size > 0
    for run in result["runs"]:
        for net in attention.NETS:
            assert sum(run[net].values()) == pytest.approx(1.0)
    assert [r["net"] for r in result["rows"]] == list(attention.NETS)


def test_grad_cam_is_non_negative_and_image_sized():
    pytest.importorskip("captum")
    from ruleeraser.nets import SmallCNN

    net = SmallCNN(3, 2, width=4)
    maps = attention.grad_cam(net, np.random.default_rng(0).random((5, 3, 32, 32), np.float32))
    assert maps.shape == (5, 32, 32) and (maps >= 0).all()


def test_tsne_embeddings_and_neighbour_accuracy(tmp_path, monkeypatch):
    monkeypatch.setattr(
        tsne, "run_tsne", functools.partial(tsne.run_tsne, n_per_class=20, copies=1, n_points=80)
    )
    argv = ["reproduce", "tsne", "--seeds", "1", "--jobs", "1", "--quiet"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    result = _written(tmp_path, "tsne")
    assert result["runs"][0]["n_points"] == 80
    for row in result["rows"]:
        for bias in tsne.BIASES:
            assert 0 <= row[bias]["mean"] <= 100
    # every net's features carry the background colour, which fills most of the image
    assert all(r["background"]["mean"] > 70 for r in result["rows"])
