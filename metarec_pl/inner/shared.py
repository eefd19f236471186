"""No inner step: the shared weights serve every task (``none``, evaluation with ``eval_inner_steps: 0``), so the
network runs once on the whole batch."""

from __future__ import annotations

from typing import Any, Optional

from torch import nn

from metarec_pl.data.types import TaskBatch
from metarec_pl.results import AdaptResult


def adapt(model: nn.Module, algorithm: Any, batch: TaskBatch, steps: int = 0, create_graph: bool = False,
          plan: Optional[Any] = None) -> AdaptResult:
    """Query predictions [tasks, Q] and losses [tasks] of the unadapted ``model`` (``steps``: 0, unused)."""
    s, q, loss = batch.support, batch.query, algorithm.loss
    pred = model(q.features)
    out = {"query_pred": pred, "query_loss": loss(pred, q.rating, q.mask)}
    if algorithm.needs_support_loss:
        out["support_loss"] = loss(model(s.features), s.rating, s.mask)
    return AdaptResult(**out)
