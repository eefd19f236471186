"""Protocol sequential-cold: the time cut, who is cold, support = first K, query = the next ones, and nothing of a
cold user (above all no query item) in training or in the support context."""

import random

import pytest
import torch

from _datasets_fixtures import write_ml100k
from metarec_pl.data.base import UserTaskSampler
from metarec_pl.data.movielens import MovieLens100K
from metarec_pl.data.protocols import Rows, lookup
from metarec_pl.data.sequential import SCENARIO, sequential_cold
from metarec_pl.data.types import DataError, RatingData


def log_rows(num_users=30, num_items=40, seed=0):
    """[(user, item, rating, time)], 1-based ids: user u joins at a random day, then rates 12..20 distinct items
    at increasing times, some at the same second (ties)."""
    rng = random.Random(seed)
    rows = []
    for u in range(1, num_users + 1):
        t = rng.randint(0, 10**6)
        for i in rng.sample(range(1, num_items + 1), rng.randint(12, 20)):
            rows.append((u, i, rng.randint(1, 5), t))
            t += rng.choice([0, 1, 50, 3000])
    rng.shuffle(rows)
    return rows


def as_rows(log):
    user, item, _, time = map(list, zip(*log))
    return Rows(torch.tensor(user), torch.tensor(item), torch.tensor(time, dtype=torch.float64), name="log")


def firsts(log):
    first = {}
    for u, _, _, t in log:
        first[u] = min(first.get(u, t), t)
    return first


@pytest.mark.parametrize("k, q", [(3, 1), (5, 1), (10, 1), (3, 10)])
def test_time_cut_cold_users_support_and_query(k, q):
    log = log_rows()
    rows = as_rows(log)
    splits = sequential_cold(rows, seed=1, support_size=k, query_size=q)
    first = firsts(log)
    cut = sorted(first.values())[int(0.8 * (len(first) - 1))]  # the 80th percentile, 'lower' interpolation
    train = splits["train"]["train"]
    assert sorted(train.tolist()) == [n for n, r in enumerate(log) if r[3] < cut]  # every row before T, no other
    cold = {u for u, t in first.items() if t > cut}
    val, test = splits["val"][SCENARIO], splits["test"][SCENARIO]
    val_users, test_users = set(rows.user[val].tolist()), set(rows.user[test].tolist())
    assert val_users and test_users and not val_users & test_users
    assert val_users | test_users <= cold
    assert not (val_users | test_users) & set(rows.user[train].tolist())
    enough = {u for u in cold if sum(r[0] == u for r in log) >= k + q}
    assert val_users | test_users == enough
    seen = set()
    sampler = UserTaskSampler(query_size=q, min_support=k, max_support=k, order="time")
    data = RatingData(rows.user, rows.item, torch.ones(len(log)), {}, {}, [], {}, time=rows.time)
    for part in (val, test):
        tasks = sampler.tasks(data, part, seed=0)
        assert len(tasks) == len(set(rows.user[part].tolist()))
        for task in tasks:
            mine = sorted((log[n][3], n) for n, r in enumerate(log) if r[0] == task.key)  # time, then row order
            assert task.support.tolist() == [n for _, n in mine[:k]]  # the first K interactions
            assert task.query.tolist() == [n for _, n in mine[k:k + q]]  # the next Q (no repeats in this log)
            support_items = set(rows.item[task.support].tolist())
            assert not support_items & set(rows.item[task.query].tolist())
            seen.add(task.key)
    assert seen == val_users | test_users


def test_a_repeated_item_never_becomes_the_query():
    # user 9 is cold (joins last) and re-rates support item 2 before the new item 4
    log = [(u, i, 3, 100 * u + i) for u in range(1, 6) for i in range(1, 6)]
    log += [(9, 1, 4, 10_000), (9, 2, 4, 10_001), (9, 2, 5, 10_002), (9, 4, 5, 10_003), (9, 5, 5, 10_004)]
    log += [(8, 3, 4, 9_000), (8, 1, 4, 9_001), (8, 5, 4, 9_002)]
    rows = as_rows(log)
    splits = sequential_cold(rows, support_size=2, query_size=1, quantile=0.5)
    both = torch.cat([splits["val"][SCENARIO], splits["test"][SCENARIO]])
    mine = sorted(n for n in both.tolist() if log[n][0] == 9)
    assert [log[n][1] for n in mine] == [1, 2, 4]  # support items 1, 2; query the next *new* item, 4


def test_nothing_after_the_cut_is_trained_on():
    log = log_rows(seed=3)
    rows = as_rows(log)
    splits = sequential_cold(rows, seed=0, support_size=3)
    first = firsts(log)
    cut = sorted(first.values())[int(0.8 * (len(first) - 1))]
    assert rows.time[splits["train"]["train"]].max() < cut  # warm users' later rows are not trained on either
    assert rows.time[splits["test"][SCENARIO]].min() > cut


def test_seeds_change_the_val_test_assignment_only():
    rows = as_rows(log_rows())
    a, b = sequential_cold(rows, seed=0), sequential_cold(rows, seed=5)
    assert torch.equal(a["train"]["train"], b["train"]["train"])
    assert torch.equal(torch.sort(torch.cat([a["val"][SCENARIO], a["test"][SCENARIO]])).values,
                       torch.sort(torch.cat([b["val"][SCENARIO], b["test"][SCENARIO]])).values)
    assert not torch.equal(a["test"][SCENARIO], b["test"][SCENARIO])


@pytest.mark.parametrize("options, message", [
    ({"support_size": 0}, "support_size must be an integer >= 1"),
    ({"query_size": 0}, "query_size must be an integer >= 1"),
    ({"quantile": 1.0}, "quantile must be in (0, 1)"),
    ({"val_fraction": 0.0}, "val_fraction must be in (0, 1)"),
    ({"support_size": 30}, "expected at least 2"),
])
def test_bad_options_are_one_line(options, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        sequential_cold(as_rows(log_rows()), **options)
    assert "\n" not in str(err.value)


def test_no_timestamps_is_one_line():
    rows = as_rows(log_rows())
    with pytest.raises(DataError, match="needs timestamps"):
        sequential_cold(Rows(rows.user, rows.item, None, name="log"), support_size=3)


def test_registered_versioned_and_loaded_from_movielens_files(tmp_path):
    protocol = lookup("sequential-cold")  # registered through the register_protocols hook
    assert protocol.version == 1 and protocol.sampler_order == "time"
    assert protocol.options() == {"seed": 0, "support_size": 5, "query_size": 1, "quantile": 0.8,
                                  "val_fraction": 0.5}
    log = log_rows()
    root = write_ml100k(tmp_path / "ml", log, num_users=30, num_items=40)
    data = MovieLens100K(root=str(root), protocol="sequential-cold", support_size=3, query_size=1,
                         cache=False).load()
    assert set(data.splits) == {"train", "val", "test"} and set(data.splits["test"]) == {SCENARIO}
    train_pairs = set(zip(data.user[data.splits["train"]["train"]].tolist(),
                          data.item[data.splits["train"]["train"]].tolist()))
    sampler = UserTaskSampler(query_size=1, min_support=3, max_support=3, order="time")
    for task in sampler.tasks(data, data.splits["test"][SCENARIO], seed=0):
        assert len(task.support) == 3 and len(task.query) == 1
        assert data.time[task.support].max() <= data.time[task.query].min()
        assert not {(task.key, int(i)) for i in data.item[task.query]} & train_pairs
