"""MeLU's network (Lee et al., KDD 2019): field embeddings, concatenated, then the decision MLP."""

from __future__ import annotations

from typing import Sequence

from metarec_pl.data.types import FeatureSpec
from metarec_pl.models.base import FieldEmbedder, RatingModel, mlp


class MeLUNet(RatingModel):
    """``embedding_dim`` per field; ``hidden`` are the decision layers (MeLU: 64, 64), which form the head."""

    def __init__(self, schema: Sequence[FeatureSpec], embedding_dim: int = 32, hidden: Sequence[int] = (64, 64)) -> None:
        super().__init__(schema)
        self.encoder = FieldEmbedder(schema, embedding_dim)
        self.head = mlp(self.encoder.out_dim, hidden)
