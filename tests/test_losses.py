"""The per-task losses: hand-computed values, padding ignored, written-out gradients equal to autograd."""

import math

import pytest
import torch

from metarec_pl.losses import BCE, BPR, MSE, BUILTIN_LOSSES

PRED = torch.tensor([[2.0, -1.0, 0.5, 9.0], [0.3, 0.1, 7.0, 7.0]], dtype=torch.float64)
TARGET = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
MASK = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)  # last slots: padding


def softplus(x):
    return math.log1p(math.exp(x))


def test_values_by_hand():
    assert MSE()(PRED, TARGET, MASK).tolist() == pytest.approx([(1 + 1 + 0.25) / 3, (0.09 + 0.81) / 2])
    bce_task0 = (softplus(2.0) - 2.0 + softplus(-1.0) + softplus(0.5)) / 3
    bce_task1 = (softplus(0.3) + softplus(0.1) - 0.1) / 2
    assert BCE()(PRED, TARGET, MASK).tolist() == pytest.approx([bce_task0, bce_task1])
    # pairs: task 0 (2.0 vs -1.0), (2.0 vs 0.5); task 1 (0.1 vs 0.3)
    bpr = [(softplus(-3.0) + softplus(-1.5)) / 2, softplus(0.2)]
    assert BPR()(PRED, TARGET, MASK).tolist() == pytest.approx(bpr)


def test_a_task_without_pairs_has_zero_bpr_loss():
    only_positives = torch.ones(1, 3, dtype=torch.float64)
    assert BPR()(torch.randn(1, 3, dtype=torch.float64), only_positives, only_positives).item() == 0.0


@pytest.mark.parametrize("name", sorted(BUILTIN_LOSSES))
def test_written_out_gradient_equals_autograd(name):
    loss = BUILTIN_LOSSES[name]()
    pred = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    target = (torch.rand(3, 7, dtype=torch.float64) > 0.5).to(torch.float64) * (1 if loss.implicit else 4) + (
        0 if loss.implicit else 1)
    mask = torch.ones(3, 7, dtype=torch.float64)
    mask[0, 5:] = 0.0
    mask[2, 2:] = 0.0
    (auto,) = torch.autograd.grad(loss(pred, target, mask).sum(), pred)
    assert torch.allclose(loss.grad(pred, target, mask), auto, atol=1e-12)
    assert torch.all(loss.grad(pred, target, mask)[mask == 0] == 0)  # padding gets no gradient
    assert torch.allclose(loss.grad(pred, target, mask, -0.1), -0.1 * auto, atol=1e-12)  # a step's -lr folded in


def test_bpr_cost_follows_the_real_samples_not_the_padding():
    """A whole catalogue of candidates (mask 0) behind the query must not enter the pair matrix: same values and
    gradients as the unpadded tasks, and no [tasks, catalogue, catalogue] tensor."""
    pred = torch.randn(2, 5, dtype=torch.float64)
    target = torch.tensor([[1.0, 0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    wide = 20_000  # padding: 2 x 20,005 x 20,005 pairs would take 6 GB
    pred_w = torch.cat([pred, torch.randn(2, wide, dtype=torch.float64)], 1)
    target_w, mask_w = (torch.cat([t, torch.zeros(2, wide, dtype=torch.float64)], 1) for t in (target, mask))
    loss = BPR()
    assert torch.allclose(loss(pred_w, target_w, mask_w), loss(pred, target, mask), atol=1e-12)
    g = loss.grad(pred_w, target_w, mask_w)
    assert torch.allclose(g[:, :5], loss.grad(pred, target, mask), atol=1e-12) and not g[:, 5:].any()
