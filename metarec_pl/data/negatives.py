"""Sampled negatives: ids a task's key never interacted with, drawn afresh for every episode (none stored).

Implicit data (clicks, plays) stores only its interactions; a model also needs examples of what a user did *not*
choose.  The task sampler (``data/base.py``, ``sampler_args.negatives``) draws them per task: ``negatives`` ids
per support row and per query row, from the ids of the other side (items for a user task) that occur in the task's
own scenario rows (training items for training tasks, a cold scenario's items for its tasks), never one the key has
a row with **anywhere in the data** (training, support or query of any split).  ``negative_sampling``:

* ``uniform``: every allowed id equally likely;
* ``popularity``: in proportion to 1 + the id's number of training interactions (rows of the ``train`` stage with
  rating > 0; the 1 keeps ids with none, e.g. cold items, drawable).

Within a task the draw is without replacement (support and query negatives are distinct ids) unless the task needs
more than there are allowed ids.  Seeds: validation/test tasks draw theirs once (fixed per data seed); a training
task draws new ones every epoch, seeded by (data seed, epoch, task) like its support/query split
(``data.module.Episodes``), so worker processes, DDP ranks and resumed fits draw the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor


@dataclass
class Touched:
    """For each key (a user or an item id), the ids of the other side it has a row with (CSR layout).

    ``indptr``: [num_keys + 1]; the ids touched by key k are ``indices[indptr[k]:indptr[k + 1]]`` (ascending)."""

    indptr: Tensor
    indices: Tensor

    @classmethod
    def build(cls, keys: Tensor, others: Tensor, num_keys: int) -> "Touched":
        """From rows' ``keys`` [N] and ``others`` [N] (non-negative ids): one sort, no per-key scan."""
        order = torch.argsort(keys * (int(others.max()) + 1 if len(others) else 1) + others)
        counts = torch.bincount(keys, minlength=num_keys)
        indptr = torch.zeros(num_keys + 1, dtype=torch.long)
        indptr[1:] = torch.cumsum(counts, 0)
        return cls(indptr, others[order].clone())

    def of(self, key: int) -> Tensor:
        """The ids ``key`` touched ([n], ascending; empty for a key out of range)."""
        if not 0 <= key < len(self.indptr) - 1:
            return self.indices[:0]
        return self.indices[self.indptr[key]:self.indptr[key + 1]]

    def rows_of(self, keys: Tensor) -> tuple[Tensor, Tensor]:
        """(position in ``keys``, touched id) for every id touched by every key of ``keys`` [B] (vectorised)."""
        starts, ends = self.indptr[keys], self.indptr[keys + 1]
        lengths = ends - starts
        which = torch.repeat_interleave(torch.arange(len(keys)), lengths)
        offset = torch.arange(int(lengths.sum())) - torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths,
                                                                            lengths)
        return which, self.indices[starts[which] + offset]


@dataclass
class NegativeSource:
    """Where the tasks of one scenario draw their negatives: ``universe`` [U] ids (ascending), optional
    popularity ``weights`` [U] (``None``: uniform), what every key ``touched`` (excluded) and ``per_row``, the
    negatives per support/query row."""

    universe: Tensor
    weights: Optional[Tensor]
    touched: Touched
    per_row: int = 4

    def __post_init__(self) -> None:
        size = int(max(int(self.universe.max()) if len(self.universe) else 0,
                       int(self.touched.indices.max()) if len(self.touched.indices) else 0)) + 1
        self.position = torch.full((size,), -1, dtype=torch.long)  # id -> index in universe, -1: not in it
        self.position[self.universe] = torch.arange(len(self.universe))

    def allowed(self, key: int) -> Tensor:
        """[U] bool: the universe's ids that ``key`` never touched."""
        allowed = torch.ones(len(self.universe), dtype=torch.bool)
        pos = self.position[self.touched.of(key)]
        allowed[pos[pos >= 0]] = False
        return allowed

    def draw(self, key: int, n: int, generator: torch.Generator) -> Tensor:
        """[n] ids (fewer only when ``key`` touched every id of the universe: then none)."""
        if n <= 0:
            return self.universe[:0]
        avail = torch.nonzero(self.allowed(key)).flatten()
        if len(avail) == 0:
            return self.universe[:0]
        replace = n > len(avail)
        if self.weights is None:
            pick = (torch.randint(len(avail), (n,), generator=generator) if replace
                    else torch.randperm(len(avail), generator=generator)[:n])
        else:
            pick = torch.multinomial(self.weights[avail], n, replacement=replace, generator=generator)
        return self.universe[avail[pick]]


def negatives_seed(seed: int, negative_seed: int) -> int:
    """The seed of a task's negatives from its split seed (ints only: ``hash`` of ints is the same in every
    process, unlike that of strings)."""
    return hash((seed, 7919, negative_seed))
