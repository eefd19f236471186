"""What an algorithm decides in the bilevel loop, and nothing else.

``MetaAlgorithm`` is what ``MetaLearner`` talks to: ``bind`` (choose or create what the algorithm owns, once the
network and the data's facts, a ``DataInfo``, exist), ``run`` (adapt every task of a meta-batch and predict its query set) and ``outer_loss`` (the
scalar Lightning back-propagates).  Metric-based learners (prototypes, attention, neural processes) and the
baselines subclass it directly and write ``run``; they have no inner loop, so they refuse its options.

``GradientAlgorithm`` (also exported as ``Algorithm``) adds the inner loop: ``run`` is the shared loop
(``metarec_pl.inner``, defined by ``metarec_pl/inner/reference.py``), which adapts the parameters named by
``adapted_names`` with ``inner_update`` for ``inner_steps`` steps on each task's support set, all tasks at once.
An algorithm is an ``nn.Module`` so it can own meta-learned tensors (Meta-SGD's learning rates), which the outer
optimiser then updates with the network.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any, ClassVar, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from metarec_pl import inner
from metarec_pl.data.info import DataInfo
from metarec_pl.data.types import TaskBatch
from metarec_pl.errors import ConfigError
from metarec_pl.losses import MSE, Loss, masked_mse  # noqa: F401  (masked_mse: re-exported for plugins)
from metarec_pl.results import AdaptResult

INNER_LOOP_OPTIONS = ("inner_steps", "inner_lr", "first_order", "adapt", "eval_inner_steps")


def refuse_inner_options(who: str, options: Mapping[str, Any]) -> None:
    """``ConfigError`` naming the first inner-loop option in ``options`` that is set (not ``None``): ``who`` (e.g.
    "algorithm 'protonet'") has no inner loop to apply it to."""
    for name in INNER_LOOP_OPTIONS:
        if options.get(name) is not None:
            raise ConfigError(f"model.{name}: {who} has no inner loop (it is not gradient-based), got "
                              f"{options[name]!r}; expected model.{name} left out (null)")


def broadcasts_over_tasks(inner_update):
    """Marks an ``inner_update`` that is also correct on stacked ``[tasks, *shape]`` weights (element-wise
    updates such as SGD), so the inner loop calls it once on all tasks instead of under ``vmap``, whose
    overhead costs ~15 % of a small model's meta-step.  The mark is on the function, so a subclass that
    overrides ``inner_update`` runs under ``vmap`` unless it marks its own."""
    inner_update.broadcasts_over_tasks = True
    return inner_update


class MetaAlgorithm(nn.Module):
    """Base class of algorithms without an inner loop: subclasses implement ``run`` (and may override ``bind``
    and ``outer_loss``).  Constructed with inner-loop options set, it raises ``ConfigError`` (one line).

    ``loss``: the per-task loss (``metarec_pl.losses``; ``MetaLearner(loss=...)`` sets it before ``bind``);
    ``supported_losses``: the loss names a class works with (``None``: any); ``task_sides``: the tasks it serves
    (``"user"``: one user's ratings per task, ``"item"``: one item's), refused otherwise when the model is built.  ``info``: the data's facts
    (``DataInfo``), and ``num_users``/``num_items`` its id counts (for per-id baselines), set by ``bind``.
    """

    gradient_based: ClassVar[bool] = False
    needs_support_loss: ClassVar[bool] = False
    needs_fast_weights: ClassVar[bool] = False
    default_adapt: ClassVar[tuple[str, ...]] = ()
    info: Optional[DataInfo] = None
    num_users: Optional[int] = None
    num_items: Optional[int] = None
    loss: Loss = MSE()
    supported_losses: ClassVar[Optional[tuple[str, ...]]] = None
    task_sides: ClassVar[tuple[str, ...]] = ("user", "item")
    inner_steps: int = 0  # what MetaLearner passes to ``run``: no steps to take
    eval_inner_steps: int = 0
    first_order: bool = False

    def __init__(self, inner_steps: Optional[int] = None, inner_lr: Optional[float] = None,
                 first_order: Optional[bool] = None, adapt: Optional[Sequence[str]] = None,
                 eval_inner_steps: Optional[int] = None) -> None:
        super().__init__()
        refuse_inner_options(f"algorithm {self.name}", dict(inner_steps=inner_steps, inner_lr=inner_lr,
                                                              first_order=first_order, adapt=adapt,
                                                              eval_inner_steps=eval_inner_steps))
        self.adapted_names: list[str] = []

    @property
    def name(self) -> str:
        return type(self).__name__

    def bind(self, model: nn.Module, info: Optional[DataInfo] = None) -> None:
        """Create what the algorithm owns for ``model`` and the data ``info`` (projections, id tables sized by
        ``info.num_users``/``num_items``, levels from ``info.rating_levels``).  The base keeps ``info`` as
        ``self.info`` with its id counts as ``num_users``/``num_items`` (``None``: kept as set before)."""
        if info is not None:
            self.info, self.num_users, self.num_items = info, info.num_users, info.num_items

    def run(self, model: nn.Module, batch: TaskBatch, steps: int, create_graph: bool,
            chunk_size: Optional[int] = None) -> AdaptResult:
        """Predict every task's query set from its support set: ``AdaptResult(query_loss=[B], query_pred=[B, Q])``,
        vectorised over tasks, exact under padding (use the masks); ``self.training`` tells training apart."""
        raise NotImplementedError(f"{self.name} implements no run()")

    def outer_loss(self, result: AdaptResult, batch: TaskBatch, params: dict[str, Tensor]) -> Tensor:
        """The meta-objective: the mean over tasks of the query loss after adaptation."""
        return result.query_loss.mean()


class GradientAlgorithm(MetaAlgorithm):
    """Base class of gradient-based algorithms (exported as ``Algorithm`` too): MAML and its relatives.

    ``inner_steps``/``inner_lr``: the inner SGD; ``first_order`` drops second derivatives (default per class);
    ``adapt``: glob patterns over parameter names (``head.*`` adapts the decision layers only, as MeLU does);
    ``eval_inner_steps``: steps at validation/test/predict time (default ``inner_steps``).
    ``inner_steps``/``inner_lr`` left at ``None`` take the class's ``default_inner_steps``/``default_inner_lr``
    (so a preset such as ``melu`` can carry its paper's local settings).  ``inner_path``: the fastest inner-loop
    path allowed (``metarec_pl.inner.planner``; ``MetaLearner(inner_path=...)`` sets it).
    A subclass that sets ``gradient_based = False`` (and writes ``run``) behaves as a ``MetaAlgorithm``.
    """

    gradient_based: ClassVar[bool] = True
    default_adapt: ClassVar[tuple[str, ...]] = ("*",)
    default_first_order: ClassVar[bool] = False
    query_through_fast_weights: ClassVar[bool] = True  # False: the query loss sees adapted weights as constants
    default_inner_steps: ClassVar[int] = 5
    default_inner_lr: ClassVar[float] = 0.01
    inner_path: str = "auto"

    def __init__(self, inner_steps: Optional[int] = None, inner_lr: Optional[float] = None,
                 first_order: Optional[bool] = None, adapt: Optional[Sequence[str]] = None,
                 eval_inner_steps: Optional[int] = None) -> None:
        if not self.gradient_based:  # a learner without inner loop written on this base (docs/plugins.md)
            super().__init__(inner_steps, inner_lr, first_order, adapt, eval_inner_steps)
            return
        super().__init__()
        inner_steps = self.default_inner_steps if inner_steps is None else inner_steps
        inner_lr = self.default_inner_lr if inner_lr is None else inner_lr
        if inner_steps < 0 or (eval_inner_steps is not None and eval_inner_steps < 0):
            raise ConfigError(f"model.inner_steps / eval_inner_steps: {self.name}: inner steps must be >= 0, got "
                              f"{inner_steps}, {eval_inner_steps}")
        self.inner_steps = inner_steps
        self.eval_inner_steps = inner_steps if eval_inner_steps is None else eval_inner_steps
        self.inner_lr = inner_lr
        self.first_order = self.default_first_order if first_order is None else first_order
        self.adapt_patterns = tuple(adapt) if adapt else self.default_adapt

    def bind(self, model: nn.Module, info: Optional[DataInfo] = None) -> None:
        """Choose the adapted parameters of ``model``; subclasses create per-parameter meta-tensors here.
        ``ConfigError`` when the ``adapt`` patterns match no parameter."""
        super().bind(model, info)
        if not self.gradient_based:
            return
        all_names = [n for n, _ in model.named_parameters()]
        self.adapted_names = [n for n in all_names if any(fnmatchcase(n, p) for p in self.adapt_patterns)]
        if not self.adapted_names:
            raise ConfigError(f"model.adapt: {self.name}: adapt patterns {list(self.adapt_patterns)} match no "
                              f"parameter of the network; expected globs over its parameters: {', '.join(all_names)}")

    def run(self, model: nn.Module, batch: TaskBatch, steps: int, create_graph: bool,
            chunk_size: Optional[int] = None) -> AdaptResult:
        """The shared vectorised inner loop (``metarec_pl.inner.adapt``) on ``model``'s ``adapted_names``."""
        return inner.adapt(model, self, batch, steps, create_graph, chunk_size, self.inner_path)

    @property
    def plain_sgd(self) -> bool:
        """Whether the inner step is this class's plain SGD (not overridden), so loops may fold -lr into the
        gradients or use the kernel form of a first layer."""
        return getattr(self.inner_update, "__func__", None) is GradientAlgorithm.inner_update

    @broadcasts_over_tasks
    def inner_update(self, fast: dict[str, Tensor], grads: dict[str, Tensor]) -> dict[str, Tensor]:
        """One inner step on one task's fast weights (plain SGD; one fused op, forward and backward)."""
        return {n: torch.add(w, grads[n], alpha=-self.inner_lr) for n, w in fast.items()}


Algorithm = GradientAlgorithm  # the name plugins and docs/plugins.md use
