"""The benchmark tables: each row is a ``metarec fit`` config (configs/benchmarks/<table>/<row>.yaml, listed in that
folder's table.yaml); ``metarec_pl.harness`` builds a row through the ``metarec`` parser, keeps the epoch with the
lowest validation MAE (never a test user's) and the weights of a given epoch (the model for new items);
benchmarks/melu_table.py renders the page."""

import random
from pathlib import Path

import lightning as L
import pytest
import torch

from _cli_helpers import run
from _datasets_fixtures import write_melu
from _scripts import load_script
from metarec_pl import harness, plugins
from metarec_pl.errors import ConfigError

melu_table = load_script("melu_table")
melu_tune = load_script("melu_tune")
implicit_table = load_script("implicit_table")
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "benchmarks"
TABLES = sorted(p.parent.name for p in CONFIGS.glob("*/table.yaml"))
ROWS = [(t, name) for t in TABLES for name in harness.load_table(CONFIGS / t).rows]
# the fixture is small: 8 tasks per batch, no candidate pool (it has too few unrated items), a stand-in text encoder
SMALL = {"data": {"tasks_per_batch": 8, "candidates": None}}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(write_melu(tmp_path_factory.mktemp("melu"), warm_name="warm_state.reconstructed.json"))


def write_clicks(folder: Path, users: int = 60, items: int = 80) -> Path:
    """What ``implicit_table.clicks`` writes, tiny: ``clicks.csv`` (user,item; 12-19 clicks per user, popular items
    first) and ``movies.csv`` (item,genres)."""
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    rows = [(u, i) for u in range(1, users + 1)
            for i in sorted(rng.sample(range(1, items + 1), 12 + u % 8), key=lambda i: (i > 40, i))]
    (folder / "clicks.csv").write_text("user,item\n" + "".join(f"{u},{i}\n" for u, i in rows))
    genres = ("Drama", "Comedy|Drama", "Action", "Comedy")
    (folder / "movies.csv").write_text("item,genres\n" + "".join(f"{i},{genres[i % 4]}\n" for i in range(1, items + 1)))
    return folder


@pytest.fixture(scope="module")
def roots(root, tmp_path_factory):
    """The tiny data each table's rows read."""
    return {"melu": root, "melu-all-ratings": root, "implicit": str(write_clicks(tmp_path_factory.mktemp("clicks")))}


def small(config: dict, **more) -> dict:
    """``SMALL``, plus the hashing encoder for a row whose data set is ``text``."""
    text = {"data": {"dataset_args": {"encoder": "hashing"}}} if config["data"]["dataset"] == "text" else {}
    return harness.merged(harness.merged(SMALL, text), more)


def test_the_tables_are_those_the_scripts_run():
    assert set(TABLES) == {p.name for p in melu_table.VARIANTS.values()} | {implicit_table.FOLDER.name}
    assert len(ROWS) > 30  # the parser below is not fed an empty list


def test_a_scenario_of_the_implicit_table_is_merged_into_every_row(roots):
    """The item-cold scenario changes only the protocol of a row's data; the row builds with it."""
    config = implicit_table.table().config("maml+bce")
    scenario = implicit_table.table().scenarios["item-cold"]
    assert implicit_table.table().monitor == "val/full/recall@20" and implicit_table.table().mode == "max"
    merged = harness.merged(config, scenario)
    changed = {k for k in merged["data"]["dataset_args"] if merged["data"]["dataset_args"][k] !=
               config["data"]["dataset_args"].get(k)}
    assert changed == {"protocol", "by", "test_fraction", "val_fraction"} and merged["model"] == config["model"]
    few = {"data": {"sampler_args": {"query_size": 2, "min_support": 1}}}  # the fixture's users have few new items
    _, dm, _ = harness.build(config, roots["implicit"], seed=0, overrides=harness.merged(scenario, small(config, **few)))
    assert set(dm.stage_tasks("test")) == {"item-cold"} and dm.info.feedback == "implicit"


@pytest.mark.parametrize("table", TABLES)
def test_each_table_lists_every_config_of_its_folder(table):
    rows = harness.load_table(CONFIGS / table).rows
    assert set(rows) == {p.stem for p in (CONFIGS / table).glob("*.yaml")} - {"table"}
    for row in rows.values():
        assert row.cold_epoch is None or 1 <= row.cold_epoch <= harness.max_epochs(harness.load_config(row.config_path))


@pytest.mark.parametrize("table,name", ROWS)
def test_every_row_builds_through_the_metarec_parser(table, name, roots, tmp_path, monkeypatch):
    monkeypatch.setenv("METAREC_PL_TEXT_CACHE", str(tmp_path / "cache"))
    config = harness.load_table(CONFIGS / table).config(name)
    if config["model"]["algorithm"] not in {r.name for r in plugins.registrations() if r.kind == "algorithm"}:
        pytest.skip(f"algorithm {config['model']['algorithm']} is not installed")
    root = roots[table]
    module, dm, used = harness.build(config, root, seed=3, overrides=small(config))
    assert used["seed_everything"] == 3 and used["data"]["seed"] == 3 and used["data"]["root"] == root
    for key, value in config["model"].items():
        if key != "optimizer":
            assert module.hparams[key] == value, key
    assert dm.hparams["dataset"] == config["data"]["dataset"] and dm.hparams["tasks_per_batch"] == 8
    assert module.data_info == dm.info  # the CLI's link data.info -> model.data_info


def test_a_missing_row_or_config_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"no row 'nope'; expected one of: popularity, bias"):
        harness.load_table(CONFIGS / "melu").config("nope")
    (tmp_path / "table.yaml").write_text("rows:\n  ghost: {}\n")
    with pytest.raises(ConfigError, match=r"row 'ghost' has no config .*ghost.yaml"):
        harness.load_table(tmp_path)
    (tmp_path / "ghost.yaml").write_text("model: {}\n")
    (tmp_path / "table.yaml").write_text("rows:\n  ghost: {cold_epoc: 2}\n")
    with pytest.raises(ConfigError, match=r"row 'ghost': .*'cold_epoc'; expected the keys cold_epoch, select"):
        harness.load_table(tmp_path)


def test_a_row_config_the_parser_refuses_is_one_line_naming_the_row(root, capsys):
    config = harness.merged(harness.load_config(CONFIGS / "melu" / "maml.yaml"), {"model": {"inner_lrr": 0.1}})
    with pytest.raises(ConfigError) as refused:
        harness.build(config, root, seed=0, overrides=SMALL, where="configs/x/maml.yaml")
    message = str(refused.value)
    assert message.startswith("configs/x/maml.yaml: ") and "inner_lrr" in message and "\n" not in message
    assert "metarec: error" not in capsys.readouterr().err  # said once, in the error, not also on stderr


@pytest.mark.parametrize("script,argv,said", [
    ("melu_table", ["--methods", "mamll", "--seeds", "0"], "unknown or unregistered row(s) mamll of"),
    ("implicit_table", ["--methods", "metasgd+bcee"], "unknown row(s) metasgd+bcee; expected some of: popularity"),
    ("implicit_table", ["--scenarios", "warm"], "unknown scenario(s) warm; expected some of: user-cold, item-cold"),
])
def test_the_table_scripts_refuse_an_unknown_row_in_one_line(script, argv, said, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", [f"{script}.py", *argv])
    with pytest.raises(SystemExit) as done:
        harness.run_script(load_script(script).main, script)
    err = capsys.readouterr().err.strip().splitlines()
    assert done.value.code == 2 and len(err) == 1 and err[0].startswith(f"{script}: error: ") and said in err[0]


def test_metarec_fit_on_a_row_config_trains_exactly_what_the_harness_trains(root, tmp_path):
    """The table's training of a row is ``metarec fit --config <row>.yaml``: the best checkpoint the CLI writes
    holds the same weights, bit for bit, as the harness's best epoch."""
    path = CONFIGS / "melu" / "maml.yaml"
    out = run(["fit", "--config", str(path), "--data.root", root, "--data.tasks_per_batch", "8",
               "--data.candidates", "null", "--trainer.max_epochs", "3", "--trainer.logger", "false",
               "--trainer.enable_progress_bar", "false"], cwd=tmp_path)
    assert out.code == 0, out.err[-3000:]
    written = torch.load(tmp_path / "runs/benchmarks/melu/maml/checkpoints/best.ckpt", map_location="cpu",
                         weights_only=False)
    module, dm, config = harness.build(harness.load_config(path), root, seed=0, overrides=SMALL)
    epoch, score, _ = harness.fit_best(module, dm, 3)
    assert written["epoch"] + 1 == epoch
    state = module.state_dict()
    assert written["state_dict"].keys() == state.keys()
    assert all(torch.equal(written["state_dict"][k], v) for k, v in state.items())


def _fit(root: str, best: bool, epochs: int = 4):
    lr = {"model": {"optimizer": {"init_args": {"lr": 3e-3}}}}
    module, dm, _ = harness.build(harness.load_config(CONFIGS / "melu" / "maml.yaml"), root, 0,
                                  harness.merged(SMALL, lr))
    if best:
        return module, dm, harness.fit_best(module, dm, epochs=epochs, keep_epoch=2)
    # validating after every epoch as fit_best does (evaluation draws random numbers too)
    harness.trainer(epochs, [L.Callback()]).fit(module, dm)
    return module, dm, None


def test_fit_best_loads_the_best_validation_epoch(root):
    module, dm, (epoch, score, second) = _fit(root, best=True)
    assert 1 <= epoch <= 4
    assert harness.validate(module, dm) == pytest.approx(score, abs=1e-6)  # the loaded weights are that epoch's
    last, dm_last, _ = _fit(root, best=False)  # the same run without selection ends at epoch 4
    assert score <= harness.validate(last, dm_last) + 1e-6
    two, _, _ = _fit(root, best=False, epochs=2)  # keep_epoch=2: the weights as they were after epoch 2
    assert second.keys() == two.state_dict().keys()
    assert all(torch.equal(second[k], v) for k, v in two.state_dict().items())


def test_text_rows_are_their_method_plus_projected_item_text(root, tmp_path, monkeypatch):
    """A '+text' row: the same algorithm and settings, the data set wrapped with item text (here the hashing
    stand-in for MiniLM), the text vector projected; melu_tune's ``val_items`` reaches the wrapped protocol."""
    monkeypatch.setenv("METAREC_PL_TEXT_CACHE", str(tmp_path / "cache"))
    table = harness.load_table(CONFIGS / "melu")
    plain, text = table.config("maml"), table.config("maml+text")
    assert not table.rows["maml+text"].by_default and table.rows["maml"].by_default
    assert text["model"]["network_args"] == {**plain["model"]["network_args"], "project_dense": True}
    assert {k: v for k, v in text["model"].items() if k != "network_args"} == \
        {k: v for k, v in plain["model"].items() if k != "network_args"}
    assert text["data"]["dataset"] == "text" and text["data"]["dataset_args"]["base_args"] == \
        plain["data"]["dataset_args"] and text["data"]["dataset_args"]["base"] == plain["data"]["dataset"]
    held_out = melu_tune.held_out_items(text)
    assert held_out["data"]["dataset_args"]["base_args"] == {"val_items": 0.2, "val_items_by": "newest"}
    assert melu_tune.held_out_items(plain)["data"]["dataset_args"] == {"val_items": 0.2, "val_items_by": "newest"}
    # the fixture's users have 14-25 ratings and rate only a few of its 30 warm items
    fixture = {"data": {"dataset_args": {"base_args": {"min_ratings": 5}},
                        "sampler_args": {"query_size": 2, "min_support": 1}}}
    module, dm, _ = harness.build(text, root, 0, harness.merged(held_out, small(text, **fixture)))
    assert "item-cold" in dm.stage_tasks("val")  # the held-out items' validation scenario
    dense = [f for f in dm.schema if f.kind == "dense"]
    assert [(f.name, f.side) for f in dense] == [("text", "item")]
    assert len(module.network.encoder.projections) == 1  # the text field enters through a learned map


def test_targets_compare_the_best_meta_learner_with_the_better_baseline_seed_by_seed():
    maes = {"maml": [0.70, 0.74], "metasgd": [0.72, 0.70], "bias": [0.73, 0.70], "mf-foldin": [0.75, 0.75]}
    results = [dict(method=m, seed=s, test={f"test/{sc}/mae": v[s] for sc in melu_table.SCENARIOS} |
                    {f"test/{sc}/ndcg@3": 0.9 for sc in melu_table.SCENARIOS})
               for m, v in maes.items() for s in (0, 1)]
    # means: maml 0.72, metasgd 0.71 (the best), bias 0.715 (the better baseline; mf-foldin 0.75)
    gap = harness.paired_gap(results, "metasgd", "bias", "test/warm/mae")
    assert gap == "-0.0050 ± 0.0071 vs bias (lower on 1/2 seeds)"  # per seed -0.01, 0.00
    row = next(line for line in melu_table.targets(results, list(maes)).splitlines() if line.startswith("| warm"))
    assert "| metasgd | 0.7100 |" in row and "| yes |" in row and "vs bias (lower on 1/2 seeds)" in row
    assert harness.paired_gap(results, "maml", "tanp", "test/warm/mae") == "–"  # no common seeds


def test_the_page_puts_the_note_under_the_header_and_links_the_history_page():
    results = [dict(method=m, seed=0, epochs=1, train_s=1.0, test_s=1.0, val_mae=0.7, chosen={},
                    test={f"test/{sc}/{k}": 0.7 for sc in melu_table.SCENARIOS for k in ("mae", "ndcg@3")})
               for m in ("bias", "maml")]
    meta = dict(command="python benchmarks/melu_table.py", when="today", machine="cpu", load="0", threads=1, jobs=1,
                note="NOTE-TEXT")
    page = melu_table.render(results, meta)
    assert page.index("NOTE-TEXT") < page.index("## warm") < page.index("## More results") < page.index(
        "[history.md](history.md)")
    assert "## History" not in page
