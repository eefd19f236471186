"""Task grouping and checkpointed chunks: how a meta-batch is split before a path (``metarec_pl.inner.planner``)
adapts each part.  Both are exact: tasks share no computation, and padding is masked."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, Callable, Optional

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from metarec_pl.data.types import Samples, TaskBatch, is_broadcast
from metarec_pl.results import AdaptResult

# One more group costs a fixed overhead (operator dispatch, autograd nodes): measured ~7 ms per meta-step on 2 CPU
# threads, worth ~400-1000 padded support samples of arithmetic (docs/performance.md); 1024 is the conservative end.
GROUP_OVERHEAD_SAMPLES = 1024
MAX_GROUPS = 4


def _equal_count_groups(lengths: list[int]) -> int:
    """The number of equal-count groups (1 to ``MAX_GROUPS``) of the sorted ``lengths`` that minimises padded
    support samples + ``GROUP_OVERHEAD_SAMPLES`` per group."""
    tasks = len(lengths)

    def cost(k: int) -> int:
        b = _bounds(tasks, k)
        return sum((hi - lo) * lengths[hi - 1] + GROUP_OVERHEAD_SAMPLES for lo, hi in zip(b, b[1:]))

    return min(range(1, min(MAX_GROUPS, tasks) + 1), key=cost)


def _bounds(tasks: int, k: int) -> list[int]:
    return [round(i * tasks / k) for i in range(k + 1)]


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
    k = _equal_count_groups([int(n) for n in lengths[order].tolist()])
    if k == 1:
        return everything
    b = _bounds(tasks, k)
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
                   key=batch.key[idx], candidate=None, rankings=None)


def cat_tasks(parts: list[Any], inverse: Tensor) -> Any:
    """Concatenate per-group results along the task dimension and restore the batch's task order."""
    if parts[0] is None:
        return None
    if isinstance(parts[0], dict):
        return {n: cat_tasks([p[n] for p in parts], inverse) for n in parts[0]}
    return torch.cat(parts)[inverse]


def cat_results(parts: list[AdaptResult], groups: list[Tensor]) -> AdaptResult:
    """One ``AdaptResult`` of the whole batch from the results of its ``groups``, in the batch's task order."""
    inverse = torch.argsort(torch.cat(groups))
    return AdaptResult(**{f.name: cat_tasks([getattr(p, f.name) for p in parts], inverse) for f in fields(AdaptResult)})


def adapt_checkpointed(adapt_tasks: Callable[[TaskBatch], AdaptResult], batch: TaskBatch) -> AdaptResult:
    """``adapt_tasks(batch)`` that keeps no graph: the backward pass runs it again, with its graph, and
    back-propagates through that.  Re-entrant checkpointing, because its forward runs without autograd; the
    non-re-entrant kind keeps the tensors saved by the inner ``autograd.grad`` and so saves no memory here."""
    layout: dict[str, Any] = {}

    def flat(_anchor: Tensor) -> tuple[Tensor, ...]:
        result, out = adapt_tasks(batch), []
        for f in fields(AdaptResult):
            value = getattr(result, f.name)
            layout[f.name] = list(value) if isinstance(value, dict) else value is not None
            out += list(value.values()) if isinstance(value, dict) else [value] if value is not None else []
        return tuple(out)

    anchor = torch.ones((), device=batch.support.mask.device, requires_grad=True)  # makes the outputs differentiable
    tensors = iter(checkpoint(flat, anchor, use_reentrant=True))
    return AdaptResult(**{name: {n: next(tensors) for n in kind} if isinstance(kind, list)
                          else next(tensors) if kind else None for name, kind in layout.items()})
