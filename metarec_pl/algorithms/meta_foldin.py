"""Meta-learned fold-in (``meta-foldin``): matrix-factorisation item factors with the user vector adapted per task
under a learned Gaussian prior, meta-trained on the query loss after adaptation.

Item i: z_i = [q_i, b_i] = id part (a trained item's own vector; zero for an item no training rating names)
+ a linear map of the item's features (``ItemFeatureMap``) + an intercept.  A share ``cold_tasks`` of the training
tasks is played as new items (every id part dropped), as the item-cold scenarios are, so the content path is
meta-trained for the fold-in too.  User u of a task: θ_u = [p_u, b_u],
adapted on the support set as the exact MAP estimate under the prior N(θ₀(u), diag(λ)⁻¹):

    θ_u = argmin Σ_support (r − μ − b_i − <p_u, q_i> − b_u)² + (θ − θ₀)ᵀ diag(λ) (θ − θ₀)

(one batched ``linalg.solve`` per meta-batch; the limit of gradient steps from θ₀ with per-parameter step sizes,
Meta-SGD's learned prior (Li et al., 2017), without choosing a step count).  θ₀(u) = a learned vector + a linear
map of the user's features (new users have those); λ (per entry, log-parameterised) is learned too, with a
learned shift by the share of the support's items that are new (content-only vectors are noisier).  The outer
loss is the query MSE after adaptation (MAML, Finn et al., 2017); the solve is differentiable, so item factors,
feature maps, θ₀ and λ all get exact meta-gradients.  Prediction: μ + b_i + <p_u, q_i> + b_u.

Start (``fit_ratings``, before the first epoch): biased MF by ALS over every training rating (``als_iters``
sweeps, ``dim`` factors, penalty ``reg``; ``metarec_pl.algorithms.als``) gives the items' vectors, the ridge map
of their features (``feature_ridge``) the content path, λ starts at ``ridge`` (``bias_ridge`` for b_u) and θ₀
at zero: so before meta-training this *is* ``mf-foldin`` with ``fit: als``, and meta-training moves from there.

Known users (``history`` > 0, evaluation only): a task whose user has training ratings (``item-cold``: users
from training rate new items) is folded in from those ratings too, weighted by ``history``, as more rows of the
same least-squares problem (``history_bias: own``: with a bias of their own, so b_u comes from the support and the
prior alone; a user's mean rating of new releases differs from that of the old items).  Never in training: there
a user's training ratings hold the task's query.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from metarec_pl.algorithms.als import als
from metarec_pl.algorithms.base import AdaptResult, MetaAlgorithm, masked_mse
from metarec_pl.algorithms.baselines import ItemFeatureMap, load_item_solution
from metarec_pl.data.info import DataInfo
from metarec_pl.data.types import RatingData, Samples, TaskBatch
from metarec_pl.errors import ConfigError


def map_fold_in(z: Tensor, y: Tensor, mask: Tensor, prior_mean: Tensor, precision: Tensor,
                extra: Optional[tuple[Tensor, Tensor]] = None) -> Tensor:
    """Per task, the MAP solution θ [B, D] of ``y ≈ z θ`` over the real rows (``mask``) under N(prior_mean,
    diag(precision)⁻¹): (zᵀz + Λ) θ = zᵀy + Λ θ₀.  ``z`` [B, S, D], ``y``/``mask`` [B, S], ``prior_mean`` and
    ``precision`` [B, D]; ``extra`` = (Gram [B, D, D], right-hand side [B, D]) of more rows of each task (e.g. the
    user's training ratings), added to both sides."""
    zm = z * mask[..., None]
    gram = zm.transpose(1, 2) @ zm + torch.diag_embed(precision)
    rhs = (zm.transpose(1, 2) @ (y * mask)[..., None])[..., 0] + precision * prior_mean
    if extra is not None:
        gram, rhs = gram + extra[0], rhs + extra[1]
    return torch.linalg.solve(gram, rhs)


class MetaFoldIn(MetaAlgorithm):
    """See the module docstring.  Options: ``dim`` (factors), ``reg`` (ALS penalty at the start), ``ridge`` /
    ``bias_ridge`` (the prior precision's start for p_u / b_u), ``als_iters``, ``feature_ridge`` (the content map's
    start), ``cold_tasks`` (share of training tasks played as new items), ``user_prior`` (θ₀ depends
    on the user's features), ``history`` (at evaluation, the weight of a known user's own training ratings in
    the fold-in, ``history_terms``; 0: off) with ``history_bias`` (``shared``: those ratings fit b_u too; ``own``:
    they get a bias of their own and inform p_u only).  Needs ``num_users``/``num_items`` and the squared-error
    loss."""

    task_sides = ("user",)  # a user vector folded in from the support: one user per task
    supported_losses = ("mse",)

    def __init__(self, *args, dim: int = 10, reg: float = 4.0, ridge: float = 4.0, bias_ridge: float = 1.0,
                 als_iters: int = 12, feature_ridge: float = 3.0, cold_tasks: float = 0.0, user_prior: bool = True,
                 outer: str = "mse", history: float = 0.0, history_bias: str = "shared", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if dim < 1 or min(reg, ridge, bias_ridge, feature_ridge) <= 0 or not 0 <= cold_tasks < 1 or als_iters < 1:
            raise ConfigError(f"model.algorithm_args: meta-foldin: expected dim >= 1, als_iters >= 1, reg, ridge, "
                              f"bias_ridge, feature_ridge > 0 and 0 <= cold_tasks < 1, got dim={dim}, "
                              f"als_iters={als_iters}, reg={reg}, ridge={ridge}, bias_ridge={bias_ridge}, "
                              f"feature_ridge={feature_ridge}, cold_tasks={cold_tasks}")
        self.dim, self.reg, self.als_iters, self.feature_ridge = dim, reg, als_iters, feature_ridge
        if outer not in ("mse", "mae"):
            raise ConfigError(f"model.algorithm_args.outer: meta-foldin: expected 'mse' or 'mae', got {outer!r}")
        self.cold_tasks, self.user_prior, self.outer = cold_tasks, user_prior, outer
        if history < 0 or history_bias not in ("shared", "own"):
            raise ConfigError(f"model.algorithm_args: meta-foldin: expected history >= 0 and history_bias 'shared' "
                              f"or 'own', got history={history}, history_bias={history_bias!r}")
        self.history, self.history_bias = history, history_bias
        self.history_rows: Optional[tuple[Tensor, Tensor, Tensor]] = None  # set by fit_ratings
        self.item_features: dict[str, Tensor] = {}
        self.start_precision = [math.log(ridge)] * dim + [math.log(bias_ridge)]

    def bind(self, model: nn.Module, info: Optional[DataInfo] = None) -> None:
        super().bind(model, info)
        if self.num_users is None or self.num_items is None:
            raise ConfigError("meta-foldin: needs the data's id counts (num_users, num_items), got none; expected "
                              "MetaLearner(data_info=MetaDataModule.info) (the metarec CLI links data.info)")
        width = self.dim + 1
        schema = getattr(model, "schema", [])
        self.item_ids = nn.Embedding(self.num_items, width)
        nn.init.zeros_(self.item_ids.weight)
        self.features = ItemFeatureMap(schema, width)
        self.intercept = nn.Parameter(torch.zeros(width))
        self.user_fields = [f for f in schema if f.side == "user" and not f.is_id and f.kind != "dense"]
        self.user_map = nn.ModuleDict({f.key: nn.Embedding(f.size, width, padding_idx=0 if f.kind == "multi"
                                                           else None) for f in self.user_fields})
        for table in self.user_map.values():
            nn.init.zeros_(table.weight)
        self.prior_mean = nn.Parameter(torch.zeros(width))
        self.log_precision = nn.Parameter(torch.tensor(self.start_precision))
        self.cold_shift = nn.Parameter(torch.zeros(width))  # log-precision shift per share of new support items
        self.register_buffer("trained", torch.zeros(self.num_items, dtype=torch.bool))
        self.register_buffer("mu", model.rating_offset.detach().clone() if hasattr(model, "rating_offset")
                             else torch.tensor(3.5))

    def fit_ratings(self, data: RatingData, rows: Tensor) -> None:
        """The start: ALS over every training row (``rows`` of ``data``), its items in the id tables and the ridge
        map of their features in the content path (see the module docstring)."""
        solution = als(data.user[rows], data.item[rows], data.rating[rows], self.num_users, self.num_items,
                       self.dim, self.reg, self.als_iters, seed=int(torch.initial_seed()) % (1 << 31))
        intercept = load_item_solution(self.features, self.item_ids, solution.items, solution.trained, data,
                                       self.feature_ridge)
        with torch.no_grad():
            self.item_ids.weight.sub_(intercept.float())  # the intercept is its own parameter here
            self.intercept.copy_(intercept.float())
            self.mu.fill_(solution.mu)
            self.trained.copy_(solution.trained)

    def remember_ratings(self, data: RatingData, rows: Tensor) -> None:
        """Keep the training rows (``rows`` of ``data``) by user, for ``history`` (``MetaLearner`` calls this
        before every stage, so a model loaded from a checkpoint to test has them too; the weights do not)."""
        if self.history > 0:
            user = data.user[rows]
            order = torch.argsort(user, stable=True)
            offsets = torch.zeros(self.num_users + 1, dtype=torch.long)
            offsets[1:] = torch.bincount(user, minlength=self.num_users).cumsum(0)
            self.history_rows = (offsets, data.item[rows][order], data.rating[rows][order].float())
            self.item_features = data.item_features

    def history_terms(self, users: Tensor) -> Optional[tuple[Tensor, Tensor]]:
        """(Gram [B, d + 1, d + 1], right-hand side [B, d + 1]) of each task's user's own training ratings, times
        ``history`` (zero for a user with none): added to the support's in the fold-in at evaluation, so a known
        user (``item-cold``: known users rate new items) is folded in from all it rated.  ``None`` when off."""
        if self.history_rows is None or self.history <= 0 or self.training:
            return None
        offsets, items, ratings = self.history_rows
        users = users.cpu()
        start, counts = offsets[users], offsets[users + 1] - offsets[users]
        task = torch.repeat_interleave(torch.arange(len(users)), counts)
        first = torch.repeat_interleave(start - (counts.cumsum(0) - counts), counts)
        pos = torch.arange(int(counts.sum())) + first
        item = items[pos]
        feats = {f.key: self.item_features[f.key][item] for f in self.features.fields}
        device = self.intercept.device
        feats = {k: v.to(device) for k, v in feats.items()}
        z = self.item_ids(item.to(device)) + self.features(feats) + self.intercept
        x = torch.cat([z[:, :-1], torch.ones_like(z[:, :1])], -1)
        y = ratings[pos].to(device) - self.mu - z[:, -1]
        task = task.to(device)
        width = x.shape[1]
        gram = torch.zeros(len(users), width, width, dtype=x.dtype, device=device)
        rhs = torch.zeros(len(users), width, dtype=x.dtype, device=device)
        gram.index_add_(0, task, x[:, :, None] * x[:, None, :])
        rhs.index_add_(0, task, x * y[:, None])
        if self.history_bias == "own":  # profile out a bias of the history's own: it informs p_u only
            n = gram[:, -1:, -1:].clamp_min(1.0)  # [B, 1, 1] rows per task
            sx, sy = gram[:, :-1, -1:], rhs[:, -1:]  # Σ x_p [B, d, 1], Σ y [B, 1]
            gram = torch.nn.functional.pad(gram[:, :-1, :-1] - sx @ sx.transpose(1, 2) / n, (0, 1, 0, 1))
            rhs = torch.nn.functional.pad(rhs[:, :-1] - sx[..., 0] * sy / n[:, 0], (0, 1))
        return gram * self.history, rhs * self.history

    def items(self, samples: Samples, cold: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(item factors [B, S, d], item biases [B, S], whether each sample's item counts as new [B, S]); the id
        part is dropped for the items no training rating names and for every item of a ``cold`` task [B]."""
        new = ~self.trained[samples.item] | cold[:, None]
        z = self.item_ids(samples.item) * ~new[..., None] + self.features(samples.features) + self.intercept
        return z[..., :-1], z[..., -1], new

    def prior(self, samples: Samples) -> Tensor:
        """θ₀ per task [B, d + 1]: the learned vector plus the map of the task's user fields (read from its first
        sample; every sample of a user-as-task has the same user)."""
        theta = self.prior_mean.expand(samples.rating.shape[0], -1)
        if not self.user_prior:
            return theta
        for f in self.user_fields:
            x = samples.features[f.key][:, 0]
            table = self.user_map[f.key]
            if f.kind == "categorical":
                theta = theta + table(x)
            else:
                present = (x > 0).to(table.weight.dtype)
                theta = theta + (table(x) * present[..., None]).sum(-2) / present.sum(-1, keepdim=True).clamp_min(1)
        return theta

    def run(self, model: nn.Module, batch: TaskBatch, steps: int, create_graph: bool,
            chunk_size: Optional[int] = None) -> AdaptResult:
        s, q = batch.support, batch.query
        cold = torch.zeros(len(batch), dtype=torch.bool, device=s.item.device)
        if self.training and self.cold_tasks > 0:
            cold = torch.rand(len(batch), device=s.item.device) < self.cold_tasks
        qs, bs, new = self.items(s, cold)
        qq, bq, _ = self.items(q, cold)
        mask = s.mask.to(qs.dtype)
        share = (new * mask).sum(1) / mask.sum(1).clamp_min(1.0)  # [B] share of new items in the support
        precision = (self.log_precision + share[:, None] * self.cold_shift).exp()
        z = torch.cat([qs, torch.ones_like(qs[..., :1])], -1)
        theta = map_fold_in(z, s.rating.to(qs.dtype) - self.mu - bs, mask, self.prior(q), precision,
                            self.history_terms(q.user[:, 0]))
        pred_q = self.mu + bq + (qq * theta[:, None, :-1]).sum(-1) + theta[:, -1:]
        return AdaptResult(query_loss=masked_mse(pred_q, q.rating, q.mask), query_pred=pred_q)

    def outer_loss(self, result: AdaptResult, batch: TaskBatch, params: dict[str, Tensor]) -> Tensor:
        """The mean over tasks of the query loss after adaptation: squared error (``outer: mse``) or absolute
        error (``outer: mae``: the adapted predictions move toward each rating's conditional median, which is
        what the MAE rewards; the inner fold-in stays least squares)."""
        if self.outer == "mse":
            return result.query_loss.mean()
        q = batch.query
        err = (result.query_pred - q.rating).abs() * q.mask
        return (err.sum(-1) / q.mask.sum(-1).clamp_min(1.0)).mean()
