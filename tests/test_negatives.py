"""Implicit feedback: interactions stored only, negatives drawn by the task sampler afresh every episode (seeded,
never an item the user touched), uniform or popularity-weighted; filters count interactions; popularity counts
interactions only; the deprecated dataset option moves to the sampler."""

import logging

import pytest
import torch

from _datasets_fixtures import world, write_csv
from metarec_pl.algorithms.baselines import Popularity
from metarec_pl.data.base import UserTaskSampler
from metarec_pl.data.module import MetaDataModule
from metarec_pl.data.negatives import NegativeSource, Touched
from metarec_pl.data.types import DataError, RatingData, TaskCollator
from metarec_pl.models.melu import MeLUNet

CLICKS = world(num_users=50, num_items=80, lo=12, hi=20, seed=3)


@pytest.fixture()
def clicks(tmp_path):
    write_csv(tmp_path / "clicks.csv", [(u, i) for u, i, _, _ in CLICKS], header=("user", "item"))
    return tmp_path


def module(root, sampler_args=None, **dataset_args):
    return MetaDataModule(dataset="interactions", root=str(root), tasks_per_batch=8,
                          dataset_args={"path": "clicks.csv", "implicit": True, "cache": False, **dataset_args},
                          sampler_args={"query_size": 4, "min_support": 2, **(sampler_args or {})})


def touched(data):
    return {u: set(data.item[data.user == u].tolist()) for u in data.user.unique().tolist()}


def episode_negatives(dm, epoch):
    """task key -> (support negatives, query negatives) of every training task in ``epoch``."""
    dataset = dm.train_dataloader().dataset
    out = {}
    for i in range(len(dataset)):
        task = dataset[(i, epoch)]
        out[task.key] = (task.support_negatives.tolist(), task.query_negatives.tolist())
    return out


def test_implicit_data_stores_interactions_and_the_module_says_how_to_read_them(clicks):
    dm = module(clicks)
    data = dm.data
    assert len(data.user) == len(CLICKS) and bool((data.rating == 1).all())  # no stored negatives
    assert dm.feedback == "implicit" and dm.num_negatives == 4 and dm.like_threshold == 0.5
    assert dm.rating_mean == pytest.approx(1 / 5) and dm.rating_levels == [0.0, 1.0]
    explicit = MetaDataModule(dataset_args=dict(num_users=40, num_items=30, min_ratings=12, max_ratings=20))
    assert explicit.feedback == "explicit" and explicit.num_negatives == 0 and explicit.like_threshold == 4.0
    assert all(t.support_negatives is None for t in explicit.stage_tasks("train")["train"])
    batch = next(iter(explicit.train_dataloader()))  # explicit batches: real rows only
    assert float(batch.support.mask.sum() + batch.query.mask.sum()) == float(
        ((batch.support.rating > 0).sum() + (batch.query.rating > 0).sum()))


def test_negatives_enter_the_batch_with_rating_0_mask_1_and_their_own_features(clicks):
    dm = module(clicks, id_features=True)
    data = dm.data
    tasks = dm.stage_tasks("train")["train"][:5]
    batch = TaskCollator(data)(tasks)
    for i, t in enumerate(tasks):
        for samples, rows, negs in ((batch.support, t.support, t.support_negatives),
                                    (batch.query, t.query, t.query_negatives)):
            n, k = len(rows), len(negs)
            assert k == 4 * n
            assert samples.item[i, n:n + k].tolist() == negs.tolist()
            assert bool((samples.user[i, n:n + k] == t.key).all())
            assert samples.rating[i, n:n + k].tolist() == [0.0] * k and samples.rating[i, :n].tolist() == [1.0] * n
            assert float(samples.mask[i].sum()) == n + k
            want = data.features(samples.user[i, :n + k], samples.item[i, :n + k])
            assert all(torch.equal(samples.features[key][i, :n + k], want[key]) for key in want)


def test_negatives_are_fresh_each_epoch_and_equal_for_the_same_seed_and_epoch(clicks):
    dm, again = module(clicks), module(clicks)
    first, second, third = (episode_negatives(dm, e) for e in (0, 1, 2))
    built = {t.key: (t.support_negatives.tolist(), t.query_negatives.tolist())
             for t in dm.stage_tasks("train")["train"]}
    assert first == built  # epoch 0: the tasks as built
    assert sum(second[k] != first[k] for k in first) == len(first) and second != third
    assert episode_negatives(again, 1) == second and episode_negatives(again, 2) == third  # seeded (seed, epoch, task)
    loader = dm.train_dataloader()  # the loader hands out the same as the Episodes index
    loader.batch_sampler.set_epoch(1)
    seen = {}
    for b in loader:
        for i, key in enumerate(b.key.tolist()):
            n = int((b.support.rating[i] > 0).sum())
            seen[key] = b.support.item[i, n:int(b.support.mask[i].sum())].tolist()
    assert seen == {k: v[0] for k, v in second.items()}
    other = module(clicks, sampler_args={"negative_seed": 1})
    assert episode_negatives(other, 1) != second  # negative_seed moves them ...
    split = lambda m: {t.key: t.query.tolist() for t in m.stage_tasks("train")["train"]}  # noqa: E731
    assert split(other) == split(dm)  # ... and leaves the support/query splits alone
    fixed = module(clicks)
    fixed.hparams.resample_splits = False  # fixed splits still get fresh negatives
    a, b = (fixed.train_dataloader().dataset[(0, e)] for e in (1, 2))
    assert torch.equal(a.query, b.query) and not torch.equal(a.query_negatives, b.query_negatives)


def test_validation_and_test_negatives_are_fixed(clicks):
    dm = module(clicks)
    for stage in ("val", "test"):
        loader = getattr(dm, f"{stage}_dataloader")()
        runs = []
        for epoch in (0, 3):
            loader.batch_sampler.set_epoch(epoch)
            runs.append([b.query.item.tolist() for b in loader])
        assert runs[0] == runs[1]
        assert runs[0] == [b.query.item.tolist() for b in getattr(module(clicks), f"{stage}_dataloader")()]


def test_negatives_are_never_an_item_the_user_touched_and_come_from_the_scenario(clicks):
    dm = module(clicks, {"query_size": 2, "min_support": 1}, protocol="item-cold", by="count", val_fraction=0.25,
                test_fraction=0.3)
    data = dm.data
    seen = touched(data)
    checked = 0
    for stage in ("train", "val", "test"):
        for scenario, tasks in dm.stage_tasks(stage).items():
            items = set(data.item[data.splits[stage][scenario]].tolist())
            for epoch in ((0, 1, 2) if stage == "train" else (0,)):
                for i, task in enumerate(tasks):
                    if epoch:
                        task = dm.sampler.episode(task, hash((0, epoch, i)))
                    negs = set(task.support_negatives.tolist()) | set(task.query_negatives.tolist())
                    assert negs and not negs & seen[task.key] and negs <= items
                    checked += 1
    assert checked > 100


def test_a_user_who_touched_every_item_gets_no_negatives():
    touched = Touched.build(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0]), 2)
    source = NegativeSource(torch.tensor([0, 1]), None, touched, per_row=3)
    gen = torch.Generator().manual_seed(0)
    assert source.draw(0, 6, gen).tolist() == [] and source.draw(1, 3, gen).tolist() == [1, 1, 1]


def test_popularity_weighted_negatives_follow_the_training_counts():
    """A seeded large draw: frequencies within a loose bound of (1 + training interactions) / sum."""
    g = torch.Generator().manual_seed(0)
    num_items, num_users = 40, 300
    popularity = torch.arange(num_items, dtype=torch.float) ** 2 + 1  # skewed
    user = torch.arange(num_users).repeat_interleave(6)
    item = torch.multinomial(popularity.repeat(num_users, 1), 6, replacement=False, generator=g).flatten()
    probe = torch.tensor([num_users]), torch.tensor([0])  # a user with one click (item 0)
    data = RatingData(torch.cat([user, probe[0]]), torch.cat([item, probe[1]]), torch.ones(len(user) + 1), {}, {},
                      [], {"train": {"train": torch.arange(len(user))}, "test": {"s": torch.tensor([len(user)])}},
                      feedback="implicit")
    counts = torch.bincount(item, minlength=num_items).double()
    for how, expected in (("popularity", 1 + counts), ("uniform", torch.ones(num_items, dtype=torch.float64))):
        sampler = UserTaskSampler(negative_sampling=how)
        source = sampler.negative_source(data, torch.arange(len(data.user)))
        gen = torch.Generator().manual_seed(1)
        draws = torch.cat([source.draw(num_users, 1, gen) for _ in range(20000)])
        expected[0] = 0  # the probe's own click is never drawn, nor an item no one clicked (not in the scenario)
        expected[counts == 0] = 0
        freq = torch.bincount(draws, minlength=num_items).double() / len(draws)
        assert freq[0] == 0
        assert 0.5 * (freq - expected / expected.sum()).abs().sum() < 0.04  # total variation distance
    assert how == "uniform"


def test_popularity_sampling_draws_popular_items_more_often_through_the_tasks(tmp_path):
    g = torch.Generator().manual_seed(0)
    weights = (torch.arange(80, dtype=torch.float) + 1) ** 1.5  # a skewed catalogue
    picks = torch.multinomial(weights.repeat(60, 1), 15, replacement=False, generator=g)
    write_csv(tmp_path / "clicks.csv", [(u, int(i)) for u in range(60) for i in picks[u]], header=("user", "item"))
    uniform, popular = module(tmp_path), module(tmp_path, sampler_args={"negative_sampling": "popularity"})
    data = uniform.data
    train = torch.cat(list(data.splits["train"].values()))
    counts = torch.bincount(data.item[train], minlength=data.num_items).double()
    def mean_count(dm):
        return float(torch.cat([counts[t.query_negatives] for t in dm.stage_tasks("train")["train"]]).mean())

    assert mean_count(popular) > 1.15 * mean_count(uniform)


def test_filters_and_item_cold_by_count_count_interactions_only(clicks):
    per_item = {}
    per_user = {}
    for u, i, _, _ in CLICKS:
        per_item[str(i)] = per_item.get(str(i), 0) + 1
        per_user[str(u)] = per_user.get(str(u), 0) + 1
    dm = module(clicks, protocol="item-cold", by="count", test_fraction=0.2, val_fraction=0.1)
    data = dm.data
    held = {data.item_ids[i] for i in data.item[data.splits["test"]["item-cold"]].unique().tolist()}
    train_items = {data.item_ids[i] for i in data.item[data.splits["train"]["train"]].unique().tolist()}
    assert max(per_item[i] for i in held) <= min(per_item[i] for i in train_items)  # coldest by interactions
    low = sorted(per_user.values())[len(per_user) // 3]
    filtered = module(clicks, min_ratings=low).data
    kept = {filtered.user_ids[u] for s in filtered.splits.values() for rows in s.values()
            for u in filtered.user[rows].unique().tolist()}
    assert kept == {u for u, n in per_user.items() if n >= low} and len(kept) < len(per_user)


def test_popularity_counts_interactions_and_never_sampled_negatives(clicks):
    dm = module(clicks)
    data = dm.data
    tasks = dm.stage_tasks("train")["train"]
    algo = Popularity()
    algo.bind(MeLUNet(dm.schema, embedding_dim=4, hidden=(4,)), dm.info)
    algo.train()
    for start in range(0, len(tasks), 8):
        batch = TaskCollator(data)(tasks[start:start + 8])
        assert bool((batch.support.mask * (batch.support.rating == 0)).sum() > 0)  # batches do hold negatives
        algo.run(None, batch, 0, False)
    rows = torch.cat([torch.cat([t.support, t.query]) for t in tasks])
    assert algo.item_count.tolist() == torch.bincount(data.item[rows], minlength=data.num_items).double().tolist()


def test_the_old_dataset_option_moves_to_the_sampler_with_a_warning(clicks, caplog):
    with caplog.at_level(logging.WARNING, logger="metarec_pl.data"):
        dm = module(clicks, negatives=2)
    assert dm.num_negatives == 2 and all(len(t.query_negatives) == 2 * len(t.query)
                                         for t in dm.stage_tasks("train")["train"])
    assert any("dataset_args.negatives" in r.getMessage() and "deprecated" in r.getMessage()
               and "sampler_args.negatives" in r.getMessage() for r in caplog.records)
    with pytest.raises(DataError, match="data.dataset_args.negatives: 2 contradicts data.sampler_args.negatives: 3"):
        module(clicks, sampler_args={"negatives": 3}, negatives=2)
    with pytest.raises(DataError, match="data.sampler_args: negatives must be >= 0"):
        module(clicks, sampler_args={"negatives": -1})
    with pytest.raises(DataError, match="data.sampler_args.negative_sampling: 'zipf'"):
        module(clicks, sampler_args={"negative_sampling": "zipf"})


def test_weights_come_from_the_weight_column_when_asked(tmp_path):
    write_csv(tmp_path / "plays.csv", [(u, i, 1 + (u * i) % 7) for u, i, _, _ in CLICKS] + [(1, 999, 0)],
              header=("user", "item", "plays"))
    dm = MetaDataModule(dataset="interactions", root=str(tmp_path), sampler_args={"query_size": 4},
                        dataset_args={"path": "plays.csv", "implicit": True, "weights": True, "cache": False,
                                      "columns": {"rating": "plays"}})
    data = dm.data
    assert sorted(data.rating.tolist()) == sorted(float(1 + (u * i) % 7) for u, i, _, _ in CLICKS)  # 0 dropped
    assert data.rating_range == (0.0, 7.0) and dm.like_threshold == 0.5
    assert data.dropped == {"rows with weight <= 0 (implicit)": 1}
    with pytest.raises(DataError, match="weights: true needs a weight column"):
        MetaDataModule(dataset="interactions", root=str(tmp_path),
                       dataset_args={"path": "plays.csv", "implicit": True, "weights": True})


def test_worker_processes_draw_the_same_negatives(clicks):
    out = []
    for workers in (0, 1):
        dm = module(clicks)
        dm.hparams.num_workers = workers
        loader = dm.train_dataloader()
        loader.batch_sampler.set_epoch(2)
        out.append([(b.key.tolist(), b.support.item.tolist(), b.query.item.tolist()) for b in loader])
    assert out[0] == out[1] and len(out[0]) > 1


def test_popularity_on_clicks_finds_the_popular_items(tmp_path):
    """Clicks only: 10 popular items (6 of them clicked by every user) among 60; popularity fitted on the training
    users' interactions ranks them first, so pool hit@5 is well above 0.5, and like_acc at the data's threshold is
    no longer 1.0 for any model (the negatives are not likes, the interactions are)."""
    import random

    import lightning as L

    from metarec_pl.bilevel import MetaLearner

    rng = random.Random(1)
    write_csv(tmp_path / "clicks.csv", [(f"u{u}", i) for u in range(80)
                                        for i in rng.sample(range(10), 6) + rng.sample(range(10, 60), 14)],
              header=("user", "item"))
    dm = MetaDataModule(dataset="interactions", root=str(tmp_path), candidates=20, tasks_per_batch=16,
                        dataset_args={"path": "clicks.csv", "implicit": True, "id_features": True, "cache": False},
                        sampler_args={"query_size": 10, "min_support": 5})
    module = MetaLearner(algorithm="popularity", network="mlp", data_info=dm.info)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, max_epochs=1,
                        enable_checkpointing=False)
    trainer.fit(module, dm)
    out = trainer.test(module, dm, verbose=False)[0]
    assert out["test/pool/hit@5"] > 0.5 and out["test/like_acc"] < 1.0
    assert module.algorithm.item_count.sum() == sum(len(t.support) + len(t.query)
                                                    for t in dm.stage_tasks("train")["train"])
