from metarec_pl.algorithms.baselines import Bias, FineTune, MFFoldIn, Popularity
from metarec_pl.algorithms.global_model import GlobalModel
from metarec_pl.algorithms.maml import ANIL, FOMAML, MAML
from metarec_pl.algorithms.matchingnet import MatchingNet
from metarec_pl.algorithms.melu import MeLU
from metarec_pl.algorithms.protonet import ProtoNet
from metarec_pl.algorithms.metasgd import MetaSGD
from metarec_pl.algorithms.reptile import Reptile
from metarec_pl.hookspecs import hookimpl


@hookimpl
def register_algorithms(register):
    register("maml", MAML)
    register("fomaml", FOMAML)
    register("metasgd", MetaSGD)
    register("reptile", Reptile)
    register("anil", ANIL)
    register("none", GlobalModel)
    register("bias", Bias)
    register("finetune", FineTune)
    register("mf-foldin", MFFoldIn)
    register("popularity", Popularity)
    register("protonet", ProtoNet)
    register("matchingnet", MatchingNet)
    register("melu", MeLU)
