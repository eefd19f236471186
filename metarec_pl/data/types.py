"""The data model shared by every data set, sampler, model and algorithm.

A data set yields one ``RatingData``: flat (user, item, rating[, time]) rows, feature tables indexed by
user and item id, a feature ``schema`` and ``splits`` (stage -> scenario -> row indices).

Ids: rows and tables use *codes* (0..n-1); ``user_ids`` / ``item_ids`` map each code back to the *raw* id as
written in the files (a string), and ``code_of`` maps a raw id to its code.  Data sets whose codes are their
official integer ids (MovieLens, MeLU's release, the synthetic world) leave the maps ``None``: the raw id of
code c is then ``str(c)``.  ``raw_id`` is how every public entry point (``metarec predict``, ``Recommender``)
reads an id a user gives: a string (surrounding spaces removed) or an integer (meaning its decimal string).
A sampler turns rows into ``Task``s (support rows + query rows); ``TaskCollator`` pads a list of tasks
into one ``TaskBatch`` whose tensors have a leading task dimension and masks for the padding.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Optional, Sequence

import torch
from torch import Tensor

FeatureKind = Literal["categorical", "multi", "dense"]


class DataError(ValueError):
    """Bad input data: the message names the file/field, the place and what was expected."""


@dataclass(frozen=True)
class FeatureSpec:
    """One input field.  ``categorical``: ids in [0, size); ``multi``: [n, width] ids in [0, size), 0 = padding;
    ``dense``: [n, size] floats."""

    side: Literal["user", "item"]
    name: str
    kind: FeatureKind
    size: int

    @property
    def key(self) -> str:
        return f"{self.side}_{self.name}"

    @property
    def is_id(self) -> bool:
        """The user or item id itself as a field (``with_id_features``): 1..n, 0 = unknown."""
        return self.kind == "categorical" and self.name == "id"


def is_broadcast(t: Tensor, dim: int = 0) -> bool:
    """Whether ``t`` repeats one slice along ``dim`` (an expanded view, stride 0), so work on that dimension can be
    done once and expanded (e.g. a catalogue's item features shared by every user of a batch)."""
    return t.shape[dim] > 1 and t.stride(dim) == 0



def raw_id(value: Any, what: str = "id") -> str:
    """A user-given id as the raw string it stands for: a string stripped of surrounding spaces, or an integer
    (not a bool) as its decimal string.  Anything else (``None``, floats, lists, empty strings) is a one-line
    ``DataError`` naming ``what``."""
    if isinstance(value, str):
        text = value.strip()
        if text:
            return text
        raise DataError(f"{what}: {value!r} is an empty id; expected a non-empty string or an integer")
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    raise DataError(f"{what}: {value!r} ({type(value).__name__}) is not an id; expected a string or an integer "
                    "(the raw id as written in the data files)")


@dataclass
class RatingData:
    user: Tensor  # [N] long
    item: Tensor  # [N] long
    rating: Tensor  # [N] float
    user_features: dict[str, Tensor]  # key -> [n_users, ...]
    item_features: dict[str, Tensor]  # key -> [n_items, ...]
    schema: list[FeatureSpec]
    splits: dict[str, dict[str, Tensor]]  # stage -> scenario -> row indices
    time: Optional[Tensor] = None  # [N] float, larger = later
    rating_range: tuple[float, float] = (1.0, 5.0)
    # item id -> raw text (e.g. "Title (1995). Plot ..."), for text-feature plugins; None when the files have none
    item_text: Optional[dict[int, str]] = None
    # code -> raw id as written in the files; None: the codes are the raw (integer) ids themselves
    user_ids: Optional[Sequence[str]] = None
    item_ids: Optional[Sequence[str]] = None
    # what reading dropped before any split: reason -> number of rows (e.g. {"duplicate rows": 3}), for the
    # one-line report of each load (``MetaDataModule``)
    dropped: dict[str, int] = field(default_factory=dict)
    # "explicit" (ratings) or "implicit" (every row is an interaction: rating 1, or its weight; non-interactions
    # are never stored, the task sampler draws them afresh as negatives, see data/negatives.py)
    feedback: Literal["explicit", "implicit"] = "explicit"
    # [N] int8 or None: which rows a published split puts in the support (1) or the query (2) of their task
    # (0: not said); the task sampler then keeps that split (``split_files`` / ``columns.split`` of interactions)
    part: Optional[Tensor] = None
    _codes: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def raw_ids(self, side: Literal["user", "item"]) -> list[str]:
        """[num_users or num_items] the raw id of every code of ``side``."""
        ids = self.user_ids if side == "user" else self.item_ids
        n = self.num_users if side == "user" else self.num_items
        return list(ids) if ids is not None else [str(c) for c in range(n)]

    def code_of(self, side: Literal["user", "item"], raw: str) -> Optional[int]:
        """The code of raw id ``raw`` (a string, see ``raw_id``), or ``None`` when ``side`` has no such id."""
        if side not in self._codes:
            self._codes[side] = {r: c for c, r in enumerate(self.raw_ids(side))}
        return self._codes[side].get(raw)

    @property
    def num_users(self) -> int:
        return next(iter(self.user_features.values())).shape[0] if self.user_features else int(self.user.max()) + 1

    @property
    def num_items(self) -> int:
        return next(iter(self.item_features.values())).shape[0] if self.item_features else int(self.item.max()) + 1

    def features(self, users: Tensor, items: Tensor) -> dict[str, Tensor]:
        """Model inputs for (user, item) pairs of any shape: every feature gathered by id."""
        out = {key: table[users] for key, table in self.user_features.items()}
        out.update({key: table[items] for key, table in self.item_features.items()})
        return out


def _check_field_names(data: RatingData, names: "tuple[str, ...] | list[str]") -> None:
    """``DataError`` (one line) unless ``names`` is a list of sides and field keys of ``data``."""
    if isinstance(names, str):
        raise DataError(f"drop_features: {names!r} is not a list; expected a list of field keys or sides")
    known = [f.key for f in data.schema]
    for name in names:
        if name not in ("user", "item") and name not in known:
            raise DataError(f"drop_features: {name!r} is neither a side nor a field of this data set; "
                            f"expected 'user', 'item' or one of {known}")


def without_features(data: RatingData, names: "tuple[str, ...] | list[str]") -> RatingData:
    """``data`` without the fields ``names``: field keys (``user_age``) or a side (``user``: every field of it).
    For ablations and for learners that should compare only what varies within a task (e.g. the item side when a
    task is a user: a user's own fields are the same for all of their pairs, and on small data sets they mostly
    let a network memorise the training users)."""
    if not names:
        return data
    _check_field_names(data, names)
    dropped = {f.key for f in data.schema if f.key in names or f.side in names}
    return replace(data, schema=[f for f in data.schema if f.key not in dropped],
                   user_features={k: v for k, v in data.user_features.items() if k not in dropped},
                   item_features={k: v for k, v in data.item_features.items() if k not in dropped})


def with_id_features(data: RatingData, sides: "tuple[str, ...] | list[str]") -> RatingData:
    """``data`` plus the user and/or item ids themselves as categorical fields (``{side}_id``, values 1..n;
    0 is left for "unknown").  Models embed them like any field, which gives a network a per-item (per-user)
    collaborative vector for ids seen in training; see ``FieldEmbedder`` for how unseen ids are kept neutral."""
    if not sides:
        return data
    user_features, item_features, schema = dict(data.user_features), dict(data.item_features), list(data.schema)
    for side in sides:
        if side not in ("user", "item"):
            raise DataError(f"id_features: {side!r} is not a side; expected 'user' and/or 'item'")
        tables = user_features if side == "user" else item_features
        if f"{side}_id" in tables:
            raise DataError(f"id_features: the data set already has a field '{side}_id'")
        n = data.num_users if side == "user" else data.num_items
        tables[f"{side}_id"] = torch.arange(1, n + 1)
        schema.append(FeatureSpec(side, "id", "categorical", n + 1))
    return replace(data, user_features=user_features, item_features=item_features, schema=schema)


@dataclass
class Task:
    """One user (or item): which rows adapt the model and which rows judge it."""

    key: int  # the user id for user-as-task, the item id for item-as-task
    support: Tensor  # row indices
    query: Tensor  # row indices
    scenario: str = "default"  # e.g. "user-cold"; a batch never mixes scenarios
    pool: Optional[Tensor] = None  # every row of the group, when the sampler may draw another split of it
    # ids of the other side (items of a user task, users of an item task) the task's key never interacted with,
    # sampled as negatives (target 0, mask 1) of the support and of the query; ``None``: none
    support_negatives: Optional[Tensor] = None
    query_negatives: Optional[Tensor] = None
    # where the sampler draws this task's negatives from (a ``data.negatives.NegativeSource``, shared by the tasks of
    # a scenario), so an episode can draw new ones; ``None``: the task has no negatives
    negatives_from: Any = None
    # (j, k): this task is the j-th of the k tasks a heavy group's ``pool`` is dealt into each training epoch
    # (``TaskSampler.chunk_rows``); ``None``: the task is the whole group
    chunk: Optional[tuple[int, int]] = None


@dataclass
class Samples:
    """Padded samples of a meta-batch; every tensor starts with [tasks, samples]."""

    features: dict[str, Tensor]
    rating: Tensor
    mask: Tensor  # 1.0 for real samples, 0.0 for padding
    user: Tensor
    item: Tensor

    def to_dtype(self, dtype: torch.dtype) -> "Samples":
        """Cast the floating tensors (ratings, mask, dense features) to ``dtype``."""
        cast = lambda t: t.to(dtype) if t.is_floating_point() else t  # noqa: E731
        return Samples({k: cast(v) for k, v in self.features.items()}, cast(self.rating), cast(self.mask),
                       self.user, self.item)


@dataclass
class TaskBatch:
    support: Samples
    query: Samples
    key: Tensor  # [tasks] task keys (user or item ids)
    scenario: str = "default"
    # [tasks, query] bool: query slots holding unrated candidate items (appended at test time for top-k metrics,
    # see data/candidates.py); their query.mask is 0, so they get predictions but never enter a loss or the MAE
    candidate: Optional[Tensor] = None
    # ranking name -> [tasks, query] bool: which candidates each ranking of the metrics ranks the positives among
    # (``{"pool": sampled, "full": every candidate}``); ``None``: one ranking, ``pool``, over every candidate
    rankings: Optional[dict[str, Tensor]] = None

    def __len__(self) -> int:
        return self.key.shape[0]


def _pad_rows(groups: list[Tensor]) -> tuple[Tensor, Tensor]:
    width = max(1, max(len(g) for g in groups))
    rows = torch.zeros(len(groups), width, dtype=torch.long)
    mask = torch.zeros(len(groups), width)
    for i, g in enumerate(groups):
        rows[i, : len(g)] = g
        mask[i, : len(g)] = 1.0
    return rows, mask


@dataclass
class TaskCollator:
    """Pads tasks of unequal sizes into one ``TaskBatch`` (row 0 fills the padding; the mask removes it).

    A task's sampled negatives (``Task.support_negatives`` / ``query_negatives``: ids of the side opposite
    ``group_by``) follow its rows as samples with rating 0 and mask 1, their features gathered by id (the negative
    item's features and the task user's own), so every algorithm and loss sees them."""

    data: RatingData
    group_by: Literal["user", "item"] = "user"

    def samples(self, groups: list[Tensor], negatives: Optional[list[Optional[Tensor]]] = None,
                keys: Optional[Sequence[int]] = None) -> Samples:
        """[tasks, width] samples: each task's rows (``groups``), then its ``negatives`` (paired with ``keys``)."""
        if negatives is None or all(n is None or len(n) == 0 for n in negatives):
            rows, mask = _pad_rows(groups)
            user, item = self.data.user[rows], self.data.item[rows]
            return Samples(self.data.features(user, item), self.data.rating[rows] * mask, mask, user, item)
        assert keys is not None
        width = max(1, max(len(g) + (0 if n is None else len(n)) for g, n in zip(groups, negatives)))
        user = torch.zeros(len(groups), width, dtype=torch.long)
        item = torch.zeros(len(groups), width, dtype=torch.long)
        rating = torch.zeros(len(groups), width, dtype=self.data.rating.dtype)
        mask = torch.zeros(len(groups), width)
        user[:] = self.data.user[0]
        item[:] = self.data.item[0]
        for i, (g, n, key) in enumerate(zip(groups, negatives, keys)):
            k = len(g)
            user[i, :k], item[i, :k], rating[i, :k] = self.data.user[g], self.data.item[g], self.data.rating[g]
            if n is not None and len(n):
                own, other = (user, item) if self.group_by == "user" else (item, user)
                own[i, k:k + len(n)], other[i, k:k + len(n)] = key, n
                k += len(n)
            mask[i, :k] = 1.0
        return Samples(self.data.features(user, item), rating, mask, user, item)

    def __call__(self, tasks: list[Task]) -> TaskBatch:
        keys = [t.key for t in tasks]
        return TaskBatch(
            support=self.samples([t.support for t in tasks], [t.support_negatives for t in tasks], keys),
            query=self.samples([t.query for t in tasks], [t.query_negatives for t in tasks], keys),
            key=torch.tensor(keys, dtype=torch.long),
            scenario=tasks[0].scenario,
        )
