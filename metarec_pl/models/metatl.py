"""``metatl``: a MetaTL-style transition learner (Wang et al., "Sequential Recommendation for Cold-start Users with
Meta Transitional Learning", SIGIR 2021).

Why: MetaTL is the published meta-learner for next-item cold start: it reads a cold user's few interactions as
transitions ``i_t -> i_{t+1}``, summarises them in one *relation* vector ``r`` (a translation, as in TransE), and
adapts ``r`` by one gradient step on the support transitions before scoring the query.  Here:

* items are vectors of ``ItemTokens`` (``models/sequence.py``): frozen text vectors through a learned adaptor, or
  learned id embeddings as in the paper (``item_vectors=None``, ``num_items``);
* ``r(history) = relation + mean_t MLP([e(h_t); e(h_{t+1})])`` over the consecutive pairs of the sample's history
  (the paper's relation learner: a 2-layer MLP on the concatenated pair, averaged over the support's pairs), plus
  ``encoder.relation``, a learned d-vector: the per-user fast weight (``adapt: ["encoder.relation"]``; one step
  of first-order MAML moves ``r`` by ``-lr * dL/dr``, the paper's update, which treats that gradient as a
  constant);
* score of candidate ``c`` after the history = ``gamma - ||e(h_last) + r - e(c)||_2`` (+ the item's learned bias
  with ``item_bias``, as the sequence backbone has), ``h_last`` the history's last item (a learned start vector
  when the history is empty), ``gamma`` a learned offset: a logit, trained with ``bce``.

One difference from the paper, forced by per-sample contexts (``metarec_pl/data/sequences.py``): a support
sample's relation reads only the transitions before it, as every network here sees only the items before the
scored one; query samples read every support transition, as in the paper.

Inputs as ``text-sequence``: ``seq_history`` ``[..., L]`` (codes + 1, right-padded with 0), ``seq_item`` ``[...]``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from metarec_pl.data.sequences import CANDIDATE, HISTORY
from metarec_pl.data.types import FeatureSpec
from metarec_pl.errors import ConfigError
from metarec_pl.models.base import RatingModel
from metarec_pl.models.sequence import ItemTokens, item_table

METATL_ADAPT = ("encoder.relation",)  # the per-user parameter: the relation vector's offset


def _distance(a: Tensor, b: Tensor) -> Tensor:
    """Euclidean distance of ``a`` [..., d] and ``b`` [..., d] (broadcast), smooth at 0."""
    return ((a - b) ** 2).sum(-1).add(1e-8).sqrt()


class TransitionEncoder(nn.Module):
    """features -> ``cat(e(h_last) + r, e(c) [, bias(c)])``: the translated head and the candidate."""

    def __init__(self, item_vectors: Optional[Tensor], num_items: Optional[int], dim: int, item_bias: bool) -> None:
        super().__init__()
        self.items = ItemTokens(item_vectors, dim, num_items)
        self.pair = nn.Sequential(nn.Linear(2 * dim, 2 * dim), nn.LeakyReLU(), nn.Linear(2 * dim, dim))
        self.relation = nn.Parameter(torch.zeros(dim))
        self.start = nn.Parameter(torch.randn(dim) * 0.02)
        self.bias = nn.Parameter(torch.zeros(self.items.num_items)) if item_bias else None
        self.dim = dim

    def translated(self, history: Tensor, tokens: Optional[Tensor] = None) -> Tensor:
        """``e(h_last) + r(history)`` [..., d] for ``history`` [..., L] (codes + 1, right-padded with 0)."""
        tokens = self.items() if tokens is None else tokens
        present = history > 0
        e = tokens[(history - 1).clamp_min(0)]  # [..., L, d]
        both = (present[..., :-1] & present[..., 1:]).to(e.dtype)  # [..., L-1]: a real transition
        pairs = self.pair(torch.cat([e[..., :-1, :], e[..., 1:, :]], -1))  # [..., L-1, d]
        r = self.relation + (pairs * both[..., None]).sum(-2) / both.sum(-1, keepdim=True).clamp_min(1.0)
        last = present.sum(-1, keepdim=True) - 1  # -1: empty history
        pick = (torch.arange(history.shape[-1], device=history.device) == last).to(e.dtype)  # one-hot, vmap-safe
        head = (pick[..., None] * e).sum(-2) + (last < 0).to(e.dtype) * self.start
        return head + r

    def item_bias(self, items: Tensor) -> Tensor:
        return self.bias[items] if self.bias is not None else torch.zeros(items.shape, device=items.device)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        tokens = self.items()
        item = features[CANDIDATE]
        return torch.cat([self.translated(features[HISTORY], tokens), tokens[item],
                          self.item_bias(item)[..., None]], -1)


class TranslationHead(nn.Module):
    """``cat(query, item, bias)`` [..., 2d + 1] -> ``gamma - ||query - item|| + bias`` [..., 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.tensor(1.0))

    def forward(self, x: Tensor) -> Tensor:
        d = (x.shape[-1] - 1) // 2
        return (self.gamma - _distance(x[..., :d], x[..., d:2 * d]) + x[..., -1])[..., None]


class MetaTLNet(RatingModel):
    """The registered network ``metatl`` (see the module docstring).

    ``item_vectors`` ``[num_items, text_dim]`` (frozen text vectors) or ``num_items`` (learned id embeddings);
    neither given: the data's dense item feature ``text_field`` (default ``item_text``) from ``data_info`` as
    ``text-sequence`` takes it, else ids for ``data_info.num_items`` items.  ``dim`` (64); ``item_bias`` (True).
    Output: the logit [...].  Adapt ``METATL_ADAPT`` per user (one step).  ``ConfigError`` when no items
    source or a bad size is given.
    """

    def __init__(self, schema: Sequence[FeatureSpec], item_vectors: Optional[Tensor] = None,
                 num_items: Optional[int] = None, dim: int = 64, item_bias: bool = True,
                 text_field: str = "item_text", data_info: Any = None) -> None:
        super().__init__(schema)
        if item_vectors is None and num_items is None and data_info is not None:
            item_vectors = item_table(data_info, text_field)
            num_items = None if item_vectors is not None else data_info.num_items
        if not (isinstance(item_vectors, Tensor) and item_vectors.dim() == 2) and not (
                isinstance(num_items, int) and num_items >= 1):
            raise ConfigError("metatl: give network_args.item_vectors (a [num_items, text_dim] tensor) or num_items "
                              f"(an integer >= 1), got {type(item_vectors).__name__} and {num_items!r}")
        if not isinstance(dim, int) or dim < 1:
            raise ConfigError(f"metatl: dim must be an integer >= 1, got {dim!r}")
        self.encoder = TransitionEncoder(item_vectors if isinstance(item_vectors, Tensor) else None, num_items, dim,
                                         item_bias)
        self.head = TranslationHead()

    def score_all(self, history: Tensor) -> Tensor:
        """Logits [..., num_items] of every item code after ``history`` [..., L] (what ``forward`` gives each)."""
        tokens = self.encoder.items()
        query = self.encoder.translated(history, tokens)
        all_items = torch.arange(tokens.shape[0], device=history.device)
        return self.head.gamma - _distance(query[..., None, :], tokens) + self.encoder.item_bias(all_items)
