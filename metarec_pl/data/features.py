"""Feature tables indexed by id: categorical (0 = unknown), multi-valued (0 = padding) and dense fields.

Vocabularies are the sorted distinct values found (or a given list), so the same files always give the same ids.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import torch
from torch import Tensor


def vocabulary(values: Iterable[str], given: Optional[Sequence[str]] = None) -> dict[str, int]:
    """value -> id in 1..n (0 is left for unknown / padding)."""
    vocab = list(dict.fromkeys(given)) if given is not None else sorted(set(values) - {""})
    return {v: i + 1 for i, v in enumerate(vocab)}


def categorical(ids: Sequence[int], values: Sequence[str], size: int,
                vocab: Optional[dict[str, int]] = None) -> tuple[Tensor, int]:
    """[size] long table (row = id); values outside the vocabulary map to 0.  Returns (table, field size)."""
    vocab = vocab if vocab is not None else vocabulary(values)
    table = torch.zeros(size, dtype=torch.long)
    table[torch.as_tensor(list(ids), dtype=torch.long)] = torch.tensor([vocab.get(v, 0) for v in values],
                                                                       dtype=torch.long)
    return table, len(vocab) + 1


def multi(ids: Sequence[int], value_lists: Sequence[Sequence[str]], size: int,
          vocab: Optional[dict[str, int]] = None) -> tuple[Tensor, int]:
    """[size, width] long table of value ids, 0-padded; width = the longest list.  Returns (table, field size)."""
    vocab = vocab if vocab is not None else vocabulary(v for vs in value_lists for v in vs)
    coded = [[vocab[v] for v in dict.fromkeys(vs) if v in vocab] for vs in value_lists]
    table = torch.zeros(size, max([1] + [len(c) for c in coded]), dtype=torch.long)
    for i, c in zip(ids, coded):
        table[i, : len(c)] = torch.tensor(c, dtype=torch.long)
    return table, len(vocab) + 1
