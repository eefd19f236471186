"""Low-rank adapters (LoRA, Hu et al. 2021) for the head MLP: a parameter-efficient inner loop.

Adapting only ``lora_A`` / ``lora_B`` per task (``adapt: ["*lora*"]``) moves ``rank * (in + out)`` numbers per
layer instead of ``in * out``, while the outer loop still meta-learns the full weights and the adapters' start.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarec_pl.errors import ConfigError


class LoRALinear(nn.Linear):
    """``nn.Linear`` plus a rank-``rank`` update: ``y = W x + b + (alpha / rank) * B (A x)``.

    ``B`` starts at zero, so a fresh adapter is a no-op and the layer computes exactly ``W x + b``.  Parameter
    names stay ``weight`` / ``bias`` (plus ``lora_A`` / ``lora_B``), so ``head.*`` patterns keep working.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: Optional[float] = None,
                 bias: bool = True) -> None:
        if rank < 1:
            raise ConfigError(f"LoRALinear: rank must be >= 1, got {rank}")
        super().__init__(in_features, out_features, bias=bias)
        self.rank, self.scaling = rank, (rank if alpha is None else alpha) / rank
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}"
