"""metarec-tanp: a TaNP-style neural-process meta-learner, registered with metarec_pl as ``tanp``."""

from metarec_tanp.tanp import NPResult, TaNP

__all__ = ["NPResult", "TaNP"]
