"""benchmarks/melu_table.py keeps the epoch with the lowest validation MAE (never a test user's), and the weights
of a given epoch (the model for new items)."""

import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from _datasets_fixtures import write_melu
from metarec_pl.bilevel import MetaLearner
from metarec_pl.data.module import MetaDataModule

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import melu_table  # noqa: E402


def _fit(root: str, best: bool, epochs: int = 4):
    dm = MetaDataModule(root=root, seed=0, candidates=None, **{**melu_table.DATA, "tasks_per_batch": 8})
    L.seed_everything(0, verbose=False)
    module = MetaLearner(algorithm="maml", data_info=dm.info, optimizer=lambda p: torch.optim.Adam(p, lr=3e-3),
                         **{**melu_table.COMMON, **melu_table.METHODS["maml"]["model"]})
    if best:
        return module, dm, melu_table.fit_best(module, dm, epochs=epochs, keep_epoch=2)
    # validating after every epoch as fit_best does (evaluation draws random numbers too)
    L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, gradient_clip_val=1.0, num_sanity_val_steps=0,
              inference_mode=False).fit(module, dm)
    return module, dm, None


def test_fit_best_loads_the_best_validation_epoch(tmp_path):
    root = str(write_melu(tmp_path / "melu", warm_name="warm_state.reconstructed.json"))
    module, dm, (epoch, score, second) = _fit(root, best=True)
    assert 1 <= epoch <= 4
    assert melu_table.validate(module, dm) == pytest.approx(score, abs=1e-6)  # the loaded weights are that epoch's
    last, dm_last, _ = _fit(root, best=False)  # the same run without selection ends at epoch 4
    assert score <= melu_table.validate(last, dm_last) + 1e-6
    two, _, _ = _fit(root, best=False, epochs=2)  # keep_epoch=2: the weights as they were after epoch 2
    assert second.keys() == two.state_dict().keys()
    assert all(torch.equal(second[k], v) for k, v in two.state_dict().items())


def test_text_rows_are_their_method_plus_projected_item_text(tmp_path, monkeypatch):
    """A '+text' row: the same algorithm and settings, the data set wrapped with item text (here the hashing
    stand-in for MiniLM), the text vector projected; ``val_items`` reaches the wrapped protocol."""
    monkeypatch.setattr(melu_table, "TEXT_ENCODER", "hashing")
    monkeypatch.setenv("METAREC_PL_TEXT_CACHE", str(tmp_path / "cache"))
    root = str(write_melu(tmp_path / "melu", warm_name="warm_state.reconstructed.json"))
    plain, text = melu_table.METHODS["maml"], melu_table.METHODS["maml+text"]
    assert text["algorithm"] == "maml" and text.get("text") and not plain.get("text")
    assert {k: v for k, v in text["model"].items() if k != "network_args"} == plain["model"]
    config = melu_table.data_config("maml+text", val_items=0.2, val_items_by="newest")
    assert config["dataset"] == "text"
    assert {k: config["dataset_args"]["base_args"][k] for k in ("val_items", "val_items_by")} == \
        {"val_items": 0.2, "val_items_by": "newest"}
    assert melu_table.data_config("maml") == melu_table.DATA  # plain rows: the table's data, untouched
    config["dataset_args"]["base_args"]["min_ratings"] = 5  # the fixture's users have 14-25 ratings, and rate
    config["sampler_args"] = dict(query_size=2, min_support=1)  # only a few of its 30 warm items
    dm = MetaDataModule(root=root, seed=0, candidates=None, **config)
    assert "item-cold" in dm.stage_tasks("val")  # the held-out items' validation scenario
    dense = [f for f in dm.schema if f.kind == "dense"]
    assert [(f.name, f.side) for f in dense] == [("text", "item")]
    module = melu_table.build_module("maml+text", dm, lr=1e-3)
    assert len(module.network.encoder.projections) == 1  # the text field enters through a learned map


def test_targets_compare_the_best_meta_learner_with_the_better_baseline_seed_by_seed():
    maes = {"maml": [0.70, 0.74], "metasgd": [0.72, 0.70], "bias": [0.73, 0.70], "mf-foldin": [0.75, 0.75]}
    results = [dict(method=m, seed=s, test={f"test/{sc}/mae": v[s] for sc in melu_table.SCENARIOS} |
                    {f"test/{sc}/ndcg@3": 0.9 for sc in melu_table.SCENARIOS})
               for m, v in maes.items() for s in (0, 1)]
    # means: maml 0.72, metasgd 0.71 (the best), bias 0.715 (the better baseline; mf-foldin 0.75)
    gap = melu_table.paired_gap(results, "metasgd", "bias", "test/warm/mae")
    assert gap == "-0.0050 ± 0.0071 vs bias (lower on 1/2 seeds)"  # per seed -0.01, 0.00
    row = next(line for line in melu_table.targets(results, list(maes)).splitlines() if line.startswith("| warm"))
    assert "| metasgd | 0.7100 |" in row and "| yes |" in row and "vs bias (lower on 1/2 seeds)" in row
    assert melu_table.paired_gap(results, "maml", "tanp", "test/warm/mae") == "–"  # no common seeds


def test_the_page_puts_the_note_under_the_header_and_the_history_last():
    results = [dict(method=m, seed=0, epochs=1, train_s=1.0, test_s=1.0, val_mae=0.7, chosen={},
                    test={f"test/{sc}/{k}": 0.7 for sc in melu_table.SCENARIOS for k in ("mae", "ndcg@3")})
               for m in ("bias", "maml")]
    meta = dict(command="python benchmarks/melu_table.py", when="today", machine="cpu", load="0", threads=1, jobs=1,
                note="NOTE-TEXT", history="HISTORY-TEXT")
    page = melu_table.render(results, meta)
    assert page.index("NOTE-TEXT") < page.index("## warm") < page.index("## More results") < page.index(
        "## History of this table") < page.index("HISTORY-TEXT")
    assert "## History" not in melu_table.render(results, {**meta, "history": ""})
