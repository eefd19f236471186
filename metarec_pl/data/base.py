"""Base classes for the two data plugin kinds: data sets (files -> ``RatingData``) and task samplers
(rows -> ``Task``s)."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import ClassVar, Literal, Optional

import torch
from torch import Tensor

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
    """

    group_by: ClassVar[Literal["user", "item"]] = "user"

    def __init__(self, query_size: int = 10, min_support: int = 1, max_support: Optional[int] = None,
                 order: Literal["random", "time"] = "random") -> None:
        if query_size < 1 or min_support < 1:
            raise DataError(f"data.sampler_args: query_size and min_support must be >= 1, got {query_size}, "
                            f"{min_support}; expected positive numbers of rows")
        if max_support is not None and max_support < 1:
            raise DataError(f"data.sampler_args: max_support must be >= 1 or null, got {max_support}")
        if order not in ("random", "time"):
            raise DataError(f"data.sampler_args: order must be 'random' or 'time', got {order!r}")
        self.query_size, self.min_support, self.max_support, self.order = query_size, min_support, max_support, order

    @property
    def min_rows(self) -> int:
        """Rows a group needs to become a task (``query_size + min_support``)."""
        return self.query_size + self.min_support

    def too_small(self, data: RatingData, rows: Tensor) -> tuple[int, int]:
        """(groups of ``rows`` that ``tasks`` drops for having fewer than ``min_rows`` rows, groups in all)."""
        keys = (data.user if self.group_by == "user" else data.item)[rows]
        counts = torch.bincount(keys)
        present = counts > 0
        return int((present & (counts < self.min_rows)).sum()), int(present.sum())

    def tasks(self, data: RatingData, rows: Tensor, seed: int, name: str = "") -> list[Task]:
        if self.order == "time" and data.time is None:
            raise DataError(f"{name or 'task sampler'}: order='time' needs timestamps, and this data set has none")
        keys = (data.user if self.group_by == "user" else data.item)[rows]
        order = torch.argsort(keys, stable=True)
        rows, keys = rows[order], keys[order]
        uniq, counts = torch.unique_consecutive(keys, return_counts=True)
        gen = torch.Generator().manual_seed(seed)
        tasks, dropped = [], 0
        for key, group in zip(uniq.tolist(), torch.split(rows, counts.tolist())):
            if len(group) < self.query_size + self.min_support:
                dropped += 1
                continue
            if self.order == "time":
                group = group[torch.argsort(data.time[group], stable=True)]
                support, query = group[: -self.query_size], group[-self.query_size:]
                if self.max_support is not None:
                    support = support[-self.max_support:]  # the most recent history
                tasks.append(Task(key, support, query))
            else:
                tasks.append(Task(key, *self.split(group, gen), pool=group))
        if dropped:
            log.info("%s: dropped %d of %d %ss with fewer than %d rows", name or "sampler", dropped, len(uniq),
                     self.group_by, self.query_size + self.min_support)
        if not tasks:
            raise DataError(f"{name or 'task sampler'}: no {self.group_by} has the {self.query_size + self.min_support}"
                            f" rows a task needs (query_size={self.query_size}, min_support={self.min_support})")
        return tasks

    def split(self, group: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """A random (support, query) split of a group's rows: ``query_size`` rows judge, the rest adapt."""
        group = group[torch.randperm(len(group), generator=generator)]
        query, support = group[: self.query_size], group[self.query_size:]
        return (support if self.max_support is None else support[: self.max_support]), query

    def episode(self, task: Task, seed: int) -> Task:
        """The same task with a new split drawn from its rows (seeded by ``seed``); a task without a ``pool``
        (``order="time"``: support before query) is returned as it is."""
        if task.pool is None:
            return task
        support, query = self.split(task.pool, torch.Generator().manual_seed(seed))
        return replace(task, support=support, query=query)


class UserTaskSampler(TaskSampler):
    """User-as-task: each user is a task, the items they rated are its samples."""

    group_by = "user"


class ItemTaskSampler(TaskSampler):
    """Item-as-task: each item is a task, the users who rated it are its samples."""

    group_by = "item"
