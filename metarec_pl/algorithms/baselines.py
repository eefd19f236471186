"""Honest non-meta baselines, registered as algorithms so they run through the same protocol and code path.

* ``bias``: global mean + shrunk item bias (counted over the training tasks) + shrunk user bias from the support.
* ``popularity``: scores an item by how many training interactions (rating > 0) it has (top-k metrics only).
* ``finetune``: the ``none`` global model, then plain SGD on each test user's support set (no meta-training).
* ``mf-foldin``: biased matrix factorisation trained on the training ratings; each evaluated user is folded in
  by ridge regression of their support ratings on the learned item factors (one batched ``linalg.solve``);
  an item factor is an id embedding plus a learned linear map of the item's features, so a cold item (never
  trained) has only the feature part.

``bias`` and ``popularity`` are fitted by counting: each training task (user) is tallied once, the first time it
is seen, so any number of epochs gives the same estimates; their loss is a zero tied to the network's parameters
so Lightning's loop runs unchanged.  Per-id tables are sized by the data's id counts (``bind(model, info)``:
``info.num_users``/``num_items`` of the ``DataInfo`` the data module measures).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from metarec_pl.algorithms.base import AdaptResult, Algorithm, MetaAlgorithm, masked_mse
from metarec_pl.data.info import DataInfo
from metarec_pl.data.types import TaskBatch
from metarec_pl.errors import ConfigError
from metarec_pl.models.base import pooled_multi


def all_ratings_loss(result: AdaptResult, batch: TaskBatch) -> Tensor:
    """Mean squared error over every training rating (support and query alike), as ``none`` trains."""
    assert result.support_loss is not None
    n_s, n_q = batch.support.mask.sum(1), batch.query.mask.sum(1)
    return (result.support_loss * n_s + result.query_loss * n_q).sum() / (n_s + n_q).sum().clamp_min(1.0)


class _IdTables(MetaAlgorithm):
    """Shared by the per-id baselines: checks that the id-table sizes were given."""

    needs_support_loss = True

    def bind(self, model: nn.Module, info: Optional[DataInfo] = None) -> None:
        super().bind(model, info)
        if self.num_users is None or self.num_items is None:
            raise ConfigError(f"{self.name}: needs the data's id counts (num_users, num_items), got none; expected "
                              f"MetaLearner(data_info=MetaDataModule.info) (the metarec CLI links data.info)")


class _Tally(_IdTables):
    """Per-item rating sums and counts over the training tasks, each task counted once."""

    def bind(self, model: nn.Module, info: Optional[DataInfo] = None) -> None:
        super().bind(model, info)
        self.register_buffer("item_sum", torch.zeros(self.num_items, dtype=torch.float64))
        self.register_buffer("item_count", torch.zeros(self.num_items, dtype=torch.float64))
        self.register_buffer("user_seen", torch.zeros(self.num_users, dtype=torch.bool))

    def counted(self, samples) -> Tensor:
        """Which samples the tally counts: every real one (``popularity``: interactions only)."""
        return samples.mask

    def tally(self, batch: TaskBatch) -> None:
        new = ~self.user_seen[batch.key]
        self.user_seen[batch.key] = True
        for s in (batch.support, batch.query):
            m = (self.counted(s) * new[:, None]).flatten().double()
            self.item_sum.index_add_(0, s.item.flatten(), s.rating.flatten().double() * m)
            self.item_count.index_add_(0, s.item.flatten(), m)

    @property
    def global_mean(self) -> Tensor:
        return (self.item_sum.sum() / self.item_count.sum().clamp_min(1.0)).float()

    def outer_loss(self, result: AdaptResult, batch: TaskBatch, params: dict[str, Tensor]) -> Tensor:
        """Nothing to optimise: a zero tied to the parameters keeps Lightning's automatic optimisation happy."""
        return sum(p.sum() for p in params.values()) * 0.0


class Bias(_Tally):
    """r̂ = μ + b_i + b_u with b_i = Σ(r − μ)/(n_i + ``item_shrink``) over the training ratings of item i (0 for a
    cold item) and b_u = Σ_support(r − μ − b_i)/(n_support + ``user_shrink``)."""

    def __init__(self, *args, item_shrink: float = 10.0, user_shrink: float = 5.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.item_shrink, self.user_shrink = item_shrink, user_shrink

    def item_bias(self, items: Tensor) -> Tensor:
        mu = self.global_mean.double()
        b = (self.item_sum - self.item_count * mu) / (self.item_count + self.item_shrink).clamp_min(1e-12)
        b = torch.where(self.item_count > 0, b, torch.zeros_like(b))  # a cold item has no bias, whatever the shrink
        return b.float()[items]

    def run(self, model: nn.Module, batch: TaskBatch, steps: int, create_graph: bool,
            chunk_size: Optional[int] = None) -> AdaptResult:
        if self.training:
            self.tally(batch)
        s, q, mu = batch.support, batch.query, self.global_mean
        base_s = mu + self.item_bias(s.item)
        user_bias = ((s.rating - base_s) * s.mask).sum(1) / (s.mask.sum(1) + self.user_shrink)
        pred_s, pred_q = base_s + user_bias[:, None], mu + self.item_bias(q.item) + user_bias[:, None]
        return AdaptResult(query_loss=masked_mse(pred_q, q.rating, q.mask), query_pred=pred_q,
                           support_loss=masked_mse(pred_s, s.rating, s.mask))


class Popularity(_Tally):
    """Scores an item by log(1 + its number of training interactions): a ranking baseline for the top-k metrics
    (its "ratings" are scores, so its MAE means nothing).  Only real interactions count (rating > 0): the
    negatives a sampler adds to implicit tasks (rating 0) never do."""

    def counted(self, samples) -> Tensor:
        return samples.mask * (samples.rating > 0)

    def run(self, model: nn.Module, batch: TaskBatch, steps: int, create_graph: bool,
            chunk_size: Optional[int] = None) -> AdaptResult:
        if self.training:
            self.tally(batch)
        s, q = batch.support, batch.query
        pred_s, pred_q = torch.log1p(self.item_count.float()[s.item]), torch.log1p(self.item_count.float()[q.item])
        return AdaptResult(query_loss=masked_mse(pred_q, q.rating, q.mask), query_pred=pred_q,
                           support_loss=masked_mse(pred_s, s.rating, s.mask))


class FineTune(Algorithm):
    """Trains exactly as ``none`` (every training rating, no adaptation); at evaluation takes
    ``eval_inner_steps`` (default: ``inner_steps``) plain SGD steps on each task's support set."""

    needs_support_loss = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.inner_steps = 0  # training ignores adaptation; eval_inner_steps keeps the requested steps

    def outer_loss(self, result: AdaptResult, batch: TaskBatch, params: dict[str, Tensor]) -> Tensor:
        return all_ratings_loss(result, batch)


class ItemFeatureMap(nn.Module):
    """A linear map of an item's features: one table per categorical/multi-valued field (multi: mean of the
    present values) and a linear layer per dense field, summed.  An ``item_id`` field is left out: the model
    has its own id embedding, and the map exists for what cold items have, their content."""

    def __init__(self, schema: list, dim: int) -> None:
        super().__init__()
        self.fields = [f for f in schema if f.side == "item" and not f.is_id]
        self.maps = nn.ModuleDict({
            f.key: nn.Linear(f.size, dim, bias=False) if f.kind == "dense"
            else nn.Embedding(f.size, dim, padding_idx=0 if f.kind == "multi" else None) for f in self.fields})
        for m in self.maps.values():
            nn.init.normal_(m.weight, std=0.01)
            if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                m.weight.data[m.padding_idx] = 0.0

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        out = 0.0
        for f in self.fields:
            x, table = features[f.key], self.maps[f.key]
            if f.kind == "categorical":
                out = out + table(x)
            elif f.kind == "multi":
                out = out + pooled_multi(table, x)
            else:
                out = out + table(x.float())
        return out


class MFFoldIn(_IdTables):
    """Biased MF r̂ = μ + b_u + b_i + <p_u, q_i> trained on every training rating with L2 ``reg`` per rating;
    q_i = id embedding + W·features (and b_i likewise).  At evaluation p_u and b_u are the ridge solution
    (penalty ``ridge``) on the task's support ratings minus μ + b_i; user tables are used only in training."""

    supported_losses = ("mse",)  # trains and folds in by squared error

    def __init__(self, *args, dim: int = 16, reg: float = 0.02, ridge: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.dim, self.reg, self.ridge = dim, reg, ridge

    def bind(self, model: nn.Module, info: Optional[DataInfo] = None) -> None:
        super().bind(model, info)
        d = self.dim
        self.user_factors = nn.Embedding(self.num_users, d + 1)  # [p_u, b_u]
        self.item_factors = nn.Embedding(self.num_items, d + 1)  # [q_i, b_i], id part
        nn.init.normal_(self.user_factors.weight, std=0.1)
        nn.init.zeros_(self.item_factors.weight)  # untrained (cold) items keep only the feature part
        self.features = ItemFeatureMap(getattr(model, "schema", []), d + 1)
        self.register_buffer("mu", model.rating_offset.detach().clone() if hasattr(model, "rating_offset")
                             else torch.tensor(3.5))

    def items(self, samples) -> tuple[Tensor, Tensor]:
        """(item factors [B, S, d], item biases [B, S]) of padded samples."""
        z = self.item_factors(samples.item) + self.features(samples.features)
        return z[..., :-1], z[..., -1]

    def fold_in(self, q: Tensor, y: Tensor, mask: Tensor) -> Tensor:
        """Ridge regression per task of ``y`` on ``[q, 1]`` over the support (batched): [B, d + 1]."""
        z = torch.cat([q, torch.ones_like(q[..., :1])], -1) * mask[..., None]
        eye = torch.eye(z.shape[-1], dtype=z.dtype, device=z.device)
        gram = z.transpose(1, 2) @ z + self.ridge * eye
        return torch.linalg.solve(gram, (z.transpose(1, 2) @ (y * mask)[..., None]))[..., 0]

    def run(self, model: nn.Module, batch: TaskBatch, steps: int, create_graph: bool,
            chunk_size: Optional[int] = None) -> AdaptResult:
        s, q = batch.support, batch.query
        mu = self.mu
        qs, bs = self.items(s)
        qq, bq = self.items(q)
        if self.training:
            user = self.user_factors(batch.key)  # [B, d + 1]
        else:
            user = self.fold_in(qs.float(), (s.rating - mu - bs).float(), s.mask.float())
        pu, bu = user[:, None, :-1], user[:, -1:]
        pred_s = mu + bu + bs + (pu * qs).sum(-1)
        pred_q = mu + bu + bq + (pu * qq).sum(-1)
        if self.training:  # L2 per training rating on its user and item parameters
            rows = (s.mask.sum() + q.mask.sum()).clamp_min(1.0)
            sq_user = (user ** 2).sum(-1)[:, None]
            self._penalty = self.reg * sum(((sq_user + (f ** 2).sum(-1) + b ** 2) * m).sum()
                                           for f, b, m in ((qs, bs, s.mask), (qq, bq, q.mask))) / rows
        return AdaptResult(query_loss=masked_mse(pred_q, q.rating, q.mask), query_pred=pred_q,
                           support_loss=masked_mse(pred_s, s.rating, s.mask))

    def outer_loss(self, result: AdaptResult, batch: TaskBatch, params: dict[str, Tensor]) -> Tensor:
        return all_ratings_loss(result, batch) + self._penalty
