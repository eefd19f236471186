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
                   key=batch.key[idx], candidate=None, rankings=None)


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


def linear_stack(net: nn.Sequential, weights: dict[str, Tensor], x: Tensor, start: int = 0,
                 tape: Optional[list[Tensor]] = None) -> Tensor:
    """``net[start:](x)`` for x [tasks, n, in] with per-task ([tasks, ...]) or shared weights: batched matrix
    products.  ``tape``: a list that receives each layer's input, for ``linear_stack_backward``."""
    h = x
    for name, layer in list(net.named_children())[start:]:
        if tape is not None:
            tape.append(h)
        if isinstance(layer, nn.Linear):
            w, b = weights[f"{name}.weight"], weights.get(f"{name}.bias")
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


def has_written_out_backward(net: nn.Module) -> bool:
    """A stack of ``nn.Linear`` and ``nn.ReLU`` only: ``linear_stack_backward`` knows every layer's derivative."""
    return is_linear_stack(net) and all(type(m) in (nn.Linear, nn.ReLU) for m in net)


def linear_stack_backward(net: nn.Sequential, weights: dict[str, Tensor], tape: list[Tensor], d_out: Tensor,
                          wanted: set[str], start: int = 0) -> tuple[Optional[Tensor], dict[str, Tensor]]:
    """Gradients of a loss with ``d_out`` = ∂loss/∂(output of ``linear_stack(..., start, tape)``): with respect to
    the stack's input, and to each weight named in ``wanted``; one value per task.

    Written out as batched products, so that in a second-order inner loop the inner gradients are ordinary graph
    nodes and the outer backward differentiates plain operations instead of running a double backward (~8 %
    faster, docs/performance.md).  The input's gradient is ``None`` unless ``wanted`` holds ``"input"``."""
    grads: dict[str, Tensor] = {}
    d = d_out
    layers = list(net.named_children())[start:]
    for i in range(len(layers) - 1, -1, -1):
        name, layer = layers[i]
        h = tape[i]
        if isinstance(layer, nn.Linear):
            if f"{name}.weight" in wanted:
                grads[f"{name}.weight"] = d.transpose(-1, -2) @ h
            if f"{name}.bias" in wanted:
                grads[f"{name}.bias"] = d.sum(-2)
            if i == 0 and "input" not in wanted:
                break
            w = weights[f"{name}.weight"]
            d = d * w if d.shape[-1] == 1 else d @ w  # one output (the rating layer): an outer product
        else:  # nn.ReLU: the op autograd itself uses (one pass; differentiable again).  Its mask input is
            # detached: its derivative is zero, and autograd would otherwise form and add a zero tensor per call
            d = torch.ops.aten.threshold_backward(d, h.detach(), 0)
    return (d if "input" in wanted else None), grads


class KernelFirstLayer:
    """The first layer of an MLP head in dual (kernel) form, for inner loops of plain SGD steps.

    Its input (the encoder output) is fixed during adaptation, so after k SGD steps of size lr its weights are
    ``W_0 - lr Σ_j dH_jᵀ x_s`` (bias ``b_0 - lr Σ_j 1ᵀ dH_j``), where ``dH_j`` is the gradient of the support loss
    at the layer's output in step j.  Its output on any input x is then ``x W_0ᵀ + b_0 + (x x_sᵀ + 1) Z`` with
    ``Z = -lr Σ_j dH_j`` ([tasks, support, width]), and ``Z`` takes the same SGD step as a weight whose gradient
    is ``dH``.  Exact, and the per-task copies of the [width, in] weight and their gradients are never formed,
    which removes about half the arithmetic of a meta-step (docs/performance.md).
    """

    state = "kernel_state"  # the key of Z among the fast weights

    @staticmethod
    def fits(net: nn.Module, algorithm: Algorithm, adapted: list[str]) -> bool:
        """An ``nn.Linear`` first layer, all of it adapted (names relative to ``net``), by plain SGD steps."""
        name, first = next(iter(net.named_children()))
        names = {f"{name}.weight"} | ({f"{name}.bias"} if first.bias is not None else set())
        through = algorithm.query_through_fast_weights  # else the query sees detached weights: not this form
        return type(first) is nn.Linear and algorithm.plain_sgd and through and names <= set(adapted)

    def __init__(self, net: nn.Sequential, weights: dict[str, Tensor], x_support: Tensor, second_order: bool) -> None:
        name, first = next(iter(net.named_children()))
        self.names = [f"{name}.weight"] + ([f"{name}.bias"] if first.bias is not None else [])
        self.w, self.b = weights[self.names[0]], weights.get(f"{name}.bias")
        # first order: the weight steps Z x_s are constants, so the kernel's support side is too
        self.x_support = x_support if second_order else x_support.detach()

    def inputs(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The layer's output at the initial weights and the kernel against the support set, for input x."""
        initial = F.linear(x[:1], self.w, self.b).expand(x.shape[0], -1, -1) if is_broadcast(x) else \
            F.linear(x, self.w, self.b)
        kernel = x @ self.x_support.transpose(-1, -2)
        return initial, kernel + 1 if self.b is not None else kernel

    def start(self) -> Tensor:
        """Z before the first step: zero."""
        return self.x_support.new_zeros(*self.x_support.shape[:2], self.w.shape[0])

    @staticmethod
    def output(inputs: tuple[Tensor, Tensor], z: Tensor) -> Tensor:
        initial, kernel = inputs
        return torch.baddbmm(initial, kernel, z)

    def weights(self, z: Tensor) -> dict[str, Tensor]:
        """The adapted weights themselves, for algorithms that read them (``needs_fast_weights``)."""
        out = {self.names[0]: self.w + z.transpose(-1, -2) @ self.x_support}
        if self.b is not None:
            out[self.names[1]] = self.b + z.sum(-2)
        return out


# fp16 inner loss scaling: each task's loss is scaled by a power of two chosen so that its largest gradient
# with respect to a prediction is about INNER_GRAD_TARGET: large enough that fp16 backward products keep their
# precision (smallest normal fp16 number: 6e-5), small enough that sums over a layer stay far below 65504.
INNER_GRAD_TARGET = 2.0 ** 4


def inner_loss_scale(d_loss: Tensor) -> Tensor:
    """Per-task power-of-two loss scales [tasks] from the support loss's derivative w.r.t. the predictions
    ``d_loss`` [tasks, samples] (``Loss.grad``); constants: no gradient flows through them."""
    with torch.no_grad():
        largest = d_loss.float().abs().amax(-1).clamp_min(2.0 ** -60)
        return torch.exp2(torch.floor(torch.log2(INNER_GRAD_TARGET / largest))).clamp(2.0 ** -24, 2.0 ** 60)


def unscale(grads: tuple[Tensor, ...], scale: Tensor) -> list[Tensor]:
    """Divide each task's gradients by its scale; a task whose gradient is not finite skips this step."""
    per_task = [g / scale.view(-1, *[1] * (g.dim() - 1)) for g in grads]
    finite = torch.stack([g.detach().flatten(1).isfinite().all(1) for g in per_task]).all(0)
    return [torch.where(finite.view(-1, *[1] * (g.dim() - 1)), g, torch.zeros_like(g)) for g in per_task]
