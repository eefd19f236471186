"""Query-set metrics per stage and scenario, built from torchmetrics classes.

Every evaluated batch updates two collections: the stage's pooled one (``test/mae``) and its scenario's
(``test/user-cold/mae``); gradient-based algorithms also update the zero-shot ones (``test/mae_zero_shot``).
MAE/RMSE pool all query ratings; nDCG@k ranks each task's query items by predicted rating with the true
rating as graded relevance, averaged over tasks.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection
from torchmetrics.retrieval import RetrievalNormalizedDCG

from metarec_pl.data.types import TaskBatch

POOLED = "*"


class RatingMetrics(nn.Module):
    def __init__(self, ndcg_k: Sequence[int] = (3,)) -> None:
        super().__init__()
        self.ndcg_k = tuple(ndcg_k)
        self.sets = nn.ModuleDict()  # "stage|scenario|adapted" -> MetricCollection, created on first use
        self.scenario_ids: dict[str, int] = {}

    def _collection(self, stage: str, scenario: str, zero_shot: bool, device: torch.device) -> MetricCollection:
        key = f"{stage}|{scenario}|{'zero_shot' if zero_shot else 'adapted'}"
        if key not in self.sets:
            metrics = {"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False)}
            metrics.update({f"ndcg@{k}": RetrievalNormalizedDCG(top_k=k) for k in self.ndcg_k})
            prefix = f"{stage}/" if scenario == POOLED else f"{stage}/{scenario}/"
            collection = MetricCollection(metrics, prefix=prefix, postfix="_zero_shot" if zero_shot else None)
            self.sets[key] = collection.to(device)
        return self.sets[key]

    def update(self, stage: str, scenario: str, pred: Tensor, batch: TaskBatch, zero_shot: bool = False) -> None:
        """Add one batch of query predictions [tasks, query] (padding removed by the query mask)."""
        sid = self.scenario_ids.setdefault(scenario, len(self.scenario_ids))
        real = batch.query.mask > 0
        pred, target = pred.float()[real], batch.query.rating[real]
        tasks = (batch.key * 1024 + sid)[:, None].expand_as(real)[real]
        for name in (POOLED, scenario):
            collection = self._collection(stage, name, zero_shot, pred.device)
            for metric_name, metric in collection.items(keep_base=True):
                if isinstance(metric, RetrievalNormalizedDCG):
                    metric.update(pred, target.long(), indexes=tasks)
                else:
                    metric.update(pred, target)

    def compute(self, stage: str) -> dict[str, float]:
        """All metrics of ``stage`` (synchronised across processes by torchmetrics), then reset them."""
        out: dict[str, float] = {}
        for key, collection in self.sets.items():
            if key.startswith(stage + "|"):
                out.update({k: float(v) for k, v in collection.compute().items()})
                collection.reset()
        return out
