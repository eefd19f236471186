"""What an inner loop (or a metric-based learner's ``run``) returns: a leaf module, imported by the loop, the
algorithms and the LightningModule alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import Tensor


@dataclass
class AdaptResult:
    """Per-task outputs of the inner loop; every tensor starts with the task dimension."""

    query_loss: Tensor  # [B] the loss (``Algorithm.loss``, default squared error) on the query set after adaptation
    query_pred: Tensor  # [B, Q]
    support_loss: Optional[Tensor] = None  # [B], with the final weights; when ``needs_support_loss``
    fast_weights: Optional[dict[str, Tensor]] = None  # name -> [B, *shape]; when ``needs_fast_weights``
