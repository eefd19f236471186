"""New users and the catalogue they are recommended from: the types that turn a brand-new user's few ratings into a
``TaskBatch`` (support = their ratings, query = catalogue items), below both the data module (``metarec predict
--data.predict_file``) and the serving layer (``metarec_pl.recommend``).

Ids are the *raw* ids of the data set's files (``RatingData.raw_ids``): items are given as strings (surrounding
spaces removed) or integers (meaning their decimal string); ``None``, floats or other types are a one-line
``DataError``, as is an id the data set does not have.  The catalogue is every item that has at least one rating
in the data set.  Profile values are feature ids of the data set's user fields; a field not given takes the value
most common among the training users (dense fields: their mean; multi-valued: none; a user id field: 0, the
unknown id).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

from metarec_pl.data.types import DataError, FeatureSpec, RatingData, Samples, TaskBatch, is_broadcast, raw_id

Ratings = Union[Mapping[Union[str, int], float], Sequence[tuple[Union[str, int], float]]]


@dataclass
class NewUser:
    """A user the model has never seen: a few ratings, optionally profile fields (``{"age": 2}``)."""

    ratings: Ratings  # raw item id -> rating, or (raw item id, rating) pairs
    profile: Optional[Mapping[str, Any]] = None
    name: Any = None  # echoed in outputs and error messages
    where: Optional[list[str]] = None  # per rating, where it was read (``new.csv: line 3``), for error messages

    def pairs(self, who: str = "new user") -> list[tuple[Any, Any]]:
        if isinstance(self.ratings, Mapping):
            return list(self.ratings.items())
        if isinstance(self.ratings, (str, bytes)) or not isinstance(self.ratings, Sequence):
            raise DataError(f"{who}: ratings {self.ratings!r} are neither a mapping nor a list; expected "
                            "{item: rating} or [(item, rating), ...]")
        out = []
        for pair in self.ratings:
            if not (isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 2):
                raise DataError(f"{who}: rating {pair!r} is not an (item, rating) pair; expected {{item: rating}} "
                                "or [(item, rating), ...]")
            out.append(tuple(pair))
        return out


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

    @property
    def item_ids(self) -> list[str]:
        """[n] raw ids of the catalogue items, in the order of ``items``."""
        raw = self.data.raw_ids("item")
        return [raw[c] for c in self.items.tolist()]

    def raw_item(self, code: int) -> str:
        """The raw id of item code ``code``."""
        if not hasattr(self, "_raw_items"):
            self._raw_items = self.data.raw_ids("item")
        return self._raw_items[code]

    def _who(self, user: NewUser, index: int) -> str:
        return f"new user {user.name!r}" if user.name is not None else f"new user #{index}"

    def check_items(self, items: Sequence[Any], who: str, where: Optional[Sequence[str]] = None) -> Tensor:
        """Item codes [len(items)] of raw ids ``items``; one-line error (naming ``where[k]`` if given) for an id
        that is not a string or integer, or that is not in the catalogue."""
        if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
            raise DataError(f"{who}: {items!r} is not a list of item ids; expected a list of raw item ids")
        codes = []
        for k, i in enumerate(items):
            place = f"{where[k]}: " if where else ""
            raw = raw_id(i.item() if isinstance(i, Tensor) else i, f"{place}{who}: item id")
            code = self.data.code_of("item", raw)
            if code is None or not (0 <= code < len(self.known) and self.known[code]):
                examples = ", ".join(repr(x) for x in self.item_ids[:3])
                raise DataError(f"{place}{who}: item {raw!r} is not in the catalogue; expected one of the "
                                f"{len(self.items)} item ids of the data set with ratings (e.g. {examples})")
            codes.append(code)
        return torch.tensor(codes, dtype=torch.long)

    def support(self, user: NewUser, index: int) -> tuple[Tensor, Tensor]:
        """The user's (item codes, ratings), checked: non-empty, known items, each once, ratings in the data's
        rating range (an ``interactions`` log without ``rating_range``: its own lowest..highest rating)."""
        who = self._who(user, index)
        pairs = user.pairs(who)
        if not pairs:
            raise DataError(f"{who}: no ratings; expected at least one (item, rating) pair")
        where = user.where if user.where and len(user.where) == len(pairs) else None
        items = self.check_items([i for i, _ in pairs], who, where)
        values = []
        for k, (_, r) in enumerate(pairs):
            place = f"{where[k]}: " if where else ""
            if isinstance(r, bool) or not isinstance(r, (int, float)) and not (isinstance(r, Tensor) and r.numel() == 1):
                raise DataError(f"{place}{who}: rating {r!r} of item {self.raw_item(int(items[k]))!r} is not a "
                                "number; expected a number")
            values.append(float(r))
        ratings = torch.tensor(values)
        lo, hi = self.data.rating_range
        bad = ~torch.isfinite(ratings) | (ratings < lo) | (ratings > hi)
        if bad.any():
            k = int(bad.nonzero()[0])
            place = f"{where[k]}: " if where else ""
            raise DataError(f"{place}{who}: item {self.raw_item(int(items[k]))!r} has rating {ratings[k].item():g}; "
                            f"expected a rating in [{lo:g}, {hi:g}] (the data set's scale)")
        uniq, counts = torch.unique(items, return_counts=True)
        if (counts > 1).any():
            raise DataError(f"{who}: item {self.raw_item(int(uniq[counts > 1][0]))!r} is rated more than once; "
                            "expected each item once")
        return items, ratings

    def profile(self, user: NewUser, index: int) -> dict[str, Tensor]:
        """Feature key -> value for this user: the given fields (checked), defaults for the rest."""
        out = dict(self.default_profile)
        by_name = {f.name: f for f in self.user_fields}
        profile = user.profile or {}
        if not isinstance(profile, Mapping):
            raise DataError(f"{self._who(user, index)}: profile {profile!r} is not a mapping; expected "
                            "{field: value}")
        for name, value in profile.items():
            f = by_name.get(name.removeprefix("user_")) if isinstance(name, str) else None
            if f is None:
                raise DataError(f"{self._who(user, index)}: unknown profile field {name!r}; expected one of: "
                                f"{', '.join(by_name) or '(this data set has no user fields)'}")
            out[f.key] = self._profile_value(f, name, value, out[f.key], self._who(user, index))
        return out

    @staticmethod
    def _profile_value(f: FeatureSpec, name: Any, value: Any, default: Tensor, who: str) -> Tensor:
        """``value`` of profile field ``f`` as a tensor like ``default``; one-line ``DataError`` unless it is a
        number (dense) or feature ids in the field's range."""
        try:
            raw = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            raw = None
        if raw is None or raw.dtype == torch.bool or raw.is_complex():
            raise DataError(f"{who}: profile field {name!r} = {value!r} is not a number; "
                            "expected a feature id (or numbers for a dense field)")
        t = raw.to(default.dtype)
        ok = t.shape == default.shape and (f.kind == "dense" or (
            bool(((t >= 0) & (t < f.size)).all()) and bool((raw == t).all())))
        if not ok:
            expected = (f"{f.size} numbers" if f.kind == "dense" else f"an id in [0, {f.size})" if
                        f.kind == "categorical" else f"{default.numel()} ids in [0, {f.size}), 0 = none")
            raise DataError(f"{who}: profile field {name!r} = {value!r}; expected {expected}")
        return t

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
