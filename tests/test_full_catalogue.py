"""Candidates at validation and test: the sampled pool and the full catalogue minus exactly what the user touched."""

import pytest
import torch

from _datasets_fixtures import world, write_csv
from metarec_pl.data.module import MetaDataModule
from metarec_pl.data.types import DataError

WORLD = dict(num_users=120, num_items=70, min_ratings=15, max_ratings=30, seed=2)


def synthetic(**kw):
    return MetaDataModule(dataset_args=WORLD, sampler_args=dict(query_size=6, min_support=3), tasks_per_batch=16,
                          **kw)


def touched(data):
    return {u: set(data.item[data.user == u].tolist()) for u in data.user.unique().tolist()}


@pytest.mark.parametrize("stage", ["val", "test"])
def test_full_catalogue_is_every_scenario_item_the_user_never_touched(stage):
    dm = synthetic(full_catalogue=True, candidates=10)
    data, seen, n = dm.data, touched(dm.data), 0
    for batch in getattr(dm, f"{stage}_dataloader")():
        assert set(batch.rankings) == {"pool", "full"} and torch.equal(batch.rankings["full"], batch.candidate)
        assert (batch.query.mask[batch.candidate] == 0).all()
        scenario_items = set(data.item[data.splits[stage][batch.scenario]].tolist())
        for i, user in enumerate(batch.key.tolist()):
            full = batch.query.item[i][batch.rankings["full"][i]].tolist()
            pool = set(batch.query.item[i][batch.rankings["pool"][i]].tolist())
            assert sorted(full) == sorted(scenario_items - seen[user])  # exactly, once each
            assert pool <= set(full) and len(pool) == min(10, len(full))
            n += 1
    assert n == sum(len(t) for t in dm.stage_tasks(stage).values())


def test_pool_only_and_full_only_and_seeded_pools():
    pool, full = synthetic(candidates=10), synthetic(full_catalogue=True)
    a, b = next(iter(pool.val_dataloader())), next(iter(synthetic(candidates=10).val_dataloader()))
    assert set(a.rankings) == {"pool"} and torch.equal(a.query.item, b.query.item)
    with_full = next(iter(synthetic(candidates=10, full_catalogue=True).val_dataloader()))
    pool_items = [set(a.query.item[i][a.rankings["pool"][i]].tolist()) for i in range(len(a))]
    assert pool_items == [set(with_full.query.item[i][with_full.rankings["pool"][i]].tolist())
                          for i in range(len(a))]  # the same pool, with or without the full catalogue
    c = next(iter(full.test_dataloader()))
    assert set(c.rankings) == {"full"}
    assert next(iter(synthetic().val_dataloader())).candidate is None  # nothing asked: no candidates
    with pytest.raises(DataError, match="data.full_catalogue: 'yes' is not a boolean"):
        synthetic(full_catalogue="yes")
    with pytest.raises(DataError, match="data.full_catalogue: top-k candidate pools need user-as-task"):
        MetaDataModule(dataset_args=WORLD, sampler="item", full_catalogue=True).val_dataloader()


def test_implicit_query_negatives_are_query_samples_and_the_catalogue_ignores_them(tmp_path):
    write_csv(tmp_path / "clicks.csv", [(u, i) for u, i, _, _ in world(60, 50, 12, 18, seed=4)],
              header=("user", "item"))
    dm = MetaDataModule(dataset="interactions", root=str(tmp_path), full_catalogue=True, tasks_per_batch=8,
                        dataset_args={"path": "clicks.csv", "implicit": True, "cache": False},
                        sampler_args={"query_size": 4, "min_support": 2})
    data, seen = dm.data, touched(dm.data)
    tasks = {t.key: t for ts in dm.stage_tasks("test").values() for t in ts}
    for batch in dm.test_dataloader():
        items = set(data.item[data.splits["test"][batch.scenario]].tolist())
        for i, user in enumerate(batch.key.tolist()):
            real = batch.query.mask[i] > 0
            negatives = batch.query.item[i][real & (batch.query.rating[i] == 0)].tolist()
            assert negatives == tasks[user].query_negatives.tolist() and len(negatives) == 16
            assert not (real & batch.candidate[i]).any()  # a negative is a query sample, never a candidate slot
            assert sorted(batch.query.item[i][batch.candidate[i]].tolist()) == sorted(items - seen[user])


def test_a_fit_validates_on_both_rankings():
    import lightning as L

    from metarec_pl.bilevel import MetaLearner

    dm = synthetic(candidates=10, full_catalogue=True)
    module = MetaLearner(algorithm="maml", adapt=["head.*"], inner_steps=1, inner_lr=0.05,
                         data_info=dm.info, network_args=dict(embedding_dim=8))
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, max_epochs=1,
                        limit_train_batches=1, enable_checkpointing=False)
    trainer.fit(module, dm)
    for name in ("val/full/recall@10", "val/pool/hit@5", "val/full/ndcg@10_zero_shot"):
        assert 0.0 <= float(trainer.callback_metrics[name]) <= 1.0
