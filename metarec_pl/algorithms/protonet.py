"""``protonet``: Prototypical Networks (Snell et al., 2017) for rating prediction.

Per task, each rating level present in the support set gets a prototype: the mean embedding of the support
pairs with that rating.  A query pair's predicted rating is the mean of the levels weighted by the softmax of
its negative squared distances to the prototypes (plus, with ``level_prior``, the log share of the level in the
support set: Bayes' rule with the task's empirical prior, so an uninformative embedding falls back to the
user's mean rating); the ranking score is that predicted rating.  No inner
gradient steps: adaptation is the prototype average, so every task of a batch is a few batched tensor ops.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarec_pl.algorithms.base import AdaptResult, MetaAlgorithm
from metarec_pl.data.info import DataInfo
from metarec_pl.models.pairs import encoder_dim, full_precision, projection
from metarec_pl.data.types import TaskBatch
from metarec_pl.errors import ConfigError
from metarec_pl.losses import masked_mse


DEFAULT_RANGE = (1.0, 5.0)  # the scale of a data info that says nothing of its ratings


def rating_levels(rating_range: Sequence[float], levels: Optional[Sequence[float]]) -> list[float]:
    """The explicit ``levels``, else every integer of ``rating_range`` (implicit data: (0, 1) -> dislike, like)."""
    if levels is not None:
        out = sorted(float(x) for x in levels)
    else:
        lo, hi = float(rating_range[0]), float(rating_range[1])
        out = [float(x) for x in range(math.ceil(lo), math.floor(hi) + 1)]
    if len(out) < 2:
        raise ConfigError(f"protonet: needs at least two rating levels, got {out} "
                         f"(from rating_range={tuple(rating_range)}, levels={levels})")
    return out


class ProtoNet(MetaAlgorithm):
    """Args (``--model.algorithm_args``): ``rating_range`` (levels are its integers) or explicit ``levels``; neither
    given: the data's (``DataInfo.rating_levels``: the distinct training ratings, 0 and 1 for implicit data; a
    continuous target: the integers of ``DataInfo.rating_range``, else of 1..5); ``projection``: widths of the MLP on top of the network's encoder; ``level_prior``: add
    the log share of each level in the support set to its logit.  A support rating counts for its nearest level."""

    supported_losses = ("mse",)  # predicts ratings from the support's (no logits or ranking scores)

    def __init__(self, rating_range: Optional[Sequence[float]] = None, levels: Optional[Sequence[float]] = None,
                 projection: Sequence[int] = (64, 64), level_prior: bool = True, **base) -> None:
        super().__init__(**base)
        given = None if rating_range is None and levels is None else rating_levels(rating_range or DEFAULT_RANGE,
                                                                                   levels)
        self.register_buffer("levels", torch.tensor(given or rating_levels(DEFAULT_RANGE, None)), persistent=False)
        self.levels_given = given is not None
        self.widths, self.level_prior = tuple(projection), level_prior
        self.log_scale = nn.Parameter(torch.zeros(()))  # learned inverse temperature of the distance softmax

    def bind(self, model: nn.Module, info: Optional[DataInfo] = None) -> None:
        super().bind(model, info)
        if not self.levels_given and info is not None:
            self.levels = torch.tensor(rating_levels(info.rating_range or DEFAULT_RANGE, info.rating_levels),
                                       device=self.levels.device)
        self.project = projection(encoder_dim(model, "protonet"), self.widths)

    def embed(self, model: nn.Module, features: dict[str, Tensor]) -> Tensor:
        return self.project(model.encoder(features)).float()

    def level_weights(self, z_support: Tensor, rating: Tensor, mask: Tensor, z_query: Tensor) -> Tensor:
        """[B, Q, L] softmax weights of the levels; a level absent from a task's support gets exactly zero."""
        with full_precision(z_query):
            nearest = (rating.float()[..., None] - self.levels).abs().argmin(-1)  # [B, S]
            member = F.one_hot(nearest, len(self.levels)).float() * mask.float()[..., None]  # [B, S, L]
            count = member.sum(1)  # [B, L]
            protos = torch.einsum("bsl,bsd->bld", member, z_support) / count.clamp_min(1.0)[..., None]
            dist = ((z_query[:, :, None, :] - protos[:, None, :, :]) ** 2).sum(-1)  # [B, Q, L]
            logits = -dist * self.log_scale.exp()
            if self.level_prior:
                logits = logits + (count / count.sum(-1, keepdim=True).clamp_min(1.0)).clamp_min(1e-12).log()[:, None]
            logits = logits.masked_fill(count[:, None, :] == 0, torch.finfo(dist.dtype).min)
            return logits.softmax(-1)

    def run(self, model: nn.Module, batch: TaskBatch, steps: int, create_graph: bool,
            chunk_size: Optional[int] = None) -> AdaptResult:
        s, q = batch.support, batch.query
        weights = self.level_weights(self.embed(model, s.features), s.rating, s.mask, self.embed(model, q.features))
        pred = (weights * self.levels).sum(-1)
        return AdaptResult(query_loss=masked_mse(pred, q.rating, q.mask), query_pred=pred)
