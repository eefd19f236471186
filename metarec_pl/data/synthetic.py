"""The embedded cold-start world: a seeded generative model of users, items and 1-5 ratings.

It ships as code so the quickstart and the tests need no files and no network.  Generative story
(all draws from one ``torch.Generator`` seeded by ``seed``):

* users have categorical fields gender (2), age (7), occupation (21), region (10); items have a
  multi-valued genre field (1-3 of 18), decade (8) and director (60);
* a user's taste vector u (dim ``latent_dim``) is the sum of one random vector per feature value plus a
  personal part; ``feature_share`` is the share of taste variance predictable from features.  Items alike (v);
* user and item biases follow the same split; with ``drift`` > 0 a user's taste moves linearly along a
  personal direction over the user's history (time t in [0, 1]);
* score = 3.5 + b_u + b_i + <u(t), v>; rating = clip(round(score + N(0, noise^2)), 1, 5);
* each user rates ``min_ratings``..``max_ratings`` items drawn with Zipf-like popularity.

Splits: users are split 70/10/20 into train/val/test; ``cold_item_fraction`` of items are cold and never
appear in training.  Test scenarios: ``user-cold`` (test users, warm items), ``item-cold`` (train users,
cold items), ``user+item-cold`` (test users, cold items); validation: ``user-cold`` on val users.

``oracle_mae(rows)`` is the noise floor: the expected MAE of a predictor that knows every latent quantity and
predicts the median of the rounded, clipped rating distribution.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from metarec_pl.data.base import RatingDataset
from metarec_pl.data.types import FeatureSpec, RatingData

USER_FIELDS = {"gender": 2, "age": 7, "occupation": 21, "region": 10}
ITEM_FIELDS = {"decade": 8, "director": 60}
NUM_GENRES, MAX_GENRES = 18, 3


class SyntheticWorld(RatingDataset):
    """Seeded cold-start world (see module docstring); all sizes are options."""

    def __init__(self, root: str | None = None, num_users: int = 1000, num_items: int = 600, latent_dim: int = 8,
                 feature_share: float = 0.5, noise: float = 0.4, drift: float = 0.0, min_ratings: int = 20,
                 max_ratings: int = 100, cold_item_fraction: float = 0.25, seed: int = 0) -> None:
        super().__init__(root)
        if not 0.0 <= feature_share <= 1.0:
            raise ValueError(f"synthetic: feature_share must be in [0, 1], got {feature_share}")
        if not 1 <= min_ratings <= max_ratings <= num_items:
            raise ValueError(f"synthetic: need 1 <= min_ratings <= max_ratings <= num_items, got "
                             f"{min_ratings}, {max_ratings}, {num_items}")
        self.num_users, self.num_items, self.latent_dim = num_users, num_items, latent_dim
        self.feature_share, self.noise, self.drift = feature_share, noise, drift
        self.min_ratings, self.max_ratings = min_ratings, max_ratings
        self.cold_item_fraction, self.seed = cold_item_fraction, seed
        self.scores: Tensor | None = None  # noiseless score of every row, filled by load()

    def _taste(self, g: torch.Generator, fields: dict[str, Tensor], sizes: dict[str, int], n: int,
               dim: int, scale: float) -> Tensor:
        """Feature-driven part (sum over fields of a random vector per value) + personal part."""
        share = self.feature_share
        part = torch.zeros(n, dim)
        for name, size in sizes.items():
            table = torch.randn(size, dim, generator=g) * math.sqrt(share / len(sizes))
            ids = fields[name]
            if ids.dim() == 2:  # multi-valued: mean of the present values (0 is padding)
                present = (ids > 0).float()
                part += (table[ids] * present[..., None]).sum(1) / present.sum(1, keepdim=True)
            else:
                part += table[ids]
        return scale * (part + torch.randn(n, dim, generator=g) * math.sqrt(1.0 - share))

    def load(self) -> RatingData:
        g = torch.Generator().manual_seed(self.seed)
        nu, ni, d = self.num_users, self.num_items, self.latent_dim
        ufields = {k: torch.randint(0, s, (nu,), generator=g) for k, s in USER_FIELDS.items()}
        ifields = {k: torch.randint(0, s, (ni,), generator=g) for k, s in ITEM_FIELDS.items()}
        genres = torch.zeros(ni, MAX_GENRES, dtype=torch.long)
        n_genres = torch.randint(1, MAX_GENRES + 1, (ni,), generator=g)
        for i in range(ni):  # genre ids 1..NUM_GENRES, 0 = padding
            genres[i, : n_genres[i]] = torch.randperm(NUM_GENRES, generator=g)[: n_genres[i]] + 1
        ifields["genre"] = genres
        isizes = {**ITEM_FIELDS, "genre": NUM_GENRES + 1}

        u = self._taste(g, ufields, USER_FIELDS, nu, d, scale=d ** -0.25)
        v = self._taste(g, ifields, isizes, ni, d, scale=d ** -0.25)
        bu = self._taste(g, ufields, USER_FIELDS, nu, 1, scale=0.5)[:, 0]
        bi = self._taste(g, ifields, isizes, ni, 1, scale=0.5)[:, 0]
        direction = torch.randn(nu, d, generator=g) * d ** -0.25

        counts = torch.randint(self.min_ratings, self.max_ratings + 1, (nu,), generator=g)
        popularity = 1.0 / torch.arange(1, ni + 1).float() ** 0.8
        popularity = popularity[torch.randperm(ni, generator=g)]
        users, items, times = [], [], []
        for user in range(nu):
            rated = torch.multinomial(popularity, int(counts[user]), replacement=False, generator=g)
            users.append(torch.full_like(rated, user))
            items.append(rated)
            times.append(torch.sort(torch.rand(len(rated), generator=g)).values)
        user, item, time = torch.cat(users), torch.cat(items), torch.cat(times)

        taste = u[user] + self.drift * time[:, None] * direction[user]
        score = 3.5 + bu[user] + bi[item] + (taste * v[item]).sum(-1)
        rating = (score + self.noise * torch.randn(len(score), generator=g)).round().clamp(1, 5)
        self.scores = score

        user_perm, item_perm = torch.randperm(nu, generator=g), torch.randperm(ni, generator=g)
        n_train, n_val = int(0.7 * nu), int(0.1 * nu)
        role = torch.empty(nu, dtype=torch.long)
        role[user_perm[:n_train]], role[user_perm[n_train:n_train + n_val]], role[user_perm[n_train + n_val:]] = 0, 1, 2
        cold_item = torch.zeros(ni, dtype=torch.bool)
        cold_item[item_perm[: int(self.cold_item_fraction * ni)]] = True
        r, c = role[user], cold_item[item]
        rows = lambda m: torch.nonzero(m).flatten()  # noqa: E731
        splits = {
            "train": {"train": rows((r == 0) & ~c)},
            "val": {"user-cold": rows((r == 1) & ~c)},
            "test": {"user-cold": rows((r == 2) & ~c), "item-cold": rows((r == 0) & c),
                     "user+item-cold": rows((r == 2) & c)},
        }
        schema = [FeatureSpec("user", k, "categorical", s) for k, s in USER_FIELDS.items()]
        schema += [FeatureSpec("item", k, "categorical", s) for k, s in ITEM_FIELDS.items()]
        schema.append(FeatureSpec("item", "genre", "multi", NUM_GENRES + 1))
        return RatingData(
            user=user, item=item, rating=rating, time=time,
            user_features={f"user_{k}": t for k, t in ufields.items()},
            item_features={f"item_{k}": t for k, t in ifields.items()},
            schema=schema, splits=splits,
        )

    def oracle_mae(self, rows: Tensor) -> float:
        """Expected MAE of the all-knowing predictor on ``rows`` (call after ``load``)."""
        assert self.scores is not None, "call load() first"
        s = self.scores[rows].double()
        levels = torch.arange(1, 6, dtype=torch.float64)
        normal = torch.distributions.Normal(0.0, 1.0)
        upper = torch.tensor([1.5, 2.5, 3.5, 4.5, math.inf], dtype=torch.float64)
        lower = torch.tensor([-math.inf, 1.5, 2.5, 3.5, 4.5], dtype=torch.float64)
        p = normal.cdf((upper - s[:, None]) / self.noise) - normal.cdf((lower - s[:, None]) / self.noise)
        median = levels[(p.cumsum(-1) >= 0.5).float().argmax(-1)]
        return float((p * (levels - median[:, None]).abs()).sum(-1).mean())
