"""``metarec predict``: new users' ratings in (``--data.predict_file``), top-k per user out (``--recommend.*``).

Input, CSV with a header: ``user,item,rating`` and optionally one column per user profile field (same value on
every row of a user), e.g. ``user,item,rating,age``; or JSON: ``[{"user": "ann", "ratings": {"12": 5, "7": 3},
"profile": {"age": 2}}, ...]`` (``ratings`` may also be a list of ``[item, rating]`` pairs).  Item ids are the
*raw* ids of the data set's files (``"12"`` is the item written ``12`` in the log, whatever its internal code);
values have surrounding spaces removed, as the log's ids do, and a UTF-8 byte-order mark is ignored.  An unknown
item, a column that is not a profile field, a row with more or fewer fields than the header, or a file with no
rows is a one-line ``DataError`` naming the file and line.
Output, CSV (``user,rank,item,score``) or JSON (``{"ann": [[item, score], ...]}``) by the file's suffix, in raw
ids.  Items a user rated are never recommended.  Without ``predict_file``, ``metarec predict`` ranks each test
task's query items (rows name the test user's raw id).  An output path that is a folder or cannot be written is
a one-line ``DataError``, checked before any prediction; nothing (no ``.tmp`` file) is left behind on failure.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader

from metarec_pl.data.types import DataError, RatingData, raw_id
from metarec_pl.catalogue import Catalogue, NewUser, top_k

HEADER = "user,item,rating[,profile fields]"


def _number(text: Any, where: str, what: str) -> float:
    if isinstance(text, bool):
        raise DataError(f"{where}: {what} {text!r} is not a number; expected a number")
    try:
        return float(text.strip() if isinstance(text, str) else text)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {what} {text!r} is not a number; expected a number") from None


def _profile_value(text: str, where: str, name: str) -> Any:
    value = _number(text, where, f"profile field {name}")
    return int(value) if float(value).is_integer() else value


def _check_columns(path: Path, names: list[str], profile_fields: Optional[Sequence[str]]) -> list[str]:
    """The profile columns of a header; one-line errors for missing, repeated or unknown columns."""
    missing = {"user", "item", "rating"} - set(names)
    if missing:
        raise DataError(f"{path}: line 1: missing column(s) {', '.join(sorted(missing))} (found: {', '.join(names)}); "
                        f"expected a header {HEADER}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f"{path}: line 1: column {repeated[0]!r} appears twice; expected each column once")
    extra = [c for c in names if c not in ("user", "item", "rating")]
    unknown = _unknown_fields(extra, profile_fields)
    if unknown:
        raise DataError(f"{path}: line 1: column {unknown!r} is not a profile field of the data set; expected "
                        f"user, item, rating and profile fields among: {', '.join(profile_fields) or '(none)'}")
    return extra


def _unknown_fields(names: Sequence[str], profile_fields: Optional[Sequence[str]]) -> Optional[str]:
    """The first of ``names`` that is no profile field (``user_`` prefix optional); ``None``: all are, or the
    fields are not known."""
    if profile_fields is None:
        return None
    return next((c for c in names if c.removeprefix("user_") not in profile_fields), None)


def read_csv(path: Path, profile_fields: Optional[Sequence[str]] = None) -> list[NewUser]:
    """New users from a CSV file (see module docstring); every value stripped of surrounding spaces."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: the file is empty; expected a header {HEADER} and one line per rating")
            names = [c.strip() for c in header]
            extra = _check_columns(path, names, profile_fields)
            users: dict[str, NewUser] = {}
            for fields in reader:
                line = reader.line_num
                if not any(v.strip() for v in fields):
                    continue  # blank line
                where = f"{path}: line {line}"
                if len(fields) != len(names):
                    raise DataError(f"{where}: {len(fields)} fields, but the header names {len(names)} "
                                    f"({','.join(names)}); expected one value per column")
                row = dict(zip(names, (v.strip() for v in fields)))
                name = raw_id(row["user"], f"{where}: user")
                user = users.setdefault(name, NewUser([], {}, name, []))
                user.ratings.append((raw_id(row["item"], f"{where}: item"),
                                     _number(row["rating"], where, "rating")))
                user.where.append(where)
                for column in extra:
                    value = _profile_value(row[column], where, column)
                    if user.profile.setdefault(column, value) != value:
                        raise DataError(f"{where}: user {name!r} has {column}={value}, but {user.profile[column]} "
                                        "on an earlier line; expected one value per user")
        except csv.Error as exc:
            raise DataError(f"{path}: line {reader.line_num}: {exc}; expected CSV lines of {HEADER}") from None
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: byte {exc.start}: not valid UTF-8; expected a UTF-8 CSV file") from None
    if not users:
        raise DataError(f"{path}: no ratings after the header; expected one line per rating ({HEADER})")
    return list(users.values())


def _json_records(path: Path) -> list:
    """The non-empty list of records of a JSON new-users file; one-line ``DataError`` otherwise."""
    try:
        records = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: byte {exc.start}: not valid UTF-8; expected a UTF-8 JSON file") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a list of {{\"user\", \"ratings\", \"profile\"}} objects")
    if not records:
        raise DataError(f"{path}: an empty list; expected at least one {{\"user\", \"ratings\"}} object")
    return records


def _json_pairs(ratings: Any, where: str) -> list[tuple[str, float]]:
    """(raw item id, rating) pairs of a record's 'ratings' ({item: rating} or [[item, rating], ...])."""
    pairs = ratings.items() if isinstance(ratings, dict) else ratings
    try:
        return [(raw_id(item, f"{where}: item"), _number(r, where, "rating")) for item, r in pairs]
    except (TypeError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{where}: 'ratings' must be {{item: rating}} or [[item, rating], ...]") from None


def _json_profile(rec: dict, where: str, profile_fields: Optional[Sequence[str]]) -> dict:
    """A record's 'profile' object, its keys checked against the data set's user fields (when given)."""
    profile = rec.get("profile") or {}
    if not isinstance(profile, dict):
        raise DataError(f"{where}: 'profile' must be an object {{field: value}}")
    unknown = _unknown_fields(list(profile), profile_fields)
    if unknown:
        raise DataError(f"{where}: profile field {unknown!r} is not one of the data set's: "
                        f"{', '.join(profile_fields) or '(none)'}")
    return profile


def read_json(path: Path, profile_fields: Optional[Sequence[str]] = None) -> list[NewUser]:
    """New users from a JSON file (see module docstring)."""
    users = []
    for i, rec in enumerate(_json_records(path)):
        where = f"{path}: record {i}"
        if not isinstance(rec, dict) or "ratings" not in rec:
            raise DataError(f"{where}: expected an object with 'ratings' (and optionally 'user', 'profile')")
        unknown = sorted(set(rec) - {"user", "ratings", "profile"})
        if unknown:
            raise DataError(f"{where}: unknown key {unknown[0]!r}; expected 'user', 'ratings' and 'profile'")
        pairs = _json_pairs(rec["ratings"], where)
        profile = _json_profile(rec, where, profile_fields)
        name = raw_id(rec["user"], f"{where}: user") if "user" in rec else f"#{i}"
        users.append(NewUser(pairs, profile, name, [where] * len(pairs)))
    return users


def read_new_users(path: str | os.PathLike, profile_fields: Optional[Sequence[str]] = None) -> list[NewUser]:
    """New users from a CSV or JSON file (by suffix); one-line ``DataError`` naming file and line otherwise.
    ``profile_fields``: the data set's user field names; a column (JSON profile key) outside them is refused."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"data.predict_file: {str(path)!r} is a folder; expected a CSV or JSON file of new users' "
                        "ratings")
    if not path.is_file():
        raise DataError(f"data.predict_file: {str(path)!r} does not exist; expected a CSV or JSON file of new "
                        "users' ratings")
    if path.suffix.lower() == ".json":
        return read_json(path, profile_fields)
    if path.suffix.lower() == ".csv":
        return read_csv(path, profile_fields)
    raise DataError(f"data.predict_file: {path.name}: unknown format; expected a .csv or .json file")


class NewUserCollate:
    """Collates ``(position, NewUser)`` pairs into a recommendation ``TaskBatch`` over the whole catalogue."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue

    def __call__(self, items: list[tuple[int, NewUser]]) -> Any:
        batch = self.catalogue.batch([u for _, u in items], offset=items[0][0])
        return batch


def new_user_loader(data: RatingData, users: Sequence[NewUser], batch_size: int) -> DataLoader:
    catalogue = Catalogue(data)
    for i, user in enumerate(users):  # fail before any work, on the first bad user
        catalogue.support(user, i), catalogue.profile(user, i)
    return DataLoader(list(enumerate(users)), batch_size=batch_size, shuffle=False, collate_fn=NewUserCollate(catalogue))


class RecommendationWriter(BasePredictionWriter):
    """Writes the top-``top_k`` items of every predicted task to ``output`` (.csv or .json), atomically.

    ``output`` defaults to ``<trainer.default_root_dir>/recommendations.csv``.  Rows name the new user as given in
    the input file; for test tasks (no ``data.predict_file``), the user's raw id.  Items are raw ids.  A folder or
    an unwritable place is refused (one-line ``DataError``) before any prediction runs.
    """

    def __init__(self, output: Optional[str] = None, top_k: int = 10) -> None:
        super().__init__(write_interval="batch")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise DataError(f"recommend.top_k: {top_k!r}; expected an integer >= 1")
        self.output, self.top_k = output, top_k
        self.rows: list[tuple[Any, list[tuple[str, float]]]] = []

    def _path(self, trainer: L.Trainer) -> Path:
        return Path(self.output or Path(trainer.default_root_dir) / "recommendations.csv")

    def check_output(self, path: Path) -> None:
        """One-line ``DataError`` unless ``path`` can be written: not a folder, in a folder that exists (or can be
        made) and is writable."""
        if path.is_dir():
            raise DataError(f"recommend.output: {str(path)!r} is a folder; expected a file path ending in .csv or "
                            ".json")
        parent = path.parent
        existing = next((p for p in (parent, *parent.parents) if p.exists()), Path("."))
        if not existing.is_dir():
            raise DataError(f"recommend.output: {str(path)!r}: {str(existing)!r} is a file, not a folder; expected "
                            "a path in a folder")
        if not os.access(existing, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise DataError(f"recommend.output: {str(path)!r} cannot be written (permission denied); expected a "
                            "writable place")

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check_output(self._path(trainer))
        self.rows = []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        datamodule = getattr(trainer, "datamodule", None)
        names = getattr(datamodule, "predict_users", None)
        data = getattr(datamodule, "data", None)
        item_ids = data.raw_ids("item") if data is not None else None
        user_ids = data.raw_ids("user") if data is not None and not names else None
        best = top_k(prediction["prediction"].cpu(), prediction["item"].cpu(), prediction["mask"].cpu(), self.top_k)
        for key, recs in zip(prediction["key"].tolist(), best):
            user = names[key].name if names else (user_ids[key] if user_ids else key)
            self.rows.append((user, [(item_ids[i] if item_ids else str(i), s) for i, s in recs]))

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = self._path(trainer)
        self.check_output(path)
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("w", newline="") as f:
                if path.suffix.lower() == ".json":
                    json.dump({str(user): [[i, round(s, 6)] for i, s in recs] for user, recs in self.rows}, f,
                              indent=1)
                else:
                    out = csv.writer(f)
                    out.writerow(["user", "rank", "item", "score"])
                    for user, recs in self.rows:
                        out.writerows([user, rank, item, f"{score:.6f}"] for rank, (item, score) in enumerate(recs, 1))
            tmp.replace(path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise DataError(f"recommend.output: {str(path)!r} cannot be written ({exc.strerror or exc}); expected a "
                            "writable file path") from None
        print(f"metarec: wrote top-{self.top_k} items for {len(self.rows)} users to {path}")
