"""Meta-learning algorithms.  The base class is public API; concrete ones are registered by plugins."""

from metarec_pl.algorithms.base import AdaptResult, Algorithm, broadcasts_over_tasks

__all__ = ["AdaptResult", "Algorithm", "broadcasts_over_tasks"]
