"""The MeLU (Lee et al., KDD 2019) release of MovieLens-1M: IMDB-extended items and four state files.

Files under ``root``: ``users.dat`` (UserID::Gender::Age::Occupation::Zip-code), ``movies_extrainfos.dat``
(MovieID::Title::Year::Rate::Released::Genres::Director::Writer::Actors::Plot::Poster, UTF-8, comma lists),
the vocabularies ``m_{rate,genre,director,actor,gender,age,occupation,zipcode}.txt`` and per state a pair
``{userID: [movieID, ...]}`` / ``{userID: [rating, ...]}`` of JSON files.  ``state_files`` overrides any pair,
e.g. ``{warm: [warm_state.reconstructed.json, warm_state_y.json]}``.

Features as in MeLU's code: user gender, age, occupation, zip code (first 5 characters) and item MPAA rate
(categorical); item genres, directors (parenthesised notes removed) and actors (multi-valued); "N/A" reads as
MeLU's "nan" entry.  A value missing from its vocabulary is an error.  ``RatingData.item_text``: "Title (Year).
Plot".  Rows carry their state, which the ``melu`` protocol turns into scenarios.

Duplicates: the release's own relabelling (movies 860 -> 811, 1795 -> 1741) gives 4 users two ratings of one
movie, so ``duplicates`` defaults to ``last`` (keep the later one in state order, then list order); ``error``
refuses them.
"""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from metarec_pl.data.cache import FileDataset
from metarec_pl.data.features import categorical, multi
from metarec_pl.data.protocols import MELU_STATES
from metarec_pl.data.textfiles import read_text, require, split_rows, to_int
from metarec_pl.data.types import DataError, FeatureSpec, RatingData

DEFAULT_STATE_FILES = {
    "warm": ["warm_state.json", "warm_state_y.json"],
    "user-cold": ["user_cold_state.json", "user_cold_state_y.json"],
    "item-cold": ["item_cold_state.json", "item_cold_state_y.json"],
    "user+item-cold": ["user_and_item_cold_state.json", "user_and_item_cold_state_y.json"],
}
USER_FIELDS = ("gender", "age", "occupation", "zipcode")  # users.dat columns 2..5
MOVIE_LAYOUT = "MovieID::Title::Year::Rate::Released::Genres::Director::Writer::Actors::Plot::Poster"


def _release_day(released: str, year: str) -> float:
    try:
        return float(datetime.datetime.strptime(released.strip(), "%d %b %Y").toordinal())
    except ValueError:
        y = year.strip()
        return float(datetime.date(int(y), 7, 1).toordinal()) if y.isdigit() and 1 <= int(y) <= 9999 else float("nan")


def _na(value: str) -> str:
    value = value.strip()
    return "nan" if value in ("", "N/A") else value


def _director(name: str) -> str:
    return _na(re.sub(r"\([^()]*\)", "", name))


class MeLUMovieLens1M(FileDataset):
    """MeLU's MovieLens-1M release (see module docstring); ``protocol`` defaults to ``melu``."""

    kind = "melu-movielens-1m"
    state_names = MELU_STATES

    def __init__(self, root: Optional[str] = None, protocol: str = "melu",
                 state_files: Optional[dict[str, list[str]]] = None, duplicates: str = "last",
                 cache_dir: Optional[str] = None, cache: bool = True, **protocol_options: Any) -> None:
        super().__init__(root, protocol, cache_dir, cache, **protocol_options)
        unknown = sorted(set(state_files or {}) - set(DEFAULT_STATE_FILES))
        if unknown:
            raise DataError(f"{self.kind}: state_files: unknown state(s) {', '.join(unknown)}; expected some of: "
                            f"{', '.join(DEFAULT_STATE_FILES)}")
        states = {**DEFAULT_STATE_FILES, **(state_files or {})}
        for name, pair in states.items():
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                raise DataError(f"{self.kind}: state_files.{name}: expected [items file, ratings file], got {pair!r}")
        if duplicates not in ("error", "last"):
            raise DataError(f"{self.kind}: duplicates: expected 'error' or 'last', got {duplicates!r}")
        self.options = {"state_files": {k: list(v) for k, v in states.items()}, "duplicates": duplicates}

    def _vocab_names(self) -> list[str]:
        return [f"m_{n}.txt" for n in ("rate", "genre", "director", "actor") + USER_FIELDS]

    def _state_paths(self) -> list[Path]:
        paths = []
        for name, (x, y) in self.options["state_files"].items():
            found = sorted(p.name for p in Path(self.root or ".").glob(f"{Path(x).stem.split('.')[0]}*.json"))
            hint = f"set dataset_args.state_files.{name} to [items file, ratings file]" + (
                f" (found: {', '.join(found)})" if found else "")
            paths += [require(self.root, x, f"MeLU {name} state", hint), require(self.root, y, f"MeLU {name} state", hint)]
        return paths

    def files(self) -> list[Path]:
        return ([require(self.root, n, "MeLU release") for n in ["users.dat", "movies_extrainfos.dat"]
                 + self._vocab_names()] + self._state_paths())

    def _vocab(self, name: str) -> dict[str, int]:
        path = require(self.root, f"m_{name}.txt", "MeLU vocabulary")
        values = [v.strip() for v in read_text(path).splitlines() if v.strip()]
        return {v: i + 1 for i, v in enumerate(dict.fromkeys(values))}

    def _coded(self, path: Path, line: int, column: str, values: list[str], vocab: dict[str, int]) -> list[str]:
        for v in values:
            if v not in vocab:
                raise DataError(f"{path}: line {line}, column {column}: {v!r} is not in m_{column}.txt; expected a "
                                "value of that vocabulary")
        return values

    def _users(self) -> tuple[dict[str, Tensor], list[FeatureSpec], set[int]]:
        path = require(self.root, "users.dat", "MeLU release")
        rows = split_rows(path, read_text(path, ("utf-8", "latin-1")), "::", (5,),
                          "UserID::Gender::Age::Occupation::Zip-code")
        ids = [to_int(path, n, "UserID", f[0]) for n, f in rows]
        size = max(ids) + 1
        tables, schema = {}, []
        for col, field in enumerate(USER_FIELDS, 1):
            vocab = self._vocab(field)
            values = [f[col].strip()[:5] if field == "zipcode" else f[col].strip() for _, f in rows]
            for (n, _), v in zip(rows, values):
                self._coded(path, n, field, [v], vocab)
            tables[f"user_{field}"], width = categorical(ids, values, size, vocab)
            schema.append(FeatureSpec("user", field, "categorical", width))
        return tables, schema, set(ids)

    def _movie_rows(self) -> tuple[Path, list[tuple[int, list[str]]], list[int]]:
        """``movies_extrainfos.dat``: its path, (line number, fields) per movie, and the movie ids."""
        path = require(self.root, "movies_extrainfos.dat", "MeLU release")
        rows = split_rows(path, read_text(path), "::", (11,), MOVIE_LAYOUT)
        return path, rows, [to_int(path, n, "MovieID", f[0]) for n, f in rows]

    def _items(self) -> tuple[dict[str, Tensor], list[FeatureSpec], dict[int, str]]:
        path, rows, ids = self._movie_rows()
        size = max(ids) + 1
        fields = {  # name -> (kind, column, parse)
            "rate": ("categorical", 3, lambda s: [_na(s)]),
            "genre": ("multi", 5, lambda s: [_na(g) for g in s.split(", ")]),
            "director": ("multi", 6, lambda s: [_director(d) for d in s.split(", ")]),
            "actor": ("multi", 8, lambda s: [_na(a) for a in s.split(", ")]),
        }
        tables, schema = {}, []
        for name, (kind, col, parse) in fields.items():
            vocab = self._vocab(name)
            values = [self._coded(path, n, name, parse(f[col]), vocab) for n, f in rows]
            if kind == "categorical":
                tables[f"item_{name}"], width = categorical(ids, [v[0] for v in values], size, vocab)
            else:
                tables[f"item_{name}"], width = multi(ids, values, size, vocab)
            schema.append(FeatureSpec("item", name, kind, width))
        text = {i: f"{f[1].strip()} ({f[2].strip()}). {f[9].strip()}" for i, (_, f) in zip(ids, rows)}
        return tables, schema, text

    def item_times(self) -> Tensor:
        """Release date (``Released``, else 1 July of ``Year``) as a proleptic ordinal day; NaN when neither reads."""
        _, rows, ids = self._movie_rows()
        out = torch.full((max(ids) + 1,), float("nan"), dtype=torch.float64)
        for i, (_, f) in zip(ids, rows):
            out[i] = _release_day(f[4], f[2])
        return out

    def _state(self, x: Path, y: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        items, ratings = self._json(x), self._json(y)
        users, movies, values = [], [], []
        for user, listed in items.items():
            rated = ratings.get(user)
            if rated is None or len(rated) != len(listed):
                raise DataError(f"{y}: user {user}: {'no ratings' if rated is None else f'{len(rated)} ratings'} for "
                                f"the {len(listed)} items {x.name} lists; expected one rating per item")
            try:
                uid = int(user)
                movies.append(np.asarray(listed, dtype=np.int64))
                r = np.asarray(rated, dtype=np.float64)
            except (TypeError, ValueError):
                raise DataError(f"{x}: user {user}: ids and ratings must be integers/numbers; got "
                                f"{listed[:3]!r}..., {rated[:3]!r}...") from None
            bad = ~np.isfinite(r) | (r < 1) | (r > 5)
            if bad.any():
                k = int(np.argmax(bad))
                raise DataError(f"{y}: user {user}, position {k}: rating {rated[k]!r} is outside [1, 5]; expected "
                                "ratings 1-5")
            users.append(np.full(len(listed), uid, dtype=np.int64))
            values.append(r)
        extra = sorted(set(ratings) - set(items))
        if extra:
            raise DataError(f"{y}: user {extra[0]} has ratings but is not in {x.name}; expected the same users")
        cat = lambda parts, dt: np.concatenate(parts) if parts else np.zeros(0, dt)  # noqa: E731
        return cat(users, np.int64), cat(movies, np.int64), cat(values, np.float64)

    def _json(self, path: Path) -> dict:
        try:
            obj = json.loads(read_text(path))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {exc.lineno}, column {exc.colno}: invalid JSON ({exc.msg}); expected "
                            "{\"userID\": [...], ...}") from None
        if not isinstance(obj, dict) or not all(isinstance(v, list) for v in obj.values()):
            raise DataError(f"{path}: expected a JSON object {{\"userID\": [...], ...}}")
        return obj

    def read(self) -> tuple[RatingData, Tensor]:
        user_tables, user_schema, user_ids = self._users()
        item_tables, item_schema, text = self._items()
        parts, files = [], []
        for s, name in enumerate(MELU_STATES):
            x, y = (Path(self.root or ".") / f for f in self.options["state_files"][name])
            u, i, r = self._state(x, y)
            for ids, known, what, source in ((u, user_ids, "user", "users.dat"),
                                             (i, set(text), "item", "movies_extrainfos.dat")):
                bad = ~np.isin(ids, np.fromiter(known, np.int64, len(known)))
                if bad.any():
                    raise DataError(f"{x}: {what} {ids[np.argmax(bad)]} is not in {source}; expected ids listed there")
            parts.append((u, i, r, np.full(len(u), s)))
            files += [x.name] * len(u)
        user, item, rating, state = (np.concatenate(p) for p in zip(*parts))
        pairs = pd.DataFrame({"u": user, "i": item})
        dup = pairs.duplicated(keep="last").to_numpy()
        dropped = {"duplicate ratings (duplicates: last keeps the later)": int(dup.sum())}
        if dup.any():
            if self.options["duplicates"] == "error":
                k = int(np.argmax(pairs.duplicated(keep="first").to_numpy()))
                first = int(np.argmax(dup & (user == user[k]) & (item == item[k])))
                raise DataError(f"{files[k]}: user {user[k]}, item {item[k]}: duplicate rating (also in {files[first]});"
                                " expected one rating per (user, item) pair (set duplicates: last to keep the last)")
            keep = ~dup
            user, item, rating, state = user[keep], item[keep], rating[keep], state[keep]
        if len(user) == 0:
            raise DataError(f"{self.kind}: the state files hold no ratings")
        data = RatingData(
            user=torch.from_numpy(user), item=torch.from_numpy(item), rating=torch.from_numpy(rating.astype(np.float32)),
            user_features=user_tables, item_features=item_tables, schema=user_schema + item_schema, splits={},
            item_text=text, dropped={k: v for k, v in dropped.items() if v})
        return data, torch.from_numpy(state)
