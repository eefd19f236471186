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

``fit: ratings`` (``bias``, ``popularity``) and ``fit: als`` (``mf-foldin``) fit on every training rating directly
when training starts (``fit_ratings``, called by ``MetaLearner`` with the data module's training rows), not
through the tasks: with capped tasks (``sampler_args.chunk_rows``, protocol ``melu`` version 2) a task holds a
part of a user's history only, and counting first-seen tasks would miss the rest.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from metarec_pl.algorithms.als import als, feature_design, feature_map, field_tables, item_fields
from metarec_pl.algorithms.base import AdaptResult, Algorithm, MetaAlgorithm, masked_mse
from metarec_pl.data.info import DataInfo
from metarec_pl.data.types import RatingData, TaskBatch
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
    """Per-item rating sums and counts over the training tasks, each task counted once (``fit: tasks``), or
    over every training rating at the start of training (``fit: ratings``)."""

    interactions_only = False  # count only rows with rating > 0 (``popularity``)

    def __init__(self, *args, fit: str = "tasks", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if fit not in ("tasks", "ratings"):
            raise ConfigError(f"model.algorithm_args.fit: {self.name}: expected 'tasks' or 'ratings', got {fit!r}")
        self.fit = fit

    def fit_ratings(self, data: RatingData, rows: Tensor) -> None:
        """``fit: ratings``: tally every training row (``rows`` of ``data``) once; the tasks then add nothing."""
        if self.fit != "ratings":
            return
        counted = data.rating[rows] > 0 if self.interactions_only else torch.ones(len(rows), dtype=torch.bool)
        items, ratings = data.item[rows], data.rating[rows].double() * counted
        self.item_sum.zero_().index_add_(0, items, ratings)
        self.item_count.zero_().index_add_(0, items, counted.double())
        self.user_seen.fill_(True)

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

    interactions_only = True

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
    """Biased MF r̂ = μ + b_u + b_i + <p_u, q_i>; q_i = id embedding + W·features (and b_i likewise).  At
    evaluation p_u and b_u are the ridge solution (penalty ``ridge`` on p_u, ``bias_ridge`` on b_u; default
    ``ridge``) on the task's support ratings minus μ + b_i; user tables are used only in training.

    ``fit``: ``tasks`` trains by gradient steps through the training tasks with L2 ``reg`` per rating;
    ``als`` fits on every training rating directly when training starts (``metarec_pl.algorithms.als``: ``als_iters``
    sweeps of ALS with penalty ``reg``, then the item features' ridge map, penalty ``feature_ridge``, for items no
    training rating names), after which there is nothing left to optimise."""

    task_sides = ("user",)  # a user vector folded in from the support: one user per task
    supported_losses = ("mse",)  # trains and folds in by squared error

    def __init__(self, *args, dim: int = 16, reg: float = 0.02, ridge: float = 1.0, fit: str = "tasks",
                 als_iters: int = 12, feature_ridge: float = 3.0, bias_ridge: Optional[float] = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if fit not in ("tasks", "als"):
            raise ConfigError(f"model.algorithm_args.fit: mf-foldin: expected 'tasks' or 'als', got {fit!r}")
        self.dim, self.reg, self.ridge, self.fit = dim, reg, ridge, fit
        self.als_iters, self.feature_ridge, self.bias_ridge = als_iters, feature_ridge, bias_ridge

    def fit_ratings(self, data: RatingData, rows: Tensor) -> None:
        """``fit: als``: ALS over every training row (``rows`` of ``data``); the id tables then hold each trained
        item's [q_i, b_i] minus its feature part, and the feature map the ridge map (cold items: features only)."""
        if self.fit != "als":
            return
        solution = als(data.user[rows], data.item[rows], data.rating[rows], self.num_users, self.num_items,
                       self.dim, self.reg, self.als_iters, seed=int(torch.initial_seed()) % (1 << 31))
        load_item_solution(self.features, self.item_factors, solution.items, solution.trained, data,
                           self.feature_ridge)
        with torch.no_grad():
            self.user_factors.weight.copy_(solution.users.float())
            self.mu.fill_(solution.mu)

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
        penalty = torch.full((z.shape[-1],), float(self.ridge), dtype=z.dtype, device=z.device)
        if self.bias_ridge is not None:
            penalty[-1] = self.bias_ridge
        gram = z.transpose(1, 2) @ z + torch.diag(penalty)
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
        if self.fit == "als":  # fitted by ALS already: a zero tied to the parameters
            return sum(p.sum() for p in self.parameters()) * 0.0
        return all_ratings_loss(result, batch) + self._penalty


def load_item_solution(features: ItemFeatureMap, ids: nn.Embedding, items: Tensor, trained: Tensor,
                       data: RatingData, feature_ridge: float) -> Tensor:
    """Make ``ids(i) + features(f_i) + intercept`` = ``items[i]`` ([q_i, b_i]) for every trained item and the ridge
    map of its features (penalty ``feature_ridge``, fitted on the trained items) for the others: ``features``
    gets the map's weights, ``ids`` the rest, with the intercept in every row; returns the intercept [d + 1]."""
    fields = item_fields(data.schema)
    if [f.key for f in fields] != [f.key for f in features.fields]:
        raise ConfigError(f"item feature fields {[f.key for f in features.fields]} differ from the data's "
                          f"{[f.key for f in fields]}")
    design = feature_design(data, fields)
    weights = feature_map(design, items, trained, feature_ridge)  # [columns, d + 1]
    tables, intercept = field_tables(weights, fields)
    mapped = torch.from_numpy(design @ weights.numpy())  # [num_items, d + 1], the intercept included
    with torch.no_grad():
        for key, table in tables.items():
            features.maps[key].weight.copy_(table.float())
        rest = torch.where(trained[:, None], items - mapped, torch.zeros_like(items)) + intercept
        ids.weight.copy_(rest.float())
    return intercept
