"""A diverging inner loop (NaN/inf) must stop the run with a message that says where, not become a NaN metric.

``MetaLearner(on_divergence="raise")`` (default) raises ``DivergenceError`` naming the algorithm, the step and the
task; ``on_divergence="skip"`` drops the diverged tasks of the batch (re-adapting the rest, since one NaN task
would poison the shared meta-gradient), counts them and logs the count (``train/skipped_tasks`` etc.).
"""

from __future__ import annotations

from typing import Optional

import torch
from lightning_utilities.core.apply_func import apply_to_collection
from torch import Tensor

from metarec_pl.data.types import TaskBatch

POLICIES = ("raise", "skip")


class DivergenceError(RuntimeError):
    """The inner loop produced NaN/inf for some task."""


def diverged(query_pred: Tensor, query_mask: Tensor, query_loss: Optional[Tensor] = None) -> Tensor:
    """[tasks] bool: a real query prediction (or the task's query loss) is not finite."""
    bad = ~torch.isfinite(query_pred.float()).logical_or(query_mask <= 0).all(-1)
    if query_loss is not None:
        bad |= ~torch.isfinite(query_loss.detach().float())
    return bad


def select(batch: TaskBatch, keep: Tensor) -> TaskBatch:
    """The tasks of ``batch`` where ``keep`` is true (every tensor of a batch starts with the task dimension)."""
    return apply_to_collection(batch, Tensor, lambda t: t[keep])


def message(algorithm: str, where: str, batch: TaskBatch, bad: Tensor, task_kind: str = "task") -> str:
    keys = batch.key[bad].tolist()
    more = f" (and {len(keys) - 1} more of this batch)" if len(keys) > 1 else ""
    return (f"{algorithm}: inner loop diverged (NaN/inf) {where}, on {task_kind} {keys[0]} of scenario "
            f"'{batch.scenario}'{more}; lower model.inner_lr or model.inner_steps, or set "
            f"model.on_divergence=skip to skip such tasks")
