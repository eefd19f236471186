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

    Heavy groups in training (``chunk_rows``, ``order="random"``; ``None``: off): a training group with n >
    ``chunk_rows`` rows becomes k = ceil(n / ``chunk_rows``) tasks per epoch.  Every episode shuffles the group's
    rows afresh (seeded by the data seed, the epoch and the group's key, ``chunk_seed``) and deals them into k
    near-equal parts, one per task; each part's first ``query_size`` rows are its query, the rest its support.
    So every training row is in exactly one task of every epoch, and no task holds more than ``chunk_rows`` rows
    (padding stays bounded).  Validation and test tasks are never chunked (``training_tasks`` is applied to the
    training split only).
    """

    group_by: ClassVar[Literal["user", "item"]] = "user"

    def __init__(self, query_size: int = 10, min_support: int = 1, max_support: Optional[int] = None,
                 order: Literal["random", "time"] = "random", negatives: Optional[int] = None,
                 negative_sampling: Literal["uniform", "popularity"] = "uniform", negative_seed: int = 0,
                 chunk_rows: Optional[int] = None) -> None:
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
        if chunk_rows is not None and chunk_rows < 2 * (query_size + min_support):
            raise DataError(f"data.sampler_args: chunk_rows must be >= 2 * (query_size + min_support) = "
                            f"{2 * (query_size + min_support)} (so every part of a heavy group is a whole task) or "
                            f"null, got {chunk_rows}")
        self.query_size, self.min_support, self.max_support, self.order = query_size, min_support, max_support, order
        self.chunk_rows = chunk_rows
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

    def training_tasks(self, tasks: list[Task], seed: int) -> list[Task]:
        """The training tasks with each heavy group (more than ``chunk_rows`` rows in its ``pool``) replaced by
        its k = ceil(n / ``chunk_rows``) chunk tasks, split as in epoch 0 (``chunk_seed(seed, 0, key)``); the
        other tasks unchanged.  ``chunk_rows`` ``None`` or ``order="time"``: ``tasks`` as they are."""
        if self.chunk_rows is None or self.order == "time":
            return tasks
        out = []
        for task in tasks:
            n = 0 if task.pool is None else len(task.pool)
            if n <= self.chunk_rows:
                out.append(task)
                continue
            k = -(-n // self.chunk_rows)
            out += [self.episode(replace(task, chunk=(j, k)), chunk_seed(seed, 0, task.key)) for j in range(k)]
        return out

    def chunk_split(self, task: Task, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(support, query) of chunk task ``task.chunk = (j, k)``: part j of its pool shuffled by ``generator``
        and dealt into k near-equal parts; the part's first ``query_size`` rows are the query."""
        j, k = task.chunk
        part = torch.tensor_split(task.pool[torch.randperm(len(task.pool), generator=generator)], k)[j]
        support = part[self.query_size:]
        return (support if self.max_support is None else support[: self.max_support]), part[: self.query_size]

    def episode(self, task: Task, seed: int, resplit: bool = True) -> Task:
        """The same task with a new split drawn from its rows (seeded by ``seed``; not when ``resplit`` is false or
        the task has no ``pool``: ``order="time"`` or a published split) and new negatives (when it has any).
        A chunk task (``task.chunk``) takes its part of the pool shuffled by ``seed``, which its group's other
        chunk tasks share (``chunk_seed``), so the parts never overlap."""
        if resplit and task.pool is not None:
            generator = torch.Generator().manual_seed(seed)
            support, query = self.chunk_split(task, generator) if task.chunk else self.split(task.pool, generator)
            task = replace(task, support=support, query=query)
        if task.negatives_from is not None:
            task = self.with_negatives(task, torch.Generator().manual_seed(negatives_seed(seed, self.negative_seed)))
        return task


def chunk_seed(seed: int, epoch: int, key: int) -> int:
    """The seed of a heavy group's shuffle in ``epoch`` (shared by its chunk tasks; ``TaskSampler.chunk_rows``)."""
    return hash((seed, epoch, -1, key))  # a 4-tuple: never the (seed, epoch, index) of an ordinary episode


class UserTaskSampler(TaskSampler):
    """User-as-task: each user is a task, the items they rated are its samples."""

    group_by = "user"


class ItemTaskSampler(TaskSampler):
    """Item-as-task: each item is a task, the users who rated it are its samples."""

    group_by = "item"
