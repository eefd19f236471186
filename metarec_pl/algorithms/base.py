"""What an algorithm decides in the bilevel loop, and nothing else.

The loop itself (``metarec_pl.bilevel``) is shared: it adapts the parameters named by ``adapted_names`` with
``inner_update`` for ``inner_steps`` steps on each task's support set, all tasks at once, then asks
``outer_loss`` for the scalar that Lightning back-propagates.  An algorithm is an ``nn.Module`` so it can own
meta-learned tensors (Meta-SGD's learning rates), which the outer optimiser then updates with the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, ClassVar, Optional, Sequence

import torch
from torch import Tensor, nn

from metarec_pl.errors import ConfigError
from metarec_pl.losses import MSE, Loss, masked_mse  # noqa: F401  (masked_mse: re-exported for plugins)

if TYPE_CHECKING:
    from metarec_pl.data.types import TaskBatch


def broadcasts_over_tasks(inner_update):
    """Marks an ``inner_update`` that is also correct on stacked ``[tasks, *shape]`` weights (element-wise
    updates such as SGD), so the inner loop calls it once on all tasks instead of under ``vmap``, whose
    overhead costs ~15 % of a small model's meta-step.  The mark is on the function, so a subclass that
    overrides ``inner_update`` runs under ``vmap`` unless it marks its own."""
    inner_update.broadcasts_over_tasks = True
    return inner_update


@dataclass
class AdaptResult:
    """Per-task outputs of the inner loop; every tensor starts with the task dimension."""

    query_loss: Tensor  # [B] the loss (``Algorithm.loss``, default squared error) on the query set after adaptation
    query_pred: Tensor  # [B, Q]
    support_loss: Optional[Tensor] = None  # [B], with the final weights; when ``needs_support_loss``
    fast_weights: Optional[dict[str, Tensor]] = None  # name -> [B, *shape]; when ``needs_fast_weights``


class Algorithm(nn.Module):
    """Base class of registered algorithms.

    ``inner_steps``/``inner_lr``: the inner SGD; ``first_order`` drops second derivatives (default per class);
    ``adapt``: glob patterns over parameter names (``head.*`` adapts the decision layers only, as MeLU does);
    ``eval_inner_steps``: steps at validation/test/predict time (default ``inner_steps``).
    ``inner_steps``/``inner_lr`` left at ``None`` take the class's ``default_inner_steps``/``default_inner_lr``
    (so a preset such as ``melu`` can carry its paper's local settings).
    ``loss``: the per-task loss of the inner and the outer loop (``metarec_pl.losses``; ``MetaLearner(loss=...)``
    sets it before ``bind``); ``supported_losses``: the loss names a class works with (``None``: any).
    """

    gradient_based: ClassVar[bool] = True
    default_adapt: ClassVar[tuple[str, ...]] = ("*",)
    default_first_order: ClassVar[bool] = False
    needs_support_loss: ClassVar[bool] = False
    needs_fast_weights: ClassVar[bool] = False
    query_through_fast_weights: ClassVar[bool] = True  # False: the query loss sees adapted weights as constants
    num_users: Optional[int] = None  # id-table sizes, set by MetaLearner before ``bind`` (for per-id baselines)
    num_items: Optional[int] = None
    default_inner_steps: ClassVar[int] = 5
    default_inner_lr: ClassVar[float] = 0.01
    loss: Loss = MSE()
    supported_losses: ClassVar[Optional[tuple[str, ...]]] = None

    def __init__(self, inner_steps: Optional[int] = None, inner_lr: Optional[float] = None,
                 first_order: Optional[bool] = None, adapt: Optional[Sequence[str]] = None,
                 eval_inner_steps: Optional[int] = None) -> None:
        super().__init__()
        inner_steps = self.default_inner_steps if inner_steps is None else inner_steps
        inner_lr = self.default_inner_lr if inner_lr is None else inner_lr
        if inner_steps < 0 or (eval_inner_steps is not None and eval_inner_steps < 0):
            raise ConfigError(f"model.inner_steps / eval_inner_steps: {self.name}: inner steps must be >= 0, got "
                              f"{inner_steps}, {eval_inner_steps}")
        self.inner_steps = inner_steps if self.gradient_based else 0
        self.eval_inner_steps = (inner_steps if eval_inner_steps is None else eval_inner_steps) if self.gradient_based else 0
        self.inner_lr = inner_lr
        self.first_order = self.default_first_order if first_order is None else first_order
        self.adapt_patterns = tuple(adapt) if adapt else self.default_adapt
        self.adapted_names: list[str] = []

    @property
    def name(self) -> str:
        return type(self).__name__

    def bind(self, model: nn.Module) -> None:
        """Choose the adapted parameters of ``model``; subclasses create per-parameter meta-tensors here."""
        all_names = [n for n, _ in model.named_parameters()]
        self.adapted_names = [n for n in all_names if any(fnmatchcase(n, p) for p in self.adapt_patterns)]
        if self.gradient_based and not self.adapted_names:
            raise ConfigError(f"model.adapt: {self.name}: adapt patterns {list(self.adapt_patterns)} match no "
                              f"parameter of the network; expected globs over its parameters: {', '.join(all_names)}")

    def run(self, model: nn.Module, batch: "TaskBatch", steps: int, create_graph: bool,
            chunk_size: Optional[int] = None) -> AdaptResult:
        """Predict every task's query set from its support set.  Gradient-based algorithms use the shared
        vectorised inner loop (``metarec_pl.bilevel.adapt``); metric-based learners (prototypes, attention,
        neural processes) override this and return the same ``AdaptResult``."""
        from metarec_pl.bilevel import adapt  # the loop module imports this one

        return adapt(model, self, batch, steps, create_graph, chunk_size)

    @property
    def plain_sgd(self) -> bool:
        """Whether the inner step is this class's plain SGD (not overridden), so loops may fold -lr into the
        gradients or use the kernel form of a first layer."""
        return getattr(self.inner_update, "__func__", None) is Algorithm.inner_update

    @broadcasts_over_tasks
    def inner_update(self, fast: dict[str, Tensor], grads: dict[str, Tensor]) -> dict[str, Tensor]:
        """One inner step on one task's fast weights (plain SGD; one fused op, forward and backward)."""
        return {n: torch.add(w, grads[n], alpha=-self.inner_lr) for n, w in fast.items()}

    def outer_loss(self, result: AdaptResult, batch: "TaskBatch", params: dict[str, Tensor]) -> Tensor:
        """The meta-objective: the mean over tasks of the query loss after adaptation."""
        return result.query_loss.mean()
