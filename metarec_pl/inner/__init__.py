"""The inner loop: ``reference.py`` is its definition (read it first); ``planner.py`` decides which faster path,
each in its own module with the same signature, adapts a meta-batch, and ``adapt`` runs it."""

from metarec_pl.inner.planner import INNER_PATHS, PATHS, Plan, adapt, plan

__all__ = ["INNER_PATHS", "PATHS", "Plan", "adapt", "plan"]
