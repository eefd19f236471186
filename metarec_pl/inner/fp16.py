"""fp16 inner loss scaling: per task, the support loss is scaled by a power of two chosen so that its largest
gradient with respect to a prediction is about ``INNER_GRAD_TARGET``: large enough that fp16 backward products
keep their precision (smallest normal fp16 number: 6e-5), small enough that sums over a layer stay far below
65504.  Powers of two make the scaling and the unscaling exact."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

INNER_GRAD_TARGET = 2.0 ** 4


def fp16_autocast(device: str) -> bool:
    """Whether autocast to float16 is on for ``device`` ("cpu", "cuda"): the inner loss scaling applies."""
    return torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.float16


def inner_loss_scale(d_loss: Tensor) -> Tensor:
    """Per-task power-of-two loss scales [tasks] from the support loss's derivative w.r.t. the predictions
    ``d_loss`` [tasks, samples] (``Loss.grad``); constants: no gradient flows through them."""
    with torch.no_grad():
        largest = d_loss.float().abs().amax(-1).clamp_min(2.0 ** -60)
        return torch.exp2(torch.floor(torch.log2(INNER_GRAD_TARGET / largest))).clamp(2.0 ** -24, 2.0 ** 60)


def unscale(grads: Sequence[Tensor], scale: Tensor) -> list[Tensor]:
    """Divide each task's gradients by its scale; a task whose gradient is not finite skips this step."""
    per_task = [g / scale.view(-1, *[1] * (g.dim() - 1)) for g in grads]
    finite = torch.stack([g.detach().flatten(1).isfinite().all(1) for g in per_task]).all(0)
    return [torch.where(finite.view(-1, *[1] * (g.dim() - 1)), g, torch.zeros_like(g)) for g in per_task]
