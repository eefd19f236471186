"""The plugin surface for data and metrics: a protocol from a plugin splits a real ``metarec fit``/``test`` (chosen by
name in ``data.dataset_args.protocol``), a metric from a plugin shows in the logged metrics with the right value,
``metarec plugins`` lists both, their errors are one line, and the deprecated ``register_models`` hook still
registers networks."""

import csv
import random
import warnings

import pytest
import torch
import yaml
from torchmetrics import Metric
from torchmetrics.retrieval import RetrievalNormalizedDCG

import metarec_pl
from _cli_helpers import run
from metarec_pl import DataError, Protocol, plugins, provenance
from metarec_pl.errors import ConfigError
from metarec_pl.metrics import RatingMetrics
from metarec_pl.models.mlp import MLPNet
from metarec_pl.testing import metarec_plugin, tiny_batch, tiny_data  # noqa: F401  (metarec_plugin: a fixture)

USERS, PER_USER = 40, 14


class ByRemainder(Protocol):
    """Users by their code modulo ``modulus``: 0, 1 train; 2 validation ('rest-two'); 3 test ('rest-three')."""

    calls: list = []  # the options of every split, to check what the config passed

    def split(self, rows, seed: int = 0, modulus: int = 4):
        ByRemainder.calls.append({"seed": seed, "modulus": modulus})
        rest = rows.user % modulus
        where = lambda mask: torch.nonzero(mask).flatten()  # noqa: E731
        return {"train": {"train": where(rest < 2)}, "val": {"rest-two": where(rest == 2)},
                "test": {"rest-three": where(rest == 3)}}


class SignedError(Metric):
    """Mean of prediction - rating over the real query samples (> 0: the model over-predicts)."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds, target):
        self.total += (preds - target).double().sum()
        self.count += preds.numel()

    def compute(self):
        return self.total / self.count


class NDCGAt3(RetrievalNormalizedDCG):
    """Per task, as the built-in ndcg@3 is (a check of the per-task path for plugin metrics)."""

    def __init__(self):
        super().__init__(top_k=3)


class DataPlugin:
    @metarec_pl.hookimpl
    def register_protocols(self, register):
        register("by-remainder", ByRemainder)

    @metarec_pl.hookimpl
    def register_metrics(self, register):
        register("signed-error", SignedError)
        register("ndcg-three", NDCGAt3)


def write_log(folder):
    """user,item,rating,time: USERS users with PER_USER ratings each of 30 items."""
    rng = random.Random(0)
    lines = ["user,item,rating,time"]
    for u in range(USERS):
        for k, i in enumerate(rng.sample(range(30), PER_USER)):
            lines.append(f"u{u:02d},i{i},{rng.randint(1, 5)},{1000 * u + k}")
    (folder / "log.csv").write_text("\n".join(lines) + "\n")


def config(folder, **data_args):
    cfg = {"seed_everything": 0,
           "trainer": {"max_epochs": 1, "accelerator": "cpu", "enable_progress_bar": False,
                       "enable_model_summary": False, "inference_mode": False, "default_root_dir": str(folder / "runs"),
                       "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                                  "init_args": {"save_dir": str(folder / "logs"), "name": "run", "version": 0}},
                       "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                      "init_args": {"dirpath": str(folder / "ck"), "filename": "last"}}]},
           "model": {"algorithm": "maml", "network": "mlp", "inner_steps": 1,
                     "extra_metrics": ["signed-error", "ndcg-three"]},
           "data": {"dataset": "interactions", "root": str(folder),
                    "dataset_args": {"path": "log.csv", "cache": False, **data_args},
                    "sampler_args": {"query_size": 5, "min_support": 3}, "tasks_per_batch": 8}}
    path = folder / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def data_plugin(metarec_plugin):
    ByRemainder.calls.clear()
    return metarec_plugin(DataPlugin(), name="data-plugin", distribution="data-dist")


def test_a_plugin_protocol_and_metrics_drive_a_fit_and_a_test_through_the_cli(data_plugin, tmp_path):
    write_log(tmp_path)
    cfg = config(tmp_path, protocol="by-remainder", modulus=4)
    fit = run(["fit", "--config", str(cfg)], cwd=tmp_path)
    assert fit.code == 0, fit.err[-3000:]
    assert ByRemainder.calls == [{"seed": 0, "modulus": 4}]  # the config's option reached the plugin's split
    with open(tmp_path / "logs/run/version_0/metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/mae")]
    (logged,) = rows  # one validation epoch
    # the protocol named the scenarios; the metrics are logged pooled and per scenario, adapted and zero-shot
    for name in ("val/rest-two/mae", "val/signed-error", "val/rest-two/signed-error", "val/signed-error_zero_shot",
                 "val/ndcg-three", "val/rest-two/ndcg-three", "val/rest-two/ndcg@3"):
        assert logged[name] != "", name
    assert abs(float(logged["val/signed-error"])) <= float(logged["val/mae"]) + 1e-6  # |mean(e)| <= mean(|e|)
    assert float(logged["val/signed-error"]) == pytest.approx(float(logged["val/rest-two/signed-error"]))
    assert float(logged["val/ndcg-three"]) == pytest.approx(float(logged["val/rest-two/ndcg@3"]))

    (saved,) = tmp_path.rglob("config.yaml")  # the run's own config names the plugin's protocol
    assert yaml.safe_load(saved.read_text())["data"]["dataset_args"]["protocol"] == "by-remainder"
    ckpt = torch.load(tmp_path / "ck/last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["plugin_distributions"] == {
        "algorithm/maml": "metarec_pl", "network/mlp": "metarec_pl", "metric/signed-error": "data-dist",
        "metric/ndcg-three": "data-dist"}

    tested = run(["test", "--config", str(cfg), "--ckpt_path", str(tmp_path / "ck/last.ckpt")], cwd=tmp_path)
    assert tested.code == 0, tested.err[-3000:]
    assert abs(tested.metric("test/rest-three/signed-error")) <= tested.metric("test/rest-three/mae") + 1e-6
    assert tested.metric("test/ndcg-three") == pytest.approx(tested.metric("test/rest-three/ndcg@3"), abs=1e-4)


def test_metarec_plugins_lists_protocols_and_metrics_of_a_plugin(data_plugin):
    listed = run(["plugins"])
    assert listed.code == 0, listed.err
    rows = {tuple(line.split()[:4]) for line in listed.out.splitlines()}
    assert {("protocol", "by-remainder", "data-dist", "data-plugin"), ("metric", "signed-error", "data-dist",
            "data-plugin"), ("protocol", "user-cold", "metarec_pl", "metarec_pl.builtin.protocols")} <= rows


def test_unknown_protocol_or_metric_is_one_line_and_writes_nothing(data_plugin, tmp_path):
    write_log(tmp_path)
    cfg = config(tmp_path, protocol="by-remaindr")
    out = run(["fit", "--config", str(cfg)], cwd=tmp_path)
    assert out.code == 2 and out.error_lines == [
        "metarec: error: data.dataset_args.protocol: unknown protocol 'by-remaindr'; available: by-remainder, given, "
        "item-cold, melu, sequential-cold, temporal, user-cold"]
    cfg = config(tmp_path, protocol="by-remainder")
    out = run(["fit", "--config", str(cfg), "--model.extra_metrics", "[signed-eror]"], cwd=tmp_path)
    assert out.code == 2 and out.error_lines == [
        "metarec: error: unknown metric 'signed-eror'; available: ndcg-three, signed-error"]
    out = run(["fit", "--config", str(config(tmp_path, protocol="by-remainder", moduls=3))], cwd=tmp_path)
    assert out.code == 2 and len(out.error_lines) == 1 and "protocol 'by-remainder': unknown option(s) moduls; " \
        "expected some of: seed, modulus" in out.error_lines[0]
    assert "Traceback" not in out.err and not (tmp_path / "ck").exists() and not (tmp_path / "logs").exists()


def test_conflicting_or_wrong_kind_names_are_skipped_in_one_line(metarec_plugin, capsys):
    class Clash:
        @metarec_pl.hookimpl
        def register_protocols(self, register):
            register("user-cold", ByRemainder)  # a built-in's name: the built-in keeps it
            register("not-a-protocol", MLPNet)

        @metarec_pl.hookimpl
        def register_metrics(self, register):
            register("not-a-metric", ByRemainder)

    metarec_plugin(Clash(), name="clash", distribution="clash-dist")
    assert plugins.get("protocol", "user-cold").__name__ == "UserCold"
    lines = [line for line in capsys.readouterr().err.splitlines() if "'clash'" in line]
    assert lines == [
        "metarec_pl: skipped protocol 'user-cold' of plugin 'clash' from clash-dist: the built-in "
        "'metarec_pl.builtin.protocols' from metarec_pl registered 'user-cold' first "
        "(metarec_pl.data.protocols:UserCold); expected a name no other plugin registers (the first registration "
        "keeps it)",
        "metarec_pl: skipped protocol 'not-a-protocol' of plugin 'clash' from clash-dist: it registers class "
        "metarec_pl.models.mlp.MLPNet, not a subclass of metarec_pl.Protocol; expected a subclass of "
        "metarec_pl.Protocol or its 'module:Class' reference",
        "metarec_pl: skipped metric 'not-a-metric' of plugin 'clash' from clash-dist: it registers class "
        f"{__name__}.ByRemainder, not a subclass of torchmetrics.Metric; expected a subclass of torchmetrics.Metric "
        "or its 'module:Class' reference"]
    with pytest.raises(DataError, match="^data.dataset_args.protocol: unknown protocol 'not-a-protocol'; .*"
                                        "'not-a-protocol' was skipped: protocol 'not-a-protocol' of plugin 'clash'"):
        metarec_pl.FileDataset(protocol="not-a-protocol")


def test_a_plugin_metric_gets_the_real_query_samples_and_per_task_ones_pool_like_ndcg():
    data = tiny_data()
    batches = [tiny_batch(data, support_sizes=(2, 5, 9), query_size=3), tiny_batch(data, (4, 6), query_size=5)]
    metrics = RatingMetrics(ndcg_k=(3,), extra={"signed-error": SignedError, "ndcg-three": NDCGAt3})
    errors = []
    for scenario, batch in zip(("a", "b"), batches):
        pred = batch.query.rating + torch.linspace(-1, 2, batch.query.rating.numel()).view_as(batch.query.rating)
        pred = torch.where(batch.query.mask > 0, pred, torch.full_like(pred, 99.0))  # padding must not count
        metrics.update("val", scenario, pred, batch)
        errors.append((pred - batch.query.rating)[batch.query.mask > 0])
    out = metrics.compute("val")
    assert out["val/signed-error"] == pytest.approx(float(torch.cat(errors).mean()), abs=1e-6)
    assert out["val/a/signed-error"] == pytest.approx(float(errors[0].mean()), abs=1e-6)
    for name in ("val/a/", "val/b/", "val/"):  # per scenario and pooled (task-weighted), as the built-in one
        assert out[f"{name}ndcg-three"] == pytest.approx(out[f"{name}ndcg@3"])


@pytest.mark.parametrize("name, cls, message", [
    ("mae", SignedError, "model.extra_metrics: metric 'mae' has the name of a built-in metric; expected a name other "
                         "than mae, rmse, like_acc, like_recall, mae_rounded, ndcg@<k> (register it under another "
                         "name)"),
    ("a/b", SignedError, "model.extra_metrics: metric 'a/b': '/' and '.' cannot be part of a metric name; expected a "
                         "name without them"),
])
def test_a_metric_that_cannot_join_is_one_config_line(name, cls, message):
    with pytest.raises(ConfigError) as err:
        RatingMetrics(extra={name: cls})
    assert str(err.value) == message


def test_a_metric_that_needs_arguments_is_one_config_line():
    class NeedsK(Metric):
        def __init__(self, k):
            super().__init__()

    with pytest.raises(ConfigError, match=r"^model.extra_metrics: metric 'needs-k': .*NeedsK\(\) failed \(TypeError: "
                                          r".*\); expected a Metric built with no argument$"):
        RatingMetrics(extra={"needs-k": NeedsK})


def test_the_deprecated_register_models_hook_still_registers_networks(metarec_plugin):
    class Wider(MLPNet):
        pass

    class OldStyle:
        @metarec_pl.hookimpl
        def register_models(self, register):
            register("old-style", Wider)

    with pytest.warns(DeprecationWarning, match="register_models is deprecated: rename it register_networks"):
        metarec_plugin(OldStyle(), name="old-style-plugin", distribution="old-dist")
    assert metarec_pl.get_network("old-style") is Wider and metarec_pl.get_model("old-style") is Wider
    assert plugins.names("model") == plugins.names("network")  # the old kind name still answers
    (row,) = [r for r in metarec_pl.registrations("network") if r.name == "old-style"]
    assert (row.kind, row.distribution) == ("network", "old-dist")
    data = tiny_data()
    learner = metarec_pl.MetaLearner(network="old-style", adapt=["head.*"], schema=data.schema, rating_mean=3.5)
    assert isinstance(learner.network, Wider) and learner.adapt(tiny_batch(data)).query_pred.isfinite().all()
    assert learner.hparams.plugin_distributions["network/old-style"] == "old-dist"
    listed = run(["plugins", "--check"])  # listed as a network, with one line about the old hook; no problem
    assert listed.code == 0, listed.out
    assert ("network", "old-style", "old-dist") in {tuple(line.split()[:3]) for line in listed.out.splitlines()}
    assert ("metarec_pl: plugin 'old-style-plugin' from old-dist implements register_models, the deprecated name of "
            "register_networks: its networks are registered; expected register_networks (rename the hook)"
            ) in listed.out.splitlines()
    with warnings.catch_warnings():  # the new name registers without a warning
        warnings.simplefilter("error")

        class NewStyle:
            @metarec_pl.hookimpl
            def register_networks(self, register):
                register("new-style", Wider)

        metarec_plugin(NewStyle(), name="new-style-plugin", distribution="new-dist")
    assert metarec_pl.get_network("new-style") is Wider


def test_a_record_of_the_old_kind_name_still_names_the_missing_distribution():
    recorded = {"algorithm/maml": "metarec_pl", "model/gone-net": "gone-dist"}  # written before the rename
    with pytest.raises(plugins.UnknownPluginError, match="unknown network 'gone-net' .*pip install gone-dist"):
        provenance.lookup("network", "gone-net", recorded)
