"""``none``: the global-model baseline — one network for everybody, no adaptation."""

from __future__ import annotations

from torch import Tensor

from metarec_pl.algorithms.base import AdaptResult, Algorithm
from metarec_pl.data.types import TaskBatch


class GlobalModel(Algorithm):
    """Trained on every training rating (support and query alike, each rating weighted equally);
    predicts without adapting."""

    gradient_based = False
    needs_support_loss = True

    def outer_loss(self, result: AdaptResult, batch: TaskBatch, params: dict[str, Tensor]) -> Tensor:
        assert result.support_loss is not None
        n_s, n_q = batch.support.mask.sum(1), batch.query.mask.sum(1)
        return (result.support_loss * n_s + result.query_loss * n_q).sum() / (n_s + n_q).sum().clamp_min(1.0)
