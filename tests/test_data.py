"""Tasks, padding and the synthetic world's splits."""

import pytest
import torch

from metarec_pl.data.base import ItemTaskSampler, UserTaskSampler
from metarec_pl.data.synthetic import SyntheticWorld
from metarec_pl.data.types import DataError, TaskCollator


def test_synthetic_world_is_seeded(tiny_world):
    _, data = tiny_world
    again = SyntheticWorld(num_users=120, num_items=80, min_ratings=15, max_ratings=40, seed=3).load()
    other = SyntheticWorld(num_users=120, num_items=80, min_ratings=15, max_ratings=40, seed=4).load()
    assert torch.equal(data.rating, again.rating) and torch.equal(data.item, again.item)
    assert not torch.equal(data.rating[:500], other.rating[:500])
    assert set(data.rating.unique().tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}


def test_synthetic_splits_keep_cold_users_and_items_out_of_training(tiny_world):
    _, data = tiny_world
    train = data.splits["train"]["train"]
    train_users, train_items = set(data.user[train].tolist()), set(data.item[train].tolist())
    for scenario, rows in data.splits["test"].items():
        users, items = set(data.user[rows].tolist()), set(data.item[rows].tolist())
        assert not set(rows.tolist()) & set(train.tolist())
        assert (users & train_users == set()) == (scenario != "item-cold")
        assert (items & train_items == set()) == (scenario != "user-cold")


@pytest.mark.parametrize("sampler_cls", [UserTaskSampler, ItemTaskSampler])
def test_tasks_split_support_and_query_disjointly(tiny_world, sampler_cls):
    _, data = tiny_world
    rows = data.splits["train"]["train"]
    sampler = sampler_cls(query_size=5, min_support=4, max_support=12)
    tasks = sampler.tasks(data, rows, seed=0)
    key_of = data.user if sampler.group_by == "user" else data.item
    counts = torch.bincount(key_of[rows])
    assert len(tasks) == int((counts >= 9).sum())  # everyone with enough rows, nobody else
    for t in tasks:
        assert len(t.query) == 5 and 4 <= len(t.support) <= 12
        assert not set(t.support.tolist()) & set(t.query.tolist())
        assert set(key_of[torch.cat([t.support, t.query])].tolist()) == {t.key}
    assert [t.query.tolist() for t in tasks] == [t.query.tolist() for t in sampler.tasks(data, rows, seed=0)]


def test_time_order_puts_the_latest_ratings_in_the_query(tiny_world):
    _, data = tiny_world
    tasks = UserTaskSampler(query_size=5, min_support=3, order="time").tasks(data, data.splits["train"]["train"], 0)
    for t in tasks:
        assert data.time[t.support].max() <= data.time[t.query].min()


def test_time_order_without_timestamps_is_refused(tiny_world):
    _, data = tiny_world
    from dataclasses import replace

    with pytest.raises(DataError, match="needs timestamps"):
        UserTaskSampler(order="time").tasks(replace(data, time=None), data.splits["train"]["train"], 0)


def test_too_few_rows_is_one_clear_error(tiny_world):
    _, data = tiny_world
    with pytest.raises(DataError, match="no user has the 1001 rows a task needs"):
        UserTaskSampler(query_size=1000, min_support=1).tasks(data, data.splits["train"]["train"], 0, name="x")


def test_collator_pads_and_masks(tiny_world):
    _, data = tiny_world
    tasks = UserTaskSampler(query_size=4, min_support=2).tasks(data, data.splits["train"]["train"], 0)[:3]
    batch = TaskCollator(data)(tasks)
    width = max(len(t.support) for t in tasks)
    assert batch.support.rating.shape == (3, width) and batch.query.mask.shape == (3, 4)
    for i, t in enumerate(tasks):
        n = len(t.support)
        assert batch.support.mask[i].sum() == n and batch.support.mask[i, :n].all()
        assert torch.equal(batch.support.rating[i, :n], data.rating[t.support])
        assert (batch.support.rating[i, n:] == 0).all()
        assert torch.equal(batch.support.features["user_gender"][i, :n], data.user_features["user_gender"][data.user[t.support]])


def training_splits(dm, epochs: int) -> list[dict[int, tuple[list[int], list[int]]]]:
    """Per epoch: task key -> (sorted support rows, sorted query rows) as the training loader hands them out."""
    loader, out = dm.train_dataloader(), []
    for epoch in range(epochs):
        loader.batch_sampler.set_epoch(epoch)
        out.append({int(k): (sorted(s), sorted(q)) for batch in loader for k, s, q in zip(
            batch.key.tolist(), _rows(batch.support), _rows(batch.query))})
    return out


def _rows(samples) -> list[list[tuple[int, int]]]:
    """Each task's real samples as (user, item) pairs (row identity, independent of padding)."""
    return [[(int(u), int(i)) for u, i, m in zip(us, its, ms) if m] for us, its, ms in
            zip(samples.user, samples.item, samples.mask)]


def test_training_splits_are_drawn_anew_each_epoch_from_the_same_rows():
    from metarec_pl.data.module import MetaDataModule

    dm = MetaDataModule(dataset_args=dict(num_users=60, num_items=50, min_ratings=20, max_ratings=30),
                        sampler_args=dict(query_size=4, min_support=1), tasks_per_batch=8)
    first, second, third = training_splits(dm, 3)
    built = {t.key: t for t in dm.stage_tasks("train")["train"]}
    pair = lambda rows: sorted(zip(dm.data.user[rows].tolist(), dm.data.item[rows].tolist()))  # noqa: E731
    assert first == {k: (pair(t.support), pair(t.query)) for k, t in built.items()}  # epoch 0: the built split
    for epoch in (second, third):
        assert epoch.keys() == first.keys()
        for key, (support, query) in epoch.items():
            assert len(query) == 4 and not set(support) & set(query)
            assert sorted(support + query) == sorted(first[key][0] + first[key][1])  # the same rows, re-split
    assert sum(second[k][1] != first[k][1] for k in first) > 0.9 * len(first)
    assert second != third and training_splits(dm, 2)[1] == second  # seeded by (seed, epoch, task)
    for stage in ("val", "test"):  # evaluation never re-splits
        loader = getattr(dm, f"{stage}_dataloader")()
        loader.batch_sampler.set_epoch(5)
        keys = {int(k): sorted(q) for b in loader for k, q in zip(b.key.tolist(), _rows(b.query))}
        tasks = [t for ts in dm.stage_tasks(stage).values() for t in ts]
        assert keys == {t.key: pair(t.query) for t in tasks}


def test_fixed_splits_when_asked_and_under_time_order():
    from metarec_pl.data.module import MetaDataModule

    world = dict(num_users=60, num_items=50, min_ratings=12, max_ratings=20)
    fixed = MetaDataModule(dataset_args=world, sampler_args=dict(query_size=4), resample_splits=False)
    first, second = training_splits(fixed, 2)
    assert first == second
    timed = UserTaskSampler(query_size=4, order="time")
    task = timed.tasks(fixed.data, fixed.data.splits["train"]["train"], 0)[0]
    assert timed.episode(task, seed=1) is task  # support before query is not a random split


def test_worker_processes_hand_out_the_same_batches_and_splits():
    """A DataLoader with workers iterates its batch sampler twice per epoch; the order must not depend on that."""
    from metarec_pl.data.module import MetaDataModule

    out = []
    for workers in (0, 1):
        dm = MetaDataModule(dataset_args=dict(num_users=60, num_items=50, min_ratings=20, max_ratings=30),
                            sampler_args=dict(query_size=4, min_support=1), tasks_per_batch=8, num_workers=workers)
        loader = dm.train_dataloader()
        loader.batch_sampler.set_epoch(3)
        out.append([(b.key.tolist(), b.query.item.tolist()) for b in loader])
    assert out[0] == out[1]
