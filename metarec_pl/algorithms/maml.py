"""MAML (Finn et al., 2017), its first-order variant, and ANIL (Raghu et al., 2020)."""

from __future__ import annotations

from metarec_pl.algorithms.base import Algorithm


class MAML(Algorithm):
    """Second-order MAML: the meta-gradient flows through every inner step."""


class FOMAML(Algorithm):
    """First-order MAML: inner gradients are treated as constants in the meta-gradient."""

    default_first_order = True


class ANIL(Algorithm):
    """Almost No Inner Loop: only the head adapts; the encoder is meta-learned but fixed per task."""

    default_adapt = ("head.*",)
