"""MovieLens-100K and MovieLens-1M from the official GroupLens files.

Ids stay the official ones (feature tables are indexed by them; row 0 is unused), so results can name movies.
Features (0 = unknown): users' gender, age group, occupation and zip region (first digit); items' genres
(multi-valued) and release decade.  ``RatingData.item_text`` holds the titles.  Every rating must name a user
and a movie of the feature files.  Duplicate (user, movie) rows: ``duplicates: error`` (default) or ``last``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from metarec_pl.data.cache import FileDataset
from metarec_pl.data.features import categorical, multi
from metarec_pl.data.textfiles import (deduplicate, line_of_row, numeric_table, read_text, require, split_rows,
                                       to_int)
from metarec_pl.data.types import DataError, FeatureSpec, RatingData

AGE_GROUPS = ("1", "18", "25", "35", "45", "50", "56")  # ML-1M's age codes; ML-100K ages are binned to them


def age_group(age: int) -> str:
    return [g for g in AGE_GROUPS if age >= int(g)][-1] if age >= 1 else ""


def zip_region(zipcode: str) -> str:
    return zipcode[0] if zipcode[:1].isdigit() else ""


def decade(year: Optional[int]) -> str:
    return f"{year // 10 * 10}s" if year else ""


def known_ids(path: Path, text: str, column: str, ids: np.ndarray, known: set[int], source: Path) -> None:
    """Every id must appear in the feature file ``source``."""
    bad = ~np.isin(ids, np.fromiter(known, dtype=np.float64, count=len(known)))
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(f"{path}: line {line_of_row(text, row)}, column {column}: id {ids[row]:g} is not in "
                        f"{source.name}; expected ids listed there")


class MovieLensBase(FileDataset):
    """Shared reading of the ratings table and assembly of ``RatingData``."""

    ratings_layout = ""
    ratings_sep = "::"
    ratings_ncols: tuple[int, ...] = (3, 4)

    def __init__(self, root: Optional[str] = None, protocol: str = "user-cold", duplicates: str = "error",
                 cache_dir: Optional[str] = None, cache: bool = True, **protocol_options: Any) -> None:
        super().__init__(root, protocol, cache_dir, cache, **protocol_options)
        self.options = {"duplicates": duplicates}

    def ratings(self, path: Path, text: str) -> dict[str, np.ndarray]:
        cols = numeric_table(path, text, self.ratings_sep, ("user", "item", "rating", "time"), self.ratings_ncols,
                             self.ratings_layout, rating_range=(1.0, 5.0))
        keep = deduplicate(path, text, cols["user"], cols["item"], self.options["duplicates"])
        self.duplicates_dropped = len(cols["user"]) - len(keep)
        return {k: v[keep] for k, v in cols.items()}

    def assemble(self, cols: dict[str, np.ndarray], users: dict[str, Tensor], items: dict[str, Tensor],
                 schema: list[FeatureSpec], titles: dict[int, str]) -> RatingData:
        return RatingData(
            user=torch.from_numpy(cols["user"].astype(np.int64)), item=torch.from_numpy(cols["item"].astype(np.int64)),
            rating=torch.from_numpy(cols["rating"].astype(np.float32)),
            time=torch.from_numpy(cols["time"].astype(np.float64)) if "time" in cols else None,
            user_features=users, item_features=items, schema=schema, splits={}, item_text=titles,
            dropped={"duplicate ratings (duplicates: last keeps the last)": n for n in
                     [getattr(self, "duplicates_dropped", 0)] if n})


class MovieLens100K(MovieLensBase):
    """``u.data`` (user \\t item \\t rating \\t timestamp), ``u.user``, ``u.item`` (Latin-1) from ``root``."""

    kind = "movielens-100k"
    ratings_layout = "user id \\t item id \\t rating (1-5) \\t timestamp"
    ratings_sep = "\t"
    ratings_ncols = (4,)

    def files(self) -> list[Path]:
        return [require(self.root, n, "MovieLens-100K") for n in ("u.data", "u.user", "u.item")]

    def read(self) -> tuple[RatingData, None]:
        data_path, user_path, item_path = self.files()
        text = read_text(data_path)
        cols = self.ratings(data_path, text)

        urows = split_rows(user_path, read_text(user_path, ("utf-8", "latin-1")), "|", (5,),
                           "user id|age|gender|occupation|zip code")
        uid = [to_int(user_path, n, "user id", f[0]) for n, f in urows]
        ages = [age_group(to_int(user_path, n, "age", f[1])) for n, f in urows]
        irows = split_rows(item_path, read_text(item_path, ("utf-8", "latin-1")), "|", (24,),
                           "movie id|title|release date|video release date|IMDb URL|19 genre flags (0/1)")
        iid = [to_int(item_path, n, "movie id", f[0]) for n, f in irows]
        known_ids(data_path, text, "user id", cols["user"], set(uid), user_path)
        known_ids(data_path, text, "item id", cols["item"], set(iid), item_path)

        nu, ni = max(uid + [int(cols["user"].max())]) + 1, max(iid + [int(cols["item"].max())]) + 1
        users, user_schema = _user_fields_100k(uid, urows, ages, nu)
        items, item_schema = _item_fields_100k(iid, irows, ni)
        titles = {i: f[1] for i, (_, f) in zip(iid, irows)}
        return self.assemble(cols, users, items, user_schema + item_schema, titles), None


def _user_fields_100k(uid: list[int], urows: list, ages: list, num_users: int) -> tuple[dict[str, Tensor],
                                                                                     list[FeatureSpec]]:
    """``u.user``'s gender, age group, occupation and zip region as categorical tables over ``num_users`` ids."""
    users, schema = {}, []
    for name, values in (("gender", [f[2] for _, f in urows]), ("age", ages),
                         ("occupation", [f[3] for _, f in urows]), ("zip", [zip_region(f[4]) for _, f in urows])):
        users[f"user_{name}"], size = categorical(uid, values, num_users)
        schema.append(FeatureSpec("user", name, "categorical", size))
    return users, schema


def _item_fields_100k(iid: list[int], irows: list, num_items: int) -> tuple[dict[str, Tensor], list[FeatureSpec]]:
    """``u.item``'s 19 genre flags (multi-valued) and release decade (categorical) over ``num_items`` ids."""
    genres = [[str(g) for g, flag in enumerate(f[5:]) if flag.strip() == "1"] for _, f in irows]
    years = [re.search(r"(\d{4})$", f[2].strip()) for _, f in irows]
    items = {}
    items["item_genre"], size = multi(iid, genres, num_items, {str(g): g + 1 for g in range(19)})
    schema = [FeatureSpec("item", "genre", "multi", size)]
    items["item_decade"], size = categorical(iid, [decade(int(y.group(1)) if y else None) for y in years], num_items)
    schema.append(FeatureSpec("item", "decade", "categorical", size))
    return items, schema


def ml100k_item_texts(root: str, data: RatingData) -> list[str]:
    """"Title (Year). Genre, Genre" for every item code of ``data`` (a loaded ``MovieLens100K``; ML-100K's titles
    carry the year, ``u.genre`` names the genres): the text a frozen sentence encoder reads per movie (codes
    without a movie get ". ")."""
    names = {}
    for line in read_text(require(root, "u.genre", "MovieLens-100K"), ("utf-8", "latin-1")).splitlines():
        if "|" in line:
            name, idx = line.rsplit("|", 1)
            names[int(idx) + 1] = name  # item_genre ids are genre index + 1 (0 = padding)
    genres = data.item_features["item_genre"]
    titles = data.item_text or {}
    return [f"{titles.get(code, '')}. " + ", ".join(names.get(int(g), str(int(g))) for g in genres[code] if int(g) > 0)
            for code in range(data.num_items)]


class MovieLens1M(MovieLensBase):
    """``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``, or 3 columns without the timestamp),
    ``users.dat``, ``movies.dat`` (Latin-1) from ``root``.  ``ratings_file`` defaults to ``ratings.dat``, else
    ``ratings_no_timestamps.dat``.  Without timestamps, ``temporal`` and ``order: time`` refuse."""

    kind = "movielens-1m"
    ratings_layout = "UserID::MovieID::Rating(1-5)[::Timestamp]"

    def __init__(self, root: Optional[str] = None, protocol: str = "user-cold", ratings_file: Optional[str] = None,
                 duplicates: str = "error", cache_dir: Optional[str] = None, cache: bool = True,
                 **protocol_options: Any) -> None:
        super().__init__(root, protocol, duplicates, cache_dir, cache, **protocol_options)
        self.options["ratings_file"] = ratings_file

    def files(self) -> list[Path]:
        name = self.options["ratings_file"]
        if name is None:
            name = next((n for n in ("ratings.dat", "ratings_no_timestamps.dat") if Path(self.root or "", n).is_file()),
                        "ratings.dat")
        return [require(self.root, name, "MovieLens-1M ratings", "set dataset_args.ratings_file to the ratings file")]\
            + [require(self.root, n, "MovieLens-1M") for n in ("users.dat", "movies.dat")]

    def read(self) -> tuple[RatingData, None]:
        ratings_path, user_path, item_path = self.files()
        text = read_text(ratings_path)
        cols = self.ratings(ratings_path, text)
        urows = split_rows(user_path, read_text(user_path, ("utf-8", "latin-1")), "::", (5,),
                           "UserID::Gender::Age::Occupation::Zip-code")
        uid = [to_int(user_path, n, "UserID", f[0]) for n, f in urows]
        irows = split_rows(item_path, read_text(item_path, ("utf-8", "latin-1")), "::", (3,),
                           "MovieID::Title::Genres")
        iid = [to_int(item_path, n, "MovieID", f[0]) for n, f in irows]
        known_ids(ratings_path, text, "UserID", cols["user"], set(uid), user_path)
        known_ids(ratings_path, text, "MovieID", cols["item"], set(iid), item_path)

        nu, ni = max(uid + [int(cols["user"].max())]) + 1, max(iid + [int(cols["item"].max())]) + 1
        users, schema = {}, []
        for name, values in (("gender", [f[1] for _, f in urows]), ("age", [f[2] for _, f in urows]),
                             ("occupation", [f[3] for _, f in urows]), ("zip", [zip_region(f[4]) for _, f in urows])):
            users[f"user_{name}"], size = categorical(uid, values, nu)
            schema.append(FeatureSpec("user", name, "categorical", size))
        items = {}
        items["item_genre"], size = multi(iid, [f[2].split("|") for _, f in irows], ni)
        schema.append(FeatureSpec("item", "genre", "multi", size))
        years = [re.search(r"\((\d{4})\)\s*$", f[1]) for _, f in irows]
        items["item_decade"], size = categorical(iid, [decade(int(y.group(1)) if y else None) for y in years], ni)
        schema.append(FeatureSpec("item", "decade", "categorical", size))
        titles = {i: f[1] for i, (_, f) in zip(iid, irows)}
        return self.assemble(cols, users, items, schema, titles), None
