"""Built-in data sets, as lazy ``"module:Class"`` references (imported on first ``get``: some pull in ``datasets``)."""

from metarec_pl.hookspecs import hookimpl

DATASETS = {
    "synthetic": "metarec_pl.data.synthetic:SyntheticWorld",
    "text": "metarec_pl.data.text:WithText",  # any data set + frozen-encoder text features
    "movielens-100k": "metarec_pl.data.movielens:MovieLens100K",
    "movielens-1m": "metarec_pl.data.movielens:MovieLens1M",
    "melu-movielens-1m": "metarec_pl.data.melu_release:MeLUMovieLens1M",
    "interactions": "metarec_pl.data.interactions:Interactions",
}


@hookimpl
def register_datasets(register):
    for name, reference in DATASETS.items():
        register(name, reference)
