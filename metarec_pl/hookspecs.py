"""Hook specifications: the whole contract between metarec_pl and its plugins.

A plugin is any module or object with functions marked ``@hookimpl`` whose names match the specs
below.  Each hook receives a ``register(name, cls)`` callback; plugins never touch core storage.
``cls`` is a class or its lazy reference ``"module:Class"``, imported on first use (so a plugin's hook module
can stay as light as the built-ins', which import only this module).  Built-in algorithms, models, samplers and
data sets register through exactly these hooks.  What happens when a hook goes wrong: ``metarec_pl.plugins``.
"""

from __future__ import annotations

from typing import Callable, Union

import pluggy

PROJECT = "metarec_pl"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[str, Union[type, str]], None]  # register(name, cls or "module:Class")


@hookspec
def register_algorithms(register: Register) -> None:
    """Register meta-learning algorithms: ``register("maml", MAML)``; classes subclass ``Algorithm``."""


@hookspec
def register_models(register: Register) -> None:
    """Register rating networks: ``register("melu", MeLUNet)``; classes subclass ``RatingModel``."""


@hookspec
def register_task_samplers(register: Register) -> None:
    """Register task samplers: ``register("user", UserTaskSampler)``; classes subclass ``TaskSampler``."""


@hookspec
def register_datasets(register: Register) -> None:
    """Register data sets: ``register("synthetic", SyntheticWorld)``; classes subclass ``RatingDataset``."""
