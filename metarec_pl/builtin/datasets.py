from metarec_pl.data.synthetic import SyntheticWorld
from metarec_pl.data.text import WithText
from metarec_pl.hookspecs import hookimpl


@hookimpl
def register_datasets(register):
    register("synthetic", SyntheticWorld)
    register("text", WithText)  # any data set + frozen-encoder text features
