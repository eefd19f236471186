"""The generic interactions loader: formats, column mapping, feature tables, implicit feedback, bad input."""

import pandas as pd
import pytest
import torch

from _datasets_fixtures import world, write_csv
from metarec_pl.data.base import ItemTaskSampler
from metarec_pl.data.interactions import Interactions
from metarec_pl.data.types import DataError, TaskCollator

ROWS = [(f"u{u:02d}", f"i{i:02d}", r, t) for u, i, r, t in world(num_users=30, num_items=25)]


def _load(root, **kw):
    return Interactions(root=str(root), cache=False, **kw).load()


def _raw_triples(data):
    users, items = sorted({u for u, *_ in ROWS}), sorted({i for _, i, *_ in ROWS})  # codes: sorted raw ids
    return sorted((users[u], items[i], r) for u, i, r in zip(data.user.tolist(), data.item.tolist(),
                                                               data.rating.tolist()))


@pytest.mark.parametrize("fmt", ["csv", "tsv", "dcolon", "parquet"])
def test_every_format_gives_the_same_ratings(tmp_path, fmt):
    frame = pd.DataFrame(ROWS, columns=["uid", "mid", "stars", "ts"])
    if fmt == "parquet":
        frame.to_parquet(tmp_path / "log.parquet")
        kw = {"path": "log.parquet"}
    elif fmt == "dcolon":  # MovieLens-style: no header, columns by position
        (tmp_path / "log.dat").write_text("".join("::".join(map(str, r)) + "\n" for r in ROWS))
        kw = {"path": "log.dat", "header": False, "columns": {"user": 0, "item": 1, "rating": 2, "time": 3}}
    else:
        sep = "," if fmt == "csv" else "\t"
        frame.to_csv(tmp_path / f"log.{fmt}", sep=sep, index=False)
        kw = {"path": f"log.{fmt}"}
    if fmt != "dcolon":
        kw["columns"] = {"user": "uid", "item": "mid", "rating": "stars", "time": "ts"}
    data = _load(tmp_path, **kw)
    assert _raw_triples(data) == sorted((u, i, float(r)) for u, i, r, _ in ROWS)
    assert data.time is not None and data.rating_range == (1.0, 5.0)


def test_feature_tables_of_every_kind(tmp_path):
    write_csv(tmp_path / "log.csv", ROWS)
    users = sorted({u for u, *_ in ROWS})
    write_csv(tmp_path / "users.csv", [(u, "ab"[k % 2], 20 + k) for k, u in enumerate(users)] + [("extra", "a", 1)],
              header=("id", "group", "age"))
    items = sorted({i for _, i, *_ in ROWS})
    write_csv(tmp_path / "items.csv", [(i, "x|y" if k % 2 else "z") for k, i in enumerate(items)], header=("id", "tags"))
    data = _load(tmp_path, path="log.csv", columns={"time": "time"},
                 user_features={"path": "users.csv", "id": "id", "fields": {"group": "categorical", "age": "dense"}},
                 item_features={"path": "items.csv", "id": "id", "fields": {"tags": "multi"}}, id_features=True)
    assert {(f.key, f.kind, f.size) for f in data.schema} == {
        ("user_group", "categorical", 3), ("user_age", "dense", 1), ("item_tags", "multi", 4),
        ("user_id", "categorical", len(users) + 1), ("item_id", "categorical", len(items) + 1)}
    assert data.user_features["user_group"].tolist()[:3] == [1, 2, 1]
    assert data.user_features["user_age"][:3, 0].tolist() == [20.0, 21.0, 22.0]
    assert data.item_features["item_tags"][1].tolist() == [1, 2] and data.item_features["item_tags"][0].tolist() == [3, 0]


def test_implicit_feedback_stores_interactions_only_and_item_tasks_draw_negative_users(tmp_path):
    clicks = world(num_users=30, num_items=60)
    write_csv(tmp_path / "clicks.csv", [(u, i, t) for u, i, _, t in clicks], header=("user", "item", "time"))
    data = _load(tmp_path, path="clicks.csv", implicit=True, columns={"time": "time"})
    assert len(data.user) == len(clicks) and bool((data.rating == 1).all()) and data.rating_range == (0.0, 1.0)
    assert data.feedback == "implicit"
    sampler = ItemTaskSampler(query_size=3, min_support=2, negatives=2)
    tasks = sampler.tasks(data, data.splits["train"]["train"], 0)
    assert tasks and all(len(data.item[t.query].unique()) == 1 for t in tasks)
    clicked = set(zip(data.user.tolist(), data.item.tolist()))
    for t in tasks:  # an item's negatives are users who never clicked it
        assert len(t.support_negatives) == 2 * len(t.support) and len(t.query_negatives) == 2 * len(t.query)
        assert not {(u, t.key) for u in torch.cat([t.support_negatives, t.query_negatives]).tolist()} & clicked
    batch = TaskCollator(data, group_by="item")(tasks[:3])
    n = len(tasks[0].support)
    assert bool((batch.support.item[0, : n + 2 * n] == tasks[0].key).all())
    assert batch.support.user[0, n:3 * n].tolist() == tasks[0].support_negatives.tolist()
    assert batch.support.rating[0, n:3 * n].tolist() == [0.0] * (2 * n) and bool((batch.support.mask[0, :3 * n] == 1).all())


@pytest.mark.parametrize("setup, kw, message", [
    (lambda p: write_csv(p / "log.csv", ROWS, header=("user", "item", "stars", "time")), {},
     r"log.csv: column 'rating' \(rating\) not found; expected it among the columns \(found: user, item, stars, time"),
    (lambda p: write_csv(p / "log.csv", ROWS, sep=";"), {}, r"log.csv: line 1: found a single column; expected "
     r"columns separated by ','"),
    (lambda p: write_csv(p / "log.csv", ROWS[:3] + [("u1", "i1", "x", 5)]), {},
     r"log.csv: line 5, column rating: 'x' is not a finite number"),
    (lambda p: write_csv(p / "log.csv", ROWS[:3] + [("u1", "i1", "NaN", 5)]), {},
     r"log.csv: line 5, column rating: 'NaN' is not a finite number"),
    (lambda p: write_csv(p / "log.csv", ROWS[:3] + [("u1", "i1", 9, 5)]), {"rating_range": (1, 5)},
     r"log.csv: line 5, column rating: 9 is outside the rating range \[1, 5\]"),
    (lambda p: write_csv(p / "log.csv", ROWS[:3] + [ROWS[1]]), {},
     r"log.csv: line 5: duplicate row for user '\w+', item '\w+'.*set duplicates: last"),
    (lambda p: write_csv(p / "log.csv", ROWS[:3] + [("u1", "i1", 3, "yesterday-ish")]), {"columns": {"time": "time"}},
     r"log.csv: line 5, column time: 'yesterday-ish' is not a number; expected a timestamp"),
    (lambda p: write_csv(p / "log.csv", [("u1", "i1", 3, "2020-01-01"), ("u1", "i2", 3, "soon")]),
     {"columns": {"time": "time"}}, r"log.csv: line 3, column time: 'soon' is neither a number nor a date"),
    (lambda p: (write_csv(p / "log.csv", ROWS), write_csv(p / "u.csv", [("u01", "a")], header=("id", "g"))),
     {"user_features": {"path": "u.csv", "id": "id", "fields": {"g": "categorical"}}},
     r"log.csv: line \d+: user '\w+' has no row in u.csv; expected every user of the log in its feature table"),
    (lambda p: (p / "log.csv").write_bytes("user,item,rating\nü,i,3\n".encode("latin-1")), {},
     r"log.csv: line 2: byte 0xfc is not valid utf-8"),
    (lambda p: write_csv(p / "log.csv", ROWS), {"path": "nope.csv"}, r"nope.csv: file not found \(interactions log\)"),
])
def test_bad_input_is_one_line(tmp_path, setup, kw, message):
    setup(tmp_path)
    with pytest.raises(DataError, match=message) as err:
        _load(tmp_path, **{"path": "log.csv", **kw})
    assert "\n" not in str(err.value)


def test_duplicates_keep_last_when_asked(tmp_path):
    write_csv(tmp_path / "log.csv", ROWS + [(ROWS[0][0], ROWS[0][1], 1 + ROWS[0][2] % 5, 0)])
    data = _load(tmp_path, path="log.csv", duplicates="last")
    assert len(data.user) == len(ROWS) and (1 + ROWS[0][2] % 5, ROWS[0][0]) in {
        (int(r), sorted({u for u, *_ in ROWS})[u]) for u, r in zip(data.user.tolist(), data.rating.tolist())}
