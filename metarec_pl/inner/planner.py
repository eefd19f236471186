"""Which inner-loop path adapts a meta-batch: decided here, and only here.

Every path has one signature, ``path(model, algorithm, batch, steps, create_graph, plan) -> AdaptResult``, and
computes what the reference loop (``metarec_pl.inner.reference``, the definition) computes; the tests compare each
path's meta-gradients with the reference's in float64.  From the slowest to the fastest:

* ``reference``: ``vmap(functional_call)`` on the whole network, inner gradients by ``torch.autograd.grad``;
* ``autograd``: the same, plus the encoder run once when only ``head.*`` adapts, a Linear stack head as batched
  matrix products, and fp16 inner loss scaling under fp16 autocast (``metarec_pl.inner.autograd``);
* ``written-out``: a Linear/ReLU head whose inner gradients are written out (the loss's own ``Loss.grad``
  through ``linear_stack_backward``), -lr folded into them under plain SGD (``metarec_pl.inner.written_out``);
* ``kernel``: the written-out path with the head's first layer in kernel form, while training by plain SGD
  (``metarec_pl.inner.kernel``);
* and ``shared``, for no inner step: the shared weights serve every task (``metarec_pl.inner.shared``).

``MetaLearner(inner_path=...)`` (``--model.inner_path``) names the fastest path allowed: ``auto`` (= ``kernel``,
the default) takes the fastest that fits, ``reference`` forces the definition (for debugging a new network or
algorithm, or as a check: it takes no shortcut, groups no tasks and checkpoints no chunk).  Around any path but a
forced reference, tasks are grouped by support size and, with ``vmap_chunk_size``, adapted in checkpointed
chunks (``metarec_pl.inner.tasks``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn

from metarec_pl.data.types import TaskBatch
from metarec_pl.errors import ConfigError
from metarec_pl.inner import autograd, reference, shared, written_out
from metarec_pl.inner.fp16 import fp16_autocast
from metarec_pl.inner.kernel import KernelFirstLayer
from metarec_pl.inner.linear_stack import has_written_out_backward, is_linear_stack
from metarec_pl.inner.tasks import adapt_checkpointed, cat_results, select_tasks, task_groups
from metarec_pl.models.base import RatingModel
from metarec_pl.results import AdaptResult

ORDER = ("reference", "autograd", "written-out", "kernel")  # slowest to fastest
INNER_PATHS = ("auto", *ORDER)  # the values of MetaLearner(inner_path=...)


@dataclass(frozen=True)
class Plan:
    """How one group of tasks is adapted: ``path`` (a key of ``PATHS``) and the shortcuts it takes."""

    path: str
    head_only: bool = False  # only head.* adapts: encoder outputs computed once
    stacked: bool = False  # the head as batched matrix products (``linear_stack``)
    fp16_scaling: bool = False  # per-task power-of-two support-loss scales (``inner.fp16``)
    fold_lr: bool = False  # the written-out gradients carry -lr (plain SGD), so a step is a sum


PATHS: dict[str, Callable[..., AdaptResult]] = {
    "shared": shared.adapt, "reference": reference.adapt, "autograd": autograd.adapt,
    "written-out": written_out.adapt, "kernel": written_out.adapt,
}


def check_path(path: str, where: str = "model.inner_path") -> None:
    """``ConfigError`` unless ``path`` is one of ``INNER_PATHS``."""
    if path not in INNER_PATHS:
        raise ConfigError(f"{where}: {path!r} is not an inner-loop path; expected one of {', '.join(INNER_PATHS)}")


def _fastest(model: nn.Module, algorithm: Any, head_only: bool, scaling: bool) -> str:
    """The fastest path that fits the network, algorithm, loss and grad mode."""
    head = model.head if head_only else None
    written = head is not None and has_written_out_backward(head) and algorithm.loss.has_grad
    # kernel form only while training: without a graph the per-task weights cost no backward, and a large query
    # (a whole catalogue in ``recommend``) makes the kernel products dearer than the copies (docs/cli.md, Latency)
    if written and torch.is_grad_enabled() and KernelFirstLayer.fits(head, algorithm,
                                                                      [n[5:] for n in algorithm.adapted_names]):
        return "kernel"
    if written:
        return "written-out"
    return "autograd" if head_only or scaling else "reference"


def plan(model: nn.Module, algorithm: Any, batch: TaskBatch, steps: int, allowed: str = "auto") -> Plan:
    """The path that adapts ``batch`` (for its precision: fp16 autocast on its device or not, and the current
    grad mode), at most as fast as ``allowed`` (``INNER_PATHS``; ``auto``: the fastest that fits)."""
    if allowed == "reference":
        return Plan("reference")
    if steps == 0 and not algorithm.needs_fast_weights:
        return Plan("shared")
    fp16 = fp16_autocast(batch.support.mask.device.type)
    scaling = fp16 and algorithm.loss.has_grad
    head_only = isinstance(model, RatingModel) and all(n.startswith("head.") for n in algorithm.adapted_names)
    path = _fastest(model, algorithm, head_only, scaling)
    if allowed != "auto":
        path = ORDER[min(ORDER.index(path), ORDER.index(allowed))]
    if path == "reference":
        return Plan("reference")
    if path == "autograd":
        return Plan("autograd", head_only, head_only and is_linear_stack(model.head), scaling)
    return Plan(path, True, True, scaling, algorithm.plain_sgd and not fp16)


def adapt(model: nn.Module, algorithm: Any, batch: TaskBatch, steps: int, create_graph: bool,
          chunk_size: Optional[int] = None, path: str = "auto") -> AdaptResult:
    """Adapt ``model`` to every task of ``batch`` with ``steps`` inner steps; return per-task query results.

    ``create_graph=False`` treats inner gradients as constants (first order; also used at evaluation).
    Tasks are grouped by support size so that each group is padded only to its own longest support set
    (``task_groups``).  ``chunk_size`` caps the tasks adapted at once; while gradients are tracked each chunk
    is checkpointed (its inner loop is recomputed in the backward pass), so peak memory follows the chunk, not
    the batch, for about one more forward pass of compute.  ``path``: the fastest path allowed (``INNER_PATHS``;
    ``ConfigError`` otherwise); each group's path is planned when it runs (``plan``), so a checkpointed chunk's
    recomputation, which tracks gradients, may take a faster path than its forward without them.
    """
    check_path(path, "inner path")

    def run(part: TaskBatch) -> AdaptResult:
        chosen = plan(model, algorithm, part, steps, path)
        return PATHS[chosen.path](model, algorithm, part, steps, create_graph, chosen)

    groups = task_groups(batch.support.mask, chunk_size) if path != "reference" else []
    if len(groups) <= 1:
        return run(batch)
    checkpointed = chunk_size is not None and torch.is_grad_enabled()
    parts = [adapt_checkpointed(run, select_tasks(batch, idx)) if checkpointed else run(select_tasks(batch, idx))
             for idx in groups]
    return cat_results(parts, groups)
