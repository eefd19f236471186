"""The pluggy registry: run-time plugins, entry-point plugins, broken plugins and the block list."""

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import metarec_pl
from metarec_pl import plugins
from metarec_pl.algorithms.maml import MAML
from metarec_pl.bilevel import MetaLearner
from metarec_pl.data.info import DataInfo

ROOT = Path(__file__).resolve().parents[1]


class Doubled(MAML):
    """A stand-in third-party algorithm: MAML with twice the inner learning rate."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner_lr *= 2


class DoubledPlugin:
    @metarec_pl.hookimpl
    def register_algorithms(self, register):
        register("doubled", Doubled)


def test_plugin_registered_at_run_time_is_found_and_used(tiny_world):
    _, data = tiny_world
    name = metarec_pl.register_plugin(DoubledPlugin(), name="doubled-plugin", distribution="my-dist")
    try:
        assert metarec_pl.get_algorithm("doubled") is Doubled
        row = [r for r in metarec_pl.registrations("algorithm") if r.name == "doubled"][0]
        assert (row.plugin, row.distribution) == ("doubled-plugin", "my-dist")
        module = MetaLearner(algorithm="doubled", inner_lr=0.01, data_info=DataInfo(data.schema))
        assert module.algorithm.inner_lr == pytest.approx(0.02)
    finally:
        metarec_pl.unregister_plugin(name)
    with pytest.raises(plugins.UnknownPluginError, match="unknown algorithm 'doubled'; available: anil"):
        metarec_pl.get_algorithm("doubled")


def test_a_plugin_claiming_a_builtin_name_is_skipped_for_that_name(capsys):
    class Clash:
        @metarec_pl.hookimpl
        def register_algorithms(self, register):
            register("maml", Doubled)

    name = metarec_pl.register_plugin(Clash(), name="clash")
    try:
        assert metarec_pl.get_algorithm("maml") is MAML  # the built-in keeps its name
        lines = [line for line in capsys.readouterr().err.splitlines() if "'clash'" in line]
        assert lines == ["metarec_pl: skipped algorithm 'maml' of plugin 'clash' from (runtime): the built-in "
                         "'metarec_pl.builtin.algorithms' from metarec_pl registered 'maml' first "
                         "(metarec_pl.algorithms.maml:MAML); expected a name no other plugin registers "
                         "(the first registration keeps it)"]
    finally:
        metarec_pl.unregister_plugin(name)


def make_distribution(site: Path, dist: str, module: str, source: str) -> None:
    """A minimal installed distribution (dist-info + module) with an entry point in group metarec_pl."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[metarec_pl]\n{module} = {module}\n")


def run_plugins(site: Path, **env) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), **env}
    return subprocess.run([sys.executable, "-m", "metarec_pl.entry", "plugins"], capture_output=True, text=True,
                          env=env, timeout=120)  # the console script's module (`metarec`)


@pytest.fixture()
def site(tmp_path):
    make_distribution(tmp_path, "good-plugin", "good_plugin", """
        import metarec_pl
        from metarec_pl.algorithms.maml import MAML

        class Good(MAML):
            pass

        @metarec_pl.hookimpl
        def register_algorithms(register):
            register("good", Good)
        """)
    make_distribution(tmp_path, "broken-plugin", "broken_plugin", "import a_module_that_does_not_exist\n")
    return tmp_path


FAULTY = {  # module -> (source, what its one line says after "from <dist>: ")
    "raising_plugin": ("""
        import metarec_pl

        @metarec_pl.hookimpl
        def register_networks(register):
            raise KeyError("no such setting")
        """, "its hook register_networks raised KeyError: 'no such setting'; expected it to call register(name, cls) "
             "and return"),
    "clashing_plugin": ("""
        import metarec_pl

        @metarec_pl.hookimpl
        def register_task_samplers(register):
            register("user", "metarec_pl.data.base:ItemTaskSampler")
            register("clash-ok", "metarec_pl.data.base:ItemTaskSampler")
        """, None),
    "signature_plugin": ("""
        import metarec_pl

        @metarec_pl.hookimpl
        def register_algorithms(reg):
            reg("never", "x:y")
        """, "hook register_algorithms(reg) has argument(s) reg that the spec does not pass; expected "
             "register_algorithms(register)"),
    "misnamed_plugin": ("""
        import metarec_pl

        @metarec_pl.hookimpl
        def register_algos(register):
            pass
        """, "hook 'register_algos' is not a metarec_pl hook; expected one of: register_algorithms(register), "
             "register_networks(register), register_task_samplers(register), register_datasets(register), "
             "register_protocols(register), register_metrics(register)"),
    "notaclass_plugin": ("""
        import metarec_pl

        @metarec_pl.hookimpl
        def register_datasets(register):
            register("a-function", len)
        """, None),
}


def test_faulty_entry_points_each_skipped_in_one_line_and_the_rest_listed(site):
    for module, (source, _) in FAULTY.items():
        make_distribution(site, module.replace("_", "-"), module, source)
    out = run_plugins(site)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    err = out.stderr.splitlines()
    assert len(err) == len(FAULTY) + 1 == len(set(err))  # one line each (and the broken import), no repeats
    for module, (_, reason) in FAULTY.items():
        (line,) = [line for line in err if f"'{module}'" in line]
        if reason is not None:
            assert line == f"metarec_pl: skipped plugin '{module}' from {module.replace('_', '-')}: {reason}"
    assert ("metarec_pl: skipped sampler 'user' of plugin 'clashing_plugin' from clashing-plugin: the built-in "
            "'metarec_pl.builtin.samplers' from metarec_pl registered 'user' first") in out.stderr
    assert ("metarec_pl: skipped dataset 'a-function' of plugin 'notaclass_plugin' from notaclass-plugin: it "
            "registers builtin_function_or_method <built-in function len>, not a class; expected a subclass of "
            "metarec_pl.RatingDataset or its 'module:Class' reference") in err
    rows = {tuple(line.split()[:3]) for line in out.stdout.splitlines() if not line.startswith("metarec_pl:")}
    assert {("algorithm", "good", "good-plugin"), ("algorithm", "maml", "metarec_pl"),
            ("sampler", "user", "metarec_pl"), ("sampler", "clash-ok", "clashing-plugin")} <= rows
    assert not {row for row in rows if row[2] in {"signature-plugin", "misnamed-plugin", "raising-plugin"}}
    tail = out.stdout.splitlines()[-len(err):]  # the skipped ones again, at the end of the table
    assert sorted(tail) == sorted(err)


def test_entry_point_plugin_listed_and_broken_one_skipped_in_one_line(site):
    out = run_plugins(site)
    assert out.returncode == 0, out.stderr
    assert any(line.split()[:3] == ["algorithm", "good", "good-plugin"] for line in out.stdout.splitlines())
    skipped = [line for line in out.stderr.splitlines() if "broken_plugin" in line]
    assert len(skipped) == 1
    assert skipped[0] == ("metarec_pl: skipped plugin 'broken_plugin' from broken-plugin: cannot import entry point "
                          "'broken_plugin': ModuleNotFoundError: No module named 'a_module_that_does_not_exist'; "
                          "expected an importable module or object with @metarec_pl.hookimpl functions")


def test_block_list_disables_named_plugins(site):
    out = run_plugins(site, METAREC_PL_DISABLE_PLUGINS="good_plugin,broken_plugin")
    assert out.returncode == 0, out.stderr
    assert " good " not in out.stdout and "broken_plugin" not in out.stderr
    assert "maml" in out.stdout


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    return names | {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}


def test_core_modules_import_no_concrete_algorithm():
    """Only the built-in plugin modules know concrete algorithms; the core reaches them through the registry."""
    core = [p for p in (ROOT / "metarec_pl").rglob("*.py")
            if "builtin" not in p.parts and p.parent.name != "algorithms"]
    assert len(core) > 8
    for path in core:
        concrete = {m for m in imported_modules(path)
                    if m.startswith(("metarec_pl.builtin", "metarec_pl.algorithms."))
                    and m != "metarec_pl.algorithms.base"}
        assert not concrete, f"{path} imports {concrete}"
