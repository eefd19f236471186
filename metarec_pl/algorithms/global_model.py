"""``none``: the global-model baseline — one network for everybody, no adaptation."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from metarec_pl import inner
from metarec_pl.algorithms.base import AdaptResult, MetaAlgorithm
from metarec_pl.data.types import TaskBatch


class GlobalModel(MetaAlgorithm):
    """Trained on every training rating (support and query alike, each rating weighted equally);
    predicts without adapting."""

    needs_support_loss = True

    def run(self, model: nn.Module, batch: TaskBatch, steps: int, create_graph: bool,
            chunk_size: Optional[int] = None) -> AdaptResult:
        """The shared weights serve every task (the inner loop's ``shared`` path, tasks grouped as there)."""
        return inner.adapt(model, self, batch, 0, create_graph, chunk_size)

    def outer_loss(self, result: AdaptResult, batch: TaskBatch, params: dict[str, Tensor]) -> Tensor:
        assert result.support_loss is not None
        n_s, n_q = batch.support.mask.sum(1), batch.query.mask.sum(1)
        return (result.support_loss * n_s + result.query_loss * n_q).sum() / (n_s + n_q).sum().clamp_min(1.0)
