"""MeLU's network (Lee et al., KDD 2019): field embeddings, concatenated, then the decision MLP."""

from __future__ import annotations

from typing import Sequence

from metarec_pl.data.types import FeatureSpec
from metarec_pl.models.base import FieldEmbedder, RatingModel, mlp


class MeLUNet(RatingModel):
    """``embedding_dim`` per field; ``hidden`` are the decision layers (MeLU: 64, 64), which form the head.
    ``lora_rank`` > 0 adds low-rank adapters to the hidden decision layers (adapt them with ``["*lora*"]``).
    ``id_dropout``, ``project_dense``: see ``FieldEmbedder``."""

    def __init__(self, schema: Sequence[FeatureSpec], embedding_dim: int = 32, hidden: Sequence[int] = (64, 64),
                 lora_rank: int = 0, id_dropout: float = 0.0, project_dense: bool = False) -> None:
        super().__init__(schema)
        self.encoder = FieldEmbedder(schema, embedding_dim, id_dropout=id_dropout, project_dense=project_dense)
        self.head = mlp(self.encoder.out_dim, hidden, lora_rank=lora_rank)
