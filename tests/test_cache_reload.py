"""Every data set loads twice with the cache on and gives equal data: rows, features, splits, texts, raw id maps
and the counts of what reading dropped (case 01: a part with zero rows, such as a log's item texts, reloads)."""

import random

import pytest
import torch

from _datasets_fixtures import write_csv, write_melu, write_ml100k, write_ml1m
from metarec_pl import plugins
from metarec_pl.data import cache


def _log(path, users=60, per=16, lo=1, hi=40, seed=0, spaces=False):
    """user,item,rating with string users u0.. and raw item ids lo..hi (string order differs from numeric)."""
    rng = random.Random(seed)
    rows = [(f" u{u}" if spaces and u == 0 else f"u{u}", i, rng.randint(1, 5), 1000 * u + k)
            for u in range(users) for k, i in enumerate(rng.sample(range(lo, hi + 1), per))]
    return write_csv(path, rows)


def bare(root):
    _log(root / "log.csv")
    return "interactions", {"path": "log.csv"}


def with_tables(root):
    _log(root / "log.csv")
    write_csv(root / "users.csv", [(f"u{u}", "ab"[u % 2], 20 + u) for u in range(60)], header=("id", "group", "age"))
    write_csv(root / "items.csv", [(i, "x|y" if i % 2 else "z") for i in range(1, 41)], header=("id", "tags"))
    return "interactions", {"path": "log.csv", "columns": {"time": "time"},
                            "user_features": {"path": "users.csv", "id": "id",
                                              "fields": {"group": "categorical", "age": "dense"}},
                            "item_features": {"path": "items.csv", "id": "id", "fields": {"tags": "multi"}}}


def implicit(root):
    _log(root / "log.csv")
    return "interactions", {"path": "log.csv", "implicit": True, "negatives": 2, "columns": {"rating": None}}


def duplicates(root):
    path = _log(root / "log.csv")
    path.write_text(path.read_text() + "u1,1,3,5\nu1,1,4,6\n")
    return "interactions", {"path": "log.csv", "duplicates": "last", "protocol": "item-cold"}


def ml100k(root):
    write_ml100k(root)
    return "movielens-100k", {}


def ml1m(root):
    write_ml1m(root)
    return "movielens-1m", {}


def ml1m_no_time(root):
    write_ml1m(root, timestamps=False)
    return "movielens-1m", {}


def melu(root):
    write_melu(root)
    return "melu-movielens-1m", {}


def text(root):
    write_ml1m(root)
    return "text", {"base": "movielens-1m", "base_args": {"cache_dir": str(root / "cache")}, "encoder": "hashing",
                    "cache_dir": str(root / "text-cache")}


def synthetic(root):
    return "synthetic", {"num_users": 60, "num_items": 40, "min_ratings": 5, "max_ratings": 20}


def _same(a, b):
    assert torch.equal(a.user, b.user) and torch.equal(a.item, b.item) and torch.equal(a.rating, b.rating)
    assert a.user.dtype == b.user.dtype and a.rating.dtype == b.rating.dtype
    assert (a.time is None and b.time is None) or torch.equal(a.time, b.time)
    assert a.schema == b.schema and a.rating_range == b.rating_range and a.item_text == b.item_text
    assert a.user_ids == b.user_ids and a.item_ids == b.item_ids and a.dropped == b.dropped
    for x, y in ((a.user_features, b.user_features), (a.item_features, b.item_features)):
        assert x.keys() == y.keys()
        assert all(torch.equal(x[k], y[k]) and x[k].dtype == y[k].dtype for k in x)
    assert {s: list(v) for s, v in a.splits.items()} == {s: list(v) for s, v in b.splits.items()}
    assert all(torch.equal(a.splits[s][k], b.splits[s][k]) for s in a.splits for k in a.splits[s])


@pytest.mark.parametrize("make", [bare, with_tables, implicit, duplicates, ml100k, ml1m, ml1m_no_time, melu, text,
                                  synthetic])
def test_every_data_set_loads_twice_from_the_cache_with_equal_data(tmp_path, monkeypatch, make):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    builds = []
    original = cache.FileDataset.build
    monkeypatch.setattr(cache.FileDataset, "build", lambda self: builds.append(1) or original(self))
    name, args = make(tmp_path)
    load = lambda **kw: plugins.get_dataset(name)(root=str(tmp_path), **{**args, **kw}).load()  # noqa: E731
    first, second = load(), load()
    _same(first, second)
    if name != "synthetic":  # every file data set: built once, then read back from the cache
        assert len(builds) == 1
        entries = [p.name for p in (tmp_path / "cache").iterdir()]
        assert entries and not [e for e in entries if e.startswith(".tmp")]  # no half-written entry left
    if name in ("interactions", "movielens-1m", "movielens-100k", "melu-movielens-1m"):
        _same(first, load(cache=False))


def test_a_log_keeps_its_raw_ids_through_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    _log(tmp_path / "log.csv", spaces=True)
    load = lambda: plugins.get_dataset("interactions")(root=str(tmp_path), path="log.csv").load()  # noqa: E731
    first, second = load(), load()
    # codes follow the sorted strings: "1" < "10" < ... < "19" < "2" < "20"; " u0" is the user "u0"
    assert second.item_ids[:3] == ["1", "10", "11"] and second.item_ids[11] == "2"
    assert second.user_ids[0] == "u0" and len(second.user_ids) == 60
    assert second.code_of("item", "40") == first.item_ids.index("40") and second.code_of("item", "41") is None
    raw = second.raw_ids("item")
    assert {raw[c] for c in second.item.tolist()} == {str(i) for i in range(1, 41)}


def test_the_stored_layout_has_one_file_per_part_even_with_zero_rows(tmp_path):
    _log(tmp_path / "log.csv")
    plugins.get_dataset("interactions")(root=str(tmp_path), path="log.csv", cache_dir=str(tmp_path / "c")).load()
    (entry,) = (tmp_path / "c").iterdir()
    assert sorted(p.name for p in entry.iterdir()) == sorted([f"{n}.arrow" for n in cache.PARTS]
                                                            + ["metarec_meta.json"])
    assert cache._read(entry / "item_text.arrow").num_rows == 0  # the log has no texts: a zero-row part
