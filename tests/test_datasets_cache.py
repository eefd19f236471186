"""The Arrow cache: same data back, keyed by file contents and options, atomic, located by option or env."""

import pytest
import torch

from _datasets_fixtures import write_melu, write_ml1m
from metarec_pl.data import cache
from metarec_pl.data.melu_release import MeLUMovieLens1M
from metarec_pl.data.movielens import MovieLens1M
from metarec_pl.data.types import DataError


def _same(a, b):
    assert torch.equal(a.user, b.user) and torch.equal(a.item, b.item) and torch.equal(a.rating, b.rating)
    assert (a.time is None and b.time is None) or torch.equal(a.time, b.time)
    assert a.schema == b.schema and a.rating_range == b.rating_range and a.item_text == b.item_text
    assert a.user_features.keys() == b.user_features.keys() and a.item_features.keys() == b.item_features.keys()
    assert all(torch.equal(a.user_features[k], b.user_features[k]) for k in a.user_features)
    assert all(torch.equal(a.item_features[k], b.item_features[k]) for k in a.item_features)
    assert {s: set(v) for s, v in a.splits.items()} == {s: set(v) for s, v in b.splits.items()}
    assert all(torch.equal(a.splits[s][k], b.splits[s][k]) for s in a.splits for k in a.splits[s])


def _count_builds(monkeypatch):
    builds = []
    original = cache.FileDataset.build
    monkeypatch.setattr(cache.FileDataset, "build", lambda self: builds.append(1) or original(self))
    return builds


def test_second_load_comes_from_the_cache_and_is_identical(tmp_path, monkeypatch):
    root = write_melu(tmp_path / "melu", warm_name="warm_state.json")
    builds = _count_builds(monkeypatch)
    first = MeLUMovieLens1M(root=str(root), cache_dir=str(tmp_path / "c")).load()
    second = MeLUMovieLens1M(root=str(root), cache_dir=str(tmp_path / "c")).load()
    assert len(builds) == 1
    _same(first, second)
    _same(first, MeLUMovieLens1M(root=str(root), cache=False).load())
    assert second.item_features["item_actor"].dtype == torch.long and second.rating.dtype == torch.float32


def test_changed_file_or_option_never_reuses_a_stale_entry(tmp_path, monkeypatch):
    root = write_ml1m(tmp_path / "ml")
    builds = _count_builds(monkeypatch)
    load = lambda **kw: MovieLens1M(root=str(root), cache_dir=str(tmp_path / "c"), **kw).load()  # noqa: E731
    before = load()
    text = (root / "ratings.dat").read_text()
    first = text.split("\n", 1)[0].split("::")
    changed = "::".join(first[:2] + [str(1 + int(first[2]) % 5)] + first[3:])
    (root / "ratings.dat").write_text(text.replace(text.split("\n", 1)[0], changed, 1))  # same size, new content
    after = load()
    assert len(builds) == 2 and not torch.equal(before.rating, after.rating)
    other = load(seed=1)
    assert len(builds) == 3 and not torch.equal(other.splits["test"]["user-cold"], after.splits["test"]["user-cold"])
    load(seed=1)
    assert len(builds) == 3
    assert len(list((tmp_path / "c").iterdir())) == 3


def test_a_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    root = write_ml1m(tmp_path / "ml")
    (root / "ratings.dat").write_text((root / "ratings.dat").read_text() + "1::2::9::3\n")
    with pytest.raises(DataError):
        MovieLens1M(root=str(root), cache_dir=str(tmp_path / "c")).load()
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").iterdir())

    root = write_ml1m(tmp_path / "ok")

    def broken_save(data, path):
        (path / "partial").write_text("x")
        raise OSError("disk full")

    monkeypatch.setattr(cache, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        MovieLens1M(root=str(root), cache_dir=str(tmp_path / "c")).load()
    assert not list((tmp_path / "c").iterdir())


def test_cache_location_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("METAREC_PL_CACHE", str(tmp_path / "env"))
    MovieLens1M(root=str(write_ml1m(tmp_path / "ml"))).load()
    assert [p.name.split("-")[0] for p in (tmp_path / "env").iterdir()] == ["movielens"]
    assert cache.cache_root(str(tmp_path / "x")) == tmp_path / "x"
