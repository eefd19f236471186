"""Built-in rating networks, as lazy ``"module:Class"`` references (imported on first ``get``)."""

from metarec_pl.hookspecs import hookimpl

NETWORKS = {
    "melu": "metarec_pl.models.melu:MeLUNet",
    "mlp": "metarec_pl.models.mlp:MLPNet",
    "text-sequence": "metarec_pl.models.sequence:TextSequenceNet",  # issue 21's backbone (models/sequence.py)
    "id-sequence": "metarec_pl.models.sequence:IdSequenceNet",  # its SASRec-style id baseline
    "metatl": "metarec_pl.models.metatl:MetaTLNet",  # MetaTL-style transition learner (Wang et al. 2021)
}


@hookimpl
def register_networks(register):
    for name, reference in NETWORKS.items():
        register(name, reference)
