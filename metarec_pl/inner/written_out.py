"""Inner gradients written out: a Linear/ReLU head's support-loss gradients as plain batched products
(``Loss.grad`` through ``linear_stack_backward``), so a second-order outer backward differentiates ordinary
operations instead of a double backward; under plain SGD -lr is folded into the gradients once (the step is then
a sum) and, with ``plan.path == "kernel"``, the first layer runs in kernel form (``KernelFirstLayer``)."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn

from metarec_pl.data.types import TaskBatch
from metarec_pl.inner.common import View, add_steps, finish, predictor, stacked_start, step_function, view
from metarec_pl.inner.fp16 import inner_loss_scale, unscale
from metarec_pl.inner.kernel import KernelFirstLayer
from metarec_pl.inner.linear_stack import linear_stack_backward
from metarec_pl.results import AdaptResult

STATE = f"head.{KernelFirstLayer.state}"  # the key of the kernel form's Z among the fast weights


def adapt(model: nn.Module, algorithm: Any, batch: TaskBatch, steps: int, create_graph: bool,
          plan: Any) -> AdaptResult:
    """The reference loop on a Linear/ReLU head (only ``head.*`` adapts) with written-out inner gradients, the
    fp16 loss scaling of ``plan.fp16_scaling``, -lr folded in when ``plan.fold_lr``, the kernel form when
    ``plan.path == "kernel"`` (``metarec_pl.inner.planner.Plan``)."""
    v = view(model, algorithm, batch, head_only=True)
    kernel = None
    if plan.path == "kernel":
        kernel = KernelFirstLayer(v.net, dict(v.net.named_parameters()), v.x_support, create_graph)
        v.x_support, v.x_query = kernel.inputs(v.x_support), kernel.inputs(v.x_query)  # (output at W_0, kernel)
    predict = predictor(v, True, kernel)
    names = [n for n in algorithm.adapted_names if kernel is None or n[5:] not in kernel.names]
    fast = stacked_start(model, names, len(batch))
    if kernel is not None:
        fast[STATE] = kernel.start()
    step_sign = -algorithm.inner_lr if plan.fold_lr else 1.0  # the written-out gradients are of step_sign·loss
    update = add_steps if plan.fold_lr else step_function(algorithm)
    tracked = torch.is_grad_enabled()
    for _ in range(steps):
        with torch.set_grad_enabled(create_graph and tracked):
            grads, scale = _grads(algorithm, batch, v, fast, predict, step_sign, plan.fp16_scaling, kernel is not None)
        if scale is not None:
            grads = unscale(grads, scale)
        fast = update(fast, dict(zip(fast, grads if create_graph else [g.detach() for g in grads])))
    return finish(algorithm, batch, v, fast, predict, lambda f: _weights(f, kernel))


def _grads(algorithm: Any, batch: TaskBatch, v: View, fast: dict[str, Tensor], predict: Any, step_sign: float,
           fp16: bool, kernel: bool) -> tuple[list[Tensor], Optional[Tensor]]:
    """Support-loss gradients of the fast weights (for Z: of the first layer's output), by
    ``linear_stack_backward``, and the fp16 loss scales (``None`` without fp16)."""
    s = batch.support
    tape: list[Tensor] = []
    pred = predict(fast, v.x_support, tape=tape)
    d_pred = algorithm.loss.grad(pred, s.rating, s.mask, step_sign)
    scale = inner_loss_scale(d_pred) if fp16 else None  # (fp16: step_sign is 1)
    d_pred = d_pred if scale is None else d_pred * scale[:, None]  # powers of two: exact
    weights = {**v.fixed, **{n[v.strip:]: w for n, w in fast.items()}}
    wanted = {"input" if n == STATE else n[v.strip:] for n in fast}
    d_input, grads = linear_stack_backward(v.net, weights, tape, d_pred.unsqueeze(-1).to(pred.dtype), wanted,
                                           1 if kernel else 0)
    return [d_input if n == STATE else grads[n[v.strip:]] for n in fast], scale


def _weights(fast: dict[str, Tensor], kernel: Optional[KernelFirstLayer]) -> dict[str, Tensor]:
    """The adapted weights by parameter name (the kernel form's Z turned back into the first layer's weights)."""
    if kernel is None:
        return fast
    rest = {n: w for n, w in fast.items() if n != STATE}
    return {**rest, **{f"head.{n}": w for n, w in kernel.weights(fast[STATE]).items()}}
