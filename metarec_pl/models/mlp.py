"""The plain MLP over dense features: categorical fields one-hot, multi-valued fields multi-hot, dense as is."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarec_pl.data.types import FeatureSpec
from metarec_pl.models.base import RatingModel, mlp


class DenseFeatures(nn.Module):
    """Parameter-free featuriser: every field as a dense vector, concatenated."""

    def __init__(self, schema: Sequence[FeatureSpec]) -> None:
        super().__init__()
        self.schema = list(schema)
        self.out_dim = sum(f.size - (1 if f.kind == "multi" else 0) if f.kind != "dense" else f.size
                           for f in self.schema)
        self.register_buffer("dtype_probe", torch.zeros(()), persistent=False)  # follows .double()/.half()

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        parts, dtype = [], self.dtype_probe.dtype
        for f in self.schema:
            x = features[f.key]
            if f.kind == "categorical":
                parts.append(F.one_hot(x, f.size).to(dtype))
            elif f.kind == "multi":  # drop the padding column 0
                parts.append(F.one_hot(x, f.size).to(dtype).amax(-2)[..., 1:])
            else:
                parts.append(x.to(dtype))
        return torch.cat(parts, dim=-1)


class MLPNet(RatingModel):
    def __init__(self, schema: Sequence[FeatureSpec], hidden: Sequence[int] = (64, 64)) -> None:
        super().__init__(schema)
        self.encoder = DenseFeatures(schema)
        self.head = mlp(self.encoder.out_dim, hidden)
