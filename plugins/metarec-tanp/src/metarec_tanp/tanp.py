"""A neural process for cold-start recommendation in the style of TaNP (Lin et al., WWW 2021).

Per task (all tasks of a batch at once, padded samples masked out):

1. every (user, item) pair is embedded by the registered network's ``encoder``;
2. each support pair with its (centred) rating is encoded; the masked mean over the support set is the
   deterministic task representation ``r``, and a second mean-pooled encoding gives a Gaussian latent ``z``;
3. ``[r, z]`` yields per-layer FiLM scales and shifts that modulate the decoder's hidden layers, and the decoder
   predicts each query pair's rating (the network's ``decode`` adds its rating offset).

Training samples ``z`` from the posterior given support *and* query ratings and adds
``kl_weight * KL(q(z | support, query) || q(z | support))``; evaluation uses the mean of ``q(z | support)``, so
predictions are deterministic and never see query ratings.  No inner gradient steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from metarec_pl import AdaptResult, Algorithm, RatingModel, Samples, TaskBatch, encoder_dim, masked_mse


@dataclass
class NPResult(AdaptResult):
    kl: Optional[Tensor] = None  # [B] KL(posterior || prior) of the task latent; training only


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """[B, N, D] and [B, N] -> [B, D]: the mean over the real samples."""
    m = mask.to(x.dtype)[..., None]
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def two_layer(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


class TaNP(Algorithm):
    """Args (``--model.algorithm_args``): ``hidden`` width, ``latent`` size of z, ``kl_weight`` of the KL term."""

    gradient_based = False

    def __init__(self, hidden: int = 64, latent: int = 32, kl_weight: float = 0.1, **base) -> None:
        super().__init__(**base)
        if hidden < 1 or latent < 1 or kl_weight < 0:
            raise ValueError(f"tanp: need hidden >= 1, latent >= 1, kl_weight >= 0; got {hidden}, {latent}, "
                             f"{kl_weight}")
        self.hidden, self.latent, self.kl_weight = hidden, latent, kl_weight

    def bind(self, model: nn.Module) -> None:
        super().bind(model)
        dim, h = encoder_dim(model, "tanp"), self.hidden
        self.deterministic = two_layer(dim + 1, h, h)
        self.latent_encoder = two_layer(dim + 1, h, 2 * self.latent)
        self.decoder = nn.ModuleList([nn.Linear(dim, h), nn.Linear(h, h)])
        self.film = nn.Linear(h + self.latent, 2 * h * len(self.decoder))  # a scale and a shift per hidden layer
        self.out = nn.Linear(h, 1)

    def pairs(self, model: RatingModel, samples: Samples) -> tuple[Tensor, Tensor]:
        """Pair embeddings [B, N, D] and the same with the centred rating appended [B, N, D + 1]."""
        x = model.encoder(samples.features).float()
        y = (samples.rating.float() - model.rating_offset) * samples.mask.float()
        return x, torch.cat([x, y[..., None]], -1)

    def posterior(self, xy: Tensor, mask: Tensor) -> torch.distributions.Normal:
        mu, raw = masked_mean(self.latent_encoder(xy), mask).chunk(2, -1)
        return torch.distributions.Normal(mu, 0.1 + 0.9 * torch.sigmoid(raw))

    def decode(self, model: RatingModel, x: Tensor, task: Tensor) -> Tensor:
        film = self.film(task).chunk(2 * len(self.decoder), -1)  # each [B, h]
        h = x
        for i, layer in enumerate(self.decoder):
            scale, shift = film[2 * i], film[2 * i + 1]
            h = torch.relu(layer(h) * (1 + scale[:, None, :]) + shift[:, None, :])
        return model.decode(self.out(h))

    def run(self, model: nn.Module, batch: TaskBatch, steps: int, create_graph: bool,
            chunk_size: Optional[int] = None) -> NPResult:
        s, q = batch.support, batch.query
        _, xy_s = self.pairs(model, s)
        x_q, xy_q = self.pairs(model, q)
        r = masked_mean(self.deterministic(xy_s), s.mask)
        prior = self.posterior(xy_s, s.mask)
        kl = None
        if self.training:  # the target's ratings shape the posterior; sampled with the reparameterisation trick
            post = self.posterior(torch.cat([xy_s, xy_q], 1), torch.cat([s.mask, q.mask], 1))
            z = post.rsample()
            kl = torch.distributions.kl_divergence(post, prior).sum(-1)
        else:
            z = prior.mean
        pred = self.decode(model, x_q, torch.cat([r, z], -1))
        return NPResult(query_loss=masked_mse(pred, q.rating, q.mask), query_pred=pred, kl=kl)

    def outer_loss(self, result: AdaptResult, batch: TaskBatch, params: dict[str, Tensor]) -> Tensor:
        loss = result.query_loss.mean()
        kl = getattr(result, "kl", None)
        return loss if kl is None else loss + self.kl_weight * kl.mean()
