"""Recommend for a brand-new user: adapt a trained meta-learner to their few ratings, rank the catalogue.

A new user is a task like any other: their (item, rating) pairs are the support set and the catalogue items
they have not rated are the query set, so adaptation is exactly the inner loop of training and evaluation
(``MetaLearner.adapt``, vectorised over users).  Item features, the rating scale and the catalogue come from
the data set the model was trained on: ``Recommender.from_checkpoint`` rebuilds it from the data-module
hyper-parameters stored in the checkpoint (or takes a data module / ``RatingData`` / config file you give).

Ids are the *raw* ids of the data set's files (``RatingData.raw_ids``: the strings of an ``interactions`` log,
MovieLens' official ids): items and candidates are given as strings (surrounding spaces removed) or integers
(meaning their decimal string, so ``12`` and ``"12"`` are the same item); ``None``, floats or other types are a
one-line ``DataError``, as is an id the data set does not have.  Recommendations come back as ``(raw id: str,
score)`` pairs.  The catalogue is every item that has at least one rating in the data set.  Profile values are
feature ids of the data set's user fields; a field not given takes the value most common among the training
users (dense fields: their mean; multi-valued: none; a user id field: 0, the unknown id).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from pathlib import Path
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
            try:
                raw = torch.as_tensor(value)
            except (TypeError, ValueError, RuntimeError):
                raw = None
            if raw is None or raw.dtype == torch.bool or raw.is_complex():
                raise DataError(f"{self._who(user, index)}: profile field {name!r} = {value!r} is not a number; "
                                "expected a feature id (or numbers for a dense field)")
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
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"recommender: batch_size {batch_size!r}; expected an integer >= 1")
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

        if not isinstance(checkpoint, (str, Path)):
            raise DataError(f"recommender: checkpoint {checkpoint!r} is not a path; expected a .ckpt file path")
        path = Path(checkpoint)
        ckpt = read_checkpoint(path)
        try:
            module = MetaLearner.load_from_checkpoint(path, map_location=map_location)
        except Exception as exc:  # hyper-parameters or weights that do not make a MetaLearner
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise DataError(f"recommender: checkpoint {str(path)!r} does not load into a MetaLearner "
                            f"({type(exc).__name__}: {first}); expected a checkpoint written by metarec fit") from None
        if data is None:
            saved = ckpt.get("datamodule_hyper_parameters")
            if saved is None:
                raise DataError(f"recommender: {path} records no data module; pass data= (a MetaDataModule, "
                                "RatingData or config file)")
            data = _datamodule(dict(saved), f"the data module recorded in {path}")
        elif isinstance(data, (str, Path)):
            import yaml

            source = Path(data)
            if not source.is_file():
                raise DataError(f"recommender: config {str(source)!r} does not exist; expected a metarec config file")
            try:
                config = yaml.safe_load(source.read_text()) or {}
            except yaml.YAMLError as exc:
                raise DataError(f"recommender: {source}: not valid YAML ({str(exc).splitlines()[0]})") from None
            config = config.get("fit", config) if isinstance(config, dict) else config
            if not isinstance(config, dict) or not isinstance(config.get("data"), dict):
                raise DataError(f"recommender: {data} has no 'data:' section; expected a metarec config file")
            data = _datamodule(config["data"], f"{source}: data")
        if isinstance(data, MetaDataModule):
            data = data.data
        if not isinstance(data, RatingData):
            raise DataError(f"recommender: data={type(data).__name__}; expected a MetaDataModule, RatingData, a "
                            "config file or None")
        return cls(module, data, **kwargs)

    def _predict(self, batch: TaskBatch) -> Tensor:
        device = self.module.device
        batch = batch if device.type == "cpu" else _to(batch, device)
        return self.module.adapted_predictions(batch).float().cpu()

    def recommend_many(self, users: Sequence[NewUser], k: int = 10,
                       candidates: Optional[Sequence[Union[str, int]]] = None) -> list[list[tuple[str, float]]]:
        """Top-``k`` (raw item id, score) per user among ``candidates`` (raw ids; default: the catalogue), rated
        items excluded, best first."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise DataError(f"recommender: k={k!r}; expected an integer >= 1")
        if isinstance(users, (NewUser, str, Mapping)) or not isinstance(users, Sequence):
            raise DataError(f"recommender: users={type(users).__name__}; expected a list of NewUser")
        for i, u in enumerate(users):
            if not isinstance(u, NewUser):
                raise DataError(f"recommender: users[{i}] is a {type(u).__name__}; expected a NewUser")
        cand = None if candidates is None else self.catalogue.check_items(candidates, "candidates")
        if cand is not None and len(cand) == 0:
            raise DataError("recommender: candidates is empty; expected at least one raw item id")
        out: list[list[tuple[str, float]]] = []
        for start in range(0, len(users), self.batch_size):
            batch = self.catalogue.batch(users[start:start + self.batch_size], cand, offset=start)
            out += [[(self.catalogue.raw_item(i), s) for i, s in recs]
                    for recs in top_k(self._predict(batch), batch.query.item, batch.query.mask, k)]
        return out

    def recommend(self, ratings: Ratings, profile: Optional[Mapping[str, Any]] = None, k: int = 10,
                  candidates: Optional[Sequence[Union[str, int]]] = None) -> list[tuple[str, float]]:
        """Top-``k`` (raw item id, score) for one new user with ``ratings`` (raw item id -> rating)."""
        return self.recommend_many([NewUser(ratings, profile)], k, candidates)[0]

    def score(self, ratings: Ratings, items: Sequence[Union[str, int]],
              profile: Optional[Mapping[str, Any]] = None) -> Tensor:
        """Adapted predicted ratings [len(items)] of ``items`` (raw ids, rated or not) for one new user."""
        cand = self.catalogue.check_items(items, "items to score")
        if len(cand) == 0:
            raise DataError("recommender: items to score is empty; expected at least one raw item id")
        return self._predict(self.catalogue.batch([NewUser(ratings, profile)], cand, exclude_rated=False))[0]


def read_checkpoint(path: Path) -> dict:
    """The checkpoint dictionary at ``path``; one-line ``DataError`` for a missing file, a folder, a truncated or
    foreign file, or one without a model's ``state_dict`` and ``hyper_parameters``."""
    expected = "expected a .ckpt file written by metarec fit (e.g. checkpoints/last.ckpt)"
    if path.is_dir():
        raise DataError(f"recommender: checkpoint {str(path)!r} is a folder; {expected}")
    if not path.is_file():
        raise DataError(f"recommender: checkpoint {str(path)!r} does not exist; {expected}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # zip/pickle/EOF errors of every kind: truncated or not a checkpoint
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise DataError(f"recommender: checkpoint {str(path)!r} is not a readable checkpoint ({type(exc).__name__}"
                        f"{': ' + first if first else ''}); {expected}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise DataError(f"recommender: checkpoint {str(path)!r} holds no model weights and hyper-parameters; {expected}")
    return ckpt


def _datamodule(options: dict, where: str) -> Any:
    """A ``MetaDataModule`` from saved or configured options.  Private keys (LightningCLI's ``_instantiator``,
    ``_class_path``) are not data options and are left out; a wrong option is a one-line ``DataError``."""
    from metarec_pl.data.module import MetaDataModule

    options = {k: v for k, v in options.items() if not str(k).startswith("_")}
    try:
        return MetaDataModule(**options)
    except TypeError as exc:
        raise DataError(f"recommender: {where}: {str(exc).splitlines()[0]}; expected MetaDataModule options") from None


def _to(batch: TaskBatch, device: torch.device) -> TaskBatch:
    from lightning_utilities.core.apply_func import apply_to_collection

    return apply_to_collection(batch, Tensor, lambda t: t.to(device))
