"""Task sampler ``next-item``: next-item tasks for sequence networks (``text-sequence``, ``id-sequence``,
``metatl``) through ``MetaDataModule`` and so through ``metarec fit``.

Why a sampler of its own: a sequence network scores a candidate *given the items before it*; the rating samplers
gather features per (user, item) row.  This sampler makes each user's rows, in time order, a next-item task, and
its collator (``NextItemCollator``) builds the samples of ``data/sequences.py`` (``seq_history``, ``seq_item``):

* **training** (the ``train`` split): every epoch, each user with at least K + Q rows gives one window of K
  consecutive interactions (the support) and the Q after it (the query), at a random place of the user's
  history (``windows: random``) or at its start (``first``, as a cold user's task); negatives: ``negatives``
  per support item and ``query_negatives`` per query item, drawn afresh every epoch from the training rows'
  items the user never interacted with;
* **validation / test**: a user's first K rows are the support, the next Q the query (with protocol
  ``sequential-cold`` these are exactly a cold user's rows); the support's ``negatives`` per item are drawn from
  the catalogue outside the support only (the user's future is unknown when adapting); the query items are ranked
  among **every** catalogue item but the support and query (``full``) and among ``eval_negatives`` items drawn
  outside the user's whole history (``pool``), seeded per (``seed``, user), so the metrics are
  ``val/full/ndcg@10``, ``test/pool/hit@10``, ... (``metrics.py``).

Targets are 1 (an interaction) and 0 (a sampled negative), whatever the data's ratings: the facts this sampler
gives the model (``info_facts``) say implicit feedback, like threshold 0.5 (use ``loss: bce``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal, Optional

import torch
from torch import Tensor

from metarec_pl.data.base import TaskSampler
from metarec_pl.data.candidates import touched_items
from metarec_pl.data.negatives import Touched
from metarec_pl.data.sequences import SequenceTask, assemble, draw
from metarec_pl.data.types import DataError, RatingData, Task, TaskBatch


def _seed_of(*parts: int) -> int:
    """A generator seed from integers (Python's hash of an int tuple is the same in every process)."""
    return hash(parts) % (2**63)


class NextItemSampler(TaskSampler):
    """The registered task sampler ``next-item`` (see the module docstring).

    Args:
        support_size: K, the interactions a task adapts on (a cold user's first K).
        query_size: Q, the next interactions that judge it.
        negatives: sampled negatives per support item (training and evaluation).
        query_negatives: sampled negatives per query item in training (the query's loss).
        eval_negatives: the size of the sampled ``pool`` each query item is ranked in at validation and test.
        windows: where a training window starts: ``random`` (anew every epoch) or ``first``.
        negative_seed: shifts the seeds of every negative without changing anything else.
    ``DataError`` (one line) for a bad option.
    """

    group_by = "user"
    order = "time"  # what protocol sequential-cold asks of its sampler

    def __init__(self, support_size: int = 3, query_size: int = 1, negatives: int = 4, query_negatives: int = 20,
                 eval_negatives: int = 100, windows: Literal["random", "first"] = "random",
                 negative_seed: int = 0) -> None:
        for name, value, low in (("support_size", support_size, 1), ("query_size", query_size, 1),
                                 ("negatives", negatives, 1), ("query_negatives", query_negatives, 1),
                                 ("eval_negatives", eval_negatives, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise DataError(f"data.sampler_args.{name}: {value!r}; expected an integer >= {low} (sampler "
                                f"next-item)")
        if windows not in ("random", "first"):
            raise DataError(f"data.sampler_args.windows: {windows!r}; expected 'random' or 'first' (sampler "
                            "next-item)")
        super().__init__(query_size=query_size, min_support=support_size, max_support=support_size, order="time",
                         negatives=negatives, negative_seed=negative_seed)
        self.support_size, self.query_negatives, self.eval_negatives = support_size, query_negatives, eval_negatives
        self.windows = windows
        self._touched: Optional[tuple[RatingData, Touched, Tensor]] = None

    def info_facts(self, data: RatingData) -> dict[str, Any]:
        """The facts of ``DataInfo`` this sampler's targets change: 1 / 0 targets are implicit feedback."""
        n = self.negatives * self.support_size + self.query_negatives * self.query_size
        return dict(feedback="implicit", rating_range=(0.0, 1.0), rating_levels=(0.0, 1.0), like_threshold=0.5,
                    rating_mean=(self.support_size + self.query_size) / (self.support_size + self.query_size + n))

    def context(self, data: RatingData) -> tuple[Touched, Tensor]:
        """(every item each user has a row for, the training rows' items), measured once per data."""
        if self._touched is None or self._touched[0] is not data:
            train = torch.cat([torch.zeros(0, dtype=torch.long)] + list(data.splits.get("train", {}).values()))
            self._touched = (data, touched_items(data), torch.unique(data.item[train]))
        return self._touched[1], self._touched[2]

    def tasks(self, data: RatingData, rows: Tensor, seed: int, name: str = "") -> list[Task]:
        """One task per user of ``rows`` with at least K + Q of them: the first K (time order, ties by row) the
        support, the next Q the query; ``pool``: all of them in time order (a training window's source)."""
        if data.time is None:
            raise DataError(f"{name or 'sampler next-item'}: next-item tasks need timestamps, and this data set "
                            "has none")
        self.context(data)
        rows = torch.sort(rows).values
        rows = rows[torch.argsort(data.time[rows], stable=True)]
        rows = rows[torch.argsort(data.user[rows], stable=True)]
        users, counts = torch.unique_consecutive(data.user[rows], return_counts=True)
        k, q = self.support_size, self.query_size
        tasks = [Task(int(u), g[:k], g[k:k + q], pool=g)
                 for u, g in zip(users.tolist(), torch.split(rows, counts.tolist())) if len(g) >= k + q]
        if not tasks:
            raise DataError(f"{name or 'sampler next-item'}: no user has the {k} + {q} interactions a next-item "
                            f"task needs (data.sampler_args support_size={k}, query_size={q}); expected them equal "
                            "to the protocol's support_size and query_size (sequential-cold keeps only those rows "
                            "of a cold user)")
        return tasks

    def training_tasks(self, tasks: list[Task], seed: int) -> list[Task]:
        """The training tasks as epoch 0's episodes (``Episodes`` keeps epoch 0's tasks as they are given),
        seeded as ``Episodes`` seeds later epochs."""
        return [self.episode(t, hash((seed, 0, i))) for i, t in enumerate(tasks)]

    def episode(self, task: Task, seed: int, resplit: bool = True) -> Task:
        """A training task's window of this epoch (``windows``; seeded by ``seed``) with fresh negatives, drawn
        from the training items the user never interacted with."""
        assert self._touched is not None, "episode() before tasks(): the data module calls tasks() first"
        if task.pool is None or len(task.pool) < self.support_size + self.query_size:
            return task
        gen = torch.Generator().manual_seed(_seed_of(seed, self.negative_seed))
        k, q = self.support_size, self.query_size
        start = 0
        if self.windows == "random" and resplit:
            start = int(torch.randint(len(task.pool) - k - q + 1, (), generator=gen))
        support, query = task.pool[start:start + k], task.pool[start + k:start + k + q]
        _, touched, items = self._touched
        drawn = draw(items, touched.of(task.key), self.negatives * k + self.query_negatives * q, gen)
        return replace(task, support=support, query=query, support_negatives=drawn[:self.negatives * k],
                       query_negatives=drawn[self.negatives * k:])

    def collator(self, data: RatingData, stage: str, seed: int) -> "NextItemCollator":
        """The collate function of ``stage``'s loader (``train``: the episodes' windows; else evaluation)."""
        touched, _ = self.context(data)
        catalogue = None if stage == "train" else torch.unique(data.item)
        return NextItemCollator(data, touched, self, catalogue, seed)


class NextItemCollator:
    """Tasks (row indices) -> a padded next-item ``TaskBatch`` (``data/sequences.py``'s samples); with a
    ``catalogue`` (evaluation) the blind support negatives, the full-catalogue candidates and the sampled pool are
    drawn here, seeded per (seed, user), so a user's numbers do not depend on the batch it is in."""

    def __init__(self, data: RatingData, touched: Touched, sampler: NextItemSampler, catalogue: Optional[Tensor],
                 seed: int) -> None:
        self.data, self.touched, self.sampler, self.catalogue, self.seed = data, touched, sampler, catalogue, seed

    def __call__(self, tasks: list[Task]) -> TaskBatch:
        item = self.data.item
        seq = [SequenceTask(t.key, item[t.support], item[t.query]) for t in tasks]
        if self.catalogue is None:
            return assemble(seq, [t.support_negatives for t in tasks], [t.query_negatives for t in tasks],
                            scenario=tasks[0].scenario)
        s = self.sampler
        support_neg, candidates, pools = [], [], []
        for t in seq:
            gen = torch.Generator().manual_seed(_seed_of(self.seed, s.negative_seed, t.user))
            support_neg.append(draw(self.catalogue, t.support, s.negatives * len(t.support), gen))
            candidates.append(self.catalogue[~torch.isin(self.catalogue, torch.cat([t.support, t.query]))])
            history = torch.cat([self.touched.of(t.user), t.support, t.query])
            pools.append(draw(self.catalogue, history, s.eval_negatives, gen))
        batch = assemble(seq, support_neg, [t.query[:0] for t in seq], candidates=candidates,
                         scenario=tasks[0].scenario)
        in_pool = torch.zeros_like(batch.candidate)
        for i, pool in enumerate(pools):
            in_pool[i] = batch.candidate[i] & torch.isin(batch.query.item[i], pool)
        return replace(batch, rankings={"full": batch.candidate, "pool": in_pool})
