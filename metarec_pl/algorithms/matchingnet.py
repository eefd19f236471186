"""``matchingnet``: Matching Networks (Vinyals et al., 2016) for rating prediction.

Each query pair attends over the support pairs of its task (softmax of scaled cosine similarities); the
prediction is the attention-weighted mean of the support ratings.  ``full_context=True`` adds the paper's
full-context embeddings in a permutation-invariant form: each support pair first attends over the whole support
set, then each query pair attends over the contextualised support set (the paper's bidirectional LSTM would make
the prediction depend on the support order).  ``residual=True`` attends over what the network's own prediction
misses instead: prediction = f(query) + attention-weighted (support rating - f(support)), with f the registered
network (encoder + head), trained jointly.  Padding is excluded by masks; no inner gradient steps.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarec_pl.algorithms.base import AdaptResult, MetaAlgorithm
from metarec_pl.models.pairs import encoder_dim, full_precision, projection
from metarec_pl.data.info import DataInfo
from metarec_pl.data.types import TaskBatch
from metarec_pl.errors import ConfigError
from metarec_pl.losses import masked_mse


class MatchingNet(MetaAlgorithm):
    """Args (``--model.algorithm_args``): ``projection``: widths of the MLP on the network's encoder;
    ``full_context``: contextualise embeddings by attention over the support set; ``heads``: its heads;
    ``temperature``: initial cosine scale (learned); ``residual``: attend over the network's residuals."""

    supported_losses = ("mse",)  # predicts ratings from the support's (no logits or ranking scores)

    def __init__(self, projection: Sequence[int] = (64, 64), full_context: bool = False, heads: int = 4,
                 temperature: float = 10.0, residual: bool = False, **base) -> None:
        super().__init__(**base)
        if temperature <= 0:
            raise ConfigError(f"matchingnet: temperature must be > 0, got {temperature}")
        self.widths, self.full_context, self.heads, self.residual = tuple(projection), full_context, heads, residual
        self.log_scale = nn.Parameter(torch.tensor(math.log(temperature)))

    def bind(self, model: nn.Module, info: Optional[DataInfo] = None) -> None:
        super().bind(model, info)
        dim = encoder_dim(model, "matchingnet")
        self.project = projection(dim, self.widths)
        if self.full_context:
            width = self.widths[-1] if self.widths else dim
            if width % self.heads:
                raise ConfigError(f"matchingnet: embedding width {width} is not divisible by heads={self.heads}")
            self.support_context = nn.MultiheadAttention(width, self.heads, batch_first=True)
            self.query_context = nn.MultiheadAttention(width, self.heads, batch_first=True)

    def embed(self, model: nn.Module, batch: TaskBatch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Support and query pair embeddings [B, S|Q, D] and the network's predictions [B, S|Q] (residual only)."""
        hs, hq = model.encoder(batch.support.features), model.encoder(batch.query.features)
        zs, zq = self.project(hs).float(), self.project(hq).float()
        fs = model.decode(model.head(hs)) if self.residual else torch.zeros_like(zs[..., 0])
        fq = model.decode(model.head(hq)) if self.residual else torch.zeros_like(zq[..., 0])
        if self.full_context:
            pad = batch.support.mask == 0  # True: ignore this key
            zs = zs + self.support_context(zs, zs, zs, key_padding_mask=pad, need_weights=False)[0].float()
            zq = zq + self.query_context(zq, zs, zs, key_padding_mask=pad, need_weights=False)[0].float()
        return zs, zq, fs, fq

    def attention(self, zs: Tensor, zq: Tensor, mask: Tensor) -> Tensor:
        """[B, Q, S] attention of each query pair over its task's real support pairs."""
        with full_precision(zq):
            cos = torch.einsum("bqd,bsd->bqs", F.normalize(zq, dim=-1), F.normalize(zs, dim=-1))
            logits = (cos * self.log_scale.exp()).masked_fill(mask[:, None, :] == 0, torch.finfo(cos.dtype).min)
            return logits.softmax(-1)

    def run(self, model: nn.Module, batch: TaskBatch, steps: int, create_graph: bool,
            chunk_size: Optional[int] = None) -> AdaptResult:
        s, q = batch.support, batch.query
        zs, zq, fs, fq = self.embed(model, batch)
        pred = fq + torch.einsum("bqs,bs->bq", self.attention(zs, zq, s.mask), s.rating.float() - fs)
        return AdaptResult(query_loss=masked_mse(pred, q.rating, q.mask), query_pred=pred)
