"""Shared by the metric-based learners: (user, item) pair embeddings from a registered network's encoder.

Prototypical and Matching Networks compare support and query *pairs* in an embedding space.  They reuse the
network's ``encoder`` (so every registered ``RatingModel`` works unchanged) and add a small projection MLP of
their own, which the outer optimiser trains together with the encoder.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Sequence

import torch
from torch import Tensor, nn

from metarec_pl.data.types import FeatureSpec
from metarec_pl.errors import ConfigError
from metarec_pl.models.base import RatingModel, mlp


def dummy_features(schema: Sequence[FeatureSpec], n: int = 1) -> dict[str, Tensor]:
    """``n`` all-zero samples with the right shape and dtype for every field of ``schema``."""
    out: dict[str, Tensor] = {}
    for f in schema:
        if f.kind == "categorical":
            out[f.key] = torch.zeros(n, dtype=torch.long)
        elif f.kind == "multi":
            out[f.key] = torch.zeros(n, 1, dtype=torch.long)
        else:
            out[f.key] = torch.zeros(n, f.size)
    return out


def encoder_dim(model: nn.Module, who: str) -> int:
    """Width of ``model.encoder``'s output: its ``out_dim`` if it has one, else measured on a dummy sample."""
    if not isinstance(model, RatingModel):
        raise ConfigError(f"{who}: needs a RatingModel network (encoder -> head) for pair embeddings, "
                         f"got {type(model).__name__}")
    dim = getattr(model.encoder, "out_dim", None)
    if isinstance(dim, int):
        return dim
    with torch.no_grad():
        return int(model.encoder(dummy_features(model.schema)).shape[-1])


def projection(in_dim: int, widths: Sequence[int]) -> nn.Module:
    """``widths`` = (64, 32): Linear(in, 64), ReLU, Linear(64, 32); empty: the identity."""
    widths = list(widths)
    return mlp(in_dim, widths[:-1], widths[-1]) if widths else nn.Identity()


def full_precision(t: Tensor) -> AbstractContextManager:
    """Distances and attention in float32 even under bf16/fp16 autocast (small differences matter there)."""
    return torch.autocast(device_type=t.device.type, enabled=False)
