"""Task sampler ``next-item``: sequence networks through ``MetaDataModule`` and the ``metarec`` command.

The sampler's tasks (first K interactions, then the next Q), its training windows and negatives, its evaluation
candidates (full catalogue, sampled pool outside the whole history, blind support negatives), and a
``metarec fit`` / ``metarec test`` run of ``text-sequence`` + ``metasgd`` on generated ML-100K files whose
full-catalogue numbers are recomputed here from the checkpoint."""

import math
from pathlib import Path

import pytest
import torch
import yaml

from _cli_helpers import ROOT, run
from _datasets_fixtures import write_ml100k
from metarec_pl.bilevel import MetaLearner
from metarec_pl.data.module import MetaDataModule
from metarec_pl.data.next_item import NextItemSampler
from metarec_pl.data.sequences import HISTORY
from metarec_pl.data.sequential import SCENARIO
from metarec_pl.data.types import DataError
from metarec_pl.models.sequence import TextSequenceNet
from test_sequential_protocol import log_rows

K, Q = 3, 1


@pytest.fixture(scope="module")
def ml_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ml")
    return write_ml100k(root / "ml", log_rows(num_users=60, num_items=150), num_users=60, num_items=150)


def data_module(root: Path, tmp: Path, **sampler_args) -> MetaDataModule:
    dm = MetaDataModule(dataset="text", root=str(root), dataset_args=dict(
        base="movielens-100k", base_args=dict(protocol="sequential-cold", support_size=K, query_size=Q),
        encoder="hashing", cache_dir=str(tmp / "cache")), sampler="next-item",
        sampler_args=dict(support_size=K, query_size=Q, **sampler_args), tasks_per_batch=8, eval_tasks_per_batch=4)
    return dm


def in_time_order(data, rows):
    return rows[torch.argsort(data.time[rows], stable=True)]


def test_tasks_windows_and_training_negatives(ml_root, tmp_path):
    dm = data_module(ml_root, tmp_path, negatives=2, query_negatives=5)
    data = dm.data
    for t in dm.stage_tasks("test")[SCENARIO]:  # a cold user's first K rows, then the next Q, in time order
        rows = in_time_order(data, torch.nonzero(data.user == t.key).flatten())
        assert t.support.tolist() == rows[:K].tolist() and t.query.tolist() == rows[K:K + Q].tolist()
    train = dm.stage_tasks("train")["train"]
    train_items = set(data.item[data.splits["train"]["train"]].tolist())
    starts = set()
    for t in train:  # windows: K + Q consecutive rows of the user's (training) history
        pool = t.pool.tolist()
        at = pool.index(int(t.support[0]))
        starts.add(at)
        assert pool[at:at + K + Q] == t.support.tolist() + t.query.tolist()
        history = set(data.item[data.user == t.key].tolist())
        negatives = t.support_negatives.tolist() + t.query_negatives.tolist()
        assert len(t.support_negatives) == 2 * K and len(t.query_negatives) == 5 * Q
        assert len(set(negatives)) == len(negatives) and not set(negatives) & history
        assert set(negatives) <= train_items
    assert len(starts) > 1  # random places, not always the first window
    batch = next(iter(dm.train_dataloader()))
    s = batch.support
    assert s.features[HISTORY].shape[-1] == K and (s.rating.sum(1) == K).all()  # K positives per support
    first = batch.support.features[HISTORY][0, 0]
    assert (first == 0).all()  # the first support item is predicted from nothing before it
    other = next(iter(dm.train_dataloader()))  # another epoch would draw anew; the same epoch is the same
    assert torch.equal(other.support.features[HISTORY], batch.support.features[HISTORY])
    first_windows = data_module(ml_root, tmp_path, windows="first").stage_tasks("train")["train"]
    assert all(t.support.tolist() == t.pool[:K].tolist() for t in first_windows)


def test_evaluation_ranks_the_full_catalogue_and_a_pool_outside_the_history(ml_root, tmp_path):
    dm = data_module(ml_root, tmp_path, eval_negatives=20)
    data = dm.data
    catalogue = set(torch.unique(data.item).tolist())
    tasks = dm.stage_tasks("val")[SCENARIO]
    batch = next(iter(dm.val_dataloader()))
    q = batch.query
    for i, key in enumerate(batch.key.tolist()):
        task = next(t for t in tasks if t.key == key)
        support, query = set(data.item[task.support].tolist()), set(data.item[task.query].tolist())
        history = set(data.item[data.user == key].tolist())
        positives = q.item[i][(q.mask[i] > 0)].tolist()
        assert positives == data.item[task.query].tolist() and (q.rating[i][q.mask[i] > 0] == 1).all()
        full = set(q.item[i][batch.rankings["full"][i]].tolist())
        assert full == catalogue - support - query
        pool = set(q.item[i][batch.rankings["pool"][i]].tolist())
        assert len(pool) == 20 and pool <= full and not pool & history
        assert (q.mask[i][batch.candidate[i]] == 0).all()  # candidates never enter a loss
        context = q.features[HISTORY][i, batch.candidate[i]]
        assert (context == (data.item[task.support] + 1)).all()  # every candidate after the whole support
        s = batch.support
        support_negatives = set(s.item[i][(s.rating[i] == 0) & (s.mask[i] > 0)].tolist())
        assert len(support_negatives) == 4 * K and not support_negatives & support  # blind: outside the support
    # seeded per user: the same user's samples in another batch composition are the same
    alone = dm.sampler.collator(data, "val", dm.hparams.seed)([next(t for t in tasks if t.key == int(batch.key[1]))])
    n = int(batch.query.mask[1].sum() + batch.candidate[1].sum())
    assert torch.equal(alone.query.item[0][:n], batch.query.item[1][:n])
    assert torch.equal(alone.rankings["pool"][0][:n], batch.rankings["pool"][1][:n])


def test_the_model_is_told_targets_are_implicit(ml_root, tmp_path):
    info = data_module(ml_root, tmp_path).info
    assert info.feedback == "implicit" and info.like_threshold == 0.5 and info.rating_range == (0.0, 1.0)
    assert info.item_features is not None and "item_text" in info.item_features
    assert "item_features" not in info.to_dict()  # tables stay out of hparams and checkpoints


@pytest.mark.parametrize("args, message", [
    (dict(support_size=0), "data.sampler_args.support_size: 0; expected an integer >= 1"),
    (dict(eval_negatives=2.5), "data.sampler_args.eval_negatives: 2.5; expected an integer >= 1"),
    (dict(windows="last"), "data.sampler_args.windows: 'last'; expected 'random' or 'first'"),
])
def test_bad_sampler_options_are_one_line(args, message):
    with pytest.raises(DataError, match=message):
        NextItemSampler(**args)


def _argv(root: Path, tmp: Path, name: str = "text-prompt", **model) -> list[str]:
    """``configs/sequence/<name>.yaml`` made small (d = 8, 2 epochs) and pointed at ``tmp``; ``model`` overrides."""
    config = yaml.safe_load((ROOT / f"configs/sequence/{name}.yaml").read_text())
    config["trainer"].update(max_epochs=2, default_root_dir=str(tmp / name), enable_progress_bar=False,
                             logger=False)
    config["trainer"]["callbacks"][0]["init_args"]["dirpath"] = str(tmp / name / "checkpoints")
    config["model"]["network_args"].update(dim=8)
    config["model"].update(model)
    config["data"].update(root=str(root), tasks_per_batch=8)
    config["data"]["dataset_args"].update(encoder="hashing", cache_dir=str(tmp / "cache"))
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return ["--config", str(path)]


def network_weights(path: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in torch.load(path, map_location="cpu", weights_only=False)["state_dict"].items()
            if k.startswith("network.")}


@pytest.fixture(scope="module")
def stage1(ml_root, tmp_path_factory) -> Path:
    """Stage 1's checkpoint: configs/sequence/text-backbone.yaml (algorithm none) on the generated files."""
    tmp = tmp_path_factory.mktemp("stage1")
    fit = run(["fit", *_argv(ml_root, tmp, "text-backbone")])
    assert fit.code == 0, fit.err[-2000:]
    return tmp / "text-backbone/checkpoints/best.ckpt"


def test_two_stage_metarec_fit_then_test_of_a_sequence_network(ml_root, stage1, tmp_path):
    """Stage 1 trains the backbone (algorithm none); stage 2 starts from it (model.init_from) and meta-learns only
    the prompt's initialisation and step sizes (outer_update: adapted); metarec test reads stage 2's checkpoint."""
    config = _argv(ml_root, tmp_path, init_from=str(stage1))
    fit = run(["fit", *config])
    assert fit.code == 0, fit.err[-2000:]
    best = tmp_path / "text-prompt/checkpoints/best.ckpt"
    before, after = network_weights(stage1), network_weights(best)
    assert before.keys() == after.keys()
    moved = {k for k in after if not torch.equal(after[k], before[k])}
    assert moved == {"network.encoder.prompt"}  # the backbone stays as stage 1 left it
    test = run(["test", *config, "--ckpt_path", str(best)])
    assert test.code == 0, test.err[-2000:]
    # the full-catalogue ranking before adaptation, recomputed from the checkpoint alone (its saved item table)
    model = MetaLearner.load_from_checkpoint(best, map_location="cpu")
    net = model.network.eval()
    dm = data_module(ml_root, tmp_path)
    data, catalogue = dm.data, torch.unique(dm.data.item)
    assert torch.equal(net.encoder.items.item_table, _trained_table(dm, config))
    ndcg = []
    for t in dm.stage_tasks("test")[SCENARIO]:
        support, positive = data.item[t.support], int(data.item[t.query][0])
        with torch.no_grad():
            scores = net.score_all((support + 1)[None])[0]
        others = catalogue[~torch.isin(catalogue, torch.cat([support, data.item[t.query]]))]
        rank = int((scores[others] > scores[positive]).sum())
        ndcg.append(1 / math.log2(rank + 2) if rank < 10 else 0.0)
    assert test.metric("test/full/ndcg@10_zero_shot") == pytest.approx(sum(ndcg) / len(ndcg), abs=1e-4)
    assert 0.0 <= test.metric("test/pool/hit@10") <= 1.0


def test_outer_update_all_moves_the_backbone_too(ml_root, stage1, tmp_path):
    fit = run(["fit", *_argv(ml_root, tmp_path, init_from=str(stage1), outer_update="all")])
    assert fit.code == 0, fit.err[-2000:]
    before, after = network_weights(stage1), network_weights(tmp_path / "text-prompt/checkpoints/best.ckpt")
    assert {k for k in after if not torch.equal(after[k], before[k])} > {"network.encoder.prompt"}


@pytest.mark.parametrize("model, message", [
    (dict(init_from="nowhere.ckpt"), "model.init_from: nowhere.ckpt does not exist; expected a .ckpt file"),
    (dict(outer_update="prompt"), "model.outer_update: 'prompt'; expected 'all' or 'adapted'"),
    (dict(algorithm="none", adapt=None, inner_steps=None, inner_lr=None, init_from=None),
     "model.outer_update: 'adapted' needs an algorithm that adapts parameters; algorithm 'none' adapts none"),
])
def test_bad_two_stage_options_are_one_line(ml_root, tmp_path, model, message):
    bad = run(["fit", *_argv(ml_root, tmp_path, **model)])
    assert bad.code == 2 and len(bad.error_lines) == 1 and message in bad.error_lines[0], bad.err[-1500:]
    assert not (tmp_path / "text-prompt/checkpoints").exists()


def test_init_from_a_network_of_another_shape_is_one_line(ml_root, stage1, tmp_path):
    bad = run(["fit", *_argv(ml_root, tmp_path, init_from=str(stage1),
                             network_args={"dim": 8, "prompt_len": 2})])
    assert bad.code == 2 and bad.error_lines == [
        f"metarec: error: model.init_from: {stage1}: 'encoder.prompt' has shape [4, 8], this network's [2, 8]; "
        "expected the same network_args"]


def _trained_table(dm: MetaDataModule, config: list[str]) -> torch.Tensor:
    """The whitened item table a fresh text-sequence network builds from the data (what the checkpoint holds)."""
    spec = yaml.safe_load(Path(config[1]).read_text())["model"]["network_args"]
    return TextSequenceNet(dm.info.schema, data_info=dm.info, **spec).encoder.items.item_table


def test_sequence_sampler_refuses_rating_candidates_and_new_user_files(ml_root, tmp_path):
    config = _argv(ml_root, tmp_path, init_from=None, outer_update="all")
    bad = run(["fit", *config, "--data.candidates", "50"])
    assert bad.code == 2 and bad.error_lines == [
        "metarec: error: data.candidates / data.full_catalogue: sampler 'next-item' ranks its own candidates (the "
        "full catalogue and a sampled pool); expected neither option"]
    new_users = run(["fit", *config, "--data.predict_file", str(tmp_path / "new.csv")])
    assert new_users.code == 2 and new_users.error_lines == [
        "metarec: error: data.predict_file: sampler 'next-item' builds its own samples, not rows of new users' "
        "ratings; expected no predict_file (predict ranks the test tasks)"]
    other_k = run(["fit", *config, "--data.sampler_args.support_size", "5"])  # the protocol keeps 3 + 1 rows
    assert other_k.code == 2 and len(other_k.error_lines) == 1
    assert "expected them equal to the protocol's support_size and query_size" in other_k.error_lines[0]
    no_text = run(["fit", *config, "--data.dataset", "movielens-100k", "--data.dataset_args",
                   "{protocol: sequential-cold, support_size: 3, query_size: 1}"])
    assert no_text.code == 2 and len(no_text.error_lines) == 1
    assert "text-sequence: no item text vectors" in no_text.error_lines[0]


@pytest.mark.parametrize("network, adapt", [("id-sequence", "[encoder.prompt]"), ("metatl", "[encoder.relation]")])
def test_the_other_sequence_networks_train_through_metarec_fit(ml_root, tmp_path, network, adapt):
    config = _argv(ml_root, tmp_path, init_from=None, outer_update="all")
    args = "{dim: 8, prompt_len: 1}" if network == "id-sequence" else "{dim: 8}"
    fit = run(["fit", *config, "--model.network", network, "--model.network_args", args, "--model.adapt", adapt,
               "--trainer.max_epochs", "1"])
    assert fit.code == 0, fit.err[-2000:]
    model = MetaLearner.load_from_checkpoint(tmp_path / "text-prompt/checkpoints/best.ckpt", map_location="cpu")
    items = model.network.encoder.items
    data = data_module(ml_root, tmp_path).data
    if network == "id-sequence":  # one learned vector per item code of the data
        assert items.embedding.shape[0] == data.num_items
    else:  # the data's text vectors, whitened
        assert items.item_table.shape == data.item_features["item_text"].shape
