"""The plugin manager: built-ins, entry points of group ``metarec_pl``, a block list, and the registry.

Environment variable ``METAREC_PL_DISABLE_PLUGINS`` holds a comma-separated list of plugin names
(entry-point names, or ``builtin`` for the built-ins) that are not loaded.  A plugin that fails to
import is reported in one line on stderr and skipped; the rest keep working.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from dataclasses import dataclass
from typing import Any

import pluggy

from metarec_pl import hookspecs

DISABLE_ENV = "METAREC_PL_DISABLE_PLUGINS"
BUILTIN_PLUGINS = ("metarec_pl.builtin.algorithms", "metarec_pl.builtin.models",
                   "metarec_pl.builtin.samplers", "metarec_pl.builtin.datasets")
KINDS = {  # kind -> hook name
    "algorithm": "register_algorithms",
    "model": "register_models",
    "sampler": "register_task_samplers",
    "dataset": "register_datasets",
}


class UnknownPluginError(LookupError):
    """A name was asked for that no plugin registered."""


class PluginConflictError(RuntimeError):
    """Two plugins registered the same name for the same kind."""


@dataclass(frozen=True)
class Registration:
    kind: str
    name: str
    obj: Any
    plugin: str
    distribution: str


pm = pluggy.PluginManager(hookspecs.PROJECT)
pm.add_hookspecs(hookspecs)
_distributions: dict[str, str] = {}  # plugin name -> distribution that provided it
_registry: dict[str, dict[str, Registration]] | None = None
skipped: list[str] = []  # one-line reasons for plugins that failed to load


def _blocked() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def _load_builtins() -> None:
    if "builtin" in _blocked():
        return
    for modname in BUILTIN_PLUGINS:
        if pm.get_plugin(modname) is None:
            pm.register(importlib.import_module(modname), name=modname)
            _distributions[modname] = "metarec_pl"


def _load_entry_points() -> None:
    blocked = _blocked()
    for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT):
        if ep.name in blocked or pm.get_plugin(ep.name) is not None:
            continue
        dist = ep.dist.name if ep.dist is not None else "?"
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # a broken third-party plugin must not take the core down
            reason = f"metarec_pl: skipped plugin '{ep.name}' from {dist}: {type(exc).__name__}: {exc}"
            skipped.append(reason)
            print(reason.splitlines()[0], file=sys.stderr)
            continue
        _distributions[ep.name] = dist


def register_plugin(plugin: object, name: str | None = None, distribution: str = "(runtime)") -> str:
    """Register a plugin object at run time (tests, notebooks); returns its name."""
    name = pm.register(plugin, name=name)
    _distributions[name] = distribution
    invalidate()
    return name


def unregister_plugin(name: str) -> None:
    pm.unregister(name=name)
    _distributions.pop(name, None)
    invalidate()


def invalidate() -> None:
    """Forget the collected registry so the next lookup asks every plugin again."""
    global _registry
    _registry = None


def _collect() -> dict[str, dict[str, Registration]]:
    global _registry
    if _registry is not None:
        return _registry
    _load_builtins()
    _load_entry_points()
    pm.check_pending()
    registry: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}
    for kind, hook_name in KINDS.items():
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)

            def register(name: str, obj: Any, _kind=kind, _plugin=plugin_name) -> None:
                known = registry[_kind].get(name)
                if known is not None and known.obj is not obj:
                    raise PluginConflictError(
                        f"{_kind} '{name}' is registered by both '{known.plugin}' and '{_plugin}'")
                registry[_kind][name] = Registration(
                    _kind, name, obj, _plugin, _distributions.get(_plugin, "?"))

            impl.function(register=register)
    _registry = registry
    return registry


def registrations(kind: str | None = None) -> list[Registration]:
    """Every registered name (of one kind, or of all kinds), sorted by kind then name."""
    reg = _collect()
    kinds = [kind] if kind else list(KINDS)
    return [reg[k][n] for k in kinds for n in sorted(reg[k])]


def names(kind: str) -> list[str]:
    return sorted(_collect()[kind])


def get(kind: str, name: str) -> Any:
    """The class registered as ``name`` for ``kind``; one-line error listing the choices otherwise."""
    reg = _collect()
    if kind not in reg:
        raise UnknownPluginError(f"unknown plugin kind '{kind}'; expected one of: {', '.join(KINDS)}")
    try:
        return reg[kind][name].obj
    except KeyError:
        available = ", ".join(sorted(reg[kind])) or "(none)"
        raise UnknownPluginError(f"unknown {kind} '{name}'; available: {available}") from None


def get_algorithm(name: str) -> Any:
    return get("algorithm", name)


def get_model(name: str) -> Any:
    return get("model", name)


def get_task_sampler(name: str) -> Any:
    return get("sampler", name)


def get_dataset(name: str) -> Any:
    return get("dataset", name)
