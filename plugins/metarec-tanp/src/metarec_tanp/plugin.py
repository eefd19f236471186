"""The entry point (group ``metarec_pl``, name ``tanp``): one hook implementation."""

import metarec_pl

from metarec_tanp.tanp import TaNP


@metarec_pl.hookimpl
def register_algorithms(register):
    register("tanp", TaNP)
