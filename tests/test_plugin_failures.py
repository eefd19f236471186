"""A plugin that goes wrong is reported in one line and skipped; the rest of the registry keeps working.

In-process: plugins registered at run time, and entry points faked by replacing ``importlib.metadata.entry_points``
(``plugins.rescan_entry_points`` makes the registry import them again).  The real dist-info path is covered by
tests/test_plugins.py in a subprocess.
"""

import importlib.metadata
from pathlib import Path

import pytest
import torch.nn as nn

import metarec_pl
from metarec_pl import entry, plugins
from metarec_pl.algorithms.maml import MAML
from metarec_pl.models.mlp import MLPNet

MAML_REF = "metarec_pl.algorithms.maml:MAML"
ROOT_DIR = Path(__file__).resolve().parents[1]
ALG = plugins.base_name("algorithm")  # "metarec_pl.<the class every algorithm subclasses>"


class Mine(MAML):
    pass


def plugin(**hooks):
    """A plugin object whose hooks are the given functions of ``register`` (marked ``@hookimpl``)."""
    return type("P", (), {name: staticmethod(metarec_pl.hookimpl(f)) for name, f in hooks.items()})()


def stderr_lines(capsys, needle: str) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if needle in line]


def algorithms() -> set[str]:
    return {r.name for r in metarec_pl.registrations("algorithm")}


# ---- a hook that raises ---------------------------------------------------------------------------------------

def test_hook_that_raises_skips_its_plugin_in_one_line_once(metarec_plugin_factory, capsys):
    calls = []

    def register_algorithms(register):
        calls.append(1)
        register("before-boom", Mine)  # registered before the raise: dropped with the rest of the plugin
        raise RuntimeError("boom\nsecond line")

    def register_networks(register):
        register("boom-model", MLPNet)

    metarec_plugin_factory(plugin(register_algorithms=register_algorithms, register_networks=register_networks),
                           name="boomer", distribution="boom-dist")
    assert "maml" in algorithms() and "before-boom" not in algorithms()
    assert "boom-model" not in plugins.names("network")  # the whole plugin is out
    (line,) = stderr_lines(capsys, "boomer")
    assert line == ("metarec_pl: skipped plugin 'boomer' from boom-dist: its hook register_algorithms raised "
                    "RuntimeError: boom; expected it to call register(name, cls) and return")
    plugins.invalidate()  # a rebuild asks the hook again, but does not report it again
    assert "before-boom" not in algorithms() and len(calls) >= 2
    assert stderr_lines(capsys, "boomer") == []
    assert line in plugins.skipped and line in [s.line for s in plugins.skips()]
    with pytest.raises(plugins.UnknownPluginError) as err:
        metarec_pl.get_algorithm("before-boom")
    assert str(err.value).startswith("unknown algorithm 'before-boom'; available: anil, ")
    assert str(err.value).endswith("; 'before-boom' was skipped: plugin 'boomer' from boom-dist: its hook "
                                   "register_algorithms raised RuntimeError: boom; expected it to call "
                                   "register(name, cls) and return")


# ---- conflicting names ----------------------------------------------------------------------------------------

def test_builtin_keeps_its_name_and_only_the_conflicting_name_is_skipped(metarec_plugin_factory, capsys):
    def register_algorithms(register):
        register("maml", Mine)
        register("mine", Mine)

    metarec_plugin_factory(plugin(register_algorithms=register_algorithms), name="clash", distribution="clash-dist")
    assert metarec_pl.get_algorithm("maml") is MAML
    assert metarec_pl.get_algorithm("mine") is Mine  # the plugin's other names still work
    (row,) = [r for r in metarec_pl.registrations("algorithm") if r.name == "maml"]
    assert (row.plugin, row.distribution) == ("metarec_pl.builtin.algorithms", "metarec_pl")
    (line,) = stderr_lines(capsys, "clash")
    assert line == ("metarec_pl: skipped algorithm 'maml' of plugin 'clash' from clash-dist: the built-in "
                    f"'metarec_pl.builtin.algorithms' from metarec_pl registered 'maml' first ({MAML_REF}); "
                    "expected a name no other plugin registers (the first registration keeps it)")


def test_between_two_plugins_the_first_registered_keeps_the_name(metarec_plugin_factory, capsys):
    class Other(MAML):
        pass

    metarec_plugin_factory(plugin(register_algorithms=lambda register: register("shared", Mine)), name="first")
    metarec_plugin_factory(plugin(register_algorithms=lambda register: register("shared", Other)), name="second")
    assert metarec_pl.get_algorithm("shared") is Mine
    (line,) = stderr_lines(capsys, "'second'")
    assert line.startswith("metarec_pl: skipped algorithm 'shared' of plugin 'second' from (test): plugin 'first' "
                           "from (test) registered 'shared' first (test_plugin_failures:Mine)")


@pytest.mark.parametrize("target", [MAML_REF, MAML])
def test_the_same_class_twice_is_no_conflict(metarec_plugin_factory, capsys, target):
    metarec_plugin_factory(plugin(register_algorithms=lambda register: register("maml", target)), name="again")
    assert metarec_pl.get_algorithm("maml") is MAML
    assert stderr_lines(capsys, "again") == []


# ---- wrong signatures and unknown hooks -----------------------------------------------------------------------

@pytest.mark.parametrize("hooks, expected", [
    ({"register_algorithms": lambda reg: None},
     "hook register_algorithms(reg) has argument(s) reg that the spec does not pass; "
     "expected register_algorithms(register)"),
    ({"register_networks": lambda register, device: None},
     "hook register_networks(register, device) has argument(s) device that the spec does not pass; "
     "expected register_networks(register)"),
    ({"register_algos": lambda register: None},
     "hook 'register_algos' is not a metarec_pl hook; expected one of: register_algorithms(register), "
     "register_networks(register), register_task_samplers(register), register_datasets(register), "
     "register_protocols(register), register_metrics(register)"),
])
def test_wrong_hook_is_refused_at_run_time_in_one_line(hooks, expected):
    with pytest.raises(plugins.InvalidPluginError) as err:
        metarec_pl.register_plugin(plugin(**hooks), name="bad-signature", distribution="sig-dist")
    assert str(err.value) == f"cannot register plugin 'bad-signature' from sig-dist: {expected}"
    assert "maml" in algorithms()
    assert plugins.pm.get_plugin("bad-signature") is None  # nothing half-registered


def test_method_hooks_with_self_are_fine(metarec_plugin_factory):
    class WithSelf:
        @metarec_pl.hookimpl
        def register_algorithms(self, register):
            register("with-self", Mine)

    metarec_plugin_factory(WithSelf(), name="with-self")
    assert metarec_pl.get_algorithm("with-self") is Mine


# ---- registering something that is not a class of the right kind ----------------------------------------------

class NotAnAlgorithm(nn.Module):
    pass


@pytest.mark.parametrize("name, target, reason", [
    ("forty-two", 42, f"it registers int 42, not a class; expected a subclass of {ALG} or its "
                      "'module:Class' reference"),
    ("plain-module", NotAnAlgorithm, "it registers class test_plugin_failures.NotAnAlgorithm, not a subclass of "
                                     f"{ALG}; expected a subclass of {ALG} or its "
                                     "'module:Class' reference"),
    ("a-model", MLPNet, f"it registers class metarec_pl.models.mlp.MLPNet, not a subclass of {ALG}; "
                        f"expected a subclass of {ALG} or its 'module:Class' reference"),
    ("no-colon", "metarec_pl.algorithms.maml.MAML",
     "the reference 'metarec_pl.algorithms.maml.MAML' has no 'module:Class' form; expected a subclass of "
     f"{ALG} or its 'module:Class' reference"),
])
def test_wrong_kind_skips_only_that_name(metarec_plugin_factory, capsys, name, target, reason):
    def register_algorithms(register):
        register(name, target)
        register("fine", Mine)

    metarec_plugin_factory(plugin(register_algorithms=register_algorithms), name="kinds", distribution="kind-dist")
    assert metarec_pl.get_algorithm("fine") is Mine
    assert name not in algorithms()
    line = f"metarec_pl: skipped algorithm '{name}' of plugin 'kinds' from kind-dist: {reason}"
    assert stderr_lines(capsys, "'kinds'") == [line]
    with pytest.raises(plugins.UnknownPluginError, match="was skipped: algorithm") as err:
        metarec_pl.get_algorithm(name)
    assert str(err.value).endswith(line.removeprefix("metarec_pl: skipped "))


def test_non_string_name_is_skipped(metarec_plugin_factory, capsys):
    metarec_plugin_factory(plugin(register_algorithms=lambda register: register(7, Mine)), name="int-name")
    assert "7" not in algorithms()  # problems are found (and reported) when the registry is next built
    assert stderr_lines(capsys, "int-name") == [
        "metarec_pl: skipped algorithm '7' of plugin 'int-name' from (test): the name 7 is not a non-empty str; "
        "expected register(\"short-name\", cls)"]


# ---- lazy references ------------------------------------------------------------------------------------------

def test_lazy_reference_is_resolved_on_first_get(metarec_plugin_factory):
    metarec_plugin_factory(plugin(register_networks=lambda register: register("lazy-mlp",
                                                                              "metarec_pl.models.mlp:MLPNet")),
                           name="lazy", distribution="lazy-dist")
    (row,) = [r for r in metarec_pl.registrations("network") if r.name == "lazy-mlp"]
    assert row.lazy and row.reference == "metarec_pl.models.mlp:MLPNet"
    assert metarec_pl.get_network("lazy-mlp") is MLPNet
    assert row.obj is MLPNet and not row.lazy


@pytest.mark.parametrize("reference, problem", [
    ("metarec_pl.no_such_module:X",
     "cannot import 'metarec_pl.no_such_module:X': ModuleNotFoundError: No module named 'metarec_pl.no_such_module'"),
    ("metarec_pl.algorithms.maml:NoSuchClass",
     "cannot import 'metarec_pl.algorithms.maml:NoSuchClass': AttributeError: module 'metarec_pl.algorithms.maml' "
     "has no attribute 'NoSuchClass'"),
    ("metarec_pl.models.mlp:MLPNet",
     f"'metarec_pl.models.mlp:MLPNet' is class metarec_pl.models.mlp.MLPNet, not a subclass of {ALG}"),
    ("metarec_pl.algorithms.base:nn", "'metarec_pl.algorithms.base:nn' is module <module 'torch.nn' from "),
])
def test_broken_lazy_reference_fails_in_one_line_naming_plugin_and_reference(metarec_plugin_factory, capsys,
                                                                              reference, problem):
    metarec_plugin_factory(plugin(register_algorithms=lambda register: register("lazy-bad", reference)),
                           name="lazy-plugin", distribution="lazy-dist")
    assert "lazy-bad" in algorithms()  # listed without importing it
    with pytest.raises(plugins.PluginLoadError) as err:
        metarec_pl.get_algorithm("lazy-bad")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"algorithm 'lazy-bad' of plugin 'lazy-plugin' from lazy-dist: {problem}")
    assert message.endswith(f"; expected '{reference}' to name an importable subclass of {ALG}")
    assert isinstance(err.value, plugins.UnknownPluginError)  # the CLI's one-line error path catches it
    capsys.readouterr()
    assert entry.plugins_command(["--check"]) == 2  # `metarec plugins --check` finds it
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"metarec_pl: broken {message}"


def test_every_builtin_reference_resolves_to_its_kind(capsys):
    builtins = [r for r in metarec_pl.registrations() if r.distribution == "metarec_pl"]
    # every kind has built-ins but metrics: the built-in query metrics are fixed (metarec_pl.metrics), plugins add more
    assert {r.kind for r in builtins} == set(plugins.KINDS) - {"metric"} and len(builtins) >= 20
    for r in builtins:
        base = plugins.base_class(r.kind)
        assert getattr(metarec_pl, base.__name__) is base  # public API
        assert isinstance(r.obj, type) and issubclass(r.obj, base), r
        assert f"{r.obj.__module__}:{r.obj.__qualname__}" == r.reference
    assert entry.plugins_command(["--check"]) == 0


# ---- entry points: imported and reported once per process -----------------------------------------------------

class FakeDist:
    def __init__(self, name):
        self.name = name


class FakeEntryPoint:
    """What ``importlib.metadata.entry_points`` yields: name, value, dist and ``load()``."""

    def __init__(self, name, dist, load):
        self.name, self.value, self.dist, self._load, self.loads = name, f"{name}_module", FakeDist(dist), load, 0

    def load(self):
        self.loads += 1
        return self._load()


@pytest.fixture()
def fake_entry_points(monkeypatch):
    """Replace the installed entry points of group metarec_pl by the ones a test appends to the returned list."""
    points: list[FakeEntryPoint] = []
    real = importlib.metadata.entry_points

    def entry_points(**kwargs):
        return list(points) if kwargs.get("group") == "metarec_pl" else real(**kwargs)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    plugins.rescan_entry_points()
    yield points
    monkeypatch.undo()
    plugins.rescan_entry_points()  # the real ones again


def missing_module():
    import a_module_that_does_not_exist  # noqa: F401


def test_broken_entry_point_is_imported_and_reported_once(fake_entry_points, capsys, metarec_plugin_factory):
    broken = FakeEntryPoint("broken", "broken-dist", missing_module)
    fake_entry_points.append(broken)
    assert "maml" in algorithms()
    for _ in range(3):  # rebuilds: invalidate() and run-time registrations
        plugins.invalidate()
        metarec_plugin_factory(plugin(register_algorithms=lambda register: register("x", Mine)))
        assert "maml" in algorithms()
    assert broken.loads == 1
    assert stderr_lines(capsys, "broken") == [
        "metarec_pl: skipped plugin 'broken' from broken-dist: cannot import entry point 'broken_module': "
        "ModuleNotFoundError: No module named 'a_module_that_does_not_exist'; expected an importable module or "
        "object with @metarec_pl.hookimpl functions"]
    with pytest.raises(plugins.UnknownPluginError) as err:  # a name it may have provided says so
        metarec_pl.get_algorithm("from-broken")
    assert str(err.value).endswith("; plugin(s) skipped at load, which may have provided it: 'broken' from "
                                   "broken-dist (cannot import entry point 'broken_module': ModuleNotFoundError: "
                                   "No module named 'a_module_that_does_not_exist')")


def test_entry_points_with_wrong_hooks_are_skipped_and_the_rest_listed(fake_entry_points, capsys):
    fake_entry_points += [
        FakeEntryPoint("sig", "sig-dist", lambda: plugin(register_algorithms=lambda reg: None)),
        FakeEntryPoint("unknown-hook", "hook-dist", lambda: plugin(register_algos=lambda register: None)),
        FakeEntryPoint("raiser", "raise-dist", lambda: plugin(register_datasets=lambda register: 1 / 0)),
        FakeEntryPoint("good", "good-dist", lambda: plugin(register_algorithms=lambda register: register("good", Mine))),
    ]
    assert entry.plugins_command([]) == 0
    captured = capsys.readouterr()
    table = captured.out.splitlines()
    assert table[0].split() == ["kind", "name", "distribution", "plugin", "reference"]
    rows = [line.split() for line in table[1:] if not line.startswith("metarec_pl: ")]
    assert ["algorithm", "good", "good-dist", "good", "test_plugin_failures:Mine"] in rows
    assert ["algorithm", "maml", "metarec_pl", "metarec_pl.builtin.algorithms", MAML_REF] in rows
    skipped = table[len(rows) + 1:]  # at the end, one line each, the same lines as on stderr
    # those refused at load (sorted by distribution), then those whose hooks raised
    assert [line.split("'")[1] for line in skipped] == ["unknown-hook", "sig", "raiser"]
    assert skipped[1] == ("metarec_pl: skipped plugin 'sig' from sig-dist: hook register_algorithms(reg) has "
                          "argument(s) reg that the spec does not pass; expected register_algorithms(register)")
    assert skipped[0].startswith("metarec_pl: skipped plugin 'unknown-hook' from hook-dist: hook 'register_algos' "
                                 "is not a metarec_pl hook; expected one of: register_algorithms(register), ")
    assert skipped[2] == ("metarec_pl: skipped plugin 'raiser' from raise-dist: its hook register_datasets raised "
                          "ZeroDivisionError: division by zero; expected it to call register(name, cls) and return")
    assert captured.err.splitlines() == skipped
    assert entry.plugins_command(["--check"]) == 2  # skipped plugins fail the check
    assert "sig" not in {r.plugin for r in metarec_pl.registrations()}


def test_plugins_command_refuses_unknown_arguments_in_one_line(capsys):
    assert entry.plugins_command(["--frobnicate"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["metarec: error: unknown argument '--frobnicate' for 'metarec plugins', expected --check or "
                   "nothing (usage: metarec plugins [--check])"]


@pytest.fixture()
def metarec_plugin_factory():
    """Like metarec_pl.testing's ``metarec_plugin``, with unique default names."""
    names: list[str] = []

    def register(obj, name=None, distribution="(test)"):
        names.append(plugins.register_plugin(obj, name=name or f"p{len(names)}-{id(obj)}", distribution=distribution))
        return names[-1]

    yield register
    for name in reversed(names):
        plugins.unregister_plugin(name)


# ---- names recorded in a checkpoint ---------------------------------------------------------------------------

def test_recorded_name_that_was_skipped_says_which_distribution_and_why(metarec_plugin_factory):
    from metarec_pl import provenance

    metarec_plugin_factory(plugin(register_algorithms=lambda register: register("recorded", MLPNet)),
                           name="rec-plugin", distribution="rec-dist")
    with pytest.raises(plugins.UnknownPluginError) as err:
        provenance.lookup("algorithm", "recorded", {"algorithm/recorded": "rec-dist"})
    assert str(err.value) == (
        "unknown algorithm 'recorded' (recorded in this config/checkpoint); it was provided by distribution "
        "'rec-dist', which is not installed or is disabled by METAREC_PL_DISABLE_PLUGINS: pip install rec-dist; "
        "'recorded' was skipped: algorithm 'recorded' of plugin 'rec-plugin' from rec-dist: it registers class "
        f"metarec_pl.models.mlp.MLPNet, not a subclass of {ALG}; expected a subclass of "
        f"{ALG} or its 'module:Class' reference")


def test_recorded_name_with_a_broken_reference_keeps_the_import_error(metarec_plugin_factory):
    from metarec_pl import provenance

    metarec_plugin_factory(plugin(register_algorithms=lambda register: register("gone", "metarec_pl.gone:X")),
                           name="gone-plugin", distribution="gone-dist")
    with pytest.raises(plugins.PluginLoadError, match="^algorithm 'gone' of plugin 'gone-plugin' from gone-dist: "
                                                      "cannot import 'metarec_pl.gone:X': ModuleNotFoundError"):
        provenance.lookup("algorithm", "gone", {"algorithm/gone": "gone-dist"})


# ---- through the CLI ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("target, expected", [
    ("metarec_pl.gone:X", "metarec: error: algorithm 'cli-bad' of plugin 'cli-plugin' from cli-dist: cannot import "
                          "'metarec_pl.gone:X': ModuleNotFoundError: No module named 'metarec_pl.gone'; expected "
                          f"'metarec_pl.gone:X' to name an importable subclass of {ALG}"),
    (MLPNet, "metarec: error: unknown algorithm 'cli-bad'; available: anil, "),
])
def test_fit_with_a_broken_or_skipped_name_fails_in_one_line_and_writes_nothing(
        metarec_plugin_factory, capsys, monkeypatch, tmp_path, target, expected):
    from metarec_pl import cli

    root = ROOT_DIR
    metarec_plugin_factory(plugin(register_algorithms=lambda register: register("cli-bad", target)),
                           name="cli-plugin", distribution="cli-dist")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        cli.main(["fit", "--config", str(root / "configs/quickstart.yaml"), "--config", str(root / "configs/tiny.yaml"),
                  "--model.algorithm", "cli-bad"])
    assert done.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("metarec: ")]
    assert len(errors) == 1 and errors[0].startswith(expected), errors
    if not isinstance(target, str):
        assert errors[0].endswith("; 'cli-bad' was skipped: algorithm 'cli-bad' of plugin 'cli-plugin' from cli-dist: "
                                  "it registers class metarec_pl.models.mlp.MLPNet, not a subclass of "
                                  f"{ALG}; expected a subclass of {ALG} or its "
                                  "'module:Class' reference")
    assert list(tmp_path.iterdir()) == []  # no runs/, no lightning_logs/
