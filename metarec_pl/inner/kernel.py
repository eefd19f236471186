"""The first layer of an MLP head in dual (kernel) form, for inner loops of plain SGD steps (docs/performance.md)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarec_pl.data.types import is_broadcast


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
    def fits(net: nn.Module, algorithm: Any, adapted: list[str]) -> bool:
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
