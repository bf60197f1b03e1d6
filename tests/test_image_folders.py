"""Tests for ruleeraser.experiments.image_folders on tiny fixtures in each dataset's layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ruleeraser.experiments import image_folders as F

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
COLOURS = [RED, GREEN, BLUE, (255, 255, 0), (0, 255, 255), (255, 0, 255)]

CELEBA_ATTRIBUTES = [
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
]


def _jpeg(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (20, 24)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, quality=100, subsampling=0)


def _mean_rgb(image: torch.Tensor | np.ndarray) -> np.ndarray:
    return np.asarray(image).reshape(3, -1).mean(axis=1)


# ----------------------------------------------------------------------------- CelebA

# filename, Big_Nose, Male, partition; image i has colour COLOURS[i]
CELEBA_ROWS = [
    ("000001.jpg", 1, 1, 0),
    ("000002.jpg", -1, -1, 0),
    ("000003.jpg", 1, -1, 0),
    ("000004.jpg", -1, 1, 1),
    ("000005.jpg", 1, 1, 2),
    ("000006.jpg", -1, -1, 2),
]


def _celeba(root: Path, *, drive_layout: bool = False) -> Path:
    """The official files, CRLF line ends and ``%2d`` values as in the release."""
    rng = np.random.default_rng(0)
    anno, ev, img = (root / s for s in ("Anno", "Eval", "Img")) if drive_layout else (root,) * 3
    lines = [str(len(CELEBA_ROWS)), " ".join(CELEBA_ATTRIBUTES) + " "]
    for i, (name, nose, male, _) in enumerate(CELEBA_ROWS):
        values = rng.choice([-1, 1], len(CELEBA_ATTRIBUTES))
        values[CELEBA_ATTRIBUTES.index("Big_Nose")] = nose
        values[CELEBA_ATTRIBUTES.index("Male")] = male
        lines.append(name + " " + " ".join(f"{v:2d}" for v in values))
        _jpeg(img / "img_align_celeba" / name, COLOURS[i], size=(20, 24))
    anno.mkdir(parents=True, exist_ok=True)
    ev.mkdir(parents=True, exist_ok=True)
    (anno / "list_attr_celeba.txt").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    partition = "".join(f"{name} {code}\r\n" for name, *_, code in CELEBA_ROWS)
    (ev / "list_eval_partition.txt").write_bytes(partition.encode())
    return root


def test_celeba_labels_partitions_and_lazy_images(tmp_path: Path) -> None:
    ds = F.load_celeba(_celeba(tmp_path), target="Big_Nose", bias="Male", size=16)
    assert len(ds) == 6 and ds.y.dtype == np.int64 and ds.bias.dtype == np.int64
    assert ds.y.tolist() == [1, 0, 1, 0, 1, 0] and ds.bias.tolist() == [1, 0, 0, 1, 1, 0]
    assert ds.target_labels == ["not Big_Nose", "Big_Nose"]
    assert ds.bias_labels == ["female", "male"]

    image, y, bias = ds[1]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert np.allclose(_mean_rgb(image), [0, 1, 0], atol=0.02)  # 000002.jpg is green
    assert (y, bias) == (0, 0)

    for partition, rows in (("train", [0, 1, 2]), ("valid", [3]), ("test", [4, 5])):
        part = F.load_celeba(tmp_path, partition=partition, size=8)
        assert [Path(p).name for p in part.paths] == [CELEBA_ROWS[i][0] for i in rows]
        assert part.y.tolist() == ds.y[rows].tolist()
        assert part.bias.tolist() == ds.bias[rows].tolist()


def test_celeba_other_attributes_and_drive_layout(tmp_path: Path) -> None:
    ds = F.load_celeba(_celeba(tmp_path, drive_layout=True), partition="test", size=8)
    assert ds.y.tolist() == [1, 0] and ds.bias.tolist() == [1, 0]
    flipped = F.load_celeba(tmp_path, target="male", bias="big nose", size=8)
    assert flipped.target_name == "Male" and flipped.bias_name == "Big_Nose"
    assert flipped.y.tolist() == [1, 0, 0, 1, 1, 0]


def test_celeba_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="folder .* not found"):
        F.load_celeba(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="list_attr_celeba.txt"):
        F.load_celeba(tmp_path)
    _celeba(tmp_path)
    with pytest.raises(ValueError, match=r"unknown attribute 'Big_Ears'; valid: 5_o_Clock.*Young"):
        F.load_celeba(tmp_path, target="Big_Ears")
    with pytest.raises(ValueError, match="same attribute"):
        F.load_celeba(tmp_path, target="Male")
    with pytest.raises(ValueError, match="unknown CelebA partition 'val'; valid: all, train"):
        F.load_celeba(tmp_path, partition="val")
    (tmp_path / "list_eval_partition.txt").unlink()
    with pytest.raises(FileNotFoundError, match="list_eval_partition.txt"):
        F.load_celeba(tmp_path, partition="train")
    assert len(F.load_celeba(tmp_path)) == 6  # "all" needs no partition file

    (tmp_path / "img_align_celeba" / "000002.jpg").unlink()
    (tmp_path / "img_align_celeba" / "000005.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"2 of 6 images .* 000002.jpg, 000005.jpg"):
        F.load_celeba(tmp_path)
    with pytest.warns(UserWarning, match="2 of 6 images .* missing"):
        ds = F.load_celeba(tmp_path, on_missing="skip")
    assert [Path(p).name for p in ds.paths] == [
        "000001.jpg",
        "000003.jpg",
        "000004.jpg",
        "000006.jpg",
    ]
    assert ds.y.tolist() == [1, 1, 0, 0]


def test_celeba_rejects_a_truncated_attribute_file(tmp_path: Path) -> None:
    _celeba(tmp_path)
    path = tmp_path / "list_attr_celeba.txt"
    path.write_bytes(b"9" + path.read_bytes()[1:])  # line 1 announces more rows than exist
    with pytest.raises(ValueError, match="announces 9 images, the table has 6"):
        F.load_celeba(tmp_path)


def test_max_items_draws_a_seeded_consistent_subset(tmp_path: Path) -> None:
    full = F.load_celeba(_celeba(tmp_path), size=8)
    a = F.load_celeba(tmp_path, size=8, max_items=3, seed=1)
    assert len(a) == 3 and a.paths == F.load_celeba(tmp_path, size=8, max_items=3, seed=1).paths
    assert a.paths == sorted(a.paths)
    draws = {tuple(F.load_celeba(tmp_path, size=8, max_items=3, seed=s).paths) for s in range(8)}
    assert len(draws) > 1
    rows = [full.paths.index(p) for p in a.paths]
    assert a.y.tolist() == full.y[rows].tolist() and a.bias.tolist() == full.bias[rows].tolist()
    with pytest.raises(ValueError, match="max_items must be positive"):
        F.load_celeba(tmp_path, max_items=0)


# ------------------------------------------------------------------ images and arrays


def test_read_image_crops_the_centred_square_then_resizes(tmp_path: Path) -> None:
    # 20 x 30 portrait: a blue band on the top 5 rows, red below; the square is rows 5..24.
    img = Image.new("RGB", (20, 30), RED)
    img.paste(BLUE, (0, 0, 20, 5))
    img.save(tmp_path / "tall.png")  # lossless, so the crop's edge is exact
    pixels = F.read_image(tmp_path / "tall.png", 10)
    assert pixels.shape == (3, 10, 10) and pixels.dtype == np.float32
    assert pixels.flags.c_contiguous
    # all red: a plain resize of the whole image would keep 1/6 of the blue band
    assert (pixels[0] == 1).all() and (pixels[1:] == 0).all()

    # Large JPEG (decoded at a reduced scale): a green square in the middle half on red.
    img = Image.new("RGB", (384, 384), RED)
    img.paste(GREEN, (96, 96, 288, 288))
    img.save(tmp_path / "big.jpg", quality=100, subsampling=0)
    whole = F.read_image(tmp_path / "big.jpg", 16)
    centre = F.read_image(tmp_path / "big.jpg", 16, crop_fraction=0.5)
    assert np.allclose(_mean_rgb(whole), [0.75, 0.25, 0], atol=0.03)
    assert np.allclose(_mean_rgb(centre), [0, 1, 0], atol=0.03)

    Image.new("L", (12, 12), 128).save(tmp_path / "grey.png")  # greyscale becomes RGB
    grey = F.read_image(tmp_path / "grey.png", 4)
    assert grey.shape == (3, 4, 4) and np.allclose(grey, 128 / 255, atol=1e-6)


def test_materialise_chunks_subset_and_collate(tmp_path: Path) -> None:
    ds = F.load_celeba(_celeba(tmp_path), size=12)
    every = ds.materialise(chunk_size=4)
    assert every.shape == (6, 3, 12, 12) and every.dtype == np.float32
    assert np.array_equal(every[2], ds[2][0].numpy())
    for i, colour in enumerate(COLOURS):
        assert np.allclose(_mean_rgb(every[i]), np.array(colour) / 255, atol=0.02)
    chunks = list(ds.iter_chunks([5, 0, 3], chunk_size=2))
    assert [len(c) for c in chunks] == [2, 1]
    assert np.array_equal(np.concatenate(chunks), every[[5, 0, 3]])
    assert ds.materialise([]).shape == (0, 3, 12, 12)
    with pytest.raises(ValueError, match=r"indices must lie in 0\.\.5"):
        ds.materialise([6])

    part = ds.subset([4, 1])
    assert part.y.tolist() == ds.y[[4, 1]].tolist() and part.size == 12
    assert np.array_equal(part.materialise(), every[[4, 1]])

    images, y, bias = next(iter(DataLoader(ds, batch_size=4)))
    assert images.shape == (4, 3, 12, 12) and y.tolist() == ds.y[:4].tolist()
    assert bias.tolist() == ds.bias[:4].tolist()


def test_dataset_validates_its_inputs(tmp_path: Path) -> None:
    kwargs = dict(target_name="t", target_labels=["a", "b"], bias_name="b", bias_labels=["x", "y"])
    with pytest.raises(ValueError, match="y must lie in 0..1"):
        F.ImageFolderDataset(["a.jpg"], [2], [0], **kwargs)
    with pytest.raises(ValueError, match=r"bias has shape \(2,\); expected \(1,\)"):
        F.ImageFolderDataset(["a.jpg"], [1], [0, 1], **kwargs)
    with pytest.raises(ValueError, match="size must be a positive"):
        F.ImageFolderDataset(["a.jpg"], [1], [0], size=0, **kwargs)
    with pytest.raises(ValueError, match=r"crop_fraction must be in \(0, 1\]"):
        F.ImageFolderDataset(["a.jpg"], [1], [0], crop_fraction=1.5, **kwargs)
    with pytest.raises(ValueError, match=r"crop_fraction must be in \(0, 1\]"):
        F.read_image(tmp_path / "a.jpg", 8, crop_fraction=0)


# ---------------------------------------------------------------------------- UTKFace

UTK_GOOD = {  # name -> (gender, race)
    "25_0_0_20170116174525125.jpg.chip.jpg": (0, 0),
    "31_1_0_20170109150557335.jpg.chip.jpg": (1, 0),
    "8_0_1_20170110220255346.jpg.chip.jpg": (0, 1),
    "52_1_2_20170109142408075.jpg.chip.jpg": (1, 2),
    "70_0_4_20170117195405372.jpg.chip.jpg": (0, 4),
}
UTK_BAD = [
    "39_1_20170116174525125.jpg.chip.jpg",  # real file without its race field
    "61_1_20170109150557335.jpg.chip.jpg",
    "40_3_0_20170119180008775.jpg.chip.jpg",  # gender 3
    "20_0_7_20170119180008775.jpg.chip.jpg",  # race 7
]


def _utkface(folder: Path) -> Path:
    for i, name in enumerate([*UTK_GOOD, *UTK_BAD]):
        _jpeg(folder / name, COLOURS[i % len(COLOURS)], size=(20, 20))
    (folder / "README.txt").write_text("not an image")
    return folder


def test_utkface_labels_and_skip_warning(tmp_path: Path) -> None:
    _utkface(tmp_path / "UTKFace")
    for root in (tmp_path, tmp_path / "UTKFace"):
        with pytest.warns(UserWarning, match="skipped 4 of 9 files") as record:
            ds = F.load_utkface(root, size=8)
        message = str(record[0].message)
        assert "39_1_20170116174525125.jpg.chip.jpg" in message
        assert "[age]_[gender]_[race]_[date&time].jpg" in message
        rows = zip(ds.paths, ds.y, ds.bias, strict=True)
        got = {Path(p).name: (int(t), int(b)) for p, t, b in rows}
        assert got == {name: (g, int(r != 0)) for name, (g, r) in UTK_GOOD.items()}
    assert ds.target_labels == ["male", "female"] and ds.bias_labels == ["White", "non-White"]

    with pytest.warns(UserWarning):
        five = F.load_utkface(tmp_path, race_groups="five", size=8, max_items=3, seed=0)
    assert len(five) == 3 and five.bias_labels == F.UTKFACE_RACES
    assert all(UTK_GOOD[Path(p).name][1] == b for p, b in zip(five.paths, five.bias, strict=True))
    image = five[0][0]
    assert image.shape == (3, 8, 8) and image.min() >= 0 and image.max() <= 1


def test_utkface_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no .jpg files"):
        F.load_utkface(tmp_path)
    with pytest.raises(ValueError, match="race_groups must be"):
        F.load_utkface(tmp_path, race_groups="three")
    _jpeg(tmp_path / UTK_BAD[0], RED)
    with pytest.warns(UserWarning, match="skipped 1 of 1"), pytest.raises(ValueError):
        F.load_utkface(tmp_path)


# -------------------------------------------------------------------------- UrbanCars


def _urbancars(root: Path, split: str, per_group: int = 2) -> Path:
    """Write ``per_group`` images per composition folder (and the masks beside them)."""
    split_dir = root / "urbancars" / F.URBANCARS_SPLITS[split] / split
    for o, obj in enumerate(("urban", "country")):
        for b, bg in enumerate(("urban", "country")):
            for c, co in enumerate(("urban", "country")):
                group = split_dir / f"obj-{obj}_bg-{bg}_co_occur_obj-{co}"
                for i in range(per_group):
                    _jpeg(group / f"{i:03d}.jpg", (255 * o, 255 * b, 255 * c), size=(16, 16))
                    Image.new("L", (16, 16), 255).save(group / f"{i:03d}_mask.png")
                    Image.new("L", (16, 16), 0).save(group / f"{i:03d}_co_occur_obj_mask.png")
    return root


def test_urbancars_labels_from_folder_names(tmp_path: Path) -> None:
    _urbancars(tmp_path, "train")
    _urbancars(tmp_path, "test", per_group=1)
    ds = F.load_urbancars(tmp_path, "train", size=8)
    assert len(ds) == 16 and all(p.endswith(".jpg") for p in ds.paths)
    assert set(ds.bias) == {"background", "co_occurring_object"}
    assert ds.target_labels == ["urban", "country"]
    assert ds.bias_labels == {
        "background": ["urban", "country"],
        "co_occurring_object": ["urban", "country"],
    }
    every = ds.materialise()
    # Each fixture image's colour encodes its (car, background, object) labels.
    codes = np.c_[ds.y, ds.bias["background"], ds.bias["co_occurring_object"]]
    assert np.allclose(every.mean(axis=(2, 3)), codes, atol=0.02)
    assert np.bincount(codes @ [4, 2, 1]).tolist() == [2] * 8

    test = F.load_urbancars(tmp_path / "urbancars", "test", size=8)
    assert len(test) == 8 and test.name == "urbancars-test"
    image, y, bias = test[7]
    assert (y, bias) == (1, {"background": 1, "co_occurring_object": 1})
    images, y, bias = next(iter(DataLoader(test, batch_size=8)))
    assert images.shape == (8, 3, 8, 8) and set(bias) == {"background", "co_occurring_object"}
    assert bias["background"].tolist() == test.bias["background"].tolist()

    small = F.load_urbancars(tmp_path, "train", size=8, max_items=5, seed=3)
    assert len(small) == 5 and set(small.paths) <= set(ds.paths)
    part = ds.subset([0, 15])
    assert part.bias["co_occurring_object"].tolist() == [0, 1]


def test_urbancars_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown UrbanCars split 'valid'; valid: train, val"):
        F.load_urbancars(tmp_path, "valid")
    with pytest.raises(FileNotFoundError, match=r"bg-0.5_co_occur_obj-0.5[/\\]val"):
        F.load_urbancars(tmp_path, "val")
    _urbancars(tmp_path, "train", per_group=1)
    group = "obj-country_bg-urban_co_occur_obj-country"
    split_dir = tmp_path / "urbancars" / "bg-0.95_co_occur_obj-0.95" / "train"
    for path in (split_dir / group).iterdir():
        path.unlink()
    (split_dir / group).rmdir()
    with pytest.raises(FileNotFoundError, match=group):
        F.load_urbancars(tmp_path)


# -------------------------------------------------------------------------------- LFW

LFW_ATTRIBUTES = ["Male", "Asian", "White", "Big Nose", "Blond Hair", "5 o' Clock Shadow"]
LFW_ROWS = [  # person, imagenum, Male, Big Nose
    ("Aaron Eckhart", 1, 1.56835, -0.42),
    ("Aaron Peirsol", 1, 0.169851, 1.3),
    ("Aaron Peirsol", 2, -0.25, 0.02),
    ("Jennifer Lopez", 12, -2.1, -1.7),
]


def _lfw(root: Path, image_folder: str = "lfw") -> Path:
    rng = np.random.default_rng(0)
    lines = [
        "# Kumar et al. attribute classifier outputs, LFW",
        "#\tperson\timagenum\t" + "\t".join(LFW_ATTRIBUTES),
    ]
    for i, (person, num, male, nose) in enumerate(LFW_ROWS):
        scores = rng.normal(size=len(LFW_ATTRIBUTES)).round(6)
        scores[0], scores[3] = male, nose
        lines.append("\t".join([person, str(num), *map(str, scores)]))
        folder = person.replace(" ", "_")
        _jpeg(root / image_folder / folder / f"{folder}_{num:04d}.jpg", COLOURS[i], size=(25, 25))
    (root / "lfw_attributes.txt").write_text("\n".join(lines) + "\n")
    return root


def test_lfw_thresholds_scores_at_zero(tmp_path: Path) -> None:
    ds = F.load_lfw(_lfw(tmp_path), size=10)
    assert ds.target_name == "Big Nose" and ds.bias_name == "Male"
    assert ds.y.tolist() == [0, 1, 1, 0] and ds.bias.tolist() == [1, 1, 0, 0]
    assert ds.bias_labels == ["female", "male"]
    assert Path(ds.paths[2]).relative_to(tmp_path).as_posix() == (
        "lfw/Aaron_Peirsol/Aaron_Peirsol_0002.jpg"
    )
    assert Path(ds.paths[3]).name == "Jennifer_Lopez_0012.jpg"
    image = ds[3][0]
    assert image.shape == (3, 10, 10) and np.allclose(_mean_rgb(image), [1, 1, 0], atol=0.02)

    celeba_names = F.load_lfw(tmp_path, target="Blond_Hair", bias="male", size=10)
    assert celeba_names.target_name == "Blond Hair" and celeba_names.bias.tolist() == [1, 1, 0, 0]


def test_lfw_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="lfw_attributes.txt"):
        F.load_lfw(tmp_path)
    _lfw(tmp_path, image_folder="lfw-deepfunneled")
    with pytest.raises(
        FileNotFoundError, match="folders in .*: lfw-deepfunneled; pass image_folder"
    ):
        F.load_lfw(tmp_path)
    assert len(F.load_lfw(tmp_path, image_folder="lfw-deepfunneled")) == 4
    with pytest.raises(
        ValueError, match=r"unknown attribute 'Big Ears'; valid: Male, Asian.*Shadow"
    ):
        F.load_lfw(tmp_path, target="Big Ears", image_folder="lfw-deepfunneled")

    (tmp_path / "lfw-deepfunneled" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg").unlink()
    with pytest.raises(
        FileNotFoundError, match="1 of 4 images .*: Aaron_Peirsol/Aaron_Peirsol_0001.jpg"
    ):
        F.load_lfw(tmp_path, image_folder="lfw-deepfunneled")
    with pytest.warns(UserWarning, match="1 of 4 images"):
        ds = F.load_lfw(tmp_path, image_folder="lfw-deepfunneled", on_missing="skip")
    assert ds.y.tolist() == [0, 1, 0] and ds.bias.tolist() == [1, 0, 0]

    (tmp_path / "lfw_attributes.txt").write_text("person\timagenum\tMale\nA B\t1\t0.5\n")
    with pytest.raises(ValueError, match="no header line"):
        F.load_lfw(tmp_path, image_folder="lfw-deepfunneled")
