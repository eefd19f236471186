"""Built-in cold-start protocols (``metarec_pl.data.protocols``), as lazy ``"module:Class"`` references."""

from metarec_pl.hookspecs import hookimpl

PROTOCOLS = {
    "melu": "metarec_pl.data.protocols:MeLUStates",
    "user-cold": "metarec_pl.data.protocols:UserCold",
    "item-cold": "metarec_pl.data.protocols:ItemCold",
    "temporal": "metarec_pl.data.protocols:Temporal",
    "given": "metarec_pl.data.protocols:Given",
    "sequential-cold": "metarec_pl.data.protocols:SequentialCold",
}


@hookimpl
def register_protocols(register):
    for name, reference in PROTOCOLS.items():
        register(name, reference)
