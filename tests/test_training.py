"""Patch training's thread count: chosen for the patch's size, the caller's setting restored."""

import numpy as np
import pytest
import torch
from torch import nn

from ruleeraser import Eraser
from ruleeraser.training import (
    MIN_THREADED_STEP_FLOPS,
    choose_threads,
    fit_module,
    step_flops,
    torch_threads,
)


@pytest.fixture
def caller_threads():
    """The caller runs torch on 3 threads (a count no default gives on this machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    yield 3
    torch.set_num_threads(before)


class ThreadRecorder(nn.Module):
    """A linear layer that records the torch thread count of every training forward pass."""

    seen: list[int] = []

    def __init__(self, n_in=2, n_out=2):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)

    def forward(self, x):
        if self.training:
            ThreadRecorder.seen.append(torch.get_num_threads())
        return self.linear(x.reshape(len(x), -1))


def _fit(module, n_threads=None, target=None, max_epochs=3):
    X = torch.randn(64, 2)
    y = (X[:, 0] > 0).long() if target is None else target
    return fit_module(
        module, X, y, loss="hard", heldout=np.arange(64) % 4 == 0,
        generator=torch.Generator().manual_seed(0), max_epochs=max_epochs, patience=5,
        learning_rate=0.01, weight_decay=0.0, batch_size=16, n_threads=n_threads,
    )  # fmt: skip


def test_step_flops_hand_computed():
    # one row through Linear(10, 4): 2 * 10 * 4 flops; a step is three passes of 8 rows.
    assert step_flops(nn.Linear(10, 4), torch.zeros(5, 10), batch_size=8) == 3 * 8 * 2 * 10 * 4
    conv = nn.Conv2d(3, 8, 3)  # 8 maps of 6x6 outputs, 27 multiply-adds each
    assert step_flops(conv, torch.zeros(2, 3, 8, 8), batch_size=1) == 3 * 2 * 27 * 8 * 36


def test_step_flops_leaves_the_module_in_its_mode():
    module = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)).train()
    step_flops(module, torch.zeros(3, 4), batch_size=2)
    assert module.training and all(m.training for m in module.modules())


def test_small_patches_train_on_one_thread_large_ones_on_the_callers(caller_threads):
    mlp = nn.Sequential(
        nn.Linear(12, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2)
    )
    assert step_flops(mlp, torch.zeros(1, 12), 256) < MIN_THREADED_STEP_FLOPS
    assert choose_threads(mlp, torch.zeros(1, 12), 256) == 1
    conv = nn.Conv2d(3, 64, 3)  # about 13 MFLOP per 64x64 image forward: 1.3 G a step
    images = torch.zeros(1, 3, 64, 64)
    assert step_flops(conv, images, 32) >= MIN_THREADED_STEP_FLOPS
    assert choose_threads(conv, images, 32) == caller_threads


def test_torch_threads_restores_the_callers_setting_even_on_error(caller_threads):
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == caller_threads
    with pytest.raises(RuntimeError, match="inside"), torch_threads(2):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == caller_threads


@pytest.mark.parametrize(("n_threads", "expected"), [(None, 1), (2, 2)])
def test_fit_module_trains_on_the_chosen_threads_and_restores(caller_threads, n_threads, expected):
    ThreadRecorder.seen = []
    _fit(ThreadRecorder(), n_threads=n_threads)
    assert ThreadRecorder.seen and set(ThreadRecorder.seen) == {expected}
    assert torch.get_num_threads() == caller_threads


def test_fit_module_restores_the_threads_when_training_fails(caller_threads):
    bad_target = torch.full((64,), 7)  # a class index the 2-logit module cannot output
    with pytest.raises(IndexError):
        _fit(ThreadRecorder(), target=bad_target)
    assert torch.get_num_threads() == caller_threads


def test_eraser_n_threads_reaches_patch_training(caller_threads):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    b = np.where(rng.random(300) < 0.8, y, 1 - y)
    X = np.c_[y + rng.normal(0, 1, 300), b].astype(np.float32)

    def model(rows):
        p = 1 / (1 + np.exp(-(rows[:, 0] + rows[:, 1] - 1)))
        return np.c_[1 - p, p]

    for n_threads, expected in [(None, 1), (2, 2)]:
        ThreadRecorder.seen = []
        Eraser(
            model, patch=ThreadRecorder(), n_threads=n_threads, max_epochs=2, random_state=0
        ).fit(X, y, bias=b)
        assert set(ThreadRecorder.seen) == {expected}
        assert torch.get_num_threads() == caller_threads
