"""Candidate pools for top-k evaluation: items a test user never rated, appended to the query set.

Ranking only inside a 10-item query set makes every hit rate ~1.0.  Instead each user-as-task gets a pool of
items the user has **no rating for anywhere in the data** (so never a training, support or query item), drawn
from the items of the task's own scenario rows (warm items for warm/user-cold, cold items for the cold-item
scenarios): ``size`` of them sampled without replacement (seeded, fixed per task), or all of them (``"all"``).

``CandidateCollator`` appends the pool to each task's query set with ``query.mask = 0`` and
``TaskBatch.candidate = True``: every algorithm scores the candidates through its ordinary adaptation path
(gradient-based or ``Algorithm.run``), while losses and the MAE ignore them (they follow ``query.mask``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

import torch
from torch import Tensor

from metarec_pl.data.types import DataError, RatingData, Samples, Task, TaskBatch, TaskCollator

PoolSize = Union[int, str]


def check_pool_size(size: PoolSize) -> None:
    if not (size == "all" or (isinstance(size, int) and not isinstance(size, bool) and size >= 1)):
        raise DataError(f"data.candidates: expected a positive number of items or 'all', got {size!r}")


def rated_items(data: RatingData, users: Tensor) -> dict[int, Tensor]:
    """User id -> every item that user rated anywhere in the data (one sort, no per-user scan)."""
    order = torch.argsort(data.user, stable=True)
    uniq, counts = torch.unique_consecutive(data.user[order], return_counts=True)
    groups = dict(zip(uniq.tolist(), torch.split(data.item[order], counts.tolist())))
    return {u: groups.get(u, torch.zeros(0, dtype=torch.long)) for u in users.tolist()}


def draw_pools(data: RatingData, tasks: list[Task], rows: Tensor, size: PoolSize, seed: int) -> dict[int, Tensor]:
    """User id -> candidate items for each task of one scenario (``rows``: that scenario's rating rows)."""
    check_pool_size(size)
    items = torch.unique(data.item[rows])
    rated = rated_items(data, torch.tensor([t.key for t in tasks], dtype=torch.long))
    gen = torch.Generator().manual_seed(seed)
    pools = {}
    for task in tasks:
        unrated = items[~torch.isin(items, rated[task.key])]
        if size != "all" and len(unrated) > size:
            unrated = unrated[torch.randperm(len(unrated), generator=gen)[:size]]
        pools[task.key] = unrated
    return pools


@dataclass
class CandidateCollator(TaskCollator):
    """A ``TaskCollator`` that appends each task's candidate pool (``pools[scenario][user]``) to its query set."""

    pools: dict[str, dict[int, Tensor]] = field(default_factory=dict)

    def __call__(self, tasks: list[Task]) -> TaskBatch:
        batch = super().__call__(tasks)
        scenario = batch.scenario
        if scenario not in self.pools:
            raise DataError(f"candidate pools: none were drawn for scenario {scenario!r}")
        groups = [self.pools[scenario][t.key] for t in tasks]
        width = max(1, max(len(g) for g in groups))
        items = torch.zeros(len(tasks), width, dtype=torch.long)
        is_candidate = torch.zeros(len(tasks), width, dtype=torch.bool)
        for i, g in enumerate(groups):
            items[i, : len(g)] = g
            is_candidate[i, : len(g)] = True
        users = batch.key[:, None].expand_as(items)
        q = batch.query
        feats = self.data.features(users, items)
        query = Samples(
            features={k: torch.cat([v, feats[k].to(v.dtype)], dim=1) for k, v in q.features.items()},
            rating=torch.cat([q.rating, torch.zeros(items.shape, dtype=q.rating.dtype)], dim=1),
            mask=torch.cat([q.mask, torch.zeros(items.shape, dtype=q.mask.dtype)], dim=1),
            user=torch.cat([q.user, users], dim=1),
            item=torch.cat([q.item, items], dim=1),
        )
        candidate = torch.cat([torch.zeros(q.mask.shape, dtype=torch.bool), is_candidate], dim=1)
        return TaskBatch(batch.support, query, batch.key, scenario, candidate=candidate)
