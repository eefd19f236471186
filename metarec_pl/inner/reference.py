"""The inner loop as its definition: every task at once, on the whole network, with autograd.

Fast weights are stacked per task (``[tasks, *shape]``, starting as views of the shared weights); the network runs
on them under ``vmap(functional_call)``, so it stays a plain ``nn.Module``; one ``torch.autograd.grad`` of the
summed support losses gives every task's gradient (tasks share no computation); ``algorithm.inner_update`` takes
the step.  Padded samples carry mask 0, so tasks of different support sizes are exact.  ``create_graph`` keeps
the inner gradients in the graph (second order).  Every other path (``metarec_pl.inner.planner``) computes the
same values faster, and is tested equal to this one.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from metarec_pl.data.types import TaskBatch
from metarec_pl.results import AdaptResult


def adapt(model: nn.Module, algorithm: Any, batch: TaskBatch, steps: int, create_graph: bool,
          plan: Optional[Any] = None) -> AdaptResult:
    """Adapt ``model`` to every task of ``batch`` by ``steps`` steps of ``algorithm.inner_update`` on the support
    loss (``algorithm.loss``); return the query predictions [tasks, Q] and losses [tasks].  ``plan``: unused."""
    s, q, loss = batch.support, batch.query, algorithm.loss
    params = dict(model.named_parameters())
    fixed = {**{n: p for n, p in params.items() if n not in algorithm.adapted_names}, **dict(model.named_buffers())}
    tracked = torch.is_grad_enabled()  # False at evaluation: inner gradients, but no graph kept

    def one_task(w: dict[str, Tensor], x: dict[str, Tensor]) -> Tensor:
        return functional_call(model, {**fixed, **w}, (x,))

    predict = vmap(one_task, randomness="different")  # (fast weights [tasks, ...], features [tasks, n]) -> [tasks, n]
    marked = getattr(algorithm.inner_update, "broadcasts_over_tasks", False)  # SGD: correct on stacked weights
    update = algorithm.inner_update if marked else vmap(algorithm.inner_update)
    fast = {n: params[n].expand(len(batch), *params[n].shape) for n in algorithm.adapted_names}
    for _ in range(steps):
        with torch.enable_grad():
            leaves = {n: w if tracked and w.requires_grad else w.detach().requires_grad_() for n, w in fast.items()}
            total = loss(predict(leaves, s.features), s.rating, s.mask).sum()
            grads = torch.autograd.grad(total, list(leaves.values()), create_graph=create_graph and tracked)
        fast = update(fast, dict(zip(fast, grads)))  # without create_graph the gradients are constants
    seen = fast if algorithm.query_through_fast_weights else {n: w.detach() for n, w in fast.items()}
    pred = predict(seen, q.features)
    out = {"query_pred": pred, "query_loss": loss(pred, q.rating, q.mask)}
    if algorithm.needs_support_loss:
        out["support_loss"] = loss(predict(fast, s.features), s.rating, s.mask)
    if algorithm.needs_fast_weights:
        out["fast_weights"] = fast
    return AdaptResult(**out)
