"""Named protocols: no test user's query rating in training (every protocol, user- and item-as-task), seeds,
option errors, and the data module on real-format files."""

import pytest
import torch

from _datasets_fixtures import world, write_melu, write_ml100k
from metarec_pl.data.base import ItemTaskSampler, UserTaskSampler
from metarec_pl.data.melu_release import MeLUMovieLens1M
from metarec_pl.data.module import MetaDataModule
from metarec_pl.data.movielens import MovieLens100K
from metarec_pl import plugins
from metarec_pl.data.types import DataError

CASES = [  # (protocol, options, data set)
    ("user-cold", {"val_fraction": 0.2, "test_fraction": 0.2}, "ml100k"),
    ("item-cold", {"by": "count"}, "ml100k"),
    ("item-cold", {"by": "time", "test_fraction": 0.3}, "ml100k"),
    ("item-cold", {"by": "random"}, "ml100k"),
    ("temporal", {"val_fraction": 0.2, "test_fraction": 0.2}, "ml100k"),
    ("melu", {"val_fraction": 0.3, "warm_test_fraction": 0.3}, "melu"),
    ("melu", {"val_fraction": 0.3, "warm_test_fraction": 0.3, "val_items": 0.5, "min_ratings": 5}, "melu"),
    ("melu", {"val_fraction": 0.3, "warm_test_fraction": 0.3, "val_items": 0.5, "val_items_by": "newest",
              "min_ratings": 5}, "melu"),
    ("user-cold", {"val_fraction": 0.2, "test_fraction": 0.2}, "melu"),
]


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("protocols")
    rows = world(num_users=40, num_items=60, lo=30, hi=45)
    return {"ml100k": str(write_ml100k(base / "ml100k", rows, num_items=60)), "melu": str(write_melu(base / "melu"))}


def _load(roots, protocol, options, name, **extra):
    cls = MovieLens100K if name == "ml100k" else MeLUMovieLens1M
    return cls(root=roots[name], protocol=protocol, cache=False, **options, **extra).load()


@pytest.mark.parametrize("protocol, options, name", CASES)
@pytest.mark.parametrize("sampler", [UserTaskSampler(query_size=4, min_support=2),
                                     UserTaskSampler(query_size=4, min_support=2, order="time"),
                                     ItemTaskSampler(query_size=3, min_support=2)], ids=["user", "user-time", "item"])
def test_no_test_query_rating_is_ever_in_training(roots, protocol, options, name, sampler):
    if sampler.order == "time" and name == "melu":
        pytest.skip("the MeLU release has no timestamps")
    data = _load(roots, protocol, options, name)
    train = data.splits["train"]["train"]
    train_pairs = set(zip(data.user[train].tolist(), data.item[train].tolist()))
    train_users, train_items = set(data.user[train].tolist()), set(data.item[train].tolist())
    for stage in ("val", "test"):
        for scenario, rows in data.splits[stage].items():
            assert not set(rows.tolist()) & set(train.tolist())
            for task in sampler.tasks(data, rows, seed=0):
                query = set(zip(data.user[task.query].tolist(), data.item[task.query].tolist()))
                assert not query & train_pairs, (stage, scenario)
            users, items = set(data.user[rows].tolist()), set(data.item[rows].tolist())
            if protocol in ("user-cold", "temporal") or scenario in ("warm", "user-cold", "user+item-cold"):
                assert not users & train_users  # held-out users: nothing of theirs is trained on
            if protocol == "item-cold" or scenario in ("item-cold", "user+item-cold"):
                assert not items & train_items  # cold items never appear in training
    val_users = set(data.user[torch.cat(list(data.splits["val"].values()))].tolist())
    test_rows = torch.cat([r for k, r in data.splits["test"].items() if k != "item-cold"] or [torch.zeros(0).long()])
    if protocol != "item-cold":  # val comes from training users, never from held-out test users
        assert not val_users & set(data.user[test_rows].tolist())
    else:  # item-cold: val items are held out too, and differ from the test items
        assert not set(data.item[torch.cat(list(data.splits["val"].values()))].tolist()) & set(
            data.item[data.splits["test"]["item-cold"]].tolist())


def test_protocols_are_seeded(roots):
    splits = lambda seed: _load(roots, "user-cold", {"seed": seed}, "ml100k").splits  # noqa: E731
    a, b, c = splits(0), splits(0), splits(1)
    assert all(torch.equal(a[s][k], b[s][k]) for s in a for k in a[s])
    assert not torch.equal(a["test"]["user-cold"], c["test"]["user-cold"])


def test_item_cold_by_count_holds_out_the_least_rated_items(roots):
    data = _load(roots, "item-cold", {"by": "count"}, "ml100k")
    counts = torch.bincount(data.item)
    test_items, train_items = data.item[data.splits["test"]["item-cold"]].unique(), data.item[
        data.splits["train"]["train"]].unique()
    assert counts[test_items].max() <= counts[train_items].min()


def test_temporal_is_a_user_split_with_time_ordered_tasks(roots):
    data = _load(roots, "temporal", {}, "ml100k")
    for t in UserTaskSampler(query_size=4, min_support=2, order="time").tasks(data, data.splits["test"]["temporal"], 0):
        assert data.time[t.support].max() <= data.time[t.query].min()


def test_melu_protocol_uses_the_states_and_the_13_to_100_rule(roots):
    data = _load(roots, "melu", {}, "melu")
    assert set(data.splits["test"]) == {"warm", "user-cold", "item-cold", "user+item-cold"}
    for stage in data.splits.values():
        for rows in stage.values():
            counts = torch.bincount(data.user[rows])
            assert counts[counts > 0].min() >= 13 and counts.max() <= 100
    warm = {k: set(data.user[r].tolist()) for k, r in [("train", data.splits["train"]["train"]),
                                                        ("val", data.splits["val"]["warm"]),
                                                        ("test", data.splits["test"]["warm"])]}
    everyone = warm["train"] | warm["val"] | warm["test"]
    assert 7 not in everyone and 8 not in everyone  # 110 and 8 warm ratings: outside 13..100
    assert everyone == set(range(1, 46)) - {7, 8}
    assert set(data.user[data.splits["test"]["user-cold"]].tolist()) <= set(range(46, 61))
    tasks = UserTaskSampler(query_size=10, min_support=3).tasks(data, data.splits["test"]["user-cold"], 0)
    assert all(len(t.query) == 10 and len(t.support) >= 3 for t in tasks)


def test_melu_val_items_adds_a_new_item_validation_and_leaves_test_alone(roots):
    plain = _load(roots, "melu", {"min_ratings": 5}, "melu").splits
    data = _load(roots, "melu", {"min_ratings": 5, "val_items": 0.5}, "melu")
    held = data.splits["val"]["item-cold"]
    assert all(torch.equal(plain["test"][k], data.splits["test"][k]) for k in plain["test"])
    held_items = set(data.item[held].tolist())
    train = data.splits["train"]["train"]
    # training keeps every row of the plain split except those of the held-out items
    kept = [r for r in plain["train"]["train"].tolist() if data.item[r].item() not in held_items]
    assert train.tolist() == kept and len(kept) < len(plain["train"]["train"])
    assert not held_items & set(data.item[data.splits["val"]["warm"]].tolist())
    counts = torch.bincount(data.user[held])
    assert set(data.user[held].tolist()) <= set(data.user[train].tolist()) and counts[counts > 0].min() >= 5
    with pytest.raises(DataError, match="melu val_items: fractions"):
        _load(roots, "melu", {"val_items": -0.1}, "melu")


def test_melu_val_items_newest_holds_out_the_latest_releases(roots):
    """The fixture's item i was released on 1 Jan 1990+i: ``newest`` holds out the highest warm ids, as many as
    ``random`` does; the rest of the split is built the same way."""
    options = {"min_ratings": 5, "val_items": 0.5}
    random_split = _load(roots, "melu", options, "melu")
    data = _load(roots, "melu", {**options, "val_items_by": "newest"}, "melu")
    warm_items = sorted(set(data.item[random_split.splits["train"]["train"]].tolist())
                        | set(data.item[random_split.splits["val"]["item-cold"]].tolist())
                        | set(data.item[random_split.splits["val"]["warm"]].tolist()))
    held = set(data.item[data.splits["val"]["item-cold"]].tolist())
    held_random = set(data.item[random_split.splits["val"]["item-cold"]].tolist())
    assert held == set(warm_items[-len(held):]) and held != held_random
    assert not held & set(data.item[data.splits["train"]["train"]].tolist())
    assert all(torch.equal(random_split.splits["test"][k], data.splits["test"][k]) for k in data.splits["test"])
    with pytest.raises(DataError, match="val_items_by must be 'random' or 'newest', got 'latest'"):
        _load(roots, "melu", {**options, "val_items_by": "latest"}, "melu")

    class NoReleaseTimes(MeLUMovieLens1M):
        def item_times(self):
            return None

    with pytest.raises(DataError, match="val_items_by 'newest' needs item release times"):
        NoReleaseTimes(root=roots["melu"], protocol="melu", cache=False, **options, val_items_by="newest").load()


def test_melu_release_times_read_released_else_year(tmp_path):
    import datetime

    root = write_melu(tmp_path / "melu")
    path = root / "movies_extrainfos.dat"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    f = lines[1].split("::")
    f[4] = "N/A"  # item 2: no release date, year 1992
    lines[1] = "::".join(f)
    path.write_text("".join(lines), encoding="utf-8", newline="")
    times = MeLUMovieLens1M(root=str(root), protocol="melu").item_times()
    assert times[1] == datetime.date(1991, 1, 1).toordinal() and times[2] == datetime.date(1992, 7, 1).toordinal()
    assert torch.isnan(times[0])  # no movie 0


def test_unknown_protocol_or_option_is_one_line(roots):
    with pytest.raises(DataError) as unknown:
        MovieLens100K(root=roots["ml100k"], protocol="warm")
    assert str(unknown.value) == ("data.dataset_args.protocol: unknown protocol 'warm'; available: given, item-cold, "
                                  "melu, sequential-cold, temporal, user-cold")
    with pytest.raises(DataError, match="data.dataset_args: unknown option 'k' for data set MovieLens100K"):
        MovieLens100K(root=roots["ml100k"], k=5)
    with pytest.raises(DataError, match="protocol 'melu' needs MeLU's state files"):
        _load(roots, "melu", {}, "ml100k")
    assert all(r.obj.version >= 1 for r in plugins.registrations("protocol"))


@pytest.mark.parametrize("sampler", ["user", "item"])
def test_data_module_builds_every_stage_on_the_melu_protocol(roots, tmp_path, sampler):
    dm = MetaDataModule("melu-movielens-1m", root=roots["melu"],
                        dataset_args={"cache_dir": str(tmp_path), "val_fraction": 0.3, "warm_test_fraction": 0.3},
                        sampler=sampler, sampler_args={"query_size": 10 if sampler == "user" else 3, "min_support": 3},
                        tasks_per_batch=4)
    batch = next(iter(dm.train_dataloader()))
    assert batch.query.rating.shape[0] == 4 and batch.support.features["item_actor"].dim() == 3
    scenarios = {b.scenario for b in dm.test_dataloader()}
    assert scenarios == {"warm", "user-cold", "item-cold", "user+item-cold"}
    assert 1.0 <= dm.rating_mean <= 5.0
