"""Base classes for the two data plugin kinds: data sets (files -> ``RatingData``) and task samplers
(rows -> ``Task``s)."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import ClassVar, Literal, Optional

import torch
from torch import Tensor

from metarec_pl.data.negatives import NegativeSource, Touched, negatives_seed
from metarec_pl.data.types import DataError, RatingData, Task

log = logging.getLogger(__name__)


class RatingDataset:
    """A source of ratings.  Subclasses take their options as keyword arguments (from ``data.dataset_args``)
    and return everything from ``load()``; ``root`` is the folder holding the files, if any."""

    def __init__(self, root: Optional[str] = None) -> None:
        self.root = root

    def load(self) -> RatingData:
        raise NotImplementedError


class TaskSampler:
    """Groups rows into tasks (one per ``group_by`` id) and splits each into support and query.

    ``query_size`` rows judge the task, the rest (at most ``max_support``) adapt it; groups with fewer than
    ``query_size + min_support`` rows are dropped and counted.  ``order="random"`` draws the query at random
    (seeded); ``order="time"`` keeps the earliest rows as support and the latest as query (preference drift).
    Rows a published split marks as support or query (``RatingData.part``) keep that split: such a group needs at
    least one row of each, and ``query_size``/``min_support``/``max_support``/``order`` do not apply to it.

    Negatives (``data/negatives.py``): ``negatives`` ids of the other side per support row and per query row,
    that the key never interacted with anywhere in the data, are drawn for each task (``None``: 4 for implicit
    data, 0 for explicit), ``negative_sampling`` ``uniform`` or ``popularity`` (1 + training interactions),
    afresh by every ``episode``; ``negative_seed`` shifts their seeds without changing the support/query splits.
    """

    group_by: ClassVar[Literal["user", "item"]] = "user"

    def __init__(self, query_size: int = 10, min_support: int = 1, max_support: Optional[int] = None,
                 order: Literal["random", "time"] = "random", negatives: Optional[int] = None,
                 negative_sampling: Literal["uniform", "popularity"] = "uniform", negative_seed: int = 0) -> None:
        if query_size < 1 or min_support < 1:
            raise DataError(f"data.sampler_args: query_size and min_support must be >= 1, got {query_size}, "
                            f"{min_support}; expected positive numbers of rows")
        if max_support is not None and max_support < 1:
            raise DataError(f"data.sampler_args: max_support must be >= 1 or null, got {max_support}")
        if order not in ("random", "time"):
            raise DataError(f"data.sampler_args: order must be 'random' or 'time', got {order!r}")
        if negatives is not None and negatives < 0:
            raise DataError(f"data.sampler_args: negatives must be >= 0 or null, got {negatives}; expected a number "
                            "of sampled negatives per interaction")
        if negative_sampling not in ("uniform", "popularity"):
            raise DataError(f"data.sampler_args: negative_sampling must be 'uniform' or 'popularity', got "
                            f"{negative_sampling!r}")
        self.query_size, self.min_support, self.max_support, self.order = query_size, min_support, max_support, order
        self.negatives, self.negative_sampling, self.negative_seed = negatives, negative_sampling, negative_seed
        self._context: Optional[tuple[RatingData, Touched, Tensor]] = None  # (the data, touched, popularity)

    def num_negatives(self, data: RatingData) -> int:
        """Negatives per support/query row for ``data``: ``negatives``, else 4 for implicit data and 0 for explicit."""
        if self.negatives is not None:
            return self.negatives
        return 4 if data.feedback == "implicit" else 0

    def negative_source(self, data: RatingData, rows: Tensor) -> Optional[NegativeSource]:
        """Where the tasks of ``rows`` (one scenario) draw negatives: the other side's ids of ``rows``, each key's
        touched ids over every row of ``data``; ``None`` when this sampler draws none for ``data``."""
        if self.num_negatives(data) == 0:
            return None
        if self._context is None or self._context[0] is not data:
            keys, others = (data.user, data.item) if self.group_by == "user" else (data.item, data.user)
            num_keys, num_others = ((data.num_users, data.num_items) if self.group_by == "user"
                                    else (data.num_items, data.num_users))
            train = torch.cat([torch.zeros(0, dtype=torch.long)] + list(data.splits.get("train", {}).values()))
            train = train[data.rating[train] > 0]
            popularity = torch.bincount(others[train], minlength=num_others).double()
            self._context = (data, Touched.build(keys, others, max(num_keys, int(keys.max()) + 1)), popularity)
        _, touched, popularity = self._context
        others = data.item if self.group_by == "user" else data.user
        universe = torch.unique(others[rows])
        weights = (1.0 + popularity[universe]) if self.negative_sampling == "popularity" else None
        return NegativeSource(universe, weights, touched, self.num_negatives(data))

    def with_negatives(self, task: Task, generator: torch.Generator) -> Task:
        """``task`` with negatives drawn for its support and query (``task.negatives_from``; none without it)."""
        source = task.negatives_from
        if source is None:
            return task
        k = source.per_row
        drawn = source.draw(task.key, k * (len(task.support) + len(task.query)), generator)
        n_s = min(len(drawn), k * len(task.support))
        return replace(task, support_negatives=drawn[:n_s], query_negatives=drawn[n_s:])

    @property
    def min_rows(self) -> int:
        """Rows a group needs to become a task (``query_size + min_support``)."""
        return self.query_size + self.min_support

    def too_small(self, data: RatingData, rows: Tensor) -> tuple[int, int]:
        """(groups of ``rows`` that ``tasks`` drops for having fewer than ``min_rows`` rows, or, split by a
        published split, no support or no query row; groups in all)."""
        keys = (data.user if self.group_by == "user" else data.item)[rows]
        counts = torch.bincount(keys)
        present = counts > 0
        small = present & (counts < self.min_rows)
        if data.part is not None:
            part = data.part[rows].long()
            parted = torch.bincount(keys, weights=(part > 0).double(), minlength=len(counts)) > 0
            has_s = torch.bincount(keys, weights=(part == 1).double(), minlength=len(counts)) > 0
            has_q = torch.bincount(keys, weights=(part == 2).double(), minlength=len(counts)) > 0
            small = torch.where(parted, ~(has_s & has_q), small)
        return int(small.sum()), int(present.sum())

    def tasks(self, data: RatingData, rows: Tensor, seed: int, name: str = "") -> list[Task]:
        """The tasks of ``rows`` (one scenario): one per ``group_by`` id with at least ``min_rows`` rows (or with a
        published support/query split), split as the class docstring says; ``seed`` seeds the random splits and
        the negatives.  ``DataError`` when no group is big enough (``name`` says where)."""
        if self.order == "time" and data.time is None:
            raise DataError(f"{name or 'task sampler'}: order='time' needs timestamps, and this data set has none")
        keys = (data.user if self.group_by == "user" else data.item)[rows]
        order = torch.argsort(keys, stable=True)
        rows, keys = rows[order], keys[order]
        uniq, counts = torch.unique_consecutive(keys, return_counts=True)
        gen = torch.Generator().manual_seed(seed)
        groups = torch.split(rows, counts.tolist())
        parts = torch.split(data.part[rows], counts.tolist()) if data.part is not None else [None] * len(groups)
        made = [self._task(data, key, group, part, gen) for key, group, part in zip(uniq.tolist(), groups, parts)]
        tasks = [t for t in made if t is not None]
        source = self.negative_source(data, rows)
        if source is not None:
            negative_gen = torch.Generator().manual_seed(negatives_seed(seed, self.negative_seed))
            tasks = [self.with_negatives(replace(t, negatives_from=source), negative_gen) for t in tasks]
        dropped = len(made) - len(tasks)
        if dropped:
            log.info("%s: dropped %d of %d %ss with fewer than %d rows", name or "sampler", dropped, len(uniq),
                     self.group_by, self.min_rows)
        if not tasks:
            raise DataError(f"{name or 'task sampler'}: no {self.group_by} has the {self.min_rows}"
                            f" rows a task needs (query_size={self.query_size}, min_support={self.min_support})")
        return tasks

    def _task(self, data: RatingData, key: int, group: Tensor, part: Optional[Tensor],
              generator: torch.Generator) -> Optional[Task]:
        """The task of one group's rows (``None``: dropped): a published split kept as it is, else ``order``'s
        split; a random split draws from ``generator`` (so groups must come in key order)."""
        if part is not None and bool((part > 0).any()):  # a published support/query split: kept
            support, query = group[part == 1], group[part == 2]
            return Task(key, support, query) if len(support) and len(query) else None
        if len(group) < self.min_rows:
            return None
        if self.order == "time":
            group = group[torch.argsort(data.time[group], stable=True)]
            support, query = group[: -self.query_size], group[-self.query_size:]
            if self.max_support is not None:
                support = support[-self.max_support:]  # the most recent history
            return Task(key, support, query)
        return Task(key, *self.split(group, generator), pool=group)

    def split(self, group: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """A random (support, query) split of a group's rows: ``query_size`` rows judge, the rest adapt."""
        group = group[torch.randperm(len(group), generator=generator)]
        query, support = group[: self.query_size], group[self.query_size:]
        return (support if self.max_support is None else support[: self.max_support]), query

    def episode(self, task: Task, seed: int, resplit: bool = True) -> Task:
        """The same task with a new split drawn from its rows (seeded by ``seed``; not when ``resplit`` is false or
        the task has no ``pool``: ``order="time"`` or a published split) and new negatives (when it has any)."""
        if resplit and task.pool is not None:
            support, query = self.split(task.pool, torch.Generator().manual_seed(seed))
            task = replace(task, support=support, query=query)
        if task.negatives_from is not None:
            task = self.with_negatives(task, torch.Generator().manual_seed(negatives_seed(seed, self.negative_seed)))
        return task


class UserTaskSampler(TaskSampler):
    """User-as-task: each user is a task, the items they rated are its samples."""

    group_by = "user"


class ItemTaskSampler(TaskSampler):
    """Item-as-task: each item is a task, the users who rated it are its samples."""

    group_by = "item"
