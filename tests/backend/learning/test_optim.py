"""backend.learning.optim: the learning-rate schedule at known points, and one
optimiser step against the same step done by hand."""

from __future__ import annotations

import math

import pytest
import torch

from backend.learning.optim import lr_factor, optimizer_step


@pytest.mark.parametrize("step, progress, warmup, floor, want", [
    (0, 0.0, 10, 0.0, 0.1),            # warm-up: (step + 1) / warmup
    (4, 0.0, 10, 0.0, 0.5),
    (9, 0.0, 10, 0.0, 1.0),            # warmed up, at the start of the cosine
    (50, 0.5, 10, 0.0, 0.5),           # half-way: (1 + cos(pi / 2)) / 2
    (50, 0.25, 10, 0.0, (1 + math.cos(math.pi / 4)) / 2),
    (99, 1.0, 10, 0.05, 0.05),         # the end: the floor
    (99, 3.0, 10, 0.0, 0.0),           # progress beyond the run counts as its end
    (0, 0.0, 0, 0.0, 1.0),             # no warm-up: at least one step is used
    (2, 0.5, 10, 0.2, 0.2),            # the floor also holds during the warm-up
])
def test_the_schedule(step, progress, warmup, floor, want):
    assert lr_factor(step, progress, warmup, floor) == pytest.approx(want, abs=1e-12)


def test_one_step_is_a_forward_backward_and_update():
    """A 1x1 convolution and plain SGD: the step returns the loss before the update,
    and the weights move by ``-lr * gradient`` of the mean squared output."""
    torch.manual_seed(0)
    model = torch.nn.Conv2d(2, 1, 1)
    x = torch.randn(3, 2, 4, 4)
    w0, b0 = model.weight.detach().clone(), model.bias.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = optimizer_step(model, opt, x, lambda logits: (logits ** 2).mean(), "cpu")
    y = (x * w0.view(1, 2, 1, 1)).sum(1) + b0  # the output before the update, (3, 4, 4)
    assert loss == pytest.approx(float((y ** 2).mean()), rel=1e-6)
    grad_w = torch.stack([(2 * y * x[:, c]).mean() for c in range(2)]).view(1, 2, 1, 1)
    grad_b = (2 * y).mean().view(1)
    assert torch.allclose(model.weight.detach(), w0 - 0.1 * grad_w, atol=1e-6)
    assert torch.allclose(model.bias.detach(), b0 - 0.1 * grad_b, atol=1e-6)
    # the gradients are cleared before each step, not added up
    optimizer_step(model, opt, x, lambda logits: (logits ** 2).mean(), "cpu")
    y1 = (x * (w0 - 0.1 * grad_w).view(1, 2, 1, 1)).sum(1) + (b0 - 0.1 * grad_b)
    assert torch.allclose(model.weight.grad,
                          torch.stack([(2 * y1 * x[:, c]).mean() for c in range(2)])
                          .view(1, 2, 1, 1), atol=1e-6)
