"""Metrics against hand-computed values, per-scenario aggregation, and candidate pools for top-k."""

import math
from dataclasses import replace

import lightning as L
import pytest
import torch

from metarec_pl.bilevel import MetaLearner
from metarec_pl.data.module import MetaDataModule
from metarec_pl.data.types import DataError, Samples, TaskBatch
from metarec_pl.metrics import RatingMetrics, round_to_levels


def batch_of(ratings, mask=None, keys=None, candidate=None, scenario="s") -> TaskBatch:
    rating = torch.tensor(ratings, dtype=torch.float)
    mask = torch.ones_like(rating) if mask is None else torch.tensor(mask, dtype=torch.float)
    item = torch.arange(rating.numel()).view_as(rating)
    empty = Samples({}, torch.zeros(len(rating), 1), torch.zeros(len(rating), 1), item[:, :1], item[:, :1])
    query = Samples({}, rating * mask, mask, item, item)
    keys = torch.arange(len(rating)) if keys is None else torch.tensor(keys)
    cand = None if candidate is None else torch.tensor(candidate, dtype=torch.bool)
    return TaskBatch(empty, query, keys, scenario, candidate=cand)


def dcg(gains):
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def test_rating_metrics_match_hand_computed_values():
    # task 0: 3 real items + 1 padding slot; task 1: 2 real items
    batch = batch_of([[5, 3, 1, 0], [4, 2, 0, 0]], mask=[[1, 1, 1, 0], [1, 1, 0, 0]])
    pred = torch.tensor([[3.0, 4.5, 1.0, 9.9], [4.4, 2.5, 9.9, 9.9]])
    m = RatingMetrics(ndcg_k=(1, 2))
    m.update("test", "s", pred, batch)
    out = m.compute("test")
    errors = [2.0, 1.5, 0.0, 0.4, 0.5]  # padding (9.9) never counts
    assert out["test/mae"] == pytest.approx(sum(errors) / 5)
    assert out["test/rmse"] == pytest.approx(math.sqrt(sum(e * e for e in errors) / 5))
    # task 0 ranks items (3, 5, 1) by prediction 4.5 > 3.0 > 1.0; task 1 ranks (4, 2): ideal
    ndcg2_t0 = dcg([3, 5]) / dcg([5, 3])
    assert out["test/ndcg@2"] == pytest.approx((ndcg2_t0 + 1.0) / 2, abs=1e-6)
    assert out["test/ndcg@1"] == pytest.approx((3 / 5 + 1.0) / 2, abs=1e-6)
    # likes (>= 4): truth [1, 0, 0, 1, 0], predicted [0, 1, 0, 1, 0] -> 3 of 5 right, recall 1/2
    assert out["test/like_acc"] == pytest.approx(3 / 5)
    assert out["test/like_recall"] == pytest.approx(1 / 2)
    assert out["test/s/mae"] == pytest.approx(out["test/mae"])


def test_ndcg_gains_are_the_ratings_themselves_on_a_half_star_scale():
    # query ratings 0.5 and 1.0, predictions 2.0 and 1.0: the 0.5 is ranked first, so
    # nDCG@2 = (0.5 + 1 / log2 3) / (1 + 0.5 / log2 3); gains truncated to integers (0, 1) would give 1 / log2 3
    m = RatingMetrics(ndcg_k=(2,))
    m.update("test", "s", torch.tensor([[2.0, 1.0]]), batch_of([[0.5, 1.0]], mask=[[1, 1]]))
    expected = dcg([0.5, 1.0]) / dcg([1.0, 0.5])
    assert expected == pytest.approx(0.8597, abs=1e-4)
    assert m.compute("test")["test/ndcg@2"] == pytest.approx(expected, abs=1e-6)


def test_rounded_mae_moves_each_prediction_to_its_nearest_rating_level():
    batch = batch_of([[5, 3, 1, 0], [4, 2, 0, 0]], mask=[[1, 1, 1, 0], [1, 1, 0, 0]])
    pred = torch.tensor([[6.3, 3.6, -0.2, 9.9], [4.4, 2.5, 9.9, 9.9]])
    m = RatingMetrics(rating_levels=[3, 1, 2, 5, 4])  # any order
    m.update("test", "s", pred, batch)
    out = m.compute("test")
    # nearest levels 5, 4, 1 | 4, 2 (2.5 is a tie: the lower level); errors 0, 1, 0 | 0, 0
    assert out["test/mae_rounded"] == pytest.approx(1 / 5)
    assert out["test/s/mae_rounded"] == pytest.approx(1 / 5)
    assert out["test/mae"] == pytest.approx((1.3 + 0.6 + 1.2 + 0.4 + 0.5) / 5)  # the raw predictions' MAE
    half_stars = torch.arange(1, 11) / 2
    assert round_to_levels(torch.tensor([0.2, 1.74, 1.76, 3.1, 7.0]), half_stars).tolist() == [0.5, 1.5, 2.0, 3.0, 5.0]
    assert not any("rounded" in k for k in _metrics_without_levels(pred, batch))


def _metrics_without_levels(pred, batch):
    m = RatingMetrics()
    m.update("test", "s", pred, batch)
    return m.compute("test")


def test_rating_levels_are_the_distinct_training_ratings_of_a_discrete_scale(world_dm):
    train = torch.cat(list(world_dm.data.splits["train"].values()))
    assert world_dm.rating_levels == sorted(set(world_dm.data.rating[train].tolist()))
    assert 2 <= len(world_dm.rating_levels) <= 5
    continuous = MetaDataModule(dataset_args=dict(num_users=40, num_items=30, min_ratings=10, max_ratings=20, seed=1))
    data = continuous.data
    continuous._data = replace(data, rating=data.rating + torch.rand(len(data.rating)))  # continuous targets
    assert continuous.rating_levels is None


def test_pooled_metrics_aggregate_scenarios_and_scenarios_stay_apart():
    m = RatingMetrics()
    m.update("test", "a", torch.tensor([[1.0, 2.0]]), batch_of([[2, 2]], scenario="a"))  # errors 1, 0
    m.update("test", "b", torch.tensor([[5.0, 5.0, 5.0]]), batch_of([[2, 2, 2]], scenario="b"))  # errors 3, 3, 3
    out = m.compute("test")
    assert out["test/a/mae"] == pytest.approx(0.5)
    assert out["test/b/mae"] == pytest.approx(3.0)
    assert out["test/mae"] == pytest.approx(10 / 5)  # pooled over all ratings, not the mean of scenarios


def test_pooled_per_task_metrics_equal_one_metric_over_every_task():
    """Pooled nDCG and pool metrics are derived from the scenarios' (computed once each): they must equal
    torchmetrics run on all tasks together, including tasks a pool metric skips (no positive)."""
    from torchmetrics.retrieval import RetrievalHitRate, RetrievalNormalizedDCG

    gen = torch.Generator().manual_seed(0)
    m, every_ndcg, every_hit = RatingMetrics(ndcg_k=(2,), top_k=(2,)), RetrievalNormalizedDCG(top_k=2), \
        RetrievalHitRate(top_k=2, empty_target_action="skip")
    for sid, (scenario, tasks) in enumerate([("a", 3), ("b", 5)]):
        ratings = torch.randint(1, 6, (tasks, 6), generator=gen).float()
        ratings[:, 4:] = 0  # two candidate slots per task
        ratings[0, :4] = 2  # a task without a positive: skipped by the pool metrics
        mask, cand = (ratings > 0).float(), ratings == 0
        pred = torch.rand(tasks, 6, generator=gen) * 5
        m.update("test", scenario, pred, batch_of(ratings.tolist(), mask.tolist(), candidate=cand.tolist(),
                                                  scenario=scenario))
        index = (torch.arange(tasks) * 1024 + sid)[:, None].expand(tasks, 6)
        real, positive = mask > 0, (mask > 0) & (ratings >= 4)
        every_ndcg.update(pred[real], ratings[real].long(), indexes=index[real])
        keep = positive | cand
        every_hit.update(pred[keep], positive[keep].long(), indexes=index[keep])
    out = m.compute("test")
    assert out["test/ndcg@2"] == pytest.approx(float(every_ndcg.compute()), abs=1e-6)
    assert out["test/pool/hit@2"] == pytest.approx(float(every_hit.compute()), abs=1e-6)
    assert out["test/ndcg@2"] != pytest.approx((out["test/a/ndcg@2"] + out["test/b/ndcg@2"]) / 2)  # weighted


def test_top_k_over_candidates_matches_hand_computed_values():
    # task 0: query [5 (pos), 2 (neg, left out)] + 3 candidates; task 1: query [4 (pos), 4 (pos)] + 2 candidates
    ratings = [[5, 2, 0, 0, 0], [4, 4, 0, 0, 0]]
    mask = [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0]]
    cand = [[0, 0, 1, 1, 1], [0, 0, 1, 1, 0]]
    pred = torch.tensor([[3.0, 9.0, 4.0, 1.0, 2.0],   # pos ranked 2nd among {pos, 3 candidates}; 9.0 is ignored
                         [5.0, 1.0, 3.0, 2.0, 9.0]])  # ranking: pos(5), cand(3), cand(2), pos(1); 9.0 is padding
    m = RatingMetrics(top_k=(1, 2))
    m.update("test", "s", pred, batch_of(ratings, mask, candidate=cand))
    out = m.compute("test")
    assert out["test/pool/hit@1"] == pytest.approx((0 + 1) / 2)
    assert out["test/pool/hit@2"] == pytest.approx((1 + 1) / 2)
    assert out["test/pool/precision@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert out["test/pool/recall@2"] == pytest.approx((1 + 1 / 2) / 2)
    ndcg2 = ((1 / math.log2(3)) / 1 + 1 / dcg([1, 1])) / 2
    assert out["test/pool/ndcg@2"] == pytest.approx(ndcg2, abs=1e-6)
    assert out["test/mae"] == pytest.approx((2 + 7 + 1 + 3) / 4)  # candidates never enter the MAE
    # MRR: task 0's positive at rank 2, task 1's first positive at rank 1; AUC: task 0 beats 2 of 3 candidates,
    # task 1's positives (5, 1) beat candidates (3, 2) in 2 of 4 pairs
    assert out["test/pool/mrr"] == pytest.approx((1 / 2 + 1) / 2)
    assert out["test/pool/auc"] == pytest.approx((2 / 3 + 2 / 4) / 2)


def test_each_ranking_ranks_among_its_own_candidates_before_and_after_adaptation():
    # one task: a positive (pred 2.0) + 3 candidates (3.0, 1.0, 0.5); the sampled pool holds only the last two
    ratings, mask = [[1, 0, 0, 0]], [[1, 0, 0, 0]]
    batch = batch_of(ratings, mask, candidate=[[0, 1, 1, 1]])
    batch.rankings = {"pool": torch.tensor([[False, False, True, True]]), "full": batch.candidate}
    m = RatingMetrics(top_k=(1,), like_threshold=0.5)  # implicit feedback: every interaction is a positive
    m.update("val", "s", torch.tensor([[2.0, 3.0, 1.0, 0.5]]), batch)
    m.update("val", "s", torch.tensor([[0.0, 3.0, 1.0, 0.5]]), batch, zero_shot=True)  # before adaptation: last
    out = m.compute("val")
    assert out["val/pool/hit@1"] == 1.0 and out["val/full/hit@1"] == 0.0
    assert out["val/full/mrr"] == pytest.approx(1 / 2) and out["val/s/full/mrr"] == pytest.approx(1 / 2)
    assert out["val/full/mrr_zero_shot"] == pytest.approx(1 / 4)
    assert out["val/pool/auc_zero_shot"] == 0.0 and out["val/pool/auc"] == 1.0


def test_tied_scores_rank_positives_at_chance_not_by_input_order():
    """A constant predictor (every cold item under `bias`) must not be helped or hurt by where positives sit."""
    tasks, pool = 400, 20
    ratings = [[5] + [0] * pool for _ in range(tasks)]  # one query positive, listed first, then the pool
    mask = [[1] + [0] * pool for _ in range(tasks)]
    cand = [[0] + [1] * pool for _ in range(tasks)]
    m = RatingMetrics(top_k=(1, 5), ndcg_k=(1,))
    m.update("test", "s", torch.full((tasks, pool + 1), 3.0), batch_of(ratings, mask, candidate=cand))
    out = m.compute("test")
    chance = 5 / (pool + 1)
    assert abs(out["test/pool/hit@5"] - chance) < 0.07, out["test/pool/hit@5"]
    assert abs(out["test/pool/hit@1"] - 1 / (pool + 1)) < 0.04


@pytest.fixture(scope="module")
def world_dm():
    dm = MetaDataModule(dataset_args=dict(num_users=150, num_items=90, min_ratings=20, max_ratings=40, seed=1),
                        sampler_args=dict(query_size=8, min_support=3), tasks_per_batch=16, candidates=25)
    return dm


def test_candidate_pool_never_holds_an_item_the_user_rated(world_dm):
    data = world_dm.data
    rated = {u: set(data.item[data.user == u].tolist()) for u in data.user.unique().tolist()}
    n = 0
    for batch in world_dm.test_dataloader():
        assert batch.candidate is not None
        assert (batch.query.mask[batch.candidate] == 0).all()
        for i, user in enumerate(batch.key.tolist()):
            cands = set(batch.query.item[i][batch.candidate[i]].tolist())
            support = set(batch.support.item[i][batch.support.mask[i] > 0].tolist())
            unrated = set(data.item[data.splits["test"][batch.scenario]].tolist()) - rated[user]
            assert len(cands) == min(25, len(unrated))
            assert not cands & rated[user] and not cands & support
            n += 1
    assert n == sum(len(t) for t in world_dm.stage_tasks("test").values())


def test_candidate_pools_are_seeded_and_all_takes_every_unrated_item(world_dm):
    data = world_dm.data
    again = MetaDataModule(dataset_args=world_dm.hparams.dataset_args, sampler_args=world_dm.hparams.sampler_args,
                           tasks_per_batch=16, candidates=25)
    first, second = next(iter(world_dm.test_dataloader())), next(iter(again.test_dataloader()))
    assert torch.equal(first.query.item, second.query.item)
    every = MetaDataModule(dataset_args=world_dm.hparams.dataset_args, sampler_args=world_dm.hparams.sampler_args,
                           tasks_per_batch=16, candidates="all")
    batch = next(iter(every.test_dataloader()))
    scenario_items = set(data.item[data.splits["test"][batch.scenario]].tolist())
    user = int(batch.key[0])
    expected = scenario_items - set(data.item[data.user == user].tolist())
    assert set(batch.query.item[0][batch.candidate[0]].tolist()) == expected


def test_bad_pool_size_is_one_clear_error():
    with pytest.raises(DataError, match="data.candidates"):
        MetaDataModule(candidates=0)
    with pytest.raises(DataError, match="user-as-task"):
        MetaDataModule(sampler="item", candidates=5).test_dataloader()


def test_candidates_do_not_change_the_rating_metrics(world_dm):
    L.seed_everything(0)
    plain = MetaDataModule(dataset_args=world_dm.hparams.dataset_args, sampler_args=world_dm.hparams.sampler_args,
                           tasks_per_batch=16)
    module = MetaLearner(algorithm="maml", adapt=["head.*"], inner_steps=2, inner_lr=0.05,
                         data_info=plain.info, network_args=dict(embedding_dim=8))
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    without, with_pool = trainer.test(module, plain, verbose=False)[0], trainer.test(module, world_dm, verbose=False)[0]
    for scenario in ("user-cold", "item-cold", "user+item-cold"):
        assert with_pool[f"test/{scenario}/mae"] == pytest.approx(without[f"test/{scenario}/mae"], abs=1e-5)
        assert f"test/{scenario}/pool/hit@10" in with_pool and f"test/{scenario}/pool/hit@10" not in without


def test_test_scenarios_give_the_full_tests_values_for_those_scenarios(tmp_path):
    from _datasets_fixtures import write_melu

    dm = MetaDataModule(dataset="melu-movielens-1m", root=str(write_melu(tmp_path / "melu")),
                        sampler_args=dict(query_size=10, min_support=3), eval_tasks_per_batch=4, candidates=20)
    L.seed_everything(0)
    module = MetaLearner(algorithm="maml", adapt=["head.*"], inner_steps=2, inner_lr=0.05,
                         data_info=dm.info, network_args=dict(embedding_dim=8))
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    full = trainer.test(module, dm, verbose=False)[0]
    dm.test_scenarios = ["item-cold", "user+item-cold"]
    part = trainer.test(module, dm, verbose=False)[0]
    scenarios = {k.split("/")[1] for k in part} & {"warm", "user-cold", "item-cold", "user+item-cold"}
    assert scenarios == {"item-cold", "user+item-cold"}  # and the pool metrics too: same candidate pools
    assert all(part[k] == pytest.approx(full[k], abs=1e-6) for k in part if k.split("/")[1] in scenarios)
    with pytest.raises(DataError, match="data.test_scenarios: 'item-cold' is not a list"):
        MetaDataModule(test_scenarios="item-cold")
    dm.test_scenarios = ["item cold"]
    with pytest.raises(DataError, match="data.test_scenarios: no test scenario 'item cold'; this data set's are: warm"):
        dm.test_dataloader()
