"""Next-item tasks for sequence networks (``text-sequence``): users' time-ordered item lists -> ``TaskBatch``.

Why: a sequence network scores a candidate item *given the items before it*, which the per-(user, item) feature
gathering of ``TaskCollator`` cannot express.  Here each sample carries its own context: ``seq_history``
``[L]`` (item codes + 1, time order, right-padded with 0) and the candidate ``seq_item``.  A task with support
items ``s_1..s_K`` and query items ``q_1..q_Q`` becomes

* support samples: for t = 1..K, ``s_t`` after ``s_1..s_{t-1}`` (rating 1), then ``support_negatives`` items
  after the same context (rating 0);
* query samples: every ``q_j`` after ``s_1..s_K`` (the support is the whole context: no query item is ever in it),
  then ``query_negatives`` items after the same context;

so the shared inner loop (``metarec_pl.inner``) adapts on next-item prediction within the support and is judged
on the next items, and the masks make tasks of different sizes exact.  Negatives are drawn uniformly without
replacement from ``pool`` minus ``exclude`` (the user's known items); with ``blind_support`` the support's
negatives avoid only the support (nothing a model could not know when it adapts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from metarec_pl.data.types import DataError, RatingData, Samples, TaskBatch

HISTORY = "seq_history"  # [..., L] long: the context's item codes + 1, time order, right-padded with 0
CANDIDATE = "seq_item"  # [...] long: the scored item's code


@dataclass(frozen=True)
class SequenceTask:
    """One user's next-item task: ``support`` and ``query`` item codes [K], [Q] in time order."""

    user: int
    support: Tensor
    query: Tensor


def user_sequences(data: RatingData, rows: Tensor) -> dict[int, Tensor]:
    """user -> item codes of ``rows`` in time order (ties by row order).  ``DataError`` without timestamps."""
    if data.time is None:
        raise DataError("sequence tasks need timestamps, and this data set has none")
    rows = torch.sort(rows).values
    rows = rows[torch.argsort(data.time[rows], stable=True)]
    rows = rows[torch.argsort(data.user[rows], stable=True)]
    users, counts = torch.unique_consecutive(data.user[rows], return_counts=True)
    return {int(u): data.item[g] for u, g in zip(users, torch.split(rows, counts.tolist()))}


def cold_tasks(data: RatingData, rows: Tensor, support_size: int) -> list[SequenceTask]:
    """The tasks of a ``sequential-cold`` split: each user's first ``support_size`` items, then the rest."""
    return [SequenceTask(u, seq[:support_size], seq[support_size:]) for u, seq in user_sequences(data, rows).items()]


def draw(pool: Tensor, exclude: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """``n`` distinct items of ``pool`` (distinct codes) not in ``exclude``, uniformly without replacement."""
    allowed = pool[~torch.isin(pool, exclude)]
    if len(allowed) < n:
        raise DataError(f"sequence negatives: {len(allowed)} candidate items left, {n} needed")
    return allowed[torch.randperm(len(allowed), generator=generator)[:n]]


def _task_samples(task: SequenceTask, support_neg: Tensor, query_neg: Tensor, width: int) -> tuple[list, list]:
    """([(history, item, rating)] of the support, same of the query) for one task."""
    def padded(items: Tensor) -> Tensor:
        out = torch.zeros(width, dtype=torch.long)
        out[:len(items)] = items + 1
        return out

    support = []
    for t, item in enumerate(task.support.tolist()):
        context = padded(task.support[:t])
        support += [(context, item, 1.0)] + [(context, int(n), 0.0) for n in support_neg[t]]
    context = padded(task.support)
    query = []
    for j, item in enumerate(task.query.tolist()):
        query += [(context, item, 1.0)] + [(context, int(n), 0.0) for n in query_neg[j]]
    return support, query


def _samples(per_task: list[list], users: list[int], width: int) -> Samples:
    """[tasks, samples] from per-task lists of (context, item, rating[, mask]) (mask 1 when not given)."""
    n = max(1, max(len(s) for s in per_task))
    history = torch.zeros(len(per_task), n, width, dtype=torch.long)
    item = torch.zeros(len(per_task), n, dtype=torch.long)
    rating, mask = torch.zeros(len(per_task), n), torch.zeros(len(per_task), n)
    for i, samples in enumerate(per_task):
        if not samples:
            continue
        contexts = torch.stack([sample[0] for sample in samples])
        history[i, :len(samples)] = contexts
        item[i, :len(samples)] = torch.tensor([sample[1] for sample in samples], dtype=torch.long)
        rating[i, :len(samples)] = torch.tensor([sample[2] for sample in samples])
        mask[i, :len(samples)] = torch.tensor([sample[3] if len(sample) > 3 else 1.0 for sample in samples])
    user = torch.tensor(users, dtype=torch.long)[:, None].expand(-1, n)
    return Samples({HISTORY: history, CANDIDATE: item}, rating, mask, user, item)


def sequence_batch(tasks: Sequence[SequenceTask], pool: Tensor, support_negatives: int, query_negatives: int,
                   generator: torch.Generator, exclude: Optional[dict[int, Tensor]] = None,
                   blind_support: bool = False) -> TaskBatch:
    """A padded meta-batch of next-item tasks (see the module docstring).  ``exclude``: user -> items never drawn
    as that user's negatives (default: the task's own support and query items).  ``blind_support``: the support
    negatives avoid only the task's support items, i.e. they are drawn from what a deployed model knows when it
    adapts (a cold user's query and later items are the future: avoiding them would tell the model which items
    they are not, so a query item may be drawn as a support negative); the query negatives still avoid the
    support, the query and ``exclude``.  Use it for evaluation; training windows may avoid the whole history."""
    support_neg, query_neg = [], []
    for task in tasks:
        own = torch.cat([task.support, task.query])
        banned = own if exclude is None else torch.cat([own, exclude.get(task.user, own[:0])])
        s_banned = task.support if blind_support else banned
        support_neg.append(draw(pool, s_banned, support_negatives * len(task.support), generator))
        query_neg.append(draw(pool, banned, query_negatives * len(task.query), generator))
    return assemble(tasks, support_neg, query_neg)


def assemble(tasks: Sequence[SequenceTask], support_negatives: Sequence[Tensor], query_negatives: Sequence[Tensor],
             candidates: Optional[Sequence[Tensor]] = None, scenario: str = "sequential-cold") -> TaskBatch:
    """The padded ``TaskBatch`` of ``tasks`` with the given negatives (per task: [K * n] items, n per support
    item, and [Q * m], m per query item; see the module docstring).  ``candidates`` (per task: item codes) are
    appended to each query after its samples, with the whole support as context, rating 0 and mask 0, and
    marked in ``TaskBatch.candidate``: items to rank, never in a loss (``data/candidates.py``'s convention)."""
    width = max(1, max(len(t.support) for t in tasks))
    supports, queries = [], []
    for i, task in enumerate(tasks):
        s_neg = support_negatives[i].view(len(task.support), -1)
        q_neg = query_negatives[i].view(len(task.query), -1)
        s, q = _task_samples(task, s_neg, q_neg, width)
        if candidates is not None:
            context = q[0][0] if q else torch.zeros(width, dtype=torch.long)
            q = q + [(context, int(c), 0.0, 0.0) for c in candidates[i]]
        supports.append(s)
        queries.append(q)
    users = [t.user for t in tasks]
    query = _samples(queries, users, width)
    candidate = None
    if candidates is not None:
        candidate = torch.zeros_like(query.mask, dtype=torch.bool)
        for i, (q, c) in enumerate(zip(queries, candidates)):
            candidate[i, len(q) - len(c):len(q)] = True
    return TaskBatch(_samples(supports, users, width), query, torch.tensor(users, dtype=torch.long),
                     scenario=scenario, candidate=candidate)


def training_windows(sequences: dict[int, Tensor], users: Sequence[int], support_size: int, query_size: int,
                     generator: torch.Generator, start: str = "random") -> list[SequenceTask]:
    """One window per user of ``users`` (each with at least K + Q items): K support items, then Q query items,
    starting at the user's first item (``start="first"``, as a cold user's task) or at a random place."""
    tasks = []
    for u in users:
        seq = sequences[u]
        last = len(seq) - support_size - query_size
        if last < 0:
            raise DataError(f"training_windows: user {u} has {len(seq)} items, {support_size + query_size} needed")
        at = 0 if start == "first" else int(torch.randint(last + 1, (), generator=generator))
        tasks.append(SequenceTask(u, seq[at:at + support_size], seq[at + support_size:at + support_size + query_size]))
    return tasks
