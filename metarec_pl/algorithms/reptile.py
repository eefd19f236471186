"""Reptile (Nichol et al., 2018): move the initial weights toward the mean adapted weights."""

from __future__ import annotations

from torch import Tensor

from metarec_pl.algorithms.base import AdaptResult, Algorithm
from metarec_pl.data.types import TaskBatch


class Reptile(Algorithm):
    """Outer step θ ← θ + ε(mean adapted θ − θ) for the adapted parameters, written as the surrogate loss
    Σ <θ, sg(θ − mean φ)> whose gradient is θ − mean φ: with SGD of learning rate ε this is exactly Reptile.
    Parameters that do not adapt (e.g. embeddings) get the first-order query-loss gradient."""

    default_first_order = True
    needs_fast_weights = True
    query_through_fast_weights = False

    def outer_loss(self, result: AdaptResult, batch: TaskBatch, params: dict[str, Tensor]) -> Tensor:
        assert result.fast_weights is not None
        loss = result.query_loss.mean()
        for name, adapted in result.fast_weights.items():
            theta = params[name]
            loss = loss + (theta * (theta - adapted.mean(0)).detach()).sum()
        return loss
