"""The entry point (group ``metarec_pl``, name ``tanp``): one hook implementation.

It registers a lazy ``"module:Class"`` reference, so ``metarec plugins`` lists ``tanp`` without importing torch or
Lightning; ``metarec_tanp.tanp`` is imported when ``tanp`` is first used.
"""

import metarec_pl


@metarec_pl.hookimpl
def register_algorithms(register):
    register("tanp", "metarec_tanp.tanp:TaNP")
