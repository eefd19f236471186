"""Meta-SGD (Li et al., 2017): the inner learning rate of every parameter entry is meta-learned."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from metarec_pl.algorithms.base import Algorithm, broadcasts_over_tasks
from metarec_pl.data.info import DataInfo


def _key(name: str) -> str:
    return name.replace(".", "__")  # ParameterDict keys cannot contain dots


class MetaSGD(Algorithm):
    """Learned per-entry learning rates, initialised to ``inner_lr`` and updated by the outer optimiser."""

    def bind(self, model: nn.Module, info: Optional[DataInfo] = None) -> None:
        super().bind(model, info)
        params = dict(model.named_parameters())
        self.lrs = nn.ParameterDict({_key(n): nn.Parameter(torch.full_like(params[n], self.inner_lr))
                                     for n in self.adapted_names})

    @broadcasts_over_tasks
    def inner_update(self, fast: dict[str, Tensor], grads: dict[str, Tensor]) -> dict[str, Tensor]:
        return {n: torch.addcmul(w, self.lrs[_key(n)], grads[n], value=-1) for n, w in fast.items()}
