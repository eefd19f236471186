"""Recommend for a brand-new user: adapt a trained meta-learner to their few ratings, rank the catalogue.

A new user is a task like any other: their (item, rating) pairs are the support set and the catalogue items
they have not rated are the query set, so adaptation is exactly the inner loop of training and evaluation
(``MetaLearner.adapt``, vectorised over users).  Item features, the rating scale and the catalogue come from
the data set the model was trained on: ``Recommender.from_checkpoint`` rebuilds it from the data-module
hyper-parameters stored in the checkpoint (or takes a data module / ``RatingData`` / config file you give).

Ids are the data set's item ids (MovieLens: the official movie ids).  The catalogue is every item that has at
least one rating in the data set.  Profile values are feature ids of the data set's user fields; a field not
given takes the value most common among the training users (dense fields: their mean; multi-valued: none;
a user id field: 0, the unknown id).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

from metarec_pl.data.types import DataError, FeatureSpec, RatingData, Samples, TaskBatch, is_broadcast

Ratings = Union[Mapping[int, float], Sequence[tuple[int, float]]]


@dataclass
class NewUser:
    """A user the model has never seen: a few ratings, optionally profile fields (``{"age": 2}``)."""

    ratings: Ratings
    profile: Optional[Mapping[str, Any]] = None
    name: Any = None  # echoed in outputs and error messages

    def pairs(self) -> list[tuple[int, float]]:
        items = self.ratings.items() if isinstance(self.ratings, Mapping) else self.ratings
        return [(i, r) for i, r in items]


@dataclass
class Catalogue:
    """The items of a data set, its rating scale and default user profile; turns new users into a ``TaskBatch``."""

    data: RatingData
    items: Tensor = field(init=False)  # [n] item ids that have ratings, sorted
    user_fields: list[FeatureSpec] = field(init=False)
    default_profile: dict[str, Tensor] = field(init=False)  # feature key -> one user's value

    def __post_init__(self) -> None:
        self.items = torch.unique(self.data.item)
        self.known = torch.zeros(self.data.num_items, dtype=torch.bool)
        self.known[self.items] = True
        self.user_fields = [f for f in self.data.schema if f.side == "user"]
        train_rows = torch.cat(list(self.data.splits.get("train", {}).values()) or [torch.arange(len(self.data.user))])
        train_users = torch.unique(self.data.user[train_rows])
        self.default_profile = {}
        for f in self.user_fields:
            values = self.data.user_features[f.key][train_users]
            if f.is_id:  # a new user has no id of their own: 0, the "unknown" id (see with_id_features)
                self.default_profile[f.key] = torch.zeros_like(values[0])
            elif f.kind == "categorical":
                self.default_profile[f.key] = torch.mode(values).values
            elif f.kind == "dense":
                self.default_profile[f.key] = values.float().mean(0).to(values.dtype)
            else:  # multi-valued: no values (all padding)
                self.default_profile[f.key] = torch.zeros_like(values[0])

    def _who(self, user: NewUser, index: int) -> str:
        return f"new user {user.name!r}" if user.name is not None else f"new user #{index}"

    def check_items(self, items: Sequence[Any], who: str) -> Tensor:
        """Item ids as a tensor; one-line error for a non-integer id or one outside the catalogue."""
        ids = []
        for i in items:
            try:
                ids.append(operator.index(i))
            except TypeError:
                raise DataError(f"{who}: item id {i!r} is not an integer; expected the data set's item ids") from None
        for i in ids:
            if not (0 <= i < len(self.known) and self.known[i]):
                raise DataError(f"{who}: item {i} is not in the catalogue; expected one of the {len(self.items)} "
                                f"item ids with ratings ({int(self.items[0])}..{int(self.items[-1])})")
        return torch.tensor(ids, dtype=torch.long)

    def support(self, user: NewUser, index: int) -> tuple[Tensor, Tensor]:
        """The user's (items, ratings), checked: non-empty, known items, each once, ratings in the data's range."""
        who, pairs = self._who(user, index), user.pairs()
        if not pairs:
            raise DataError(f"{who}: no ratings; expected at least one (item, rating) pair")
        items = self.check_items([i for i, _ in pairs], who)
        ratings = torch.tensor([float(r) for _, r in pairs])
        lo, hi = self.data.rating_range
        bad = ~torch.isfinite(ratings) | (ratings < lo) | (ratings > hi)
        if bad.any():
            k = int(bad.nonzero()[0])
            raise DataError(f"{who}: item {int(items[k])} has rating {ratings[k].item():g}; expected a rating in "
                            f"[{lo:g}, {hi:g}]")
        uniq, counts = torch.unique(items, return_counts=True)
        if (counts > 1).any():
            raise DataError(f"{who}: item {int(uniq[counts > 1][0])} is rated more than once; expected each item once")
        return items, ratings

    def profile(self, user: NewUser, index: int) -> dict[str, Tensor]:
        """Feature key -> value for this user: the given fields (checked), defaults for the rest."""
        out = dict(self.default_profile)
        by_name = {f.name: f for f in self.user_fields}
        for name, value in (user.profile or {}).items():
            f = by_name.get(name.removeprefix("user_"))
            if f is None:
                raise DataError(f"{self._who(user, index)}: unknown profile field {name!r}; expected one of: "
                                f"{', '.join(by_name) or '(this data set has no user fields)'}")
            raw = torch.as_tensor(value)
            t = raw.to(out[f.key].dtype)
            ok = t.shape == out[f.key].shape and (f.kind == "dense" or (
                bool(((t >= 0) & (t < f.size)).all()) and bool((raw == t).all())))
            if not ok:
                expected = (f"{f.size} numbers" if f.kind == "dense" else f"an id in [0, {f.size})" if
                            f.kind == "categorical" else f"{out[f.key].numel()} ids in [0, {f.size}), 0 = none")
                raise DataError(f"{self._who(user, index)}: profile field {name!r} = {value!r}; expected {expected}")
            out[f.key] = t
        return out

    def _samples(self, profiles: list[dict[str, Tensor]], items: Tensor, rating: Tensor, mask: Tensor) -> Samples:
        """[users, n] samples: each user's profile broadcast over their items, item features gathered by id."""
        n = items.shape[1]
        features = {}
        for f in self.user_fields:
            stacked = torch.stack([p[f.key] for p in profiles])  # [users, ...]
            features[f.key] = stacked[:, None].expand(len(profiles), n, *stacked.shape[1:])
        if is_broadcast(items):  # the same items for every user: gather once, expand
            features.update({key: table[items[0]].expand(*items.shape, *table.shape[1:])
                             for key, table in self.data.item_features.items()})
        else:
            features.update({key: table[items] for key, table in self.data.item_features.items()})
        users = torch.full(items.shape, -1, dtype=torch.long)  # new users have no id
        return Samples(features, rating * mask, mask, users, items)

    def batch(self, users: Sequence[NewUser], candidates: Optional[Tensor] = None, exclude_rated: bool = True,
              offset: int = 0) -> TaskBatch:
        """Support = each user's ratings; query = ``candidates`` (default: the whole catalogue), with the items a
        user rated masked out when ``exclude_rated``.  Task keys are the users' positions (``offset`` + i)."""
        supports = [self.support(u, offset + i) for i, u in enumerate(users)]
        profiles = [self.profile(u, offset + i) for i, u in enumerate(users)]
        width = max(len(items) for items, _ in supports)
        s_items = torch.zeros(len(users), width, dtype=torch.long)
        s_rating, s_mask = torch.zeros(len(users), width), torch.zeros(len(users), width)
        for i, (items, ratings) in enumerate(supports):
            s_items[i, : len(items)], s_rating[i, : len(items)], s_mask[i, : len(items)] = items, ratings, 1.0
        s_items[s_mask == 0] = self.items[0]  # padding points at a real item; the mask removes it
        cand = self.items if candidates is None else candidates
        q_items = cand.expand(len(users), len(cand))
        q_mask = torch.ones(q_items.shape)
        if exclude_rated:
            rated = torch.zeros(len(users), len(self.known), dtype=torch.bool)
            rated[torch.arange(len(users))[:, None].expand_as(s_items)[s_mask > 0], s_items[s_mask > 0]] = True
            q_mask[rated.gather(1, q_items)] = 0.0
        return TaskBatch(support=self._samples(profiles, s_items, s_rating, s_mask),
                         query=self._samples(profiles, q_items, torch.zeros(q_items.shape), q_mask),
                         key=torch.arange(offset, offset + len(users)), scenario="recommend")


def top_k(scores: Tensor, items: Tensor, mask: Tensor, k: int) -> list[list[tuple[int, float]]]:
    """Per row, the ``k`` best (item, score) pairs among the unmasked ones, best first."""
    masked = scores.float().masked_fill(mask <= 0, float("-inf"))
    k = min(k, masked.shape[1])
    best, idx = masked.topk(k, dim=1)
    chosen = items.gather(1, idx)
    return [[(int(i), float(s)) for i, s in zip(chosen[r], best[r]) if s != float("-inf")]
            for r in range(len(scores))]


class Recommender:
    """A trained ``MetaLearner`` + the ``Catalogue`` of its data set.

    ``recommend(ratings, profile=None, k=10)`` -> ``[(item, score), ...]`` best first, rated items excluded;
    ``recommend_many(users, k)`` does the same for many ``NewUser``s at once (vectorised, ``batch_size`` users
    per adaptation); ``score(ratings, items)`` -> the adapted predicted ratings of the given items.
    """

    def __init__(self, module: Any, data: RatingData, batch_size: int = 64) -> None:
        schema = [FeatureSpec(**f) if isinstance(f, dict) else f for f in module.hparams.schema]
        if schema != list(data.schema):
            raise DataError("recommender: the data's feature schema differs from the one the model was trained on; "
                            "expected the same data set and options as in training")
        self.module = module.eval()
        self.catalogue = Catalogue(data)
        self.batch_size = batch_size

    @classmethod
    def from_checkpoint(cls, checkpoint: Union[str, Path], data: Any = None, map_location: Any = "cpu",
                        **kwargs: Any) -> "Recommender":
        """Load ``checkpoint``; ``data`` is a ``MetaDataModule``, a ``RatingData``, a config file with a ``data:``
        section, or ``None``: the data module recorded in the checkpoint (same data set, root and options)."""
        from metarec_pl.bilevel import MetaLearner
        from metarec_pl.data.module import MetaDataModule

        path = Path(checkpoint)
        if not path.is_file():
            raise DataError(f"recommender: checkpoint {str(path)!r} does not exist; expected a .ckpt file from fit")
        module = MetaLearner.load_from_checkpoint(path, map_location=map_location)
        if data is None:
            saved = torch.load(path, map_location="cpu", weights_only=False).get("datamodule_hyper_parameters")
            if saved is None:
                raise DataError(f"recommender: {path} records no data module; pass data= (a MetaDataModule, "
                                "RatingData or config file)")
            data = MetaDataModule(**dict(saved))
        elif isinstance(data, (str, Path)):
            import yaml

            config = yaml.safe_load(Path(data).read_text()) or {}
            config = config.get("fit", config)  # a saved config.yaml may be nested under its subcommand
            if "data" not in config:
                raise DataError(f"recommender: {data} has no 'data:' section; expected a metarec config file")
            data = MetaDataModule(**config["data"])
        if isinstance(data, MetaDataModule):
            data = data.data
        return cls(module, data, **kwargs)

    def _predict(self, batch: TaskBatch) -> Tensor:
        device = self.module.device
        batch = batch if device.type == "cpu" else _to(batch, device)
        return self.module.adapted_predictions(batch).float().cpu()

    def recommend_many(self, users: Sequence[NewUser], k: int = 10,
                       candidates: Optional[Sequence[int]] = None) -> list[list[tuple[int, float]]]:
        """Top-``k`` (item, score) per user among ``candidates`` (default: the catalogue), rated items excluded."""
        if k < 1:
            raise ValueError(f"recommender: k must be >= 1, got {k}")
        cand = None if candidates is None else self.catalogue.check_items(candidates, "candidates")
        out: list[list[tuple[int, float]]] = []
        for start in range(0, len(users), self.batch_size):
            batch = self.catalogue.batch(users[start:start + self.batch_size], cand, offset=start)
            out += top_k(self._predict(batch), batch.query.item, batch.query.mask, k)
        return out

    def recommend(self, ratings: Ratings, profile: Optional[Mapping[str, Any]] = None, k: int = 10,
                  candidates: Optional[Sequence[int]] = None) -> list[tuple[int, float]]:
        return self.recommend_many([NewUser(ratings, profile)], k, candidates)[0]

    def score(self, ratings: Ratings, items: Sequence[int],
              profile: Optional[Mapping[str, Any]] = None) -> Tensor:
        """Adapted predicted ratings [len(items)] of ``items`` (rated or not) for one new user."""
        cand = self.catalogue.check_items(items, "items to score")
        return self._predict(self.catalogue.batch([NewUser(ratings, profile)], cand, exclude_rated=False))[0]


def _to(batch: TaskBatch, device: torch.device) -> TaskBatch:
    from lightning_utilities.core.apply_func import apply_to_collection

    return apply_to_collection(batch, Tensor, lambda t: t.to(device))
