"""The plugin manager: built-ins, entry points of group ``metarec_pl``, a block list, and the registry.

Environment variable ``METAREC_PL_DISABLE_PLUGINS`` holds a comma-separated list of plugin names
(entry-point names, or ``builtin`` for the built-ins) that are not loaded.

A registration is ``register(name, cls)`` or ``register(name, "module:Class")``; a string (a *lazy reference*) is
imported on the first ``get``, so listing what is registered (``metarec plugins``) imports neither torch nor
Lightning: this module and the built-in plugin modules import only pluggy.

A plugin that goes wrong never takes the rest down.  Each problem is one line on stderr (printed once per process)
and in ``skips()``; ``metarec plugins`` lists the rest and then the skipped ones:

* the whole plugin is skipped when its entry point fails to import, when a hook has a wrong signature or a name
  that is no metarec_pl hook, or when one of its hooks raises (what that hook registered before raising is dropped);
* only the name is skipped when it is not a ``str``, when what it registers is not a class of the right kind
  (checked at registration for classes, at first ``get`` for lazy references), or when another plugin registered
  the name first.  Built-ins are asked first, then entry points (sorted by distribution, then name), then plugins
  registered at run time (in that order): a built-in always keeps its name.

``get`` for a name that was skipped raises ``UnknownPluginError`` naming the reason.

Kinds (``KINDS``): ``algorithm``, ``network``, ``sampler``, ``dataset``, ``protocol``, ``metric``, one hook each.
``register_models`` (``DEPRECATED_HOOKS``) is the old name of ``register_networks`` and ``"model"``
(``KIND_ALIASES``) the old name of the kind: a plugin implementing the old hook still registers networks, with a
``DeprecationWarning`` at registration and a line of ``notices()`` after the ``metarec plugins`` table.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import itertools
import os
import sys
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Optional, TextIO

import pluggy

from metarec_pl import hookspecs

DISABLE_ENV = "METAREC_PL_DISABLE_PLUGINS"
BUILTIN_PLUGINS = ("metarec_pl.builtin.algorithms", "metarec_pl.builtin.networks",
                   "metarec_pl.builtin.samplers", "metarec_pl.builtin.datasets",
                   "metarec_pl.builtin.protocols")
BUILTIN_DISTRIBUTION = "metarec_pl"
KINDS = {  # kind -> hook name
    "algorithm": "register_algorithms",
    "network": "register_networks",
    "sampler": "register_task_samplers",
    "dataset": "register_datasets",
    "protocol": "register_protocols",
    "metric": "register_metrics",
}
DEPRECATED_HOOKS = {"register_models": "register_networks"}  # old hook name -> the hook it is an alias of
KIND_ALIASES = {"model": "network"}  # old kind names that ``get``, ``names`` and ``registrations`` still take
HOOK_KINDS = {**{hook: kind for kind, hook in KINDS.items()},
              **{old: next(k for k, h in KINDS.items() if h == new) for old, new in DEPRECATED_HOOKS.items()}}
BASES = {  # kind -> (module, class names): every class of that kind subclasses the first of them the module has
    "algorithm": ("metarec_pl.algorithms.base", ("MetaAlgorithm", "Algorithm")),
    "network": ("metarec_pl.models.base", ("RatingModel",)),
    "sampler": ("metarec_pl.data.base", ("TaskSampler",)),
    "dataset": ("metarec_pl.data.base", ("RatingDataset",)),
    "protocol": ("metarec_pl.data.protocols", ("Protocol",)),
    "metric": ("torchmetrics", ("Metric",)),
}
_SOURCE_RANK = {"builtin": 0, "entry point": 1, "runtime": 2}


class UnknownPluginError(LookupError):
    """A name was asked for that no plugin registered (or whose registration was skipped: the message says why)."""


class PluginLoadError(UnknownPluginError):
    """A registered lazy reference could not be imported, or is not a class of the right kind."""


class PluginConflictError(RuntimeError):
    """Two plugins registered the same name for the same kind.  Kept for callers that catch it: conflicts are
    now skipped with one line (the first registration keeps the name), not raised."""


class InvalidPluginError(TypeError):
    """``register_plugin`` was given an object whose hooks do not match the hook specs (one-line message)."""


@dataclass(frozen=True)
class Skip:
    """One thing left out: a whole plugin (``kind`` and ``name`` None) or one registered name."""

    plugin: str
    distribution: str
    reason: str
    kind: Optional[str] = None
    name: Optional[str] = None

    @property
    def line(self) -> str:
        """The one line printed on stderr and at the end of ``metarec plugins``."""
        what = f"plugin '{self.plugin}'" if self.name is None else f"{self.kind} '{self.name}' of plugin '{self.plugin}'"
        return f"metarec_pl: skipped {what} from {self.distribution}: {self.reason}"


@dataclass(frozen=True)
class Registration:
    """One registered name.  ``target`` is the class or its lazy reference ``"module:Class"``; ``obj`` is the class
    (a lazy reference is imported on first access: ``PluginLoadError`` in one line when that fails)."""

    kind: str
    name: str
    target: Any
    plugin: str
    distribution: str

    @property
    def lazy(self) -> bool:
        """True for a ``"module:Class"`` reference not resolved by this registration yet."""
        return isinstance(self.target, str) and "obj" not in self.__dict__

    @property
    def reference(self) -> str:
        """``"module:Class"``, from the string given or from the class; needs no import."""
        if isinstance(self.target, str):
            return self.target
        return f"{getattr(self.target, '__module__', '?')}:{getattr(self.target, '__qualname__', '?')}"

    @cached_property
    def obj(self) -> Any:
        if not isinstance(self.target, str):
            return self.target
        where = f"{self.kind} '{self.name}' of plugin '{self.plugin}' from {self.distribution}"
        expected = f"expected '{self.target}' to name an importable subclass of {base_name(self.kind)}"
        module_name, _, attr = self.target.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except Exception as exc:
            raise PluginLoadError(f"{where}: cannot import '{self.target}': {_one_line(exc)}; {expected}") from exc
        problem = _kind_problem(self.kind, obj, import_base=True)
        if problem:
            raise PluginLoadError(f"{where}: '{self.target}' is {problem}; {expected}")
        return obj


pm = pluggy.PluginManager(hookspecs.PROJECT)
pm.add_hookspecs(hookspecs)
SPEC_ARGS = {hook: [p for p in inspect.signature(getattr(hookspecs, hook)).parameters] for hook in HOOK_KINDS}

_distributions: dict[str, str] = {}  # plugin name -> distribution that provided it
_sources: dict[str, tuple[int, int]] = {}  # plugin name -> (source rank, sequence): the order hooks are asked in
_sequence = itertools.count()
_loaded = False  # built-ins and entry points are imported once per process (``rescan_entry_points`` to redo)
_load_skips: list[Skip] = []  # plugins that failed to import or validate while loading: kept across rebuilds
_registry: dict[str, dict[str, Registration]] | None = None
_name_skips: dict[tuple[str, str], Skip] = {}  # (kind, name) -> why that registration was skipped
_plugin_skips: list[Skip] = []  # plugins whose hooks raised at the latest rebuild
_notices: dict[str, str] = {}  # plugin name -> a line about a deprecated hook it implements (``metarec plugins``)
_reported: set[str] = set()  # lines already printed on stderr in this process
skipped: list[str] = []  # the lines of ``skips()`` after the latest rebuild (``metarec plugins`` prints them)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def base_class(kind: str, import_base: bool = True) -> Optional[type]:
    """The class every registered class of ``kind`` subclasses (imports torch); without ``import_base``, None when
    its module is not imported yet."""
    module_name, class_names = BASES[kind]
    module = importlib.import_module(module_name) if import_base else sys.modules.get(module_name)
    return next((getattr(module, n) for n in class_names if hasattr(module, n)), None)


def base_name(kind: str) -> str:
    """``"metarec_pl.<base class>"`` (or ``"torchmetrics.Metric"``) of ``kind``, for messages; imports nothing."""
    module_name, class_names = BASES[kind]
    module = sys.modules.get(module_name)
    names = [n for n in class_names if module is None or hasattr(module, n)] or list(class_names)
    package = "metarec_pl" if module_name.startswith("metarec_pl") else module_name
    return f"{package}.{names[0]}"


def _kind_problem(kind: str, obj: Any, import_base: bool) -> Optional[str]:
    """Why ``obj`` cannot be registered as ``kind`` (None if it can).  Without ``import_base``, a base class whose
    module is not imported yet means ``obj`` cannot subclass it, so nothing heavy is imported to check."""
    if not isinstance(obj, type):
        return f"{type(obj).__name__} {obj!r:.60}, not a class"
    base = base_class(kind, import_base)
    if base is None or not issubclass(obj, base):
        return f"class {obj.__module__}.{obj.__qualname__}, not a subclass of {base_name(kind)}"
    return None


def _blocked() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def _signature_problem(plugin: object, attr: str) -> Optional[str]:
    """Why hook ``attr`` of ``plugin`` (a metarec_pl hook) cannot be called as its spec calls it (None: it can)."""
    try:
        params = list(inspect.signature(getattr(plugin, attr)).parameters.values())
    except (TypeError, ValueError):  # no signature to read: pluggy will tell at the call
        return None
    if params and params[0].name == "self":
        params = params[1:]
    required = [p.name for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    extra = [n for n in required if n not in SPEC_ARGS[attr]]
    if not extra:
        return None
    shown = ", ".join(p.name for p in params)
    return (f"hook {attr}({shown}) has argument(s) {', '.join(extra)} that the spec does not pass; "
            f"expected {attr}({', '.join(SPEC_ARGS[attr])})")


def _hook_options(plugin: object, attr: str) -> Optional[dict]:
    """pluggy's hook options of attribute ``attr`` (None: it is no hook implementation, or cannot be read)."""
    try:
        return pm.parse_hookimpl_opts(plugin, attr)
    except Exception:  # an attribute that cannot even be read is no hook
        return None


def _hook_problem(plugin: object) -> Optional[str]:
    """The first hook of ``plugin`` that metarec_pl cannot call, in words (None if every hook is fine)."""
    expected = ", ".join(f"{hook}({', '.join(SPEC_ARGS[hook])})" for hook in KINDS.values())  # not the old names
    for attr in dir(plugin):
        opts = _hook_options(plugin, attr)
        if opts is None:
            continue
        if attr not in SPEC_ARGS:
            if opts.get("optionalhook"):
                continue
            return f"hook '{attr}' is not a metarec_pl hook; expected one of: {expected}"
        problem = _signature_problem(plugin, attr)
        if problem:
            return problem
    return None


def _add(plugin: object, name: Optional[str], distribution: str, source: str) -> tuple[Optional[str], Optional[str]]:
    """Validate and register ``plugin``: (its name, None) or (None, why it was refused)."""
    problem = _hook_problem(plugin)
    if problem:
        return None, problem
    try:
        name = pm.register(plugin, name=name)
    except Exception as exc:  # pluggy's own checks (e.g. a name or object registered twice)
        return None, _one_line(exc)
    if name is None:  # pluggy returns None for a blocked name
        return None, "the plugin manager refused it"
    _distributions[name] = distribution
    _sources[name] = (_SOURCE_RANK[source], next(_sequence))
    return name, None


def _skip_plugin(name: str, distribution: str, reason: str) -> None:
    skip = Skip(name, distribution, reason)
    _load_skips.append(skip)
    _report(skip)


def _report(skip: Skip) -> None:
    if skip.line not in _reported:
        _reported.add(skip.line)
        print(skip.line, file=sys.stderr)


def _load() -> None:
    """Register the built-ins and every entry point of group ``metarec_pl``, once per process."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    blocked = _blocked()
    if "builtin" not in blocked:
        for module_name in BUILTIN_PLUGINS:
            if pm.get_plugin(module_name) is not None:
                continue
            try:
                module = importlib.import_module(module_name)
            except Exception as exc:
                _skip_plugin(module_name, BUILTIN_DISTRIBUTION, f"cannot import it: {_one_line(exc)}")
                continue
            _, problem = _add(module, module_name, BUILTIN_DISTRIBUTION, "builtin")
            if problem:
                _skip_plugin(module_name, BUILTIN_DISTRIBUTION, problem)
    points = sorted(importlib.metadata.entry_points(group=hookspecs.PROJECT),
                    key=lambda ep: ((ep.dist.name if ep.dist is not None else ""), ep.name))
    for ep in points:
        if ep.name in blocked or pm.get_plugin(ep.name) is not None:
            continue
        dist = ep.dist.name if ep.dist is not None else "?"
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken third-party plugin must not take the core down
            _skip_plugin(ep.name, dist, f"cannot import entry point '{ep.value}': {_one_line(exc)}; expected an "
                                        f"importable module or object with @metarec_pl.hookimpl functions")
            continue
        _, problem = _add(plugin, ep.name, dist, "entry point")
        if problem:
            _skip_plugin(ep.name, dist, problem)


def rescan_entry_points() -> None:
    """Unregister every entry-point plugin and forget which failed, so the next lookup imports them again (after a
    ``pip install`` in a running notebook, or in tests that fake entry points)."""
    global _loaded
    for name, (rank, _) in list(_sources.items()):
        if rank == _SOURCE_RANK["entry point"]:
            unregister_plugin(name)
    _load_skips[:] = [s for s in _load_skips if s.distribution == BUILTIN_DISTRIBUTION]
    _reported.clear()
    _loaded = False
    invalidate()


def register_plugin(plugin: object, name: str | None = None, distribution: str = "(runtime)") -> str:
    """Register a plugin object at run time (tests, notebooks); returns its name.

    Raises ``InvalidPluginError`` (one line) when a hook has a wrong signature or an unknown name, or the name is
    taken.  Problems found when its hooks run (a hook that raises, a name another plugin has, something that is not
    a class of the right kind) skip it or that name with one line on stderr, as for an installed plugin.
    """
    registered, problem = _add(plugin, name, distribution, "runtime")
    if problem:
        raise InvalidPluginError(f"cannot register plugin {name or plugin!r} from {distribution}: {problem}")
    invalidate()
    return registered


def unregister_plugin(name: str) -> None:
    pm.unregister(name=name)
    _distributions.pop(name, None)
    _sources.pop(name, None)
    invalidate()


def invalidate() -> None:
    """Forget the collected registry so the next lookup asks every plugin again (entry points are not re-imported)."""
    global _registry
    _registry = None


def _bind(register: Callable[..., None], kind: str) -> Callable[[str, Any], None]:
    def register_one(name: str, cls: Any) -> None:
        """``register("short-name", cls)`` or ``register("short-name", "module:Class")`` (imported on first use)."""
        register(name, cls, kind)

    return register_one


def _impl(hook_name: str, plugin: object):
    return next((impl for impl in getattr(pm.hook, hook_name).get_hookimpls()
                 if impl.plugin is plugin and not (impl.hookwrapper or impl.wrapper)), None)


def _target_problem(kind: str, name: Any, target: Any) -> Optional[str]:
    """Why ``register(name, target)`` cannot register a ``kind`` (None: it can), without importing anything."""
    if not isinstance(name, str) or not name:
        return f"the name {name!r} is not a non-empty str; expected register(\"short-name\", cls)"
    expected = f"expected a subclass of {base_name(kind)} or its 'module:Class' reference"
    if isinstance(target, str):
        module_name, colon, attr = target.partition(":")
        return None if colon and module_name and attr else (f"the reference {target!r} has no 'module:Class' form; "
                                                            f"{expected}")
    problem = _kind_problem(kind, target, import_base=False)
    return f"it registers {problem}; {expected}" if problem else None


@dataclass
class _Staging:
    """One plugin's registrations while its hooks run (kept only when every hook returns), and the names refused."""

    plugin: str
    distribution: str
    registry: dict[str, dict[str, Registration]]  # what the plugins asked before this one registered
    kept: list[Registration] = field(default_factory=list)
    refused: dict[tuple[str, str], Skip] = field(default_factory=dict)

    def register(self, name: Any, target: Any, kind: str) -> None:
        """The ``register`` a hook receives: checks one registration, stages it or records why not."""
        problem = _target_problem(kind, name, target)
        if problem is None:
            reg = Registration(kind, name, target, self.plugin, self.distribution)
            known = self.registry[kind].get(name) or next((r for r in self.kept if (r.kind, r.name) == (kind, name)),
                                                          None)
            if known is None:
                self.kept.append(reg)
            elif not (known.target is target or known.reference == reg.reference):  # the same class twice is fine
                owner = "the built-in" if known.distribution == BUILTIN_DISTRIBUTION else "plugin"
                problem = (f"{owner} '{known.plugin}' from {known.distribution} registered '{name}' first "
                           f"({known.reference}); expected a name no other plugin registers (the first registration "
                           f"keeps it)")
        if problem is not None:
            self.refused.setdefault((kind, str(name)), Skip(self.plugin, self.distribution, problem, kind, str(name)))

    def call_hooks(self, plugin: object) -> Optional[Skip]:
        """Run every hook ``plugin`` implements (a deprecated one as the hook it is an alias of); the whole plugin's
        ``Skip`` when one raises, else None."""
        hook_name = ""
        try:
            for hook_name, kind in HOOK_KINDS.items():
                impl = _impl(hook_name, plugin)
                if impl is None:
                    continue
                if hook_name in DEPRECATED_HOOKS:
                    _notices.setdefault(self.plugin, f"metarec_pl: plugin '{self.plugin}' from {self.distribution} "
                                        f"implements {hook_name}, the deprecated name of "
                                        f"{DEPRECATED_HOOKS[hook_name]}: its {kind}s are registered; expected "
                                        f"{DEPRECATED_HOOKS[hook_name]} (rename the hook)")
                args = {"register": _bind(self.register, kind)}
                impl.function(*[args[a] for a in impl.argnames], **{a: args[a] for a in impl.kwargnames if a in args})
        except Exception as exc:  # a broken hook must not take the rest down: drop the whole plugin
            return Skip(self.plugin, self.distribution, f"its hook {hook_name} raised {_one_line(exc)}; expected it to "
                                                        f"call register(name, cls) and return")
        return None


def _collect() -> dict[str, dict[str, Registration]]:
    """Ask every plugin's hooks (built-ins first, see the module docstring) and keep what they register, once until
    ``invalidate``; reports what was skipped."""
    global _registry
    if _registry is not None:
        return _registry
    _load()
    registry: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}
    _notices.clear()
    name_skips: dict[tuple[str, str], Skip] = {}
    plugin_skips: list[Skip] = []
    for plugin_name in sorted(_sources, key=_sources.__getitem__):
        plugin = pm.get_plugin(plugin_name)
        if plugin is None:
            continue
        staging = _Staging(plugin_name, _distributions.get(plugin_name, "?"), registry)
        failure = staging.call_hooks(plugin)
        if failure is not None:  # what it registered before raising is dropped too
            plugin_skips.append(failure)
            for r in staging.kept:
                name_skips.setdefault((r.kind, r.name), failure)
            continue
        for r in staging.kept:
            registry[r.kind][r.name] = r
        for key, skip in staging.refused.items():
            name_skips.setdefault(key, skip)
    _publish(registry, name_skips, plugin_skips)
    return registry


def _publish(registry: dict[str, dict[str, Registration]], name_skips: dict[tuple[str, str], Skip],
             plugin_skips: list[Skip]) -> None:
    """Make a rebuilt registry current: remember and report what was skipped (a name that another plugin
    registered after all is no longer missing)."""
    global _registry
    _name_skips.clear()
    _name_skips.update({key: s for key, s in name_skips.items() if key[1] not in registry.get(key[0], {})})
    all_skips = [*_load_skips, *plugin_skips, *(s for s in name_skips.values() if s.name is not None)]
    for skip in all_skips:
        _report(skip)
    skipped[:] = list(dict.fromkeys(s.line for s in all_skips))
    _plugin_skips[:] = plugin_skips
    _registry = registry


def notices() -> list[str]:
    """One line per plugin that implements a deprecated hook (its registrations still count), as of the latest
    rebuild."""
    _collect()
    return list(_notices.values())


def skips() -> list[Skip]:
    """Everything left out (whole plugins, then single names), as of the latest rebuild."""
    _collect()
    seen: dict[str, Skip] = {}
    for skip in [*_load_skips, *_plugin_skips, *_name_skips.values()]:
        seen.setdefault(skip.line, skip)
    return list(seen.values())


def registrations(kind: str | None = None) -> list[Registration]:
    """Every registered name (of one kind, or of all kinds), sorted by kind then name.  Imports nothing: a lazy
    reference is imported when its ``obj`` is first read."""
    reg = _collect()
    kinds = [canonical_kind(kind)] if kind else list(KINDS)
    return [reg[k][n] for k in kinds for n in sorted(reg[k])]


def canonical_kind(kind: str) -> str:
    """``kind``, or the kind an old name stands for (``"model"`` -> ``"network"``)."""
    return KIND_ALIASES.get(kind, kind)


def names(kind: str) -> list[str]:
    return sorted(_collect()[canonical_kind(kind)])


def get(kind: str, name: str) -> Any:
    """The class registered as ``name`` for ``kind`` (a lazy reference is imported now).

    Raises ``UnknownPluginError`` (one line) for an unknown kind or name: it lists the choices, and for a name that
    was skipped (a conflict, not a class of the right kind, its plugin's hook raised) it says why; a plugin that
    failed to load is named as one that may have provided it.  ``PluginLoadError`` (a subclass) when a lazy
    reference cannot be imported or is not a class of the right kind.
    """
    reg = _collect()
    kind = canonical_kind(kind)
    if kind not in reg:
        raise UnknownPluginError(f"unknown plugin kind '{kind}'; expected one of: {', '.join(KINDS)}")
    found = reg[kind].get(name)
    if found is not None:
        return found.obj
    available = ", ".join(sorted(reg[kind])) or "(none)"
    raise UnknownPluginError(f"unknown {kind} '{name}'; available: {available}{why_missing(kind, name)}")


def why_missing(kind: str, name: str) -> str:
    """``""``, or ``"; '<name>' was skipped: <reason>"`` for a registration that was skipped, or ``"; plugin(s)
    skipped at load, which may have provided it: ..."`` when some plugin failed to load (one line either way)."""
    _collect()
    kind = canonical_kind(kind)
    skip = _name_skips.get((kind, name))
    if skip is not None:
        return f"; '{name}' was skipped: {skip.line.removeprefix('metarec_pl: skipped ')}"
    if _load_skips:
        return "; plugin(s) skipped at load, which may have provided it: " + "; ".join(
            f"'{s.plugin}' from {s.distribution} ({s.reason.split(';')[0]})" for s in _load_skips)
    return ""


def get_algorithm(name: str) -> Any:
    return get("algorithm", name)


def get_network(name: str) -> Any:
    return get("network", name)


def get_model(name: str) -> Any:
    """Deprecated name of ``get_network``."""
    return get("network", name)


def get_protocol(name: str) -> Any:
    return get("protocol", name)


def get_metric(name: str) -> Any:
    return get("metric", name)


def get_task_sampler(name: str) -> Any:
    return get("sampler", name)


def get_dataset(name: str) -> Any:
    return get("dataset", name)


def table_lines(check: bool = False) -> tuple[list[str], list[str]]:
    """``metarec plugins``: (the table of kind, name, distribution, plugin, reference; the skipped lines).

    Imports nothing unless ``check``, which imports every lazy reference and adds a line for each that fails.
    Plugins that implement a deprecated hook get a line of their own in the table's list (``notices``), which is
    no problem for ``check``.
    """
    regs = registrations()
    problems = list(skipped)
    if check:
        for r in regs:
            try:
                r.obj
            except PluginLoadError as exc:
                problems.append(f"metarec_pl: broken {exc}")
    rows = [(r.kind, r.name, r.distribution, r.plugin, r.reference) for r in regs]
    header = ("kind", "name", "distribution", "plugin", "reference")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    table = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in (header, *rows)]
    return table, problems


def print_table(out: Optional[TextIO] = None, check: bool = False) -> int:
    """Print ``table_lines`` (the table, then the deprecation notices, then the skipped lines) to ``out``; returns
    the exit code: 2 when ``check`` found a problem (a skipped plugin or name, a reference that does not import),
    else 0."""
    out = sys.stdout if out is None else out
    table, problems = table_lines(check=check)
    for line in (*table, *notices(), *problems):
        print(line, file=out)
    return 2 if check and problems else 0

