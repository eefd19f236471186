"""The model contract: ``encoder`` (features -> vector) then ``head`` (vector -> rating).

The split lets the bilevel loop run the encoder once per task when no encoder parameter adapts
(MeLU and ANIL adapt only the head), instead of once per inner step.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from metarec_pl.data.types import FeatureSpec, is_broadcast
from metarec_pl.errors import ConfigError
from metarec_pl.models.adapters import LoRALinear


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int = 1, lora_rank: int = 0) -> nn.Sequential:
    """``lora_rank`` > 0: hidden layers carry low-rank adapters (``LoRALinear``, a no-op until trained)."""
    layers: list[nn.Module] = []
    for width in hidden:
        linear = LoRALinear(in_dim, width, lora_rank) if lora_rank > 0 else nn.Linear(in_dim, width)
        layers += [linear, nn.ReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class RatingModel(nn.Module):
    """Base class of registered models: subclasses set ``self.encoder`` and ``self.head`` in ``__init__``.

    ``forward`` maps a feature dict with any leading shape [...] to ratings [...]: ``rating_offset`` (a float32
    buffer, the mean training rating) plus the head's output.  The offset keeps the inner loop from spending its
    few steps climbing to the rating scale, and keeps residuals precise under bf16/fp16 autocast (a bf16 number
    near 3.5 has a resolution of 0.016; near 0 it is far finer).
    """

    encoder: nn.Module
    head: nn.Module

    def __init__(self, schema: Sequence[FeatureSpec]) -> None:
        super().__init__()
        self.schema = list(schema)
        self.register_buffer("rating_offset", torch.zeros((), dtype=torch.float32))

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        return self.decode(self.head(self.encoder(features)))

    def decode(self, head_output: Tensor) -> Tensor:
        """Head output [..., 1] -> rating [...] in float32."""
        out = head_output.squeeze(-1)
        return out.to(torch.promote_types(out.dtype, self.rating_offset.dtype)) + self.rating_offset

    def observe(self, *features: dict[str, Tensor]) -> None:
        """Record that these (training) samples were seen; ``MetaLearner`` calls it for every training batch.
        Encoders with vocabularies (``FieldEmbedder``) use it to keep never-trained values neutral."""
        if hasattr(self.encoder, "observe"):
            self.encoder.observe(*features)


def pooled_multi(table: nn.Embedding, ids: Tensor) -> Tensor:
    """Mean of the embeddings of the present ids of a multi-valued field (id 0 is padding)."""
    present = (ids > 0).to(table.weight.dtype)
    return (table(ids) * present[..., None]).sum(-2) / present.sum(-1, keepdim=True).clamp_min(1.0)


class FieldEmbedder(nn.Module):
    """One embedding table per categorical or multi-valued field (multi-valued: mean-pooled), dense fields
    passed through; all concatenated.

    ``id`` fields (``{side}_id``, see ``data.types.with_id_features``) start at zero, so an id never seen in
    training (a cold item) contributes a zero vector rather than noise: only looked-up rows get gradients.
    Other tables start random (better for training), so a value never seen in training (an actor who appears
    only in cold movies) would keep its random initial vector, which can throw a cold item's prediction far off
    the rating scale after a few inner steps.  ``observe`` records the values of the training samples; in eval
    mode a value never observed contributes nothing (a zero vector; left out of a multi-valued field's mean).
    Before the first ``observe`` (a network trained outside ``MetaLearner``) nothing is masked.
    ``id_dropout``: in training, each sample's id vectors are zeroed with this probability, so the network also
    learns to predict from content alone, the situation of every cold item (DropoutNet, Volkovs et al. 2017).
    ``project_dense``: map each dense field (e.g. a 384-d text vector) to ``dim`` by a learned linear layer, so it
    enters the head with the width of every other field instead of dominating its input.
    """

    def __init__(self, schema: Sequence[FeatureSpec], dim: int, id_dropout: float = 0.0,
                 project_dense: bool = False) -> None:
        super().__init__()
        if not 0.0 <= id_dropout < 1.0:
            raise ConfigError(f"id_dropout: {id_dropout} is not a probability in [0, 1)")
        self.schema, self.id_dropout = list(schema), id_dropout
        self.tables = nn.ModuleDict({f.key: nn.Embedding(f.size, dim, padding_idx=0 if f.kind == "multi" else None)
                                     for f in self.schema if f.kind != "dense"})
        self.projections = nn.ModuleDict({f.key: nn.Linear(f.size, dim) for f in self.schema
                                          if f.kind == "dense" and project_dense})
        with torch.no_grad():
            for f in self.schema:
                if f.is_id:
                    self.tables[f.key].weight.zero_()
        self.out_dim = sum(dim if f.kind != "dense" or project_dense else f.size for f in self.schema)
        # one flag per vocabulary value of every table, concatenated; ``offsets`` says where each table starts
        self.offsets, total = {}, 0
        for key, table in self.tables.items():
            self.offsets[key], total = total, total + table.num_embeddings
        self.register_buffer("seen", torch.zeros(total, dtype=torch.bool))

    @torch.no_grad()
    def observe(self, *features: dict[str, Tensor]) -> None:
        """Mark the values in each feature dict as seen in training.  Under ``torch.distributed`` the record is
        the union over all processes (they train in lockstep, each on its share of the batch): one collective per
        call, so pass a batch's support and query features together."""
        for key, offset in self.offsets.items():
            for f in features:
                self.seen[offset + f[key]] = True  # repeated values just set the same flag again
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            union = self.seen.to(torch.int32)
            torch.distributed.all_reduce(union, op=torch.distributed.ReduceOp.MAX)
            self.seen.copy_(union.bool())

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        parts, dtype = [], next(self.parameters()).dtype if self.tables else torch.get_default_dtype()
        masked = not self.training and bool(self.seen.any())  # in eval, once something was observed
        for f in self.schema:
            x = features[f.key]
            if f.kind == "categorical":
                v = _on_distinct(lambda ids, key=f.key: self._lookup(key, ids, masked), x, 0)
                if f.is_id and self.training and self.id_dropout > 0:
                    v = v * (torch.rand(x.shape, device=v.device) >= self.id_dropout).to(v.dtype)[..., None]
            elif f.kind == "multi":
                v = _on_distinct(lambda ids, key=f.key: self._pooled(key, ids, masked), x, 1)
            elif f.key in self.projections:
                v = _on_distinct(lambda t, proj=self.projections[f.key]: proj(t.to(dtype)), x, 1)
            else:
                v = x.to(dtype)
            parts.append(v)
        return torch.cat(parts, dim=-1)

    def _lookup(self, key: str, ids: Tensor, masked: bool) -> Tensor:
        """Embeddings of ``ids``; with ``masked``, values never observed give zero vectors."""
        v = self.tables[key](ids)
        return v * self.seen[self.offsets[key] + ids].to(v.dtype)[..., None] if masked else v

    def _pooled(self, key: str, ids: Tensor, masked: bool) -> Tensor:
        """Mean of the present values; with ``masked``, values never observed count as absent (padding)."""
        if masked:
            ids = torch.where(self.seen[self.offsets[key] + ids], ids, 0)
        return pooled_multi(self.tables[key], ids)


def _on_distinct(embed: Any, x: Tensor, trailing: int) -> Tensor:
    """``embed(x)`` computed once along each broadcast (stride-0) leading dimension of ``x``, then expanded.

    Scoring a catalogue for many users passes the item fields as one row expanded over the users (and the
    profile as one value expanded over the items); embedding only the distinct rows keeps the lookups at
    (users + items) instead of (users x items)."""
    lead = x.dim() - trailing
    index = tuple(slice(0, 1) if is_broadcast(x, d) else slice(None) for d in range(lead))
    out = embed(x[index])
    return out.expand(*x.shape[:lead], out.shape[-1])
