"""Inner gradients by autograd, with the shortcuts that need no written-out derivative: the encoder run once when
only the head adapts, a linear-stack head as batched matrix products, and fp16 inner loss scaling."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from metarec_pl.data.types import TaskBatch
from metarec_pl.inner.common import finish, predictor, stacked_start, step_function, view
from metarec_pl.inner.fp16 import inner_loss_scale, unscale
from metarec_pl.results import AdaptResult


def adapt(model: nn.Module, algorithm: Any, batch: TaskBatch, steps: int, create_graph: bool,
          plan: Any) -> AdaptResult:
    """The reference loop (``metarec_pl.inner.reference``) with ``plan.head_only``, ``plan.stacked`` and
    ``plan.fp16_scaling`` (``metarec_pl.inner.planner.Plan``)."""
    s, loss = batch.support, algorithm.loss
    v = view(model, algorithm, batch, plan.head_only)
    predict = predictor(v, plan.stacked)
    update = step_function(algorithm)
    tracked = torch.is_grad_enabled()
    fast = stacked_start(model, algorithm.adapted_names, len(batch))
    for _ in range(steps):
        with torch.enable_grad():
            leaves = {n: w if tracked and w.requires_grad else w.detach().requires_grad_() for n, w in fast.items()}
            pred = predict(leaves, v.x_support)
            losses = loss(pred, s.rating, s.mask)
            scale = inner_loss_scale(loss.grad(pred, s.rating, s.mask)) if plan.fp16_scaling else None
            total = (losses if scale is None else losses * scale).sum()
            grads = torch.autograd.grad(total, list(leaves.values()), create_graph=create_graph and tracked)
        if scale is not None:
            grads = unscale(grads, scale)
        fast = update(fast, dict(zip(fast, grads if create_graph else [g.detach() for g in grads])))
    return finish(algorithm, batch, v, fast, predict)
