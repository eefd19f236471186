from metarec_pl.data.synthetic import SyntheticWorld
from metarec_pl.hookspecs import hookimpl


@hookimpl
def register_datasets(register):
    register("synthetic", SyntheticWorld)
