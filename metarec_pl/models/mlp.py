"""The plain MLP over dense features: categorical fields one-hot, multi-valued fields multi-hot, dense as is."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from metarec_pl.data.types import FeatureSpec
from metarec_pl.models.base import RatingModel, mlp


class DenseFeatures(nn.Module):
    """Parameter-free featuriser: every field as a dense vector (categorical: one-hot; multi-valued: multi-hot
    without the padding column 0; dense: as is), concatenated in schema order.

    Built as one zero tensor and one scatter of ones for all categorical and multi-valued fields (a multi-valued
    field's padding id goes to a scratch column, dropped), dense fields copied into their columns: ~2x faster than
    a one-hot per field, and ``mlp`` runs it in every meta-step (docs/performance.md)."""

    def __init__(self, schema: Sequence[FeatureSpec]) -> None:
        super().__init__()
        self.schema = list(schema)
        self.columns: dict[str, int] = {}  # first column of each field
        offset = 0
        for f in self.schema:
            self.columns[f.key] = offset
            offset += f.size - 1 if f.kind == "multi" else f.size
        self.out_dim = offset
        self.categorical = [f.key for f in self.schema if f.kind == "categorical"]
        self.register_buffer("categorical_offsets", torch.tensor([self.columns[k] for k in self.categorical]),
                             persistent=False)
        self.register_buffer("categorical_sizes", torch.tensor([f.size for f in self.schema
                                                                if f.kind == "categorical"]), persistent=False)
        self.register_buffer("dtype_probe", torch.zeros(()), persistent=False)  # follows .double()/.half()

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        f0 = self.schema[0]
        lead = features[f0.key].shape[:-1] if f0.kind != "categorical" else features[f0.key].shape
        out = torch.zeros(*lead, self.out_dim + 1, dtype=self.dtype_probe.dtype, device=self.dtype_probe.device)
        hot, bad = [], []
        if self.categorical:
            ids = torch.stack([features[k] for k in self.categorical], -1)
            bad.append(((ids < 0) | (ids >= self.categorical_sizes)).any())
            hot.append(ids + self.categorical_offsets)
        for f in self.schema:
            x, first = features[f.key], self.columns[f.key]
            if f.kind == "multi":
                bad.append(((x < 0) | (x >= f.size)).any())
                hot.append(torch.where(x > 0, x + (first - 1), self.out_dim))
            elif f.kind == "dense":
                out[..., first:first + f.size] = x
        if bad and bool(torch.stack(bad).any()):
            self._raise_out_of_range(features)
        if hot:
            out.scatter_(-1, torch.cat(hot, -1), 1.0)
        return out[..., :self.out_dim]

    def _raise_out_of_range(self, features: dict[str, Tensor]) -> None:
        """One line naming the first field with an id outside [0, size) (one-hot columns would spill over)."""
        for f in self.schema:
            x = features[f.key]
            if f.kind == "dense" or not x.numel():
                continue
            low, high = int(x.min()), int(x.max())
            if low < 0 or high >= f.size:
                raise ValueError(f"mlp encoder: field {f.key!r} has id {high if high >= f.size else low}, "
                                 f"expected ids in [0, {f.size}) (the schema's size)")


class MLPNet(RatingModel):
    def __init__(self, schema: Sequence[FeatureSpec], hidden: Sequence[int] = (64, 64)) -> None:
        super().__init__(schema)
        self.encoder = DenseFeatures(schema)
        self.head = mlp(self.encoder.out_dim, hidden)
