from metarec_pl.data.interactions import Interactions
from metarec_pl.data.melu_release import MeLUMovieLens1M
from metarec_pl.data.movielens import MovieLens1M, MovieLens100K
from metarec_pl.data.synthetic import SyntheticWorld
from metarec_pl.data.text import WithText
from metarec_pl.hookspecs import hookimpl


@hookimpl
def register_datasets(register):
    register("synthetic", SyntheticWorld)
    register("text", WithText)  # any data set + frozen-encoder text features
    register("movielens-100k", MovieLens100K)
    register("movielens-1m", MovieLens1M)
    register("melu-movielens-1m", MeLUMovieLens1M)
    register("interactions", Interactions)
