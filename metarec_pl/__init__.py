"""metarec_pl: meta-learning for cold-start recommendation on PyTorch Lightning.

Public API for users and plugin authors: the hook markers, the registry getters, and the base classes.
"""

from metarec_pl.hookspecs import hookimpl
from metarec_pl.plugins import (
    get_algorithm,
    get_dataset,
    get_model,
    get_task_sampler,
    register_plugin,
    registrations,
    unregister_plugin,
)

__version__ = "0.1.0"

__all__ = [
    "__version__", "hookimpl", "get_algorithm", "get_dataset", "get_model", "get_task_sampler",
    "register_plugin", "registrations", "unregister_plugin",
]
