"""metarec-tanp: a TaNP-style neural-process meta-learner, registered with metarec_pl as ``tanp``.

``NPResult`` and ``TaNP`` are imported on first access, so the entry point (``metarec_tanp.plugin``) stays light.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metarec_tanp.tanp import NPResult, TaNP

__all__ = ["NPResult", "TaNP"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from metarec_tanp import tanp

        return getattr(tanp, name)
    raise AttributeError(f"module 'metarec_tanp' has no attribute {name!r}")
