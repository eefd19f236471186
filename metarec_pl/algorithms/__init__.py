"""Meta-learning algorithms.  The base class is public API; concrete ones are registered by plugins."""

from metarec_pl.algorithms.base import AdaptResult, Algorithm

__all__ = ["AdaptResult", "Algorithm"]
