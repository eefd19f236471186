"""The model contract: ``encoder`` (features -> vector) then ``head`` (vector -> rating).

The split lets the bilevel loop run the encoder once per task when no encoder parameter adapts
(MeLU and ANIL adapt only the head), instead of once per inner step.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from metarec_pl.data.types import FeatureSpec


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int = 1) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class RatingModel(nn.Module):
    """Base class of registered models: subclasses set ``self.encoder`` and ``self.head`` in ``__init__``.
    ``forward`` maps a feature dict with any leading shape [...] to predicted ratings [...]."""

    encoder: nn.Module
    head: nn.Module

    def __init__(self, schema: Sequence[FeatureSpec]) -> None:
        super().__init__()
        self.schema = list(schema)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        return self.head(self.encoder(features)).squeeze(-1)

    @torch.no_grad()
    def init_output_bias(self, value: float) -> None:
        """Start predictions near ``value`` (the mean training rating): the inner loop then starts from a sane
        rating instead of spending its few steps climbing from 0 to the rating scale."""
        last = [m for m in self.head.modules() if isinstance(m, nn.Linear)][-1]
        last.bias.fill_(value)


def pooled_multi(table: nn.Embedding, ids: Tensor) -> Tensor:
    """Mean of the embeddings of the present ids of a multi-valued field (id 0 is padding)."""
    present = (ids > 0).to(table.weight.dtype)
    return (table(ids) * present[..., None]).sum(-2) / present.sum(-1, keepdim=True).clamp_min(1.0)


class FieldEmbedder(nn.Module):
    """One embedding table per categorical or multi-valued field (multi-valued: mean-pooled), dense fields
    passed through; all concatenated."""

    def __init__(self, schema: Sequence[FeatureSpec], dim: int) -> None:
        super().__init__()
        self.schema = list(schema)
        self.tables = nn.ModuleDict({f.key: nn.Embedding(f.size, dim, padding_idx=0 if f.kind == "multi" else None)
                                     for f in self.schema if f.kind != "dense"})
        self.out_dim = sum(dim if f.kind != "dense" else f.size for f in self.schema)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        parts, dtype = [], next(self.parameters()).dtype if self.tables else torch.get_default_dtype()
        for f in self.schema:
            x = features[f.key]
            if f.kind == "categorical":
                parts.append(self.tables[f.key](x))
            elif f.kind == "multi":
                parts.append(pooled_multi(self.tables[f.key], x))
            else:
                parts.append(x.to(dtype))
        return torch.cat(parts, dim=-1)
