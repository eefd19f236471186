"""A neural process for cold-start recommendation in the style of TaNP (Lin et al., WWW 2021).

Per task (all tasks of a batch at once, padded samples masked out):

1. every (user, item) pair is embedded by the registered network's ``encoder``;
2. each support pair with its (centred) rating is encoded; the masked mean over the support set is the
   deterministic task representation ``r``, and a second mean-pooled encoding gives a Gaussian latent ``z``;
   with ``deterministic="attention"`` each query pair reads its own ``r`` by attention over the support pairs
   (the deterministic path of Attentive Neural Processes, Kim et al., ICLR 2019), so a query item is judged
   mostly by the support items that resemble it, rather than by one summary of the whole support set;
3. ``[r, z]`` yields per-layer FiLM scales and shifts that modulate the decoder's hidden layers, and the decoder
   predicts each query pair's rating (the network's ``decode`` adds its rating offset).

Training samples ``z`` from the posterior given support *and* query ratings and adds
``kl_weight * KL(q(z | support, query) || q(z | support))``; evaluation uses the mean of ``q(z | support)``, so
predictions are deterministic and never see query ratings.  No inner gradient steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torch import Tensor, nn

from metarec_pl import AdaptResult, DataInfo, MetaAlgorithm, RatingModel, Samples, TaskBatch, encoder_dim, masked_mse


@dataclass
class NPResult(AdaptResult):
    kl: Optional[Tensor] = None  # [B] KL(posterior || prior) of the task latent; training only


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """[B, N, D] and [B, N] -> [B, D]: the mean over the real samples."""
    m = mask.to(x.dtype)[..., None]
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def two_layer(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


class TaNP(MetaAlgorithm):
    """Args (``--model.algorithm_args``): ``hidden`` width, ``latent`` size of z, ``kl_weight`` of the KL term,
    ``deterministic``: ``mean`` (TaNP: one ``r`` per task) or ``attention`` (one ``r`` per query pair)."""

    supported_losses = ("mse",)  # predicts ratings from the support's (no logits or ranking scores)

    def __init__(self, hidden: int = 64, latent: int = 32, kl_weight: float = 0.1,
                 deterministic: Literal["mean", "attention"] = "mean", **base) -> None:
        super().__init__(**base)
        if hidden < 1 or latent < 1 or kl_weight < 0:
            raise ValueError(f"tanp: need hidden >= 1, latent >= 1, kl_weight >= 0; got {hidden}, {latent}, "
                             f"{kl_weight}")
        if deterministic not in ("mean", "attention"):
            raise ValueError(f"tanp: deterministic must be 'mean' or 'attention', got {deterministic!r}")
        self.hidden, self.latent, self.kl_weight, self.pooling = hidden, latent, kl_weight, deterministic

    def bind(self, model: nn.Module, info: Optional[DataInfo] = None) -> None:
        super().bind(model, info)
        dim, h = encoder_dim(model, "tanp"), self.hidden
        self.deterministic = two_layer(dim + 1, h, h)
        self.latent_encoder = two_layer(dim + 1, h, 2 * self.latent)
        self.decoder = nn.ModuleList([nn.Linear(dim, h), nn.Linear(h, h)])
        self.film = nn.Linear(h + self.latent, 2 * h * len(self.decoder))  # a scale and a shift per hidden layer
        self.out = nn.Linear(h, 1)
        if self.pooling == "attention":  # keys and queries: the pair embeddings, projected by one shared map
            self.key = nn.Linear(dim, h)

    def pairs(self, model: RatingModel, samples: Samples) -> tuple[Tensor, Tensor]:
        """Pair embeddings [B, N, D] and the same with the centred rating appended [B, N, D + 1]."""
        x = model.encoder(samples.features).float()
        y = (samples.rating.float() - model.rating_offset) * samples.mask.float()
        return x, torch.cat([x, y[..., None]], -1)

    def posterior(self, xy: Tensor, mask: Tensor) -> torch.distributions.Normal:
        mu, raw = masked_mean(self.latent_encoder(xy), mask).chunk(2, -1)
        return torch.distributions.Normal(mu, 0.1 + 0.9 * torch.sigmoid(raw))

    def represent(self, x_s: Tensor, xy_s: Tensor, mask: Tensor, x_q: Tensor) -> Tensor:
        """The deterministic task representation: [B, 1, h] (``mean``, one per task) or [B, Q, h] (``attention``,
        one per query pair)."""
        values = self.deterministic(xy_s)
        if self.pooling == "mean":
            return masked_mean(values, mask)[:, None, :]
        logits = torch.einsum("bqd,bsd->bqs", self.key(x_q), self.key(x_s)) / self.hidden ** 0.5
        logits = logits.masked_fill(mask[:, None, :] == 0, torch.finfo(logits.dtype).min)
        return torch.einsum("bqs,bsh->bqh", logits.softmax(-1), values)

    def decode(self, model: RatingModel, x: Tensor, task: Tensor) -> Tensor:
        """``task`` [B, 1 or Q, h + latent] modulates the decoder on each query pair ``x`` [B, Q, D]."""
        film = self.film(task).chunk(2 * len(self.decoder), -1)  # each [B, 1 or Q, h]
        h = x
        for i, layer in enumerate(self.decoder):
            h = torch.relu(layer(h) * (1 + film[2 * i]) + film[2 * i + 1])
        return model.decode(self.out(h))

    def run(self, model: nn.Module, batch: TaskBatch, steps: int, create_graph: bool,
            chunk_size: Optional[int] = None) -> NPResult:
        s, q = batch.support, batch.query
        x_s, xy_s = self.pairs(model, s)
        x_q, xy_q = self.pairs(model, q)
        r = self.represent(x_s, xy_s, s.mask, x_q)
        prior = self.posterior(xy_s, s.mask)
        kl = None
        if self.training:  # the target's ratings shape the posterior; sampled with the reparameterisation trick
            post = self.posterior(torch.cat([xy_s, xy_q], 1), torch.cat([s.mask, q.mask], 1))
            z = post.rsample()
            kl = torch.distributions.kl_divergence(post, prior).sum(-1)
        else:
            z = prior.mean
        pred = self.decode(model, x_q, torch.cat([r, z[:, None, :].expand(-1, r.shape[1], -1)], -1))  # FiLM per r row
        return NPResult(query_loss=masked_mse(pred, q.rating, q.mask), query_pred=pred, kl=kl)

    def outer_loss(self, result: AdaptResult, batch: TaskBatch, params: dict[str, Tensor]) -> Tensor:
        loss = result.query_loss.mean()
        kl = getattr(result, "kl", None)
        return loss if kl is None else loss + self.kl_weight * kl.mean()
