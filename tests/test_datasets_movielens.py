"""MovieLens-100K / 1M loaders on generated files in the official formats, and their one-line errors."""

import pytest
import torch

from _datasets_fixtures import world, write_ml100k, write_ml1m
from metarec_pl.data.module import MetaDataModule
from metarec_pl.data.movielens import MovieLens1M, MovieLens100K
from metarec_pl.data.types import DataError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("METAREC_PL_CACHE", str(tmp_path / "cache"))


def _triples(data):
    return sorted(zip(data.user.tolist(), data.item.tolist(), data.rating.tolist()))


def test_ml100k_reads_every_rating_and_feature(tmp_path):
    rows = world()
    data = MovieLens100K(root=str(write_ml100k(tmp_path, rows))).load()
    assert _triples(data) == sorted((u, i, float(r)) for u, i, r, _ in rows)
    assert sorted(data.time.tolist()) == sorted(float(t) for *_, t in rows)
    assert {f.key for f in data.schema} == {"user_gender", "user_age", "user_occupation", "user_zip", "item_genre",
                                            "item_decade"}
    assert data.user_features["user_zip"][2] == 0  # a non-numeric (Canadian) zip code is "unknown"
    assert data.user_features["user_age"][1] == data.user_features["user_age"][2] != data.user_features["user_age"][9]
    genres = data.item_features["item_genre"][3]  # flags 3 and 21 % 19 = 2 -> ids 4 and 3
    assert sorted(genres[genres > 0].tolist()) == [3, 4]
    assert data.item_text[3] == "Movie 3 (1953)"
    every = torch.cat([r for s in data.splits.values() for r in s.values()])
    assert len(every) == len(data.user) == len(every.unique())  # user-cold uses every row exactly once


@pytest.mark.parametrize("timestamps", [True, False])
def test_ml1m_with_and_without_timestamps(tmp_path, timestamps):
    rows = world(seed=1)
    data = MovieLens1M(root=str(write_ml1m(tmp_path, rows, timestamps=timestamps))).load()
    assert _triples(data) == sorted((u, i, float(r)) for u, i, r, _ in rows)
    assert (data.time is not None) == timestamps
    assert data.item_text[1] == "Café 1 (1961)"  # Latin-1 decoded
    assert data.item_features["item_genre"].shape[1] == 2


def test_without_timestamps_time_protocols_refuse_in_one_line(tmp_path):
    root = str(write_ml1m(tmp_path, timestamps=False))
    with pytest.raises(DataError, match="'temporal' needs timestamps") as err:
        MovieLens1M(root=root, protocol="temporal").load()
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="by=time needs timestamps"):
        MovieLens1M(root=root, protocol="item-cold", by="time").load()
    with pytest.raises(DataError, match="sampler_args.order: time"):
        MetaDataModule("movielens-1m", root=root, dataset_args={"protocol": "temporal"})
    dm = MetaDataModule("movielens-1m", root=root, sampler_args={"order": "time"})
    with pytest.raises(DataError, match="needs timestamps"):
        dm.stage_tasks("train")


def _edit(path, old, new):
    path.write_text(path.read_text().replace(old, new, 1))


@pytest.mark.parametrize("edit, message", [
    (lambda p: (p / "ratings.dat").write_text((p / "ratings.dat").read_text().replace("::", ";")), r"ratings.dat: line 1: found 1 field\(s\) separated by '::'"),
    (lambda p: _edit(p / "ratings.dat", "\n", "\n7::3::four::5\n"), r"ratings.dat: line 2, column rating: 'four' is "
     "not a number"),
    (lambda p: _edit(p / "ratings.dat", "\n", "\n7::3::nan::5\n"), r"line 2, column rating: 'nan' is not a finite"),
    (lambda p: _edit(p / "ratings.dat", "\n", "\n7::3::6::5\n"), r"line 2, column rating: 6 is outside the rating range"),
    (lambda p: _edit(p / "ratings.dat", "\n", "\n7::3::4::5::9\n"), r"line 2: found 5 field\(s\)"),
    (lambda p: _edit(p / "ratings.dat", "\n", "\n99::3::4::5\n"), r"line 2, column UserID: id 99 is not in users.dat"),
    (lambda p: (p / "users.dat").unlink(), r"users.dat: file not found"),
    (lambda p: (p / "ratings.dat").write_bytes((p / "ratings.dat").read_text().encode("utf-16")),
     r"ratings.dat: line 1: NUL byte found; expected a text file in utf-8"),
    (lambda p: (p / "movies.dat").write_text("1::Title (1999)\n"), r"movies.dat: line 1: found 2 field\(s\)"),
])
def test_bad_input_is_one_line_naming_file_and_line(tmp_path, edit, message):
    root = write_ml1m(tmp_path / "d")
    edit(root)
    with pytest.raises(DataError, match=message) as err:
        MovieLens1M(root=str(root)).load()
    assert "\n" not in str(err.value)
    assert not list((tmp_path / "cache").glob("*")) if (tmp_path / "cache").exists() else True  # nothing cached


def test_duplicate_pairs_error_or_keep_last(tmp_path):
    rows = world(seed=2)
    u, i, r, t = rows[5]
    rows_dup = rows + [(u, i, 1 + r % 5, t + 1)]
    root = str(write_ml100k(tmp_path, rows_dup))
    with pytest.raises(DataError, match=rf"u.data: line {len(rows_dup)}: duplicate rating of user {u} for item {i} "
                                        r"\(first on line 6\)"):
        MovieLens100K(root=root).load()
    data = MovieLens100K(root=root, duplicates="last").load()
    assert len(data.user) == len(rows)
    assert data.rating[(data.user == u) & (data.item == i)].item() == 1 + r % 5


def test_users_with_too_few_ratings_are_filtered_and_counted(tmp_path, caplog):
    root = str(write_ml100k(tmp_path))
    with caplog.at_level("INFO", logger="metarec_pl.data.protocols"):
        data = MovieLens100K(root=root, min_ratings=20).load()
    counts = torch.bincount(torch.tensor([u for u, *_ in world()]))
    kept = data.user[torch.cat([r for s in data.splits.values() for r in s.values()])].unique()
    assert kept.tolist() == torch.nonzero(counts >= 20).flatten().tolist()
    assert f"filtered out {int(((counts > 0) & (counts < 20)).sum())} of 40 users" in caplog.text
    with pytest.raises(DataError, match="no user is left after keeping users with 1000"):
        MovieLens100K(root=root, min_ratings=1000).load()
