"""Published splits: one file per (stage, scenario) or a split column, loaded as written (protocol ``given``), with
any scenario names, ids coded over all files, and support/query parts the sampler keeps."""

import pytest
import torch

from _datasets_fixtures import world, write_csv
from metarec_pl.data.interactions import Interactions
from metarec_pl.data.module import MetaDataModule
from metarec_pl.data.types import DataError

ROWS = world(num_users=40, num_items=30, lo=12, hi=18, seed=5)
TRAIN_USERS, WARM, COLD = range(1, 25), range(25, 33), range(33, 41)


def raw(data, rows):
    return sorted((data.user_ids[u], data.item_ids[i], r) for u, i, r in
                  zip(data.user[rows].tolist(), data.item[rows].tolist(), data.rating[rows].tolist()))


def as_raw(rows):
    return sorted((str(u), str(i), float(r)) for u, i, r, _ in rows)


def published(root):
    """train, warm_up (users 25-32), user-cold (33-40: first 5 rows support, the rest query)."""
    train = [r for r in ROWS if r[0] in TRAIN_USERS]
    warm = [r for r in ROWS if r[0] in WARM]
    cold = sorted((r for r in ROWS if r[0] in COLD), key=lambda r: (r[0], r[3]))
    support = [r for k, r in enumerate(cold) if sum(1 for q in cold[:k] if q[0] == r[0]) < 5]
    query = [r for r in cold if r not in support]
    for name, rows in (("train", train), ("warm", warm), ("support", support), ("query", query)):
        write_csv(root / f"{name}.csv", rows)
    return train, warm, support, query


FILES = {"train": "train.csv", "test/warm_up": "warm.csv", "test/user-cold/support": "support.csv",
         "test/user-cold/query": "query.csv"}


def test_split_files_load_as_written_with_their_scenario_names(tmp_path):
    train, warm, support, query = published(tmp_path)
    data = Interactions(root=str(tmp_path), split_files=FILES, columns={"time": "time"}, cache=False).load()
    assert set(data.splits) == {"train", "test"} and set(data.splits["test"]) == {"warm_up", "user-cold"}
    assert raw(data, data.splits["train"]["train"]) == as_raw(train)  # no re-split, nothing filtered
    assert raw(data, data.splits["test"]["warm_up"]) == as_raw(warm)
    assert raw(data, data.splits["test"]["user-cold"]) == as_raw(support + query)
    assert data.user_ids == sorted({str(r[0]) for r in ROWS})  # ids coded over all the files together
    cold = data.splits["test"]["user-cold"]
    assert raw(data, cold[data.part[cold] == 1]) == as_raw(support) and raw(data, cold[data.part[cold] == 2]) == \
        as_raw(query)
    again = Interactions(root=str(tmp_path), split_files=FILES, columns={"time": "time"},
                         cache_dir=str(tmp_path / "cache")).load()
    cached = Interactions(root=str(tmp_path), split_files=FILES, columns={"time": "time"},
                          cache_dir=str(tmp_path / "cache")).load()
    assert torch.equal(cached.part, again.part) and cached.splits.keys() == again.splits.keys()


def test_the_sampler_keeps_a_published_support_query_split(tmp_path):
    _, warm, support, query = published(tmp_path)
    dm = MetaDataModule(dataset="interactions", root=str(tmp_path), sampler_args={"query_size": 3, "min_support": 2},
                        dataset_args={"split_files": FILES, "cache": False})
    data = dm.data
    tasks = dm.stage_tasks("test")
    cold = {t.key: (raw(data, t.support), raw(data, t.query)) for t in tasks["user-cold"]}
    by_user = lambda rows, u: as_raw([r for r in rows if r[0] == u])  # noqa: E731
    assert cold == {data.code_of("user", str(u)): (by_user(support, u), by_user(query, u)) for u in COLD}
    assert all(len(t.query) == 3 for t in tasks["warm_up"])  # no parts: the sampler's own split
    batch = next(iter(dm.test_dataloader()))
    assert batch.scenario in ("warm_up", "user-cold")


def test_a_split_column_gives_the_same_splits(tmp_path):
    train, warm, support, query = published(tmp_path)
    labelled = ([(*r, "train") for r in train] + [(*r, "test/warm_up") for r in warm]
                + [(*r, "test/user-cold/support") for r in support] + [(*r, "test/user-cold/query") for r in query])
    write_csv(tmp_path / "all.csv", labelled, header=("user", "item", "rating", "time", "set"))
    column = Interactions(root=str(tmp_path), path="all.csv", columns={"split": "set"}, cache=False).load()
    files = Interactions(root=str(tmp_path), split_files=FILES, cache=False).load()
    for stage, scenarios in files.splits.items():
        for scenario, rows in scenarios.items():
            assert raw(column, column.splits[stage][scenario]) == raw(files, rows)
    cold = column.splits["test"]["user-cold"]
    assert raw(column, cold[column.part[cold] == 1]) == as_raw(support)


def test_validation_split_files_and_filtering_only_when_asked(tmp_path):
    train, warm, _, _ = published(tmp_path)
    data = Interactions(root=str(tmp_path), split_files={"train": "train.csv", "val/new-users": "warm.csv"},
                        cache=False).load()
    assert list(data.splits["val"]) == ["new-users"] and "test" not in data.splits
    few = min(sum(1 for r in train if r[0] == u) for u in TRAIN_USERS) + 1
    kept = Interactions(root=str(tmp_path), split_files={"train": "train.csv"}, min_ratings=few, cache=False).load()
    rows = kept.splits["train"]["train"]
    assert 0 < len(rows) < len(train) and bool((torch.bincount(kept.user[rows])[kept.user[rows]] >= few).all())


@pytest.mark.parametrize("kw, message", [
    ({"split_files": {"tset/x": "train.csv"}}, r"split_files: 'tset/x' is not a split; expected 'train', "
                                               r"'val/<scenario>' or 'test/<scenario>'"),
    ({"split_files": {"train": "train.csv", "test": "warm.csv"}}, r"split_files: 'test' is not a split"),
    ({"split_files": {"train": "nope.csv"}}, r"nope.csv: file not found \(split file train\)"),
    ({"split_files": {"test/a": "warm.csv"}}, r"have no training rows"),
    ({"split_files": {"train": "train.csv", "test/a/support": "support.csv"}},
     r"split test/a: rows marked /support or /query must be all of its rows, with both parts"),
    ({"split_files": {"train": "train.csv", "test/a": "warm.csv", "test/a/query": "query.csv"}},
     r"split test/a: rows marked /support or /query"),
    ({"split_files": {"train": "train.csv"}, "path": "train.csv"}, r"both path and split_files given"),
    ({"split_files": {"train": "train.csv"}, "protocol": "user-cold"}, r"split_files already split the data, so "
                                                                      r"protocol 'user-cold' would re-split it"),
    ({"split_files": ["train.csv"]}, r"split_files: \['train.csv'\] is not a mapping"),
    ({"path": "bad.csv", "columns": {"split": "set"}}, r"bad.csv: line 3, column set: 'validation' is not a split"),
    ({"split_files": {"train": "train.csv", "test/a": "train.csv"}}, r"duplicate row for user"),
])
def test_bad_split_values_and_files_are_one_line(tmp_path, kw, message):
    published(tmp_path)
    write_csv(tmp_path / "bad.csv", [(1, 2, 3, 4, "train"), (1, 3, 3, 4, "validation")],
              header=("user", "item", "rating", "time", "set"))
    with pytest.raises(DataError, match=message) as err:
        Interactions(root=str(tmp_path), cache=False, **kw).load()
    assert "\n" not in str(err.value)
