"""Baselines on tiny fixtures with known answers."""

import lightning as L
import pytest
import torch

from metarec_pl import plugins
from metarec_pl.algorithms.baselines import Bias, FineTune, MFFoldIn, Popularity
from metarec_pl.bilevel import MetaLearner
from metarec_pl.data.info import DataInfo, IdMap
from metarec_pl.data.module import MetaDataModule
from metarec_pl.data.types import FeatureSpec, RatingData, Task, TaskCollator
from metarec_pl.models.melu import MeLUNet

SCHEMA = [FeatureSpec("user", "g", "categorical", 2), FeatureSpec("item", "genre", "multi", 4)]


def full_matrix(num_users=8, num_items=6, seed=0):
    """Every user rates every item: r = mu + b_u + b_i exactly, biases summing to zero."""
    g = torch.Generator().manual_seed(seed)
    bu, bi = torch.randn(num_users, generator=g), torch.randn(num_items, generator=g)
    bu, bi = bu - bu.mean(), bi - bi.mean()
    user = torch.arange(num_users).repeat_interleave(num_items)
    item = torch.arange(num_items).repeat(num_users)
    rating = 3.0 + bu[user] + bi[item]
    data = RatingData(user, item, rating, {"user_g": torch.randint(0, 2, (num_users,), generator=g)},
                      {"item_genre": torch.randint(1, 4, (num_items, 2), generator=g)}, SCHEMA,
                      {"train": {"train": torch.arange(len(user))}})
    return data, bu, bi


def tasks_of(data, users, n_support):
    out = []
    for u in users:
        rows = torch.nonzero(data.user == u).flatten()
        out.append(Task(u, rows[:n_support], rows[n_support:]))
    return TaskCollator(data)(out)


def bound(cls, data, extra_items=0, **kwargs):
    algo = cls(**kwargs)
    model = MeLUNet(SCHEMA, embedding_dim=4, hidden=(4,))
    algo.bind(model, DataInfo(SCHEMA, users=IdMap(data.num_users), items=IdMap(data.num_items + extra_items)))
    return algo, model


def test_bias_recovers_exact_additive_ratings():
    data, bu, bi = full_matrix()
    algo, model = bound(Bias, data, item_shrink=0.0, user_shrink=0.0)
    algo.train()
    algo.run(model, tasks_of(data, range(8), n_support=2), 0, False)
    algo.run(model, tasks_of(data, range(8), n_support=2), 0, False)  # a second epoch must not double-count
    assert algo.item_count.tolist() == [8.0] * 6
    assert float(algo.global_mean) == pytest.approx(3.0, abs=1e-5)
    assert torch.allclose(algo.item_bias(torch.arange(6)), bi, atol=1e-5)
    algo.eval()
    batch = tasks_of(data, [1, 5], n_support=2)
    result = algo.run(model, batch, 0, False)
    assert torch.allclose(result.query_pred, batch.query.rating, atol=1e-4)


def test_bias_shrinks_the_user_bias_toward_zero_and_cold_items_get_none():
    data, bu, bi = full_matrix()
    algo, model = bound(Bias, data, extra_items=1, item_shrink=0.0, user_shrink=2.0)  # item 6 never rated: cold
    algo.train()
    algo.run(model, tasks_of(data, range(8), 2), 0, False)
    algo.eval()
    batch = tasks_of(data, [3], n_support=2)
    pred = algo.run(model, batch, 0, False).query_pred
    shrunk = bu[3] * 2 / (2 + 2.0)  # two support ratings, shrinkage 2
    expected = 3.0 + bi[batch.query.item[0]] + shrunk
    assert torch.allclose(pred[0], expected, atol=1e-4)
    assert float(algo.item_bias(torch.tensor([6]))) == 0.0


def test_popularity_ranks_by_training_counts():
    data, _, _ = full_matrix()
    keep = ~((data.item == 0) & (data.user < 6)) & ~((data.item == 1) & (data.user < 2))  # counts: 2, 6, 8, 8...
    sub = RatingData(data.user[keep], data.item[keep], data.rating[keep], data.user_features, data.item_features,
                     SCHEMA, data.splits)
    algo, model = bound(Popularity, sub)
    algo.train()
    algo.run(model, tasks_of(sub, range(8), 1), 0, False)
    assert algo.item_count[:3].tolist() == [2.0, 6.0, 8.0]
    algo.eval()
    batch = tasks_of(sub, [7], n_support=1)
    pred = algo.run(model, batch, 0, False).query_pred[0]
    counts = algo.item_count[batch.query.item[0]]
    assert torch.equal(torch.argsort(pred), torch.argsort(counts))


def test_mf_fold_in_is_the_ridge_solution():
    data, _, _ = full_matrix()
    algo, _ = bound(MFFoldIn, data, dim=3, ridge=1e-6)
    g = torch.Generator().manual_seed(0)
    q, w = torch.randn(2, 7, 3, generator=g), torch.randn(2, 4, generator=g)  # 2 tasks, 7 support items
    y = (q * w[:, None, :3]).sum(-1) + w[:, None, 3]
    mask = torch.ones(2, 7)
    mask[1, 5:] = 0.0
    y[1, 5:] = 100.0  # padding must not matter
    assert torch.allclose(algo.fold_in(q, y, mask), w, atol=1e-3)


def tiny_dm(**kwargs):
    return MetaDataModule(dataset_args=dict(num_users=120, num_items=80, min_ratings=15, max_ratings=40, seed=3),
                          sampler_args=dict(query_size=8, min_support=3), tasks_per_batch=32, **kwargs)


def fit(algorithm, dm, epochs=2, **kwargs):
    L.seed_everything(0)
    module = MetaLearner(algorithm=algorithm, data_info=dm.info, network_args=dict(embedding_dim=8, hidden=[16]),
                         **kwargs)
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, dm)
    return module, trainer


def test_mf_foldin_trains_only_seen_items_and_cold_items_keep_the_feature_part():
    dm = tiny_dm()
    module, trainer = fit("mf-foldin", dm, epochs=3, optimizer=lambda p: torch.optim.Adam(p, lr=0.01))
    train_items = torch.unique(dm.data.item[dm.data.splits["train"]["train"]])
    cold = torch.ones(dm.num_items, dtype=torch.bool)
    cold[train_items] = False
    table = module.algorithm.item_factors.weight
    assert cold.any() and (table[cold] == 0).all() and (table[~cold].abs().sum(1) > 0).all()
    out = trainer.test(module, dm, verbose=False)[0]
    mean = dm.rating_mean
    for scenario in ("user-cold", "item-cold"):
        rows = dm.data.splits["test"][scenario]
        assert out[f"test/{scenario}/mae"] < float((dm.data.rating[rows] - mean).abs().mean())


def test_finetune_trains_like_none_and_adapts_only_at_evaluation():
    dm = tiny_dm()
    none, _ = fit("none", dm, epochs=1)
    tune, trainer = fit("finetune", dm, epochs=1, adapt=["head.*"], inner_steps=3, inner_lr=0.05)
    assert isinstance(tune.algorithm, FineTune) and tune.algorithm.inner_steps == 0
    assert tune.algorithm.eval_inner_steps == 3
    for (n, a), (_, b) in zip(none.network.named_parameters(), tune.network.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), n  # identical training
    out = trainer.test(tune, dm, verbose=False)[0]
    assert out["test/user-cold/mae"] != out["test/user-cold/mae_zero_shot"]
    tune.algorithm.inner_lr = 0.0
    out = trainer.test(tune, dm, verbose=False)[0]
    assert out["test/user-cold/mae"] == pytest.approx(out["test/user-cold/mae_zero_shot"], abs=1e-6)


def test_id_baselines_need_table_sizes_and_are_registered():
    for name in ("bias", "popularity", "mf-foldin", "finetune"):
        assert plugins.get_algorithm(name) is not None
    with pytest.raises(ValueError, match=r"needs the data's id counts \(num_users, num_items\), got none"):
        MetaLearner(algorithm="bias", data_info=DataInfo(SCHEMA))
