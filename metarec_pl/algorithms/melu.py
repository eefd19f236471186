"""``melu``: the MeLU configuration (Lee et al., KDD 2019) as a named preset of MAML.

What the preset sets (it is an ``Algorithm``, so it owns the local update only): second-order MAML adapting the
decision layers (``head.*``), local learning rate 5e-6, 5 local steps (MeLU-5; ``--model.inner_steps 1`` gives
MeLU-1).  Explicit ``--model.inner_lr``/``--model.inner_steps``/``--model.adapt`` still win.
What it cannot set: the global learning rate 5e-5 lives in ``model.optimizer`` and the batch of 32 tasks in
``data.tasks_per_batch``; ``configs/melu_preset.yaml`` sets both (and the ``melu`` network, which is the default).
"""

from __future__ import annotations

from metarec_pl.algorithms.maml import MAML


class MeLU(MAML):
    """MAML on the decision layers with MeLU's local settings (see the module docstring)."""

    default_adapt = ("head.*",)
    default_inner_lr = 5e-6
    default_inner_steps = 5
