"""``DataInfo``: the facts of a data set that a model is built from, in one object.

A network needs the feature schema; its output bias starts at the mean training target; the metrics need the rating
scale and the "like" threshold; per-id baselines need the id counts; serving maps raw ids to codes.  The data module
measures them once (``MetaDataModule.info``) and hands the one object to ``MetaLearner(data_info=...)`` (the CLI
links ``data.info`` to ``model.data_info``), which passes it on to ``MetaAlgorithm.bind(network, info)`` -- the way
RecBole's models take one dataset object in their constructors (``Model(config, dataset)``).

A checkpoint keeps ``DataInfo.to_dict()`` in its hyper-parameters (plain YAML/JSON data): every fact, but of each
raw-id map only its size and a SHA-256 digest of its ids, so a checkpoint of a log with millions of ids stays
small while data with other ids can still be told apart (``IdMap.differs``).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cached_property
from typing import Any, Literal, Mapping, Optional, Sequence, Union

import torch

from metarec_pl.data.types import DataError, FeatureSpec, RatingData
from metarec_pl.errors import ConfigError

MAX_RATING_LEVELS = 20  # more distinct training ratings than this: a continuous target, no rating levels
CODES = "codes"  # ``IdMap.ids`` of a map whose raw id of code c is ``str(c)`` (MovieLens, the synthetic world)
FEEDBACK = ("explicit", "implicit")
# the facts MetaLearner took one by one before DataInfo (deprecated keywords, and the keys of older checkpoints)
LEGACY_FACTS = ("schema", "rating_mean", "rating_levels", "num_users", "num_items")


def ids_digest(raw: Sequence[str]) -> str:
    """``sha256:<hex>`` of raw ids in code order (each id followed by a newline)."""
    h = hashlib.sha256()
    for r in raw:
        h.update(r.encode("utf-8"))
        h.update(b"\n")
    return f"sha256:{h.hexdigest()}"


@dataclass(frozen=True)
class IdMap:
    """Codes ``0..size-1`` of one side (users or items) and the raw id of each.

    ``ids``: ``"codes"`` (the raw id of code c is ``str(c)``), ``"sha256:<hex>"`` (the digest of the raw ids, see
    ``ids_digest``) or ``None`` (not recorded: an info built from the facts one by one).  ``raw``: the raw ids
    themselves, held in memory only (an ``IdMap`` read back from a checkpoint has the digest, not the ids).
    Two maps are equal when size and ``ids`` are.
    """

    size: int
    ids: Optional[str] = None
    raw: Optional[tuple[str, ...]] = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise ConfigError(f"data info: id map size {self.size!r}; expected a whole number >= 0")
        if self.raw is not None and len(self.raw) != self.size:
            raise DataError(f"data info: {len(self.raw)} raw ids for {self.size} codes; expected one per code")

    @classmethod
    def of(cls, size: int, raw: Optional[Sequence[str]]) -> "IdMap":
        """The map of ``size`` codes whose raw ids are ``raw`` (``None``: the codes themselves)."""
        if raw is None:
            return cls(int(size), CODES)
        held = tuple(str(r) for r in raw)
        return cls(int(size), ids_digest(held), held)

    def raw_ids(self) -> list[str]:
        """[size] the raw id of every code; ``DataError`` when only the digest is known."""
        if self.raw is not None:
            return list(self.raw)
        if self.ids == CODES:
            return [str(c) for c in range(self.size)]
        raise DataError("data info: this id map holds no raw ids (a checkpoint keeps only their digest); expected "
                        "the data set's own info (MetaDataModule.info) for raw ids")

    @cached_property
    def _codes(self) -> dict[str, int]:
        return {r: c for c, r in enumerate(self.raw_ids())}

    def code_of(self, raw: str) -> Optional[int]:
        """The code of raw id ``raw`` (a string, see ``data.types.raw_id``), or ``None`` when there is none."""
        return self._codes.get(raw)

    def differs(self, other: Optional["IdMap"]) -> bool:
        """Whether both maps are recorded and say different things (size or ids)."""
        if other is None or self.ids is None or other.ids is None:
            return False
        return (self.size, self.ids) != (other.size, other.ids)

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "ids": self.ids}


def _float_or_none(value: Any, name: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"data info: {name} {value!r}; expected a finite number or null")
    return float(value)


def _id_map(value: Any, side: str) -> Optional[IdMap]:
    if value is None or isinstance(value, IdMap):
        return value
    if isinstance(value, Mapping) and set(value) <= {"size", "ids"} and "size" in value:
        return IdMap(value["size"], value.get("ids"))
    raise ConfigError(f"data info: {side} {value!r}; expected an IdMap or {{size: n, ids: ...}}")


@dataclass(frozen=True)
class DataInfo:
    """The facts of a data set a model is built from (``MetaDataModule.info`` measures them).

    Attributes:
        schema: the feature fields (``FeatureSpec``; dicts of them are accepted), in model-input order.
        feedback: ``"explicit"`` (ratings) or ``"implicit"`` (interactions; negatives are sampled).
        rating_range: (lowest, highest) rating of the scale (``None``: not known).
        rating_mean: the mean training target, the network's starting output (``RatingModel.rating_offset``).
        rating_levels: the distinct training targets of a discrete scale (e.g. 1..5; ``None``: continuous), for
            the ``mae_rounded`` metric and level-based learners (``protonet``).
        like_threshold: a target at or above this is a "like" (a positive of the rankings).
        users / items: the id maps (``IdMap``): ``num_users``/``num_items`` codes and their raw ids.
        task_side: what one task is about: ``"user"`` (user-as-task: one user's ratings) or ``"item"``
            (item-as-task), as the task sampler groups rows (``MetaDataModule.info`` sets it).
        item_features: the data's per-item feature tables (``RatingData.item_features``: key -> ``[num_items,
            ...]``), for networks that read a whole table (``text-sequence``'s item text vectors).  In memory
            only: never in ``to_dict`` (hparams, checkpoints); a network rebuilt from a checkpoint gets ``None``
            and its saved buffers.
    Every fact but ``schema`` may be ``None`` (not known); users of a fact say what they need.
    """

    schema: tuple[FeatureSpec, ...]
    feedback: Literal["explicit", "implicit"] = "explicit"
    rating_range: Optional[tuple[float, float]] = None
    rating_mean: Optional[float] = None
    rating_levels: Optional[tuple[float, ...]] = None
    like_threshold: Optional[float] = None
    users: Optional[IdMap] = None
    items: Optional[IdMap] = None
    task_side: Optional[Literal["user", "item"]] = None
    item_features: Optional[Mapping[str, torch.Tensor]] = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.schema, (str, bytes, Mapping)) or not isinstance(self.schema, Sequence):
            raise ConfigError(f"data info: schema {self.schema!r}; expected a list of feature fields")
        try:
            schema = tuple(FeatureSpec(**f) if isinstance(f, Mapping) else f for f in self.schema)
        except TypeError as exc:
            raise ConfigError(f"data info: schema field: {exc}; expected {{side, name, kind, size}}") from None
        if not all(isinstance(f, FeatureSpec) for f in schema):
            raise ConfigError(f"data info: schema {self.schema!r}; expected FeatureSpecs or their dicts")
        if self.feedback not in FEEDBACK:
            raise ConfigError(f"data info: feedback {self.feedback!r}; expected one of {', '.join(FEEDBACK)}")
        if self.task_side not in (None, "user", "item"):
            raise ConfigError(f"data info: task_side {self.task_side!r}; expected user, item or null")
        set_ = object.__setattr__  # frozen: normalised once, here
        set_(self, "schema", schema)
        if self.rating_range is not None:
            lo, hi = (_float_or_none(v, "rating_range") for v in self.rating_range)
            set_(self, "rating_range", (lo, hi))
        if self.rating_levels is not None:
            set_(self, "rating_levels", tuple(sorted(_float_or_none(v, "rating level") for v in self.rating_levels)))
        set_(self, "rating_mean", _float_or_none(self.rating_mean, "rating_mean"))
        set_(self, "like_threshold", _float_or_none(self.like_threshold, "like_threshold"))
        set_(self, "users", _id_map(self.users, "users"))
        set_(self, "items", _id_map(self.items, "items"))

    # ------------------------------------------------------------------------------------------------ reading
    @property
    def num_users(self) -> Optional[int]:
        return None if self.users is None else self.users.size

    @property
    def num_items(self) -> Optional[int]:
        return None if self.items is None else self.items.size

    def id_map(self, side: Literal["user", "item"]) -> IdMap:
        """The id map of ``side``; ``DataError`` when this info has none."""
        found = self.users if side == "user" else self.items if side == "item" else None
        if found is None:
            raise DataError(f"data info: no {side} id map; expected an info built by MetaDataModule.info")
        return found

    def raw_ids(self, side: Literal["user", "item"]) -> list[str]:
        """[num_users or num_items] the raw id of every code of ``side``."""
        return self.id_map(side).raw_ids()

    def code_of(self, side: Literal["user", "item"], raw: str) -> Optional[int]:
        """The code of raw id ``raw`` of ``side``, or ``None`` when there is none."""
        return self.id_map(side).code_of(raw)

    def changed_ids(self, other: "DataInfo") -> list[str]:
        """The sides (``user``, ``item``) whose recorded id maps differ between this info and ``other``."""
        return [side for side, mine, theirs in (("user", self.users, other.users), ("item", self.items, other.items))
                if mine is not None and mine.differs(theirs)]

    def changed_ids_line(self, other: "DataInfo", trained: str) -> Optional[str]:
        """One line saying that the model ``trained`` (e.g. a checkpoint path) on data with this info meets data
        with other user/item ids (``other``), or ``None`` when the ids are the same (or not recorded)."""
        sides = self.changed_ids(other)
        if not sides:
            return None
        sizes = "; ".join(f"{s}s: {self.id_map(s).size} then, {other.id_map(s).size} now" for s in sides)
        return (f"metarec: {trained} was trained on data with other {' and '.join(sides)} ids ({sizes}); id fields "
                f"and per-id tables now refer to other {' and '.join(s + 's' for s in sides)}")

    # -------------------------------------------------------------------------------------------- (de)serialising
    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, numbers, strings) for hparams.yaml, checkpoints and configs; ``from_dict`` reads it."""
        return {
            "schema": [asdict(f) for f in self.schema],
            "feedback": self.feedback,
            "rating_range": None if self.rating_range is None else list(self.rating_range),
            "rating_mean": self.rating_mean,
            "rating_levels": None if self.rating_levels is None else list(self.rating_levels),
            "like_threshold": self.like_threshold,
            "users": None if self.users is None else self.users.to_dict(),
            "items": None if self.items is None else self.items.to_dict(),
            "task_side": self.task_side,
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> "DataInfo":
        """The info of ``to_dict``'s plain data; ``ConfigError`` naming an unknown or missing key."""
        known = [f.name for f in fields(cls)]
        unknown = [k for k in value if k not in known]
        if unknown:
            raise ConfigError(f"model.data_info: unknown key {unknown[0]!r}; expected some of {', '.join(known)}")
        if "schema" not in value:
            raise ConfigError("model.data_info: no schema; expected the data's feature fields")
        return cls(**dict(value))

    @classmethod
    def coerce(cls, value: Union["DataInfo", Mapping[str, Any]]) -> "DataInfo":
        """``value`` as a ``DataInfo`` (a ``DataInfo`` or the plain data of ``to_dict``)."""
        if isinstance(value, DataInfo):
            return value
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        raise ConfigError(f"model.data_info: {type(value).__name__} {value!r}; expected a DataInfo or its to_dict() "
                          f"data (the metarec CLI links data.info to model.data_info)")

    # ------------------------------------------------------------------------------------------------ measuring
    @classmethod
    def ids_of(cls, data: RatingData) -> "DataInfo":
        """The schema and id maps of ``data`` only (no training rows needed; nothing about its ratings)."""
        return cls(schema=tuple(data.schema), users=IdMap.of(data.num_users, data.user_ids),
                   items=IdMap.of(data.num_items, data.item_ids))

    @classmethod
    def of(cls, data: RatingData, negatives: int = 0) -> "DataInfo":
        """The facts of ``data`` measured on its training rows (``splits["train"]``), with ``negatives`` sampled
        negatives (target 0) per row counted in (the task sampler's, ``data.sampler_args.negatives``).

        ``rating_mean``: the mean training target, negatives' zeros included (implicit clicks: 1 / (1 + negatives)).
        ``rating_levels``: the distinct training targets (plus 0 with negatives) when 2..``MAX_RATING_LEVELS``.
        ``like_threshold``: implicit: 0.5, or half the smallest interaction weight when that is below 1; explicit:
        ``lo + 0.75 (hi - lo)`` of the rating range (4 on 1..5 stars).
        ``DataError`` when ``data`` has no training rows."""
        train = list(data.splits.get("train", {}).values())
        ratings = data.rating[torch.cat(train)] if train else data.rating[:0]
        if not len(ratings):
            raise DataError("data: no training rows (splits['train'] is empty); expected a protocol with a train "
                            "split")
        levels = torch.unique(ratings)
        if negatives:
            levels = torch.unique(torch.cat([levels, torch.zeros(1, dtype=levels.dtype)]))
        lo, hi = data.rating_range
        if data.feedback == "implicit":
            like = 0.5 * min(1.0, float(ratings.min()))
        else:
            like = float(lo + 0.75 * (hi - lo))
        return cls(
            schema=tuple(data.schema), feedback=data.feedback, rating_range=(float(lo), float(hi)),
            rating_mean=float(ratings.sum() / (len(ratings) * (1 + negatives))),
            rating_levels=[float(x) for x in levels] if 2 <= len(levels) <= MAX_RATING_LEVELS else None,
            like_threshold=like, users=IdMap.of(data.num_users, data.user_ids),
            items=IdMap.of(data.num_items, data.item_ids), item_features=data.item_features)

    def with_facts(self, **facts: Any) -> "DataInfo":
        """A copy with some facts replaced (``schema``, ``rating_mean``, ...; ``num_users``/``num_items`` give id
        maps of that size with unrecorded ids)."""
        for side, key in (("users", "num_users"), ("items", "num_items")):
            if key in facts:
                size = facts.pop(key)
                facts[side] = None if size is None else IdMap(int(size))
        return replace(self, **facts)


def fold_legacy_facts(info: Optional[Union[DataInfo, Mapping[str, Any]]], legacy: Mapping[str, Any],
                      who: str = "MetaLearner") -> Optional[DataInfo]:
    """``info`` with the facts given one by one the old way (``schema=``, ``rating_mean=``, ``rating_levels=``,
    ``num_users=``, ``num_items=``; deprecated) folded in; ``None`` values count as not given.  A fact given both
    ways must agree (``ConfigError``); a keyword that is not one of them is a ``TypeError``, as Python's own."""
    unknown = [k for k in legacy if k not in LEGACY_FACTS]
    if unknown:
        raise TypeError(f"{who}.__init__() got an unexpected keyword argument {unknown[0]!r}")
    info = None if info is None else DataInfo.coerce(info)
    given = {k: v for k, v in legacy.items() if v is not None}
    if not given:
        return info
    if info is None:
        if "schema" not in given:
            raise ConfigError(f"{who}: data_info is missing (rating_mean/num_users/... given without a schema); "
                              f"expected data_info=MetaDataModule.info (the metarec CLI links data.info)")
        return DataInfo(schema=given.pop("schema")).with_facts(**given)
    folded = info.with_facts(**given)
    for key in given:
        if getattr(folded, key) != getattr(info, key):
            raise ConfigError(f"{who}: {key} given twice with different values ({legacy[key]!r} and the data_info's "
                              f"{getattr(info, key)!r}); expected data_info alone")
    return info
