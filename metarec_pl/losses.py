"""Per-task losses of the inner and the outer loop: squared error for ratings, BCE and BPR for implicit feedback.

A loss maps padded predictions ``pred`` [tasks, samples] (ratings for ``mse``, logits/scores for ``bce``/``bpr``),
targets ``target`` [tasks, samples] and a mask [tasks, samples] (1 = real sample) to one value per task [tasks].
``grad`` is the same loss's derivative with respect to ``pred``, written out as plain operations: the fast inner
loop (a Linear/ReLU head) multiplies it through the layers itself instead of asking autograd, so a second-order
meta-gradient differentiates ordinary operations (``linear_stack_backward``).  It is exact, and tested equal to
autograd in ``tests/test_losses.py``.  A loss of a plugin may leave ``grad`` out (``has_grad = False``); the inner
loop then takes autograd's gradient.

Implicit feedback: a sample with target > 0 is an interaction (its target its weight for ``bce``: 1 for a click),
a sample with target <= 0 is a negative (drawn per episode by the sampler).

* ``mse``: mean squared error over the real samples.
* ``bce``: binary cross-entropy on logits, ``softplus(s) - y s`` (y = 1 for interactions), mean over real samples.
* ``bpr``: Bayesian Personalized Ranking (Rendle et al., UAI 2009): mean over the task's (interaction,
  negative) pairs of ``softplus(-(s_pos - s_neg))`` = -log σ(s_pos - s_neg); a task with no pair has loss 0.
"""

from __future__ import annotations

from typing import ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def _promote(pred: Tensor, target: Tensor) -> Tensor:
    """Low-precision predictions are compared in the target's precision."""
    return pred.to(torch.promote_types(pred.dtype, target.dtype))


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the real (mask = 1) samples of the last dimension: [tasks]."""
    err = (_promote(pred, target) - target) ** 2 * mask
    return err.sum(-1) / mask.sum(-1).clamp_min(1.0)


class Loss:
    """A per-task loss (see the module docstring); subclasses set ``name`` and implement ``__call__`` and,
    when they can, ``grad``."""

    name: ClassVar[str] = ""
    has_grad: ClassVar[bool] = True  # whether ``grad`` is written out (else the inner loop uses autograd)
    implicit: ClassVar[bool] = False  # made for 0/1 feedback (predictions are scores, not ratings)

    def __call__(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        raise NotImplementedError

    def grad(self, pred: Tensor, target: Tensor, mask: Tensor, scale: float = 1.0) -> Tensor:
        """∂ (``scale`` · loss[t]) / ∂ pred[t, i]: [tasks, samples] (``scale``: e.g. -lr, folded in once)."""
        raise NotImplementedError


class MSE(Loss):
    name = "mse"

    def __call__(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        return masked_mse(pred, target, mask)

    def grad(self, pred: Tensor, target: Tensor, mask: Tensor, scale: float = 1.0) -> Tensor:
        return (_promote(pred, target) - target) * (scale * (2 * mask / mask.sum(-1, keepdim=True).clamp_min(1.0)))


class BCE(Loss):
    name = "bce"
    implicit = True

    def __call__(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        s, y = _promote(pred, target), (target > 0).to(target.dtype)
        return ((F.softplus(s) - y * s) * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)

    def grad(self, pred: Tensor, target: Tensor, mask: Tensor, scale: float = 1.0) -> Tensor:
        s, y = _promote(pred, target), (target > 0).to(target.dtype)
        return (torch.sigmoid(s) - y) * (scale * mask / mask.sum(-1, keepdim=True).clamp_min(1.0))


class BPR(Loss):
    name = "bpr"
    implicit = True

    @staticmethod
    def _real(pred: Tensor, target: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
        """The real samples moved to the front and the padding beyond the widest task's cut off, so the pair
        matrix is [tasks, real, real] even when the padding is a whole catalogue of candidates (mask 0); with the
        column order used (``None``: nothing cut)."""
        real = mask > 0
        width = int(real.sum(-1).max()) if real.numel() else 0
        if width == mask.shape[-1]:
            return pred, target, mask, None
        order = torch.argsort(real.to(torch.uint8), dim=-1, descending=True, stable=True)[..., :width]
        return pred.gather(-1, order), target.gather(-1, order), mask.gather(-1, order), order

    @staticmethod
    def _pairs(target: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """[tasks, samples, samples] 1.0 where (i, j) is an (interaction, negative) pair; pairs per task [tasks]."""
        pos, neg = ((target > 0) & (mask > 0)).to(mask.dtype), ((target <= 0) & (mask > 0)).to(mask.dtype)
        pairs = pos[:, :, None] * neg[:, None, :]
        return pairs, pairs.sum((1, 2)).clamp_min(1.0)

    def __call__(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        s, target, mask, _ = self._real(_promote(pred, target), target, mask)
        pairs, n = self._pairs(target, mask)
        diff = s[:, :, None] - s[:, None, :]  # [tasks, i, j] = s_i - s_j
        return (F.softplus(-diff) * pairs).sum((1, 2)) / n

    def grad(self, pred: Tensor, target: Tensor, mask: Tensor, scale: float = 1.0) -> Tensor:
        full = _promote(pred, target)
        s, target, mask, order = self._real(full, target, mask)
        pairs, n = self._pairs(target, mask)
        w = torch.sigmoid(-(s[:, :, None] - s[:, None, :])) * pairs * (scale / n[:, None, None])  # -∂/∂(s_i - s_j)
        g = w.sum(1) - w.sum(2)  # a negative j gains Σ_i w_ij, an interaction i loses Σ_j w_ij
        return g if order is None else torch.zeros_like(full).scatter(-1, order, g)


BUILTIN_LOSSES: dict[str, type[Loss]] = {cls.name: cls for cls in (MSE, BCE, BPR)}
