"""Built-in algorithms, as lazy ``"module:Class"`` references (imported on first ``get``)."""

from metarec_pl.hookspecs import hookimpl

ALGORITHMS = {
    "maml": "metarec_pl.algorithms.maml:MAML",
    "fomaml": "metarec_pl.algorithms.maml:FOMAML",
    "metasgd": "metarec_pl.algorithms.metasgd:MetaSGD",
    "reptile": "metarec_pl.algorithms.reptile:Reptile",
    "anil": "metarec_pl.algorithms.maml:ANIL",
    "none": "metarec_pl.algorithms.global_model:GlobalModel",
    "bias": "metarec_pl.algorithms.baselines:Bias",
    "finetune": "metarec_pl.algorithms.baselines:FineTune",
    "mf-foldin": "metarec_pl.algorithms.baselines:MFFoldIn",
    "meta-foldin": "metarec_pl.algorithms.meta_foldin:MetaFoldIn",
    "popularity": "metarec_pl.algorithms.baselines:Popularity",
    "implicit-als": "metarec_pl.algorithms.implicit_mf:ImplicitALS",  # the [implicit] extra
    "implicit-bpr": "metarec_pl.algorithms.implicit_mf:ImplicitBPR",
    "protonet": "metarec_pl.algorithms.protonet:ProtoNet",
    "matchingnet": "metarec_pl.algorithms.matchingnet:MatchingNet",
    "melu": "metarec_pl.algorithms.melu:MeLU",
}


@hookimpl
def register_algorithms(register):
    for name, reference in ALGORITHMS.items():
        register(name, reference)
