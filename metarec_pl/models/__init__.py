"""Rating networks: plain ``nn.Module``s with no meta-learning code inside."""

from metarec_pl.models.base import RatingModel, mlp

__all__ = ["RatingModel", "mlp"]
