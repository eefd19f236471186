"""Meta-learning algorithms.  The base classes are public API; concrete ones are registered by plugins."""

from metarec_pl.algorithms.base import (AdaptResult, Algorithm, GradientAlgorithm, MetaAlgorithm,
                                        broadcasts_over_tasks)

__all__ = ["AdaptResult", "Algorithm", "GradientAlgorithm", "MetaAlgorithm", "broadcasts_over_tasks"]
