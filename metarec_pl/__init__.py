"""metarec_pl: meta-learning for cold-start recommendation on PyTorch Lightning.

Public API for users and plugin authors (docs/plugins.md): the hook marker, the registry getters, the base
classes of the four plugin kinds and the data types they exchange.  ``MetaLearner`` and ``masked_mse`` live in
``metarec_pl.bilevel`` and are imported on first use (they pull in Lightning).
"""

from typing import TYPE_CHECKING, Any

from metarec_pl.algorithms.base import AdaptResult, Algorithm
from metarec_pl.models.pairs import encoder_dim
from metarec_pl.data.base import RatingDataset, TaskSampler
from metarec_pl.data.types import FeatureSpec, RatingData, Samples, Task, TaskBatch
from metarec_pl.hookspecs import hookimpl, hookspec
from metarec_pl.models.base import RatingModel
from metarec_pl.plugins import (
    get_algorithm,
    get_dataset,
    get_model,
    get_task_sampler,
    register_plugin,
    registrations,
    unregister_plugin,
)

if TYPE_CHECKING:
    from metarec_pl.bilevel import MetaLearner, masked_mse

__version__ = "0.1.0"

__all__ = [
    "__version__", "hookimpl", "hookspec", "get_algorithm", "get_dataset", "get_model", "get_task_sampler",
    "register_plugin", "registrations", "unregister_plugin",
    "AdaptResult", "Algorithm", "FeatureSpec", "MetaLearner", "RatingData", "RatingDataset", "RatingModel",
    "Samples", "Task", "TaskBatch", "TaskSampler", "encoder_dim", "masked_mse",
]


def __getattr__(name: str) -> Any:
    if name in ("MetaLearner", "masked_mse"):
        from metarec_pl import bilevel

        return getattr(bilevel, name)
    raise AttributeError(f"module 'metarec_pl' has no attribute {name!r}")
