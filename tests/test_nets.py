import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from ruleeraser import Eraser
from ruleeraser.experiments.deployed import RECIPES, predict_proba, train_deployed
from ruleeraser.metrics import group_accuracy
from ruleeraser.nets import SmallCNN, image_net, resnet18, resnet34
from ruleeraser.training import fit_module, split_batches

BACKGROUNDS = np.array([[0.8, 0.2, 0.2], [0.2, 0.8, 0.2]], dtype=np.float32)  # b: red, green


def make_images(
    n: int, seed: int, agree: float | None, size: int = 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB images of a blue bar, horizontal for y = 1 and vertical for y = 0, at a random place,
    on a background coloured by the bias b; b agrees with y ``agree`` of the time (independent
    when None). Pixel noise, values in [0, 1], float32 of shape (n, 3, size, size)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    b = rng.integers(0, 2, n) if agree is None else np.where(rng.random(n) < agree, y, 1 - y)
    X = np.repeat(BACKGROUNDS[b][:, :, None, None], size, 2).repeat(size, 3)
    for i, (r, c) in enumerate(rng.integers(0, size - 8, (n, 2))):
        h, w = (2, 8) if y[i] else (8, 2)
        X[i, :, r : r + h, c : c + w] = np.array([0.2, 0.2, 0.9], dtype=np.float32)[:, None, None]
    X += rng.normal(0, 0.15, X.shape).astype(np.float32)
    return np.clip(X, 0, 1), y, b


class ColourFollower(nn.Module):
    """A deployed model built by hand: it sees the bar's orientation, but the background colour
    weighs more, so bias-conflicting images are misclassified."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blue = x[:, 2]
        shape = blue.mean(2).amax(1) - blue.mean(1).amax(1)  # > 0 for a horizontal bar
        colour = (x[:, 1] - x[:, 0]).mean((1, 2))  # > 0 for a green background
        z = 10 * shape + 6 * colour
        return torch.stack([-z / 2, z / 2], dim=1)


@pytest.fixture(scope="module")
def images():
    return make_images(400, 0, agree=0.9), make_images(1000, 1, agree=None)


@pytest.mark.parametrize(
    ("build", "channels", "embed_dim"),
    [(SmallCNN, 3, 32), (resnet18, 1, 64), (resnet34, 3, 64)],
)
@pytest.mark.parametrize("size", [28, 32])
def test_output_shapes_and_head_of_embedding(build, channels, embed_dim, size):
    net = build(channels, 5, width=8).eval()
    x = torch.rand(3, channels, size, size)
    h = net.embed(x)
    assert net.embed_dim == embed_dim and h.shape == (3, embed_dim)
    assert net(x).shape == (3, 5)
    torch.testing.assert_close(net(x), net.head(h))


def test_resnet_parameter_counts():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert 11.1e6 < count(resnet18(3, 10)) < 11.3e6  # CIFAR ResNet-18
    assert 21.2e6 < count(resnet34(3, 10)) < 21.4e6
    assert count(image_net("cnn", 3, 10)) < 0.4e6
    with pytest.raises(ValueError, match="unknown image net"):
        image_net("vgg", 3, 10)


def test_split_batches_merges_a_lone_last_row():
    order = torch.arange(33)
    assert [len(b) for b in split_batches(order, 16, merge_single=False)] == [16, 16, 1]
    merged = split_batches(order, 16, merge_single=True)
    assert [len(b) for b in merged] == [16, 17] and torch.equal(torch.cat(merged), order)
    assert [len(b) for b in split_batches(order[:1], 16, merge_single=True)] == [1]


def test_fit_module_with_batchnorm_and_a_last_batch_of_one_row():
    # BatchNorm1d fails on a training batch of one row; 33 training rows in batches of 16
    X = torch.randn(43, 4)
    target = (X[:, 0] > 0).long()
    heldout = np.arange(43) >= 33
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        net.train()(X[:1])
    report = fit_module(
        net, X, target, loss="hard", heldout=heldout, generator=torch.Generator().manual_seed(0),
        max_epochs=3, patience=3, learning_rate=1e-2, weight_decay=0.0, batch_size=16,
    )  # fmt: skip
    assert report.n_train == 33 and report.epochs == 3


def test_cnn_patch_erases_the_colour_rule(images):
    (Xc, yc, bc), (Xt, yt, bt) = images
    model = ColourFollower()
    before = group_accuracy(yt, predict_proba(model, Xt).argmax(1), bt)
    eraser = Eraser(model, patch="cnn", random_state=0, max_epochs=8, patience=4)  # 32 per batch
    after = group_accuracy(yt, eraser.fit(Xc, yc, bias=bc).predict(Xt), bt)
    assert before.model_bias > 80 and before.worst < 20
    assert after.model_bias < 0.3 * before.model_bias
    assert after.worst > before.worst + 50
    assert eraser.patch_fit_[0].heldout_accuracy > 0.95  # the background colour is plain


@pytest.mark.parametrize(("patch", "n"), [("cnn", 200), ("resnet18", 40)])
def test_image_patch_save_load_round_trip(images, tmp_path, patch, n):
    (Xc, yc, bc), (Xt, _, _) = images
    model = ColourFollower()
    eraser = Eraser(model, patch=patch, random_state=0, max_epochs=2, patch_batch_size=32)
    eraser.fit(Xc[:n], yc[:n], bias=bc[:n]).save(tmp_path)
    weights = load_file(str(tmp_path / "patches.safetensors"))
    assert any(k.endswith("running_var") for k in weights)  # BatchNorm statistics travel too
    loaded = Eraser.load(tmp_path, model)
    assert loaded.patch == patch
    np.testing.assert_array_equal(loaded.predict_proba(Xt[:50]), eraser.predict_proba(Xt[:50]))


def test_bad_image_inputs_have_clear_errors(images):
    (Xc, yc, bc), _ = images
    flat = Xc.reshape(len(Xc), -1)

    def never(x):
        raise AssertionError("the model must not be queried")

    with pytest.raises(ValueError, match=r"'cnn' needs image rows of shape \(C, H, W\)"):
        Eraser(never, patch="cnn").fit(flat, yc, bias=bc)
    with pytest.raises(ValueError, match="patch must be one of 'mlp'.*got 'vgg'"):
        Eraser(never, patch="vgg").fit(Xc, yc, bias=bc)
    with pytest.raises(ValueError, match="needs image rows"):
        train_deployed("vanilla", flat, yc, bc, seed=0, backbone="resnet18")
    with pytest.raises(ValueError, match="unknown backbone"):
        train_deployed("vanilla", Xc, yc, bc, seed=0, backbone="vgg")
    with pytest.raises(ValueError, match="dropout applies to the mlp backbone only"):
        train_deployed("vanilla", Xc, yc, bc, seed=0, backbone="cnn", dropout=0.1)
    with pytest.raises(ValueError, match="width sets the channels of an image backbone"):
        train_deployed("vanilla", flat, yc, bc, seed=0, width=8)
    with pytest.raises(ValueError, match="X has 400 rows, y 399"):
        train_deployed("vanilla", Xc, yc[:-1], bc[:-1], seed=0, backbone="cnn")


@pytest.mark.parametrize("recipe", RECIPES)
def test_train_deployed_cnn_is_deterministic(images, tmp_path, recipe):
    (Xc, yc, bc), _ = images
    X, y, b = Xc[:65], yc[:65], bc[:65]  # batches of 32, 32 and 1 (merged)
    kwargs = dict(backbone="cnn", width=4, epochs=2, batch_size=32)
    state = torch.random.get_rng_state()
    model = train_deployed(recipe, X, y, b, seed=3, **kwargs)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert isinstance(model, SmallCNN) and not model.training
    p = predict_proba(model, X, batch_size=16)
    assert p.shape == (65, 2) and np.allclose(p.sum(1), 1.0)
    np.save(tmp_path / "X.npy", X)
    on_disk = np.load(tmp_path / "X.npy", mmap_mode="r")  # read batch by batch
    again = train_deployed(recipe, on_disk, y, b, seed=3, **kwargs)
    np.testing.assert_array_equal(predict_proba(again, on_disk, batch_size=16), p)
    other = train_deployed(recipe, X, y, b, seed=4, **kwargs)
    assert not np.array_equal(predict_proba(other, X, batch_size=16), p)


def test_small_vit_learns_the_bar_and_refuses_bad_shapes(images):
    from ruleeraser.experiments.vit import SmallViT

    (Xc, yc, bc), (Xt, yt, bt) = images
    model = train_deployed(
        "vanilla", Xt, yt, bt, seed=0, backbone="vit", width=32, epochs=3, batch_size=32
    )
    assert isinstance(model, SmallViT) and model.embed_dim == 32 and not model.training
    accuracy = (predict_proba(model, Xc).argmax(1) == yc).mean()
    assert accuracy > 0.8  # the bar's orientation, learnt where the colour says nothing
    with pytest.raises(ValueError, match=r"image_size \(30, 30\) is not a multiple of patch=4"):
        SmallViT(3, 2, image_size=(30, 30))
    with pytest.raises(ValueError, match="width=30 is not a multiple of heads=4"):
        SmallViT(3, 2, image_size=(16, 16), width=30)
