"""metarec_pl: meta-learning for cold-start recommendation on PyTorch Lightning.

Public API for users and plugin authors (docs/plugins.md): the hook marker, the registry getters, the base
classes of the plugin kinds and the data types they exchange.  Importing ``metarec_pl`` imports only pluggy:
the base classes and data types (torch) and ``MetaLearner`` / ``masked_mse`` (Lightning) are imported on first
use, so ``metarec plugins`` and a plugin's hook module stay fast.
"""

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from metarec_pl.hookspecs import hookimpl, hookspec
from metarec_pl.plugins import (
    get_algorithm,
    get_dataset,
    get_metric,
    get_model,
    get_network,
    get_protocol,
    get_task_sampler,
    register_plugin,
    registrations,
    unregister_plugin,
)

if TYPE_CHECKING:
    from metarec_pl.algorithms.base import Algorithm, GradientAlgorithm, MetaAlgorithm
    from metarec_pl.bilevel import MetaLearner
    from metarec_pl.losses import masked_mse
    from metarec_pl.results import AdaptResult
    from metarec_pl.data.base import RatingDataset, TaskSampler
    from metarec_pl.data.cache import FileDataset
    from metarec_pl.data.protocols import Protocol, Rows
    from metarec_pl.data.types import DataError, FeatureSpec, RatingData, Samples, Task, TaskBatch
    from metarec_pl.data.info import DataInfo
    from metarec_pl.models.base import RatingModel
    from metarec_pl.models.pairs import encoder_dim

__version__ = "0.1.0"

_LAZY = {  # public name -> module that defines it (imported on first access)
    "AdaptResult": "metarec_pl.results", "Algorithm": "metarec_pl.algorithms.base",
    "GradientAlgorithm": "metarec_pl.algorithms.base", "MetaAlgorithm": "metarec_pl.algorithms.base",
    "encoder_dim": "metarec_pl.models.pairs", "RatingModel": "metarec_pl.models.base",
    "RatingDataset": "metarec_pl.data.base", "TaskSampler": "metarec_pl.data.base",
    "FileDataset": "metarec_pl.data.cache", "Protocol": "metarec_pl.data.protocols", "Rows": "metarec_pl.data.protocols",
    "DataError": "metarec_pl.data.types",
    "FeatureSpec": "metarec_pl.data.types", "RatingData": "metarec_pl.data.types", "Samples": "metarec_pl.data.types",
    "DataInfo": "metarec_pl.data.info",
    "Task": "metarec_pl.data.types", "TaskBatch": "metarec_pl.data.types",
    "MetaLearner": "metarec_pl.bilevel", "masked_mse": "metarec_pl.losses",
}

__all__ = [
    "__version__", "hookimpl", "hookspec", "get_algorithm", "get_dataset", "get_metric", "get_model", "get_network",
    "get_protocol", "get_task_sampler", "register_plugin", "registrations", "unregister_plugin",
    "AdaptResult", "Algorithm", "DataError", "DataInfo", "FeatureSpec", "FileDataset", "GradientAlgorithm", "MetaAlgorithm",
    "MetaLearner", "Protocol", "RatingData", "RatingDataset", "RatingModel", "Rows",
    "Samples", "Task", "TaskBatch", "TaskSampler", "encoder_dim", "masked_mse",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")  # a submodule, as ``import metarec_pl`` gave before
    raise AttributeError(f"module 'metarec_pl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
