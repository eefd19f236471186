"""Hook specifications: the whole contract between metarec_pl and its plugins.

A plugin is any module or object with functions marked ``@hookimpl`` whose names match the specs
below.  Each hook receives a ``register(name, cls)`` callback; plugins never touch core storage.
``cls`` is a class or its lazy reference ``"module:Class"``, imported on first use (so a plugin's hook module
can stay as light as the built-ins', which import only this module).  Built-in algorithms, networks, samplers,
data sets and protocols register through exactly these hooks.  What happens when a hook goes wrong:
``metarec_pl.plugins``.  ``register_models`` is the old name of ``register_networks``: still called, with a
``DeprecationWarning`` when a plugin implementing it is registered.
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
def register_networks(register: Register) -> None:
    """Register rating networks: ``register("melu", MeLUNet)``; classes subclass ``RatingModel``."""


@hookspec(warn_on_impl=DeprecationWarning(
    "metarec_pl: the hook register_models is deprecated: rename it register_networks (same argument, same "
    "meaning; register_models still registers networks for now)"))
def register_models(register: Register) -> None:
    """Deprecated name of ``register_networks`` (still called, as if it were that hook)."""


@hookspec
def register_task_samplers(register: Register) -> None:
    """Register task samplers: ``register("user", UserTaskSampler)``; classes subclass ``TaskSampler``."""


@hookspec
def register_datasets(register: Register) -> None:
    """Register data sets: ``register("synthetic", SyntheticWorld)``; classes subclass ``RatingDataset``."""


@hookspec
def register_protocols(register: Register) -> None:
    """Register cold-start protocols (a data set's ``protocol`` option): ``register("user-cold", UserCold)``;
    classes subclass ``metarec_pl.Protocol``."""


@hookspec
def register_metrics(register: Register) -> None:
    """Register query metrics (chosen by ``model.extra_metrics``): ``register("signed-error", SignedError)``;
    classes subclass ``torchmetrics.Metric`` and are built with no argument (docs/plugins.md says what ``update``
    receives)."""
