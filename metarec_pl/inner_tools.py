"""Speed and precision helpers of the inner loop (``bilevel.adapt``), kept apart so the loop itself reads in one
place: grouping tasks by support size, checkpointed chunks, an MLP head as batched matrix products, and the
per-task loss scaling that keeps fp16 inner gradients from underflowing.  Each is exact (tested against a plain
per-task loop); see docs/performance.md for what each one buys.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from metarec_pl.algorithms.base import AdaptResult, Algorithm
from metarec_pl.data.types import Samples, TaskBatch, is_broadcast


# One more group costs a fixed overhead (operator dispatch, autograd nodes): measured ~7 ms per meta-step on 2 CPU
# threads, worth ~400-1000 padded support samples of arithmetic (docs/performance.md); 1024 is the conservative end.
GROUP_OVERHEAD_SAMPLES = 1024
MAX_GROUPS = 4


def task_groups(support_mask: Tensor, chunk_size: Optional[int] = None) -> list[Tensor]:
    """Task indices in groups of similar support size.  With ``chunk_size``: the tasks sorted by support size,
    in chunks of ``chunk_size``; otherwise the number of equal-count groups (1 to ``MAX_GROUPS``) that minimises
    padded support samples + ``GROUP_OVERHEAD_SAMPLES`` per group.  A single group keeps the batch's order."""
    tasks = support_mask.shape[0]
    everything = [torch.arange(tasks, device=support_mask.device)]
    if tasks <= 1 or (chunk_size is not None and chunk_size >= tasks):
        return everything
    lengths = support_mask.sum(-1)
    order = torch.argsort(lengths, stable=True)
    if chunk_size is not None:
        return list(order.split(max(1, chunk_size)))
    sorted_lengths = [int(n) for n in lengths[order].tolist()]

    def bounds(k: int) -> list[int]:
        return [round(i * tasks / k) for i in range(k + 1)]

    def cost(k: int) -> int:
        b = bounds(k)
        return sum((hi - lo) * sorted_lengths[hi - 1] + GROUP_OVERHEAD_SAMPLES for lo, hi in zip(b, b[1:]))

    k = min(range(1, min(MAX_GROUPS, tasks) + 1), key=cost)
    if k == 1:
        return everything
    b = bounds(k)
    return [order[lo:hi] for lo, hi in zip(b, b[1:])]


def select_tasks(batch: TaskBatch, idx: Tensor) -> TaskBatch:
    """The tasks ``idx`` of ``batch``, support padding trimmed to their longest support set."""
    width = max(1, int(batch.support.mask[idx].sum(-1).max()))

    def rows(v: Tensor, width: int) -> Tensor:  # a feature broadcast over tasks (stride 0) stays broadcast
        if is_broadcast(v):
            return v[:1, :width].expand(len(idx), *v[:1, :width].shape[1:])
        return v[idx, :width]

    def take(s: Samples, width: int) -> Samples:
        return Samples({k: rows(v, width) for k, v in s.features.items()}, s.rating[idx, :width],
                       s.mask[idx, :width], s.user[idx, :width], s.item[idx, :width])

    return replace(batch, support=take(batch.support, width), query=take(batch.query, batch.query.mask.shape[1]),
                   key=batch.key[idx], candidate=None)


def cat_tasks(parts: list[Any], inverse: Tensor) -> Any:
    """Concatenate per-group results along the task dimension and restore the batch's task order."""
    if parts[0] is None:
        return None
    if isinstance(parts[0], dict):
        return {n: cat_tasks([p[n] for p in parts], inverse) for n in parts[0]}
    return torch.cat(parts)[inverse]


def adapt_checkpointed(adapt_tasks: Callable[..., AdaptResult], model: nn.Module, algorithm: Algorithm,
                       batch: TaskBatch, steps: int, create_graph: bool) -> AdaptResult:
    """``_adapt_tasks`` that keeps no graph: the backward pass runs it again, with its graph, and back-propagates
    through that.  Re-entrant checkpointing, because its forward runs without autograd; the non-re-entrant
    kind keeps the tensors saved by the inner ``autograd.grad`` and so saves no memory here."""
    layout: dict[str, Any] = {}

    def flat(_anchor: Tensor) -> tuple[Tensor, ...]:
        result, out = adapt_tasks(model, algorithm, batch, steps, create_graph), []
        for f in fields(AdaptResult):
            value = getattr(result, f.name)
            layout[f.name] = list(value) if isinstance(value, dict) else value is not None
            out += list(value.values()) if isinstance(value, dict) else [value] if value is not None else []
        return tuple(out)

    anchor = torch.ones((), device=batch.support.mask.device, requires_grad=True)  # makes the outputs differentiable
    tensors = iter(checkpoint(flat, anchor, use_reentrant=True))
    return AdaptResult(**{name: {n: next(tensors) for n in kind} if isinstance(kind, list)
                          else next(tensors) if kind else None for name, kind in layout.items()})


def is_linear_stack(net: nn.Module) -> bool:
    return isinstance(net, nn.Sequential) and all(
        type(m) is nn.Linear  # not subclasses: LoRALinear's adapters would be skipped
        or (next(m.parameters(), None) is None and next(m.buffers(), None) is None)
        for m in net)


def linear_stack(net: nn.Sequential, weights: dict[str, Tensor], x: Tensor) -> Tensor:
    """``net(x)`` for x [tasks, n, in] with per-task ([tasks, ...]) or shared weights: batched matrix products."""
    h = x
    for i, layer in enumerate(net):
        if isinstance(layer, nn.Linear):
            w, b = weights[f"{i}.weight"], weights.get(f"{i}.bias")
            if b is None:
                h = h @ w.transpose(-1, -2)
            elif w.dim() == 3:  # per-task weights: bias added inside the batched product
                h = torch.baddbmm(b.unsqueeze(-2) if b.dim() == 2 else b, h, w.transpose(-1, -2))
            elif b.dim() == 1:
                h = F.linear(h, w, b)
            else:
                h = F.linear(h, w) + b.unsqueeze(-2)
        else:
            h = layer(h)
    return h


# fp16 inner loss scaling: each task's loss is scaled by a power of two chosen so that its largest gradient
# with respect to a prediction is about INNER_GRAD_TARGET: large enough that fp16 backward products keep their
# precision (smallest normal fp16 number: 6e-5), small enough that sums over a layer stay far below 65504.
INNER_GRAD_TARGET = 2.0 ** 4


def inner_loss_scale(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Per-task power-of-two loss scales [tasks] (constants: no gradient flows through them)."""
    with torch.no_grad():
        dpred = 2 * (pred.float() - target).abs() * mask / mask.sum(-1, keepdim=True).clamp_min(1.0)
        largest = dpred.amax(-1).clamp_min(2.0 ** -60)
        return torch.exp2(torch.floor(torch.log2(INNER_GRAD_TARGET / largest))).clamp(2.0 ** -24, 2.0 ** 60)


def unscale(grads: tuple[Tensor, ...], scale: Tensor) -> list[Tensor]:
    """Divide each task's gradients by its scale; a task whose gradient is not finite skips this step."""
    per_task = [g / scale.view(-1, *[1] * (g.dim() - 1)) for g in grads]
    finite = torch.stack([g.detach().flatten(1).isfinite().all(1) for g in per_task]).all(0)
    return [torch.where(finite.view(-1, *[1] * (g.dim() - 1)), g, torch.zeros_like(g)) for g in per_task]
