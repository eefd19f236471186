"""An ``nn.Sequential`` of ``nn.Linear`` layers and parameter-free modules (the MLP head of the built-in models) as
batched matrix products on per-task weights, and, for Linear/ReLU stacks, its backward written out as plain
operations (so a second-order meta-gradient differentiates ordinary operations, not a double backward)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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
