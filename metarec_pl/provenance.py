"""Which distribution provided each plugin a run uses, so saved configs and checkpoints can name it.

``MetaLearner`` records ``{"algorithm/residual-mean": "my-algo", "network/melu": "metarec_pl"}`` in its hyper-
parameters (hence in ``hparams.yaml``, in every checkpoint, and in the CLI's saved ``config.yaml``).  Loading one
where a recorded name is no longer registered fails in one line that says which distribution to install.
"""

from __future__ import annotations

from typing import Any, Optional

from metarec_pl import plugins


def key(kind: str, name: str) -> str:
    return f"{kind}/{name}"


def recorded_distribution(recorded: Optional[dict[str, str]], kind: str, name: str) -> Optional[str]:
    """The distribution ``recorded`` names for (kind, name); a record made before a kind was renamed (``model/melu``
    for the network ``melu``) counts too."""
    recorded = recorded or {}
    old = [alias for alias, new in plugins.KIND_ALIASES.items() if new == kind]
    return next((recorded[k] for k in (key(kind, name), *(key(a, name) for a in old)) if k in recorded), None)


def distribution(kind: str, name: str) -> str:
    """The distribution that registered ``name`` (``metarec_pl`` for built-ins, ``(runtime)`` for run-time ones)."""
    return next(r.distribution for r in plugins.registrations(kind) if r.name == name)


def lookup(kind: str, name: str, recorded: Optional[dict[str, str]] = None) -> Any:
    """``plugins.get``, but a name missing here that ``recorded`` attributes to a distribution says so (and why it
    was skipped, where it was); ``PluginLoadError`` for a broken lazy reference passes through unchanged."""
    try:
        return plugins.get(kind, name)
    except plugins.PluginLoadError:
        raise  # registered, but its reference is broken: the message already names plugin and reference
    except plugins.UnknownPluginError as exc:
        dist = recorded_distribution(recorded, kind, name)
        if dist is None:
            raise
        if dist.startswith("("):
            hint = f"it was registered at run time ({dist}): register that plugin before loading"
        else:
            hint = (f"it was provided by distribution '{dist}', which is not installed or is disabled by "
                    f"{plugins.DISABLE_ENV}: pip install {dist}")
        raise plugins.UnknownPluginError(f"{exc.args[0].split(';')[0]} (recorded in this config/checkpoint); "
                                         f"{hint}{plugins.why_missing(kind, name)}") from None


def record(*used: tuple[str, str]) -> dict[str, str]:
    """``record(("algorithm", "residual-mean"), ("network", "melu"))`` -> ``{"algorithm/residual-mean": "my-algo", ...}``."""
    return {key(kind, name): distribution(kind, name) for kind, name in used}
