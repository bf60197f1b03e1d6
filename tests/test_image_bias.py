"""Tests for the biased image datasets: coloured MNIST, corruption bias, two biases."""

from __future__ import annotations

import gzip
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import chisquare

from ruleeraser.experiments.coloured_mnist import COLOURS, coloured_mnist
from ruleeraser.experiments.corruption_bias import (
    FAST_CORRUPTIONS,
    corrupt_images,
    corrupted_mnist,
    corruption_bias,
)
from ruleeraser.experiments.datasets import Split
from ruleeraser.experiments.image_bias import (
    COPY_SHIFT,
    BiasedImages,
    load_mnist,
    make_dataset,
    pool_copies,
    read_idx,
    read_image_folder,
    to_rgb,
)
from ruleeraser.experiments.two_biases import (
    BACKGROUNDS,
    OBJECT_COLOUR,
    OBJECTS,
    two_bias_mnist,
)

PARTS = ("train", "calibration", "test")


def parts(ds: BiasedImages):
    return [(p, getattr(ds.splits, p)) for p in PARTS]


def assert_share(hits: np.ndarray, p: float) -> None:
    """The share of True in ``hits`` is within 4 binomial standard deviations of ``p``."""
    sd = np.sqrt(max(p * (1 - p), 1e-4) / len(hits))
    assert abs(hits.mean() - p) <= 4 * sd + 1e-9, (hits.mean(), p, len(hits))


def assert_balanced(y: np.ndarray, bias: np.ndarray, n_values: int) -> None:
    """Within every class each bias value occurs equally often, up to one."""
    for c in np.unique(y):
        counts = np.bincount(bias[y == c], minlength=n_values)
        assert counts.min() >= 1 and counts.max() - counts.min() <= 1, (c, counts)


def assert_images(ds: BiasedImages, shape: tuple[int, int, int]) -> None:
    for _, s in parts(ds):
        assert s.X.dtype == np.float32 and s.X.shape[1:] == shape
        assert s.y.dtype == np.int64 and s.bias.dtype == np.int64
        assert s.X.min() >= 0.0 and s.X.max() <= 1.0


def assert_same(a: BiasedImages, b: BiasedImages) -> None:
    for (_, s), (_, t) in zip(parts(a), parts(b), strict=True):
        for field in ("X", "y", "bias", "index"):
            np.testing.assert_array_equal(getattr(s, field), getattr(t, field))


def assert_split_sizes(ds: BiasedImages, n: int, test_size: float, n_values: int) -> None:
    test = ds.splits.test
    images, copies = np.unique(test.index, return_counts=True)
    assert (copies == n_values).all()  # every test image once with every bias value
    columns = test.bias.reshape(len(test.y), -1)
    bias = columns @ 2 ** np.arange(columns.shape[1])  # one code per combination of values
    for image in images[:50]:
        assert sorted(bias[test.index == image]) == list(range(n_values))
    index = np.concatenate([ds.splits.train.index, ds.splits.calibration.index, images])
    assert len(np.unique(index)) == len(index) == n  # disjoint, nothing dropped
    pool = len(ds.splits.train.y) + len(ds.splits.calibration.y)
    assert len(images) == pytest.approx(test_size * n, abs=len(ds.target_labels))
    assert len(ds.splits.calibration.y) == pytest.approx(pool / 6, abs=len(ds.target_labels))


# ------------------------------------------------------------------------ coloured MNIST


@pytest.fixture(scope="module")
def cmnist() -> BiasedImages:
    return coloured_mnist(alignment=0.9, seed=0)


def test_coloured_mnist_alignment_and_balance(cmnist):
    assert_images(cmnist, (3, 28, 28))
    assert_split_sizes(cmnist, 5000, 0.2, 10)
    for part in ("train", "calibration"):
        s = getattr(cmnist.splits, part)
        assert_share(s.bias == s.y, 0.9)
    test = cmnist.splits.test
    assert_balanced(test.y, test.bias, 10)
    assert len(set(zip(test.y, test.bias, strict=True))) == 100


def test_coloured_mnist_misaligned_colours_are_uniform_others():
    train = coloured_mnist(alignment=0.5, seed=1).splits.train
    off = train.bias != train.y
    assert not np.any(train.bias[off] == train.y[off])
    for c in range(10):
        others = np.delete(np.bincount(train.bias[off & (train.y == c)], minlength=10), c)
        assert others.min() > 0 and chisquare(others).pvalue > 1e-3


def test_coloured_mnist_renders_stroke_white_and_background_coloured(cmnist):
    digits, _ = load_mnist()
    s = cmnist.splits.test
    source = digits[s.index]
    palette = np.array(list(COLOURS.values()), np.float32)
    pixels = s.X.transpose(0, 2, 3, 1)
    background = source == 0
    assert np.allclose(pixels[background], palette[s.bias[np.nonzero(background)[0]]])
    assert np.allclose(pixels[source == 255], 1.0)
    assert len({tuple(c) for c in palette}) == 10
    assert np.linalg.norm(1 - palette, axis=1).min() > 0.5  # no colour hides the stroke


def test_coloured_mnist_strong_alignment_leaves_calibration_cells_empty():
    ds = coloured_mnist(alignment=0.99, seed=0)
    cal = ds.splits.calibration
    assert len(set(zip(cal.y, cal.bias, strict=True))) < 50
    assert len(set(zip(ds.splits.test.y, ds.splits.test.bias, strict=True))) == 100


def test_coloured_mnist_is_deterministic_for_a_seed():
    a, b = (coloured_mnist(seed=3, n_per_class=50) for _ in range(2))
    assert_same(a, b)
    c = coloured_mnist(seed=4, n_per_class=50)
    assert not np.array_equal(a.splits.train.index, c.splits.train.index)


# ------------------------------------------------------------------------------- IDX


def _idx_bytes(array: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write(path: Path, data: bytes, gz: bool) -> None:
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_plain_and_gzip(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    ints = rng.integers(-1000, 1000, (3, 4)).astype(np.int32)
    _write(tmp_path / "a", _idx_bytes(images, 0x08), gz)
    _write(tmp_path / "b", _idx_bytes(ints, 0x0C), gz)
    suffix = ".gz" if gz else ""
    np.testing.assert_array_equal(read_idx(tmp_path / f"a{suffix}"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / f"b{suffix}"), ints)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01" + bytes(8))
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(_idx_bytes(np.zeros((4, 3), np.uint8), 0x08)[:-2])
    with pytest.raises(ValueError, match="do not fit"):
        read_idx(tmp_path / "short")


def _mnist_folder(root: Path, per_class: int, gz: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    out = []
    for prefix, n in (("train", per_class), ("t10k", 3)):
        labels = np.repeat(np.arange(10, dtype=np.uint8), n)
        images = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
        _write(root / f"{prefix}-images-idx3-ubyte", _idx_bytes(images, 0x08), gz)
        _write(root / f"{prefix}-labels-idx1-ubyte", _idx_bytes(labels, 0x08), gz)
        out.append((images, labels))
    return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_from_idx_folder(tmp_path, gz):
    images, labels = _mnist_folder(tmp_path, 12, gz)
    X, y = load_mnist(tmp_path)
    np.testing.assert_array_equal(X, images)
    np.testing.assert_array_equal(y, labels)
    assert X.dtype == np.uint8 and y.dtype == np.int64
    ds = coloured_mnist(tmp_path, seed=0)
    assert_images(ds, (3, 28, 28))
    assert_split_sizes(ds, 150, 0.2, 10)


def test_load_mnist_needs_the_train_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path)


# ------------------------------------------------------------------------ corruptions


@pytest.fixture(scope="module")
def cormnist() -> BiasedImages:
    return corrupted_mnist(alignment=0.9, seed=0, n_per_class=50)


def test_corrupted_mnist_alignment_and_balance(cormnist):
    assert_images(cormnist, (3, 32, 32))
    assert_split_sizes(cormnist, 500, 0.2, 10)
    assert cormnist.bias_labels == [list(FAST_CORRUPTIONS[:10])]
    pool = [cormnist.splits.train, cormnist.splits.calibration]
    for s in pool:
        assert_share(s.bias == s.y, 0.9)
    assert_share(np.concatenate([s.bias == s.y for s in pool]), 0.9)
    assert_balanced(cormnist.splits.test.y, cormnist.splits.test.bias, 10)


def test_corruptions_change_images_and_differ_from_each_other():
    digit = to_rgb(load_mnist()[0][:1], 32)
    images = np.repeat(digit, 10, axis=0)
    out = corrupt_images(
        images, np.arange(10), FAST_CORRUPTIONS[:10], severity=2, rng=np.random.default_rng(0)
    )
    clean = digit.transpose(0, 3, 1, 2) / 255.0
    assert np.abs(out - clean).mean(axis=(1, 2, 3)).min() > 0.01
    for i, j in combinations(range(10), 2):
        assert np.abs(out[i] - out[j]).mean() > 0.01, (FAST_CORRUPTIONS[i], FAST_CORRUPTIONS[j])


def test_corruption_is_deterministic_and_keeps_global_random_state():
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    a = corrupted_mnist(seed=5, n_per_class=20, test_size=0.5)
    assert np.random.random() == expected
    b = corrupted_mnist(seed=5, n_per_class=20, test_size=0.5)
    assert_same(a, b)
    c = corrupted_mnist(seed=6, n_per_class=20, test_size=0.5)
    assert not np.array_equal(a.splits.test.X, c.splits.test.X)


def test_corruption_bias_with_superclasses_and_float_images():
    digits, labels = load_mnist()
    keep = np.concatenate([np.flatnonzero(labels == d)[:20] for d in range(10)])
    images = to_rgb(digits[keep], 32).astype(np.float32) / 255
    groups = {d: ("small" if d < 5 else "large") for d in range(10)}
    ds = corruption_bias(
        images, labels[keep], superclasses=groups, corruptions=["snow", "fog", "contrast"]
    )
    assert ds.target_labels == ["large", "small"]
    assert ds.bias_labels == [["snow", "fog", "contrast"]]
    for _, s in parts(ds):
        np.testing.assert_array_equal(s.y, (labels[keep][s.index] < 5).astype(np.int64))
    test = ds.splits.test
    assert_balanced(test.y, test.bias, 3)


def _png_folder(root: Path, sizes: dict[str, tuple[int, int]]) -> None:
    rng = np.random.default_rng(2)
    for name, (h, w) in sizes.items():
        (root / name).mkdir()
        for i in range(6):
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
        (root / name / "notes.txt").write_text("not an image")


def test_read_image_folder(tmp_path):
    _png_folder(tmp_path, {"cat": (34, 36), "dog": (34, 36)})
    images, labels = read_image_folder(tmp_path)
    assert images.shape == (12, 34, 36, 3) and images.dtype == np.uint8
    assert list(labels) == ["cat"] * 6 + ["dog"] * 6
    first = np.asarray(Image.open(tmp_path / "cat" / "0.png"))
    np.testing.assert_array_equal(images[0], first)
    ds = corruption_bias(tmp_path, corruptions=["snow", "pixelate"], test_size=0.34)
    assert ds.target_labels == ["cat", "dog"]
    assert_images(ds, (3, 34, 36))


def test_read_image_folder_sizes(tmp_path):
    _png_folder(tmp_path, {"a": (40, 40), "b": (33, 35)})
    with pytest.raises(ValueError, match="different sizes"):
        read_image_folder(tmp_path)
    assert read_image_folder(tmp_path, size=32)[0].shape == (12, 32, 32, 3)
    with pytest.raises(ValueError, match="no class sub-folders"):
        read_image_folder(tmp_path / "a")


def test_corruption_bias_rejects_bad_input():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8)
    labels = np.repeat([0, 1, 2], 20)
    with pytest.raises(ValueError, match="at least 32x32"):
        corruption_bias(images[:, :28, :28], labels)
    with pytest.raises(ValueError, match="unknown corruptions"):
        corruption_bias(images, labels, corruptions=["snow", "fog", "rain"])
    with pytest.raises(ValueError, match="one per class"):
        corruption_bias(images, labels, corruptions=["snow", "fog"])
    with pytest.raises(ValueError, match="distinct"):
        corruption_bias(images, labels, corruptions=["snow", "snow", "fog"])
    with pytest.raises(ValueError, match="severity"):
        corruption_bias(images, labels, severity=6)
    with pytest.raises(ValueError, match="no entry for labels"):
        corruption_bias(images, labels, superclasses={0: "a", 1: "b"})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corruption_bias(images.astype(np.float32), labels)
    with pytest.raises(ValueError, match="shape"):
        corruption_bias(images, labels[:-1])


@pytest.mark.parametrize("alignment", [0.0, -0.1, 1.5])
def test_alignment_outside_unit_interval_is_rejected(alignment):
    for build in (coloured_mnist, corrupted_mnist, two_bias_mnist):
        with pytest.raises(ValueError, match="alignment"):
            build(alignment=alignment)


# ---------------------------------------------------------------------------- two biases


@pytest.fixture(scope="module")
def twobias() -> BiasedImages:
    return two_bias_mnist(alignment=0.9, seed=0)


def test_two_biases_each_aligned_and_independent_in_train(twobias):
    assert_images(twobias, (3, 32, 32))
    assert_split_sizes(twobias, 5000, 0.2, 4)
    assert twobias.bias_names == ["background", "object"]
    for part in ("train", "calibration"):
        s = getattr(twobias.splits, part)
        assert s.bias.shape == (len(s.y), 2)
        cols = twobias.bias_columns(s)
        bg, obj = cols["background"] == s.y, cols["object"] == s.y
        assert_share(bg, 0.9)
        assert_share(obj, 0.9)
        assert_share(bg & obj, 0.81)
        assert_share(~bg & ~obj, 0.01)


def test_two_biases_balanced_and_independent_in_test(twobias):
    test = twobias.splits.test
    combo = test.bias[:, 0] * 2 + test.bias[:, 1]
    assert_balanced(test.y, combo, 4)  # (y, background, object): all 8 cells, equal sizes
    for j in range(2):
        assert abs((test.bias[:, j] == test.y).mean() - 0.5) < 0.01


def test_two_biases_render_background_and_corner_object(twobias):
    s = twobias.splits.test
    palette = np.array(list(BACKGROUNDS.values()), np.float32)
    np.testing.assert_allclose(s.X[:, :, 0, 16], palette[s.bias[:, 0]], atol=1e-6)
    is_object = np.all(np.abs(s.X - OBJECT_COLOUR[None, :, None, None]) < 1e-6, axis=1)
    corners = [is_object[:, r : r + 9, c : c + 9] for r in (0, 23) for c in (0, 23)]
    per_corner = np.stack([k.sum(axis=(1, 2)) for k in corners], axis=1)
    assert np.all((per_corner > 0).sum(axis=1) == 1)  # one corner per image
    sizes = np.array([m.sum() for m in OBJECTS.values()])
    np.testing.assert_array_equal(per_corner.sum(axis=1), sizes[s.bias[:, 1]])
    assert is_object.sum() == per_corner.sum()  # nothing outside the corners


def test_two_biases_deterministic_and_checked():
    assert_same(*(two_bias_mnist(seed=2, n_per_class=20) for _ in range(2)))
    with pytest.raises(ValueError, match="threshold"):
        two_bias_mnist(threshold=0)


def test_biased_images_validates_parts(twobias):
    s = twobias.splits
    bad = Split(X=s.test.X * 2, y=s.test.y, bias=s.test.bias)
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        make_dataset(
            "x",
            {"train": s.train, "calibration": s.calibration, "test": bad},
            target_labels=twobias.target_labels,
            bias_names=twobias.bias_names,
            bias_labels=twobias.bias_labels,
        )
    with pytest.raises(ValueError, match="shapes"):
        make_dataset(
            "x",
            {"train": s.train, "calibration": s.calibration, "test": s.test},
            target_labels=twobias.target_labels,
            bias_names=["background"],
            bias_labels=[["blue", "red"]],
        )


# ---------------------------------------------------------------------------- pool copies


def test_pool_copies_shift_each_copy_within_the_border():
    rng = np.random.default_rng(0)
    images = np.zeros((4, 12, 12), np.uint8)
    images[:, 4:8, 4:8] = np.arange(1, 5, dtype=np.uint8)[:, None, None]  # a square per image
    idx, out = pool_copies(images, np.array([2, 0]), 50, rng)
    assert list(idx) == [2] * 50 + [0] * 50
    for i, copy in zip(idx, out, strict=True):
        rows, cols = np.nonzero(copy)
        assert (copy[rows, cols] == i + 1).all() and len(rows) == 16  # moved, not cropped
        dy, dx = rows.min() - 4, cols.min() - 4
        assert max(abs(dy), abs(dx)) <= COPY_SHIFT
    assert len({r.tobytes() for r in out}) > 10  # copies differ from each other
    _, same = pool_copies(images, np.array([1, 3]), 1, rng)
    np.testing.assert_array_equal(same, images[[1, 3]])
    with pytest.raises(ValueError, match="positive integer"):
        pool_copies(images, np.array([0]), 0, rng)


@pytest.mark.parametrize(
    "build",
    [
        lambda copies: coloured_mnist(alignment=0.9, seed=1, n_per_class=30, copies=copies),
        lambda copies: two_bias_mnist(alignment=0.9, seed=1, n_per_class=30, copies=copies),
        lambda copies: corrupted_mnist(alignment=0.9, seed=1, n_per_class=30, copies=copies),
    ],
    ids=["coloured", "two-biases", "corrupted"],
)
def test_copies_repeat_the_pool_with_fresh_bias_draws(build):
    one, three = build(1), build(3)
    for part in ("train", "calibration"):
        a, b = getattr(one.splits, part), getattr(three.splits, part)
        assert len(b.y) == 3 * len(a.y)
        _, counts = np.unique(b.index, return_counts=True)
        assert (counts == 3).all()  # every pool digit three times
        bias = b.bias.reshape(len(b.y), -1)
        for column in bias.T:  # the aligned bias value is the target index
            assert_share(column == b.y, 0.9)  # alignment holds over the copies
    pool = np.concatenate([three.splits.train.index, three.splits.calibration.index])
    assert not set(pool) & set(three.splits.test.index)  # copies stay in their part
    test_one, test_three = one.splits.test, three.splits.test
    assert len(test_three.y) == len(test_one.y)  # test images are never copied
