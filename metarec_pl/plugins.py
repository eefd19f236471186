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
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import itertools
import os
import sys
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Optional, TextIO

import pluggy

from metarec_pl import hookspecs

DISABLE_ENV = "METAREC_PL_DISABLE_PLUGINS"
BUILTIN_PLUGINS = ("metarec_pl.builtin.algorithms", "metarec_pl.builtin.models",
                   "metarec_pl.builtin.samplers", "metarec_pl.builtin.datasets")
BUILTIN_DISTRIBUTION = "metarec_pl"
KINDS = {  # kind -> hook name
    "algorithm": "register_algorithms",
    "model": "register_models",
    "sampler": "register_task_samplers",
    "dataset": "register_datasets",
}
BASES = {  # kind -> (module, class names): every class of that kind subclasses the first of them the module has
    "algorithm": ("metarec_pl.algorithms.base", ("MetaAlgorithm", "Algorithm")),
    "model": ("metarec_pl.models.base", ("RatingModel",)),
    "sampler": ("metarec_pl.data.base", ("TaskSampler",)),
    "dataset": ("metarec_pl.data.base", ("RatingDataset",)),
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
SPEC_ARGS = {hook: [p for p in inspect.signature(getattr(hookspecs, hook)).parameters] for hook in KINDS.values()}

_distributions: dict[str, str] = {}  # plugin name -> distribution that provided it
_sources: dict[str, tuple[int, int]] = {}  # plugin name -> (source rank, sequence): the order hooks are asked in
_sequence = itertools.count()
_loaded = False  # built-ins and entry points are imported once per process (``rescan_entry_points`` to redo)
_load_skips: list[Skip] = []  # plugins that failed to import or validate while loading: kept across rebuilds
_registry: dict[str, dict[str, Registration]] | None = None
_name_skips: dict[tuple[str, str], Skip] = {}  # (kind, name) -> why that registration was skipped
_plugin_skips: list[Skip] = []  # plugins whose hooks raised at the latest rebuild
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
    """``"metarec_pl.<base class>"`` of ``kind``, for messages; imports nothing."""
    module = sys.modules.get(BASES[kind][0])
    names = [n for n in BASES[kind][1] if module is None or hasattr(module, n)] or list(BASES[kind][1])
    return f"metarec_pl.{names[0]}"


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


def _hook_problem(plugin: object) -> Optional[str]:
    """The first hook of ``plugin`` that metarec_pl cannot call, in words (None if every hook is fine)."""
    expected = ", ".join(f"{hook}({', '.join(args)})" for hook, args in SPEC_ARGS.items())
    for attr in dir(plugin):
        try:
            opts = pm.parse_hookimpl_opts(plugin, attr)
        except Exception:  # an attribute that cannot even be read is no hook
            continue
        if opts is None:
            continue
        if attr not in SPEC_ARGS:
            if opts.get("optionalhook"):
                continue
            return f"hook '{attr}' is not a metarec_pl hook; expected one of: {expected}"
        try:
            params = list(inspect.signature(getattr(plugin, attr)).parameters.values())
        except (TypeError, ValueError):
            continue
        if params and params[0].name == "self":
            params = params[1:]
        required = [p.name for p in params if p.default is p.empty
                    and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        extra = [n for n in required if n not in SPEC_ARGS[attr]]
        if extra:
            shown = ", ".join(p.name for p in params)
            return (f"hook {attr}({shown}) has argument(s) {', '.join(extra)} that the spec does not pass; "
                    f"expected {attr}({', '.join(SPEC_ARGS[attr])})")
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


def _collect() -> dict[str, dict[str, Registration]]:
    global _registry
    if _registry is not None:
        return _registry
    _load()
    registry: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}
    name_skips: dict[tuple[str, str], Skip] = {}
    plugin_skips: list[Skip] = []
    for plugin_name in sorted(_sources, key=_sources.__getitem__):
        plugin = pm.get_plugin(plugin_name)
        if plugin is None:
            continue
        dist = _distributions.get(plugin_name, "?")
        staged: list[Registration] = []
        staged_skips: dict[tuple[str, str], Skip] = {}

        def register(name: Any, target: Any, _kind: str = "", _plugin: str = plugin_name, _dist: str = dist) -> None:
            """The ``register`` a hook receives: checks one registration, stages it or records why not."""
            def refuse(reason: str) -> None:
                staged_skips.setdefault((_kind, str(name)), Skip(_plugin, _dist, reason, _kind, str(name)))

            if not isinstance(name, str) or not name:
                return refuse(f"the name {name!r} is not a non-empty str; expected register(\"short-name\", cls)")
            expected = f"expected a subclass of {base_name(_kind)} or its 'module:Class' reference"
            if isinstance(target, str):
                module_name, colon, attr = target.partition(":")
                if not (colon and module_name and attr):
                    return refuse(f"the reference {target!r} has no 'module:Class' form; {expected}")
            else:
                problem = _kind_problem(_kind, target, import_base=False)
                if problem:
                    return refuse(f"it registers {problem}; {expected}")
            reg = Registration(_kind, name, target, _plugin, _dist)
            known = registry[_kind].get(name) or next((r for r in staged if (r.kind, r.name) == (_kind, name)), None)
            if known is not None:
                if known.target is target or known.reference == reg.reference:
                    return  # the same class (or its reference) twice is no conflict
                owner = "the built-in" if known.distribution == BUILTIN_DISTRIBUTION else "plugin"
                return refuse(f"{owner} '{known.plugin}' from {known.distribution} registered '{name}' first "
                              f"({known.reference}); expected a name no other plugin registers "
                              f"(the first registration keeps it)")
            staged.append(reg)

        hook_name = ""
        try:
            for kind, hook_name in KINDS.items():
                impl = _impl(hook_name, plugin)
                if impl is None:
                    continue
                args = {"register": _bind(register, kind)}
                impl.function(*[args[a] for a in impl.argnames], **{a: args[a] for a in impl.kwargnames if a in args})
        except Exception as exc:  # a broken hook must not take the rest down: drop the whole plugin
            skip = Skip(plugin_name, dist, f"its hook {hook_name} raised {_one_line(exc)}; expected it to call "
                                           f"register(name, cls) and return")
            plugin_skips.append(skip)
            for r in staged:
                name_skips.setdefault((r.kind, r.name), skip)
            continue
        for r in staged:
            registry[r.kind][r.name] = r
        for key, skip in staged_skips.items():
            name_skips.setdefault(key, skip)
    _name_skips.clear()
    _name_skips.update({key: s for key, s in name_skips.items() if key[1] not in registry.get(key[0], {})})
    all_skips = [*_load_skips, *plugin_skips, *(s for s in name_skips.values() if s.name is not None)]
    for skip in all_skips:
        _report(skip)
    skipped[:] = list(dict.fromkeys(s.line for s in all_skips))
    _plugin_skips[:] = plugin_skips
    _registry = registry
    return registry


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
    kinds = [kind] if kind else list(KINDS)
    return [reg[k][n] for k in kinds for n in sorted(reg[k])]


def names(kind: str) -> list[str]:
    return sorted(_collect()[kind])


def get(kind: str, name: str) -> Any:
    """The class registered as ``name`` for ``kind`` (a lazy reference is imported now).

    Raises ``UnknownPluginError`` (one line) for an unknown kind or name: it lists the choices, and for a name that
    was skipped (a conflict, not a class of the right kind, its plugin's hook raised) it says why; a plugin that
    failed to load is named as one that may have provided it.  ``PluginLoadError`` (a subclass) when a lazy
    reference cannot be imported or is not a class of the right kind.
    """
    reg = _collect()
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
    skip = _name_skips.get((kind, name))
    if skip is not None:
        return f"; '{name}' was skipped: {skip.line.removeprefix('metarec_pl: skipped ')}"
    if _load_skips:
        return "; plugin(s) skipped at load, which may have provided it: " + "; ".join(
            f"'{s.plugin}' from {s.distribution} ({s.reason.split(';')[0]})" for s in _load_skips)
    return ""


def get_algorithm(name: str) -> Any:
    return get("algorithm", name)


def get_model(name: str) -> Any:
    return get("model", name)


def get_task_sampler(name: str) -> Any:
    return get("sampler", name)


def get_dataset(name: str) -> Any:
    return get("dataset", name)


def table_lines(check: bool = False) -> tuple[list[str], list[str]]:
    """``metarec plugins``: (the table of kind, name, distribution, plugin, reference; the skipped lines).

    Imports nothing unless ``check``, which imports every lazy reference and adds a line for each that fails.
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
    """Print ``table_lines`` (the table, then the skipped lines) to ``out``; returns the exit code: 2 when ``check``
    found a problem (a skipped plugin or name, a reference that does not import), else 0."""
    out = sys.stdout if out is None else out
    table, problems = table_lines(check=check)
    for line in (*table, *problems):
        print(line, file=out)
    return 2 if check and problems else 0

