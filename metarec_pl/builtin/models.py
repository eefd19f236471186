from metarec_pl.hookspecs import hookimpl
from metarec_pl.models.melu import MeLUNet
from metarec_pl.models.mlp import MLPNet


@hookimpl
def register_models(register):
    register("melu", MeLUNet)
    register("mlp", MLPNet)
