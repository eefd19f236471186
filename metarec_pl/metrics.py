"""Query-set metrics per stage and scenario, built from torchmetrics classes.

Every evaluated batch updates two collections: the stage's pooled one (``test/mae``) and its scenario's
(``test/user-cold/mae``); gradient-based algorithms also update the zero-shot ones (``test/mae_zero_shot``).
MAE/RMSE pool all query ratings; nDCG@k ranks each task's query items by predicted rating with the true
rating itself as graded relevance (half stars and play-count weights as they are, never truncated to integers),
averaged over tasks.  ``like_acc``/``like_recall``: a rating >= ``like_threshold`` is a "like"; predictions are
thresholded the same way.  ``mae_rounded`` (when the data's ``rating_levels`` are
known): the MAE of each prediction moved to its nearest rating level.  For ratings on a discrete scale the best point
prediction under absolute error is a level (the median of the rating's distribution), so a model trained on squared
error (which predicts means) loses MAE to rounding alone; both are reported, ``mae`` stays the comparable number.

Rankings over candidates (when the batch carries ``TaskBatch.candidate``, see ``data/candidates.py``): each
task's query positives (rating >= ``like_threshold``; implicit feedback: every interaction) are ranked among its
candidate items (items the user never touched: not in training, support or query); query items below the threshold
are left out.  A batch may carry several rankings (``TaskBatch.rankings``: name -> which candidates belong to it):
``pool`` (a sampled pool of candidates) and ``full`` (every untouched item of the scenario: the full catalogue).
Per ranking: ``precision@k``, ``recall@k``, ``hit@k``, ``ndcg@k`` (binary relevance) for every k of ``top_k``,
``mrr`` and ``auc`` (torchmetrics' retrieval classes), averaged over tasks with at least one positive, after
adaptation and, for gradient-based learners, before it (``_zero_shot``): ``val/full/recall@20``,
``test/user-cold/pool/hit@10_zero_shot``.

Metrics from plugins (hook ``register_metrics``, chosen by ``MetaLearner(extra_metrics=[...])``): a subclass of
``torchmetrics.Metric``, built with no argument, one instance per stage, scenario and kind (adapted / zero-shot),
logged beside ``mae`` as ``<stage>/<name>``, ``<stage>/<scenario>/<name>`` and ``..._zero_shot``.  A
``RetrievalMetric`` subclass is updated like nDCG: ``update(preds, target, indexes)`` per task, the rating as
graded relevance, pooled as the task-weighted mean of the scenarios; any other ``Metric`` gets ``update(preds,
target)``: ``[n]`` float predictions and ratings of every real (unpadded) query sample of the batch, pooled over
tasks as MAE is.

Per-task metrics (nDCG, the ``pool/`` ones) are computed once, per scenario: torchmetrics' retrieval classes
evaluate each task in a Python loop, which dominated evaluation time.  Their pooled values are the task-weighted
means of the scenarios' values (a task belongs to one scenario), with the task counts kept in ``SumMetric``s so
they are synchronised across processes like every other state.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric, MetricCollection
from torchmetrics.aggregation import SumMetric
from torchmetrics.classification import BinaryAccuracy, BinaryRecall
from torchmetrics.retrieval import (RetrievalAUROC, RetrievalHitRate, RetrievalMRR, RetrievalNormalizedDCG,
                                    RetrievalPrecision, RetrievalRecall)
from torchmetrics.retrieval.base import RetrievalMetric

from metarec_pl.data.types import TaskBatch
from metarec_pl.errors import ConfigError

POOLED = "*"
BUILTIN_QUERY_METRICS = ("mae", "rmse", "like_acc", "like_recall", "mae_rounded")  # and ndcg@<k>
DEFAULT_LIKE_THRESHOLD = 4.0  # a "like" on a 1-5 star scale, until the data set's own threshold is set


def break_ties(scores: Tensor, scale: float = 1e-5) -> Tensor:
    """Scores plus a seeded jitter far below any real score difference, so that tied items (a constant predictor,
    every cold item under ``bias``) are ranked in a fixed random order instead of in input order, which would
    systematically put query positives (listed first) before or after the candidates."""
    gen = torch.Generator().manual_seed(len(scores))
    return scores + scale * torch.rand(scores.shape, generator=gen).to(scores.device, scores.dtype)


def round_to_levels(pred: Tensor, levels: Tensor) -> Tensor:
    """Each prediction replaced by its nearest rating level (ties: the lower level); outside the scale, its end."""
    levels = levels.to(pred)
    return levels[(pred.unsqueeze(-1) - levels).abs().argmin(-1)]


def ranking_metrics(top_k: Sequence[int]) -> dict[str, RetrievalMetric]:
    """The per-task metrics of one ranking over candidates (tasks without a positive are skipped)."""
    skip = dict(empty_target_action="skip")
    out: dict[str, RetrievalMetric] = {}
    for k in top_k:
        out.update({f"precision@{k}": RetrievalPrecision(top_k=k, **skip), f"recall@{k}": RetrievalRecall(top_k=k, **skip),
                    f"hit@{k}": RetrievalHitRate(top_k=k, **skip), f"ndcg@{k}": RetrievalNormalizedDCG(top_k=k, **skip)})
    out.update({"mrr": RetrievalMRR(**skip), "auc": RetrievalAUROC(**skip)})
    return out


def check_extra_metric(name: str, cls: type) -> None:
    """``ConfigError`` (one line) unless ``cls`` registered as ``name`` can join the query metrics: a name no
    built-in metric has, without ``/`` or ``.`` (they separate stage, scenario and name), and a ``Metric`` that is
    built with no argument."""
    where = f"model.extra_metrics: metric '{name}'"
    if name in BUILTIN_QUERY_METRICS or name.startswith("ndcg@"):
        raise ConfigError(f"{where} has the name of a built-in metric; expected a name other than "
                          f"{', '.join(BUILTIN_QUERY_METRICS)}, ndcg@<k> (register it under another name)")
    if "/" in name or "." in name:
        raise ConfigError(f"{where}: '/' and '.' cannot be part of a metric name; expected a name without them")
    try:
        cls()
    except Exception as exc:
        raise ConfigError(f"{where}: {cls.__qualname__}() failed ({type(exc).__name__}: "
                          f"{(str(exc).splitlines() or [''])[0]}); expected a Metric built with no argument") from None


class RatingMetrics(nn.Module):
    """Every metric of every stage and scenario (see the module docstring).

    Args:
        ndcg_k: cut-offs of the graded nDCG over each query set.
        top_k: cut-offs of the rankings over candidates.
        like_threshold: a rating >= this is a "like" / a positive of the rankings (``None``: 4.0 until the data
            set's own threshold is given to ``like_threshold``).
        rating_levels: the discrete rating scale, for ``mae_rounded`` (``None``: left out).
        extra: name -> ``torchmetrics.Metric`` subclass of the registered metrics to compute too (module
            docstring); ``ConfigError`` (one line) for a name a built-in metric has or one that cannot be a metric
            name, or a class that cannot be built with no argument.
    """

    def __init__(self, ndcg_k: Sequence[int] = (3,), top_k: Sequence[int] = (5, 10),
                 like_threshold: Optional[float] = None, rating_levels: Optional[Sequence[float]] = None,
                 extra: Optional[dict[str, type]] = None) -> None:
        super().__init__()
        self.extra = dict(extra or {})
        for name, cls in self.extra.items():
            check_extra_metric(name, cls)
        self.ndcg_k = tuple(ndcg_k)
        levels = torch.tensor(sorted(rating_levels) if rating_levels else [], dtype=torch.float)
        self.register_buffer("rating_levels", levels, persistent=False)
        self.top_k = tuple(top_k)
        self.like_threshold = DEFAULT_LIKE_THRESHOLD if like_threshold is None else like_threshold
        self.sets = nn.ModuleDict()  # "stage|scenario|kind" -> MetricCollection, created on first use
        self.task_counts = nn.ModuleDict()  # the same key -> SumMetric: the tasks its per-task metrics average over
        self.scenario_ids: dict[str, int] = {}

    def _query_metrics(self, pooled: bool) -> tuple[dict[str, Metric], dict[str, RetrievalMetric]]:
        """(every query metric, the per-task ones among them) of one collection; a pooled collection has no
        per-task metric: their pooled values are derived in ``compute``."""
        extra = {name: cls() for name, cls in self.extra.items()}
        per_task: dict[str, RetrievalMetric] = {}
        if not pooled:
            per_task = {f"ndcg@{k}": RetrievalNormalizedDCG(top_k=k) for k in self.ndcg_k}
            per_task.update({n: m for n, m in extra.items() if isinstance(m, RetrievalMetric)})
        metrics = {"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False), **per_task,
                   "like_acc": BinaryAccuracy(), "like_recall": BinaryRecall()}
        if len(self.rating_levels):
            metrics["mae_rounded"] = MeanAbsoluteError()
        metrics.update({n: m for n, m in extra.items() if not isinstance(m, RetrievalMetric)})
        return metrics, per_task

    def _collection(self, stage: str, scenario: str, kind: str, device: torch.device) -> tuple[str, MetricCollection]:
        """(key, collection) of ``kind``: ``adapted``/``zero_shot`` (query metrics) or ``<ranking>/adapted``,
        ``<ranking>/zero_shot`` (a ranking over candidates, e.g. ``pool/adapted``)."""
        key = f"{stage}|{scenario}|{kind}"
        if key not in self.sets:
            ranking = kind.split("/")[0] if "/" in kind else None
            if ranking is not None:
                per_task = ranking_metrics(self.top_k)
                metrics, prefix = per_task, f"{stage}/{scenario}/{ranking}/"
            else:
                metrics, per_task = self._query_metrics(pooled=scenario == POOLED)
                prefix = f"{stage}/" if scenario == POOLED else f"{stage}/{scenario}/"
            postfix = "_zero_shot" if kind.endswith("zero_shot") else None
            self.sets[key] = MetricCollection(metrics, prefix=prefix, postfix=postfix).to(device)
            if per_task:
                self.task_counts[key] = SumMetric().to(device)
        return key, self.sets[key]

    def update(self, stage: str, scenario: str, pred: Tensor, batch: TaskBatch, zero_shot: bool = False) -> None:
        """Add one batch of query predictions [tasks, query] (padding removed by the query mask)."""
        sid = self.scenario_ids.setdefault(scenario, len(self.scenario_ids))
        real = batch.query.mask > 0
        pred_all = pred.float()
        pred, target = pred.float()[real], batch.query.rating[real]
        rounded = round_to_levels(pred, self.rating_levels) if len(self.rating_levels) else None
        tasks = (batch.key * 1024 + sid)[:, None].expand_as(real)[real]
        for name in (POOLED, scenario):
            key, collection = self._collection(stage, name, "zero_shot" if zero_shot else "adapted", pred.device)
            for base, metric in collection.items(keep_base=True):
                if isinstance(metric, RetrievalMetric):
                    metric.update(break_ties(pred), target.float(), indexes=tasks)  # graded: any rating scale
                elif base in ("like_acc", "like_recall"):
                    metric.update((pred >= self.like_threshold).long(), (target >= self.like_threshold).long())
                else:
                    metric.update(rounded if base == "mae_rounded" else pred, target)
            if key in self.task_counts:
                self.task_counts[key].update(real.any(1).sum().float())
        rankings = batch.rankings or ({"pool": batch.candidate} if batch.candidate is not None else {})
        for ranking, candidates in rankings.items():
            self._update_ranking(stage, scenario, ranking, pred_all, batch, candidates, sid, zero_shot)

    def _update_ranking(self, stage: str, scenario: str, ranking: str, pred: Tensor, batch: TaskBatch,
                        candidates: Tensor, sid: int, zero_shot: bool) -> None:
        """Rank each task's query positives among ``candidates`` [tasks, query] (other query items are left out)."""
        positive = (batch.query.mask > 0) & (batch.query.rating >= self.like_threshold)
        keep = positive | candidates
        tasks = (batch.key * 1024 + sid)[:, None].expand_as(keep)[keep]
        kind = f"{ranking}/{'zero_shot' if zero_shot else 'adapted'}"
        key, collection = self._collection(stage, scenario, kind, pred.device)
        collection.update(break_ties(pred[keep]), positive[keep].long(), indexes=tasks)
        self.task_counts[key].update(positive.any(1).sum().float())  # tasks without a positive are skipped

    def clear(self, stage: str) -> None:
        """Drop the collections of ``stage``; the next update creates them afresh."""
        for key in [k for k in self.sets if k.startswith(stage + "|")]:
            del self.sets[key]
            if key in self.task_counts:
                del self.task_counts[key]

    def compute(self, stage: str) -> dict[str, float]:
        """All metrics of ``stage`` (synchronised across processes by torchmetrics), then reset them.  A pooled
        per-task metric is the mean of the scenarios' values weighted by their task counts."""
        out: dict[str, float] = {}
        pooled: dict[str, list[float]] = {}  # pooled name -> [sum of count * value, sum of counts]
        for key, collection in self.sets.items():
            if not key.startswith(stage + "|"):
                continue
            values = {k: float(v) for k, v in collection.compute().items()}
            out.update(values)
            if key in self.task_counts:
                scenario, count = key.split("|")[1], float(self.task_counts[key].compute())
                for base, metric in collection.items(keep_base=True):
                    if isinstance(metric, RetrievalMetric):
                        name = f"{collection.prefix}{base}{collection.postfix or ''}"
                        total = pooled.setdefault(name.replace(f"/{scenario}/", "/", 1), [0.0, 0.0])
                        total[0] += count * values[name]
                        total[1] += count
                self.task_counts[key].reset()
            collection.reset()
        out.update({name: (weighted / n if n else 0.0) for name, (weighted, n) in pooled.items()})
        return out
