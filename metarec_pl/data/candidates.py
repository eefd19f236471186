"""Candidates for the rankings at validation and test: items a user never touched, appended to the query set.

Ranking only inside a 10-item query set makes every hit rate ~1.0.  Instead each user-as-task's query positives
are ranked among items the user has **no row for anywhere in the data** (never a training, support or query item;
for implicit data: never an interaction), taken from the items of the task's own scenario rows (warm items for
warm/user-cold, cold items for the cold-item scenarios):

* ``pool`` (``data.candidates: N``): N of them sampled without replacement (seeded per (seed, scenario, user), so
  the same whatever else is evaluated), or all of them (``"all"``);
* ``full`` (``data.full_catalogue: true``): every one of them, the full catalogue minus what the user touched.

Sampled query negatives (implicit data, ``data/negatives.py``) are query samples (rating 0, mask 1), not
candidates; the candidates are chosen without looking at them, so an item may be both.

``CandidateCollator`` appends the candidates (with ``full``: every untouched item, the pool a marked subset of
them) to each task's query set with ``query.mask = 0``, ``TaskBatch.candidate = True`` on every appended slot and
``TaskBatch.rankings = {"pool": ..., "full": ...}`` (whichever were asked for; [tasks, query] bool each): every
algorithm scores the candidates through its ordinary adaptation path, while losses and the MAE ignore them (they
follow ``query.mask``).  The masks are built per batch from a [tasks, scenario items] table (no loop over items).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

import torch
from torch import Tensor

from metarec_pl.data.negatives import Touched
from metarec_pl.data.types import DataError, RatingData, Samples, TaskBatch, TaskCollator

PoolSize = Union[int, str]


def check_pool_size(size: PoolSize) -> None:
    if not (size == "all" or (isinstance(size, int) and not isinstance(size, bool) and size >= 1)):
        raise DataError(f"data.candidates: expected a positive number of items or 'all', got {size!r}")


def touched_items(data: RatingData) -> Touched:
    """Every item each user has a row for anywhere in the data (one sort, no per-user scan)."""
    return Touched.build(data.user, data.item, data.num_users)


@dataclass
class CandidateSource:
    """The candidates of one scenario: ``items`` [U] (the scenario's items, ascending), what each user
    ``touched``, the pool ``size`` (``None``: no pool; ``"all"``: every untouched item), whether the ``full``
    catalogue is ranked too, and the ``seed`` of the pools."""

    items: Tensor
    touched: Touched
    size: Optional[PoolSize]
    full: bool
    seed: int

    def __post_init__(self) -> None:
        top = max(int(self.items.max()) if len(self.items) else 0,
                  int(self.touched.indices.max()) if len(self.touched.indices) else 0)
        self.position = torch.full((top + 1,), -1, dtype=torch.long)
        self.position[self.items] = torch.arange(len(self.items))

    def untouched(self, users: Tensor) -> Tensor:
        """[B, U] bool: which of the scenario's items each user never touched."""
        free = torch.ones(len(users), len(self.items), dtype=torch.bool)
        which, item = self.touched.rows_of(users)
        pos = self.position[item]
        keep = pos >= 0
        free[which[keep], pos[keep]] = False
        return free

    def pool(self, users: Tensor, free: Tensor) -> Tensor:
        """[B, U] bool: each user's sampled pool, ``size`` of their untouched items (all when fewer)."""
        if self.size == "all":
            return free
        n = min(int(self.size), len(self.items))
        keys = torch.stack([torch.rand(len(self.items), generator=torch.Generator().manual_seed(
            hash((self.seed, int(u))))) for u in users.tolist()]) if len(users) else free.float()
        keys = keys.masked_fill(~free, 2.0)  # untouched items first, in a seeded random order
        chosen = torch.zeros_like(free)
        chosen.scatter_(1, torch.argsort(keys, dim=1)[:, :n], True)
        return chosen & free

    def slots(self, users: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """(items [B, W], appended [B, W] bool, rankings name -> [B, W] bool) of the candidates of ``users``."""
        free = self.untouched(users)
        rankings = {}
        shown = free if self.full else None
        if self.size is not None:
            pool = self.pool(users, free)
            shown = pool if shown is None else shown
        assert shown is not None
        counts = shown.sum(1)
        width = max(1, int(counts.max()) if len(counts) else 1)
        order = torch.argsort((~shown).to(torch.int8), dim=1, stable=True)[:, :width]  # shown items first, ascending
        appended = torch.arange(width)[None, :] < counts[:, None]
        if self.size is not None:
            rankings["pool"] = pool.gather(1, order) & appended
        if self.full:
            rankings["full"] = appended.clone()
        return self.items[order], appended, rankings


@dataclass
class CandidateCollator(TaskCollator):
    """A ``TaskCollator`` that appends each task's candidates (``sources[scenario]``) to its query set."""

    sources: dict[str, CandidateSource] = field(default_factory=dict)

    def __call__(self, tasks) -> TaskBatch:
        batch = super().__call__(tasks)
        scenario = batch.scenario
        if scenario not in self.sources:
            raise DataError(f"candidate pools: none were drawn for scenario {scenario!r}")
        items, appended, rankings = self.sources[scenario].slots(batch.key)
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
        before = torch.zeros(q.mask.shape, dtype=torch.bool)
        candidate = torch.cat([before, appended], dim=1)
        return TaskBatch(batch.support, query, batch.key, scenario, candidate=candidate,
                         rankings={name: torch.cat([before, m], dim=1) for name, m in rankings.items()})
