"""docs/plugins.md is executable and complete: every hook has a reference section and a test, the reference
examples register and work, and the tutorial goes from an empty folder to ``metarec fit`` (and a saved config
that names its plugin)."""

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml

import metarec_pl
from metarec_pl import hookspecs, plugins
from metarec_pl.data import protocols
from metarec_pl.testing import metarec_plugin, registered, tiny_batch, tiny_data  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "plugins.md"
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.M | re.S)
HOOKS = sorted(n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), f"{hookspecs.PROJECT}_spec"))


def blocks(lang: str) -> list[tuple[str, str]]:
    """(info string, body) of every fenced block of ``lang`` in docs/plugins.md."""
    return [(info.strip(), body) for kind, info, body in FENCE.findall(DOC.read_text()) if kind == lang]


def hookimpl_functions(path: Path) -> set[str]:
    """Names of the functions in ``path`` decorated with something called ``hookimpl``."""
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
            and any("hookimpl" in ast.unparse(d) for d in node.decorator_list)}


def test_every_hook_has_a_reference_section():
    assert len(HOOKS) >= 4
    text = DOC.read_text()
    missing = [h for h in HOOKS if f"### `{h}`" not in text]
    assert not missing, f"docs/plugins.md has no '### `name`' section for hooks {missing}"


def test_every_hook_has_a_test():
    test_files = list((ROOT / "tests").rglob("test_*.py")) + list((ROOT / "plugins").glob("*/tests/**/test_*.py"))
    implemented = set().union(*(hookimpl_functions(p) for p in test_files))
    missing = [h for h in HOOKS if h not in implemented]
    assert not missing, f"no test implements hooks {missing}"


def test_every_hook_registers_through_the_testing_fixture(metarec_plugin):
    """One run-time plugin implementing every hook; the fixture unregisters it afterwards."""
    from torchmetrics import MeanAbsoluteError

    from metarec_pl.algorithms.maml import MAML
    from metarec_pl.data.base import UserTaskSampler
    from metarec_pl.data.protocols import UserCold
    from metarec_pl.data.synthetic import SyntheticWorld
    from metarec_pl.models.melu import MeLUNet

    made = {"algorithm": type("A", (MAML,), {}), "network": type("M", (MeLUNet,), {}),
            "sampler": type("S", (UserTaskSampler,), {}), "dataset": type("D", (SyntheticWorld,), {}),
            "protocol": type("P", (UserCold,), {}), "metric": type("E", (MeanAbsoluteError,), {})}

    class Everything:
        @metarec_pl.hookimpl
        def register_algorithms(self, register):
            register("t-algorithm", made["algorithm"])

        @metarec_pl.hookimpl
        def register_networks(self, register):
            register("t-network", made["network"])

        @metarec_pl.hookimpl
        def register_task_samplers(self, register):
            register("t-sampler", made["sampler"])

        @metarec_pl.hookimpl
        def register_datasets(self, register):
            register("t-dataset", made["dataset"])

        @metarec_pl.hookimpl
        def register_protocols(self, register):
            register("t-protocol", made["protocol"])

        @metarec_pl.hookimpl
        def register_metrics(self, register):
            register("t-metric", made["metric"])

    name = metarec_plugin(Everything(), name="everything", distribution="dist-everything")
    for kind, cls in made.items():
        assert plugins.get(kind, f"t-{kind}") is cls
    rows = [r for r in metarec_pl.registrations() if r.plugin == name]
    assert len(rows) == len(plugins.KINDS) == 6 and {r.distribution for r in rows} == {"dist-everything"}


def test_registered_context_manager_unregisters():
    class P:
        @metarec_pl.hookimpl
        def register_algorithms(self, register):
            from metarec_pl.algorithms.maml import MAML
            register("ctx-alg", MAML)

    with registered(P()) as name:
        assert metarec_pl.get_algorithm("ctx-alg").__name__ == "MAML"
        assert name in {r.plugin for r in metarec_pl.registrations("algorithm")}
    with pytest.raises(plugins.UnknownPluginError):
        metarec_pl.get_algorithm("ctx-alg")


def reference_examples() -> list[str]:
    """The python blocks of the reference part (the tutorials' files are the ``file=`` blocks)."""
    return [body for info, body in blocks("python") if "file=" not in info]


def check_registration(row, module_name: str, example: str) -> None:
    """A registration of a reference example is listed as the example wrote it and its class works."""
    if isinstance(row.target, str):  # a lazy reference: listed unresolved, imported on first use
        assert row.lazy and f'"{row.reference}"' in example
        assert row.obj.__module__ == row.reference.split(":")[0] and not row.lazy
    else:
        assert row.obj.__module__ == module_name
    data = tiny_data()
    if row.kind == "algorithm":
        learner = metarec_pl.MetaLearner(algorithm=row.name,
                                         data_info=metarec_pl.DataInfo(data.schema, rating_mean=3.5))
        assert learner.adapt(tiny_batch(data)).query_pred.isfinite().all()
    elif row.kind == "network":
        learner = metarec_pl.MetaLearner(network=row.name, adapt=["head.*"],
                                         data_info=metarec_pl.DataInfo(data.schema))
        assert learner.adapt(tiny_batch(data)).query_pred.isfinite().all()
    elif row.kind == "sampler":
        tasks = row.obj().tasks(data, torch.arange(len(data.user)), seed=0)
        assert tasks and all(len(t.support) == 5 for t in tasks)
    elif row.kind == "protocol":  # a partition of the rows into non-empty splits, by name from a file data set
        protocol = protocols.lookup(row.name)
        splits = protocols.make_splits(protocol, protocols.Rows(data.user, data.item, data.time), {"seed": 1})
        parts = [idx for scenarios in splits.values() for idx in scenarios.values()]
        assert sorted(torch.cat(parts).tolist()) == list(range(len(data.user)))
        assert isinstance(metarec_pl.FileDataset(protocol=row.name, val_fraction=0.2).protocol, row.obj)
    elif row.kind == "metric":
        learner = metarec_pl.MetaLearner(adapt=["head.*"], data_info=metarec_pl.DataInfo(data.schema),
                                         extra_metrics=[row.name])
        batch = tiny_batch(data)
        learner.metrics.update("val", "warm", learner(batch.query.features), batch)
        assert f"val/{row.name}" in learner.metrics.compute("val")
    else:
        loaded = row.obj(num_users=50, num_items=30, min_ratings=10, max_ratings=20).load()
        assert set(loaded.rating.unique().tolist()) == {0.0, 1.0} and loaded.rating_range == (0.0, 1.0)


@pytest.mark.parametrize("index", range(len(reference_examples())))
def test_reference_example_registers_a_working_plugin(index):
    example = reference_examples()[index]
    module = types.ModuleType(f"doc_example_{index}")
    exec(compile(example, f"docs/plugins.md example {index}", "exec"), module.__dict__)
    with registered(module) as name:
        rows = [r for r in metarec_pl.registrations() if r.plugin == name]
        assert rows, "the example registers nothing"
        for row in rows:
            check_registration(row, module.__name__, example)


def test_the_reference_has_an_example_of_every_kind():
    examples = "\n".join(reference_examples())
    missing = [hook for hook in plugins.KINDS.values() if f"def {hook}(register)" not in examples]
    assert not missing, f"docs/plugins.md has no reference example of {missing}"


def run(cmd: list[str], cwd: Path, pythonpath: list[Path], **extra_env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, pythonpath)), "WANDB_MODE": "offline", **extra_env}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def run_tutorial(name: str, tmp_path: Path, config_for: dict[str, Path]) -> dict[str, subprocess.CompletedProcess]:
    """Write the files of tutorial ``name`` (the blocks marked ``file=<name>/...``), install it into a private
    folder (standing in for ``pip install -e`` into the shared venv), and run its ```bash run=<name>`` commands in
    order in ``tmp_path`` (``metarec`` as ``python -m metarec_pl.cli``, a config replaced as ``config_for`` says).
    Returns the result of every command but the install, by command line; each must exit 0."""
    for info, body in blocks("toml") + blocks("python") + blocks("yaml"):
        if f"file={name}/" in info:
            path = tmp_path / info.split("file=", 1)[1].split()[0]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
    site = tmp_path / "site"
    install = run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                   "--target", str(site), str(tmp_path / name)], tmp_path, [ROOT])
    assert install.returncode == 0, install.stderr[-2000:]
    (commands,) = [body for info, body in blocks("bash") if info == f"run={name}"]
    outputs = {}
    for line in commands.strip().splitlines():
        args = line.split()
        if args[:2] == ["pip", "install"]:
            continue  # done above
        if args[0] == "metarec":
            args = [sys.executable, "-m", "metarec_pl.cli", *[str(config_for.get(a, a)) for a in args[1:]]]
        elif args[:3] == ["python", "-m", "pytest"]:
            args = [sys.executable, *args[1:], "-q", "-p", "no:cacheprovider"]
        elif args[0] == "python":
            args = [sys.executable, *args[1:]]
        out = run(args, tmp_path, [site, ROOT], METAREC_PL_CACHE=str(tmp_path / "cache"))
        assert out.returncode == 0, f"{line}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
        outputs[line] = out
    return outputs


def listed(out: subprocess.CompletedProcess) -> set[tuple[str, ...]]:
    """(kind, name, distribution) of every row ``metarec plugins`` printed."""
    return {tuple(row.split()[:3]) for row in out.stdout.splitlines()}


def test_tutorial_from_empty_folder_to_fit(tmp_path):
    config = yaml.safe_load((ROOT / "configs/quickstart.yaml").read_text())
    config["trainer"].update(default_root_dir=str(tmp_path / "runs"), enable_progress_bar=False)
    config["data"]["dataset_args"].update(num_users=120, num_items=80, min_ratings=20, max_ratings=40)
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump(config))

    outputs = run_tutorial("my-algo", tmp_path, {"configs/quickstart.yaml": small})
    assert [line.split()[:2] for line in outputs] == [["metarec", "plugins"], ["python", "-m"], ["metarec", "fit"]]
    assert ("algorithm", "residual-mean", "my-algo") in listed(outputs["metarec plugins"])

    # the saved config names the plugin's distribution; without the plugin, loading it fails in one line
    (saved,) = (tmp_path / "runs").rglob("config.yaml")
    recorded = yaml.safe_load(saved.read_text())["model"]["plugin_distributions"]
    assert recorded == {"algorithm/residual-mean": "my-algo", "network/melu": "metarec_pl"}
    missing = run([sys.executable, "-m", "metarec_pl.cli", "fit", "--config", str(saved)], tmp_path, [ROOT])
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1] == (
        "metarec: error: unknown algorithm 'residual-mean' (recorded in this config/checkpoint); it was provided by "
        "distribution 'my-algo', which is not installed or is disabled by METAREC_PL_DISABLE_PLUGINS: "
        "pip install my-algo")
    (ckpt,) = (tmp_path / "runs").rglob("last.ckpt")
    # the run's own config (algorithm residual-mean): the quickstart's `maml` would contradict the checkpoint
    from_ckpt = run([sys.executable, "-m", "metarec_pl.cli", "test", "--config", str(saved), "--ckpt_path",
                     str(ckpt)], tmp_path, [ROOT])
    assert from_ckpt.returncode == 2 and "pip install my-algo" in from_ckpt.stderr
    assert "Traceback" not in from_ckpt.stderr


def test_data_tutorial_from_empty_folder_to_test(tmp_path):
    outputs = run_tutorial("my-data", tmp_path, {})
    lines = list(outputs)
    assert [line.split()[:2] for line in lines] == [["metarec", "plugins"], ["python", "-m"],
                                                    ["python", "my-data/make_example.py"], ["metarec", "fit"],
                                                    ["metarec", "test"]]
    assert {("dataset", "ratings-jsonl", "my-data"), ("protocol", "late-users", "my-data")} <= listed(outputs[lines[0]])
    assert re.search(r"\b2 passed\b", outputs[lines[1]].stdout)  # the plugin's own tests
    # the protocol named the test scenario; the trained model beats nothing in particular here, but is on the scale
    printed = outputs[lines[-1]].stdout
    values = {name: float(v) for name, v in re.findall(r"[│|]\s*(test/\S+)\s*[│|]\s*([-0-9.eE+]+)\s*[│|]", printed)}
    assert {"test/late-users/mae", "test/late-users/mae_zero_shot"} <= set(values), printed[-2000:]
    assert 0 < values["test/late-users/mae"] < 4
    # fit built the cache entry and test read it (one entry: same file, options and protocol version)
    assert len(list((tmp_path / "cache").glob("ratings-jsonl-*"))) == 1
    saved = list((tmp_path / "runs/my-data").rglob("config.yaml"))  # of the fit and of the test
    assert saved and all(yaml.safe_load(p.read_text())["data"]["dataset_args"]["protocol"] == "late-users"
                         for p in saved)


def test_the_core_does_not_know_the_tanp_plugin():
    """metarec-tanp arrives only through its entry point: no core module names it, and blocking it removes it."""
    for path in (ROOT / "metarec_pl").rglob("*.py"):
        assert "tanp" not in path.read_text().lower(), path
    if "tanp" not in [r.name for r in metarec_pl.registrations("algorithm")]:
        pytest.skip("metarec-tanp is not pip-installed in this environment")
    blocked = run([sys.executable, "-m", "metarec_pl.cli", "plugins"], ROOT, [ROOT],
                  METAREC_PL_DISABLE_PLUGINS="tanp")
    assert blocked.returncode == 0 and "protonet" in blocked.stdout
    assert "tanp" not in blocked.stdout


class _EntryPoint:
    """What ``importlib.metadata.entry_points`` yields: ``name``, ``value``, ``dist.name`` and ``load()``."""

    def __init__(self, name, dist, load):
        self.name, self.value, self.dist, self.load = name, f"{name}_module", types.SimpleNamespace(name=dist), load


def _plugin(**hooks):
    return types.SimpleNamespace(**{name: metarec_pl.hookimpl(f) for name, f in hooks.items()})


def _missing():
    import a_module_that_does_not_exist  # noqa: F401


def _raise_key_error(register):
    raise KeyError("device")


def test_documented_failure_lines_are_the_real_ones(monkeypatch, capsys):
    """The ```text block of "When a plugin goes wrong" is what these five installed plugins print, in order."""
    from metarec_pl.models.mlp import MLPNet

    section = DOC.read_text().split("### When a plugin goes wrong", 1)[1]
    (documented,) = [body for kind, _, body in FENCE.findall(section) if kind == "text"][:1]
    points = [
        _EntryPoint("broken", "broken-dist", _missing),
        _EntryPoint("signature", "signature-dist", lambda: _plugin(register_algorithms=lambda reg: None)),
        _EntryPoint("raises", "raises-dist", lambda: _plugin(register_networks=_raise_key_error)),
        _EntryPoint("clash", "clash-dist", lambda: _plugin(
            register_algorithms=lambda register: register("maml", "metarec_pl.algorithms.melu:MeLU"))),
        _EntryPoint("wrong-kind", "wrong-kind-dist", lambda: _plugin(
            register_datasets=lambda register: register("mlp-as-dataset", MLPNet))),
    ]
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: points if kw.get("group") == "metarec_pl" else real(**kw))
    capsys.readouterr()
    plugins.rescan_entry_points()
    try:
        assert "maml" in plugins.names("algorithm")
        lines = capsys.readouterr().err.splitlines()
        assert lines == documented.strip().splitlines()
        assert plugins.skipped == lines  # `metarec plugins` ends with the same lines
    finally:
        monkeypatch.undo()
        plugins.rescan_entry_points()
