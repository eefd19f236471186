"""``metarec predict``: new users' ratings in (``--data.predict_file``), top-k per user out (``--recommend.*``).

Input, CSV with a header: ``user,item,rating`` and optionally one column per user profile field (same value on
every row of a user), e.g. ``user,item,rating,age``; or JSON: ``[{"user": "ann", "ratings": {"12": 5, "7": 3},
"profile": {"age": 2}}, ...]`` (``ratings`` may also be a list of ``[item, rating]`` pairs).
Output, CSV (``user,rank,item,score``) or JSON (``{"ann": [[item, score], ...]}``) by the file's suffix.  Items a
user rated are never recommended.  Without ``predict_file``, ``metarec predict`` ranks each test task's query items.
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

from metarec_pl.data.types import DataError, RatingData
from metarec_pl.recommend import Catalogue, NewUser, top_k


def _number(text: str, where: str, what: str, kind=float) -> Any:
    try:
        return kind(text)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {what} {text!r} is not a{'n integer' if kind is int else ' number'}") from None


def read_csv(path: Path) -> list[NewUser]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"user", "item", "rating"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path}: line 1: missing column(s) {', '.join(sorted(missing))}; expected a header "
                            "user,item,rating[,profile fields]")
        extra = [c for c in reader.fieldnames or [] if c not in ("user", "item", "rating")]
        users: dict[str, NewUser] = {}
        for line, row in enumerate(reader, start=2):
            where = f"{path}: line {line}"
            user = users.setdefault(row["user"], NewUser([], {}, row["user"]))
            user.ratings.append((_number(row["item"], where, "item", int), _number(row["rating"], where, "rating")))
            for name in extra:
                value = _number(row[name], where, name)
                value = int(value) if float(value).is_integer() else value
                if user.profile.setdefault(name, value) != value:
                    raise DataError(f"{where}: user {row['user']!r} has {name}={value}, but {user.profile[name]} on an "
                                    f"earlier line; expected one value per user")
    return list(users.values())


def read_json(path: Path) -> list[NewUser]:
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a list of {{\"user\", \"ratings\", \"profile\"}} objects")
    users = []
    for i, rec in enumerate(records):
        where = f"{path}: record {i}"
        if not isinstance(rec, dict) or "ratings" not in rec:
            raise DataError(f"{where}: expected an object with 'ratings' (and optionally 'user', 'profile')")
        ratings = rec["ratings"]
        pairs = ratings.items() if isinstance(ratings, dict) else ratings
        try:
            pairs = [(_number(i, where, "item", int), _number(r, where, "rating")) for i, r in pairs]
        except (TypeError, ValueError):
            raise DataError(f"{where}: 'ratings' must be {{item: rating}} or [[item, rating], ...]") from None
        users.append(NewUser(pairs, rec.get("profile") or {}, rec.get("user", i)))
    return users


def read_new_users(path: str | os.PathLike) -> list[NewUser]:
    """New users from a CSV or JSON file (by suffix); one-line ``DataError`` naming file and line otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data.predict_file: {str(path)!r} does not exist; expected a CSV or JSON file of new "
                        "users' ratings")
    if path.suffix.lower() == ".json":
        return read_json(path)
    if path.suffix.lower() == ".csv":
        return read_csv(path)
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
    the input file; for test tasks (no ``data.predict_file``), the task key (user id).
    """

    def __init__(self, output: Optional[str] = None, top_k: int = 10) -> None:
        super().__init__(write_interval="batch")
        if top_k < 1:
            raise ValueError(f"recommend.top_k must be >= 1, got {top_k}")
        self.output, self.top_k = output, top_k
        self.rows: list[tuple[Any, list[tuple[int, float]]]] = []

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rows = []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        names = getattr(trainer.datamodule, "predict_users", None)
        best = top_k(prediction["prediction"].cpu(), prediction["item"].cpu(), prediction["mask"].cpu(), self.top_k)
        for key, recs in zip(prediction["key"].tolist(), best):
            self.rows.append((names[key].name if names else key, recs))

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = Path(self.output or Path(trainer.default_root_dir) / "recommendations.csv")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            if path.suffix.lower() == ".json":
                json.dump({str(user): [[i, round(s, 6)] for i, s in recs] for user, recs in self.rows}, f, indent=1)
            else:
                out = csv.writer(f)
                out.writerow(["user", "rank", "item", "score"])
                for user, recs in self.rows:
                    out.writerows([user, rank, item, f"{score:.6f}"] for rank, (item, score) in enumerate(recs, 1))
        tmp.replace(path)
        print(f"metarec: wrote top-{self.top_k} items for {len(self.rows)} users to {path}")
