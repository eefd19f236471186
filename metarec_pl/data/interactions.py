"""Any user-item log: CSV, TSV, Parquet or ``::``-separated text, with a column mapping and optional feature tables.

``columns`` maps the roles ``user``, ``item``, ``rating`` (explicit rating or implicit weight, optional when
``implicit``) and ``time`` (optional; numbers or dates) to column names (or 0-based positions when ``header`` is
false).  User and item ids may be any strings (surrounding spaces removed); they are coded 0..n-1 in sorted (string) order of
the raw ids, and ``RatingData.user_ids`` / ``item_ids`` keep the raw id of every code (``metarec predict`` and
``Recommender`` take and return raw ids).  A UTF-8 byte-order mark is ignored.  Without ``rating_range``, the
log's own scale is the lowest..highest rating it holds.

Implicit feedback (``implicit: true``): every row with weight > 0 (every row when there is no rating column) is an
interaction with rating 1, or with its weight (play/click count) under ``weights: true``; rows with weight <= 0
are dropped and counted.  Non-interactions are **not stored**: the task sampler draws negatives afresh every
episode (``data.sampler_args.negatives``, default 4 per interaction, see ``data/negatives.py``).  ``rating_range``
is (0, 1), or (0, the largest weight) with weights.  The old options ``negatives`` / ``negative_seed`` still work:
``MetaDataModule`` moves them to the sampler with a deprecation warning.

Published splits: a ``split`` column (``columns: {split: set}``) or one file per split (``split_files: {train:
train.csv, "test/warm_up": a.csv, ...}``, read with the same format and columns; ids are coded over all files
together).  A split is ``train``, ``val/<scenario>`` or ``test/<scenario>`` with any scenario name, optionally
ending in ``/support`` or ``/query`` when the split also says which rows of its tasks adapt and which judge
(``RatingData.part``; the sampler keeps them).  The protocol is then ``given`` (the splits as written, nothing
re-split or filtered unless ``min_ratings`` / ``max_ratings`` are given); any other protocol is refused.

Feature tables (``user_features`` / ``item_features``): ``{path, id, fields: {column: categorical|multi|dense},
sep, multi_sep ("|"), header}``.  Categorical and multi-valued values are coded 1.. in sorted order (0 = unknown /
padding); dense values must be numbers.  ``id_features: true`` adds the ids themselves as categorical fields
``user_id`` / ``item_id``; a log with no feature tables gets them automatically (``MetaDataModule``).  Every id of the log must have a row; extra rows (a full catalogue)
are ignored.  Duplicate (user, item) rows: ``duplicates: error`` (default) or ``last`` (keep the last row).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from metarec_pl.data.cache import FileDataset
from metarec_pl.data.features import categorical, multi
from metarec_pl.data.textfiles import line_of_row, read_text, require
from metarec_pl.data.types import DataError, FeatureSpec, RatingData, with_id_features

SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".dat": "::"}
Column = Union[str, int]


class Table:
    """A read table: a DataFrame of strings plus where each row came from (for error messages)."""

    def __init__(self, path: Path, frame: pd.DataFrame, text: Optional[str], header: bool) -> None:
        self.path, self.frame, self.text, self.header = path, frame, text, header

    def where(self, row: int) -> str:
        if self.text is None:
            return f"{self.path}: row {row + 1}"
        return f"{self.path}: line {line_of_row(self.text, row + int(self.header))}"

    def column(self, col: Column, role: str) -> pd.Series:
        if col not in self.frame.columns:
            found = ", ".join(map(str, self.frame.columns))
            raise DataError(f"{self.path}: column {col!r} ({role}) not found; expected it among the columns "
                            f"(found: {found}; is the separator or the column mapping right?)")
        return self.frame[col]

    def numbers(self, col: Column, role: str) -> np.ndarray:
        raw = self.column(col, role)
        values = pd.to_numeric(raw, errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(f"{self.where(row)}, column {col}: {raw.iloc[row]!r} is not a finite number; expected a "
                            f"number ({role})")
        return values


def read_table(path: Path, fmt: str = "auto", sep: Optional[str] = None, header: bool = True,
               encoding: str = "utf-8") -> Table:
    """Any supported file as strings (no type guessing, so ids like ``007`` stay as written)."""
    if fmt == "auto":
        fmt = "parquet" if path.suffix == ".parquet" else "text"
    if fmt == "parquet":
        return _read_parquet(path)
    if fmt not in ("text", "csv", "tsv"):
        raise DataError(f"{path}: format must be auto, csv, tsv, text or parquet, got {fmt!r}")
    sep = sep or {"csv": ",", "tsv": "\t"}.get(fmt) or SEPARATORS.get(path.suffix)
    if sep is None:
        raise DataError(f"{path}: cannot tell the separator from the suffix {path.suffix!r}; set sep")
    return _read_text_table(path, sep, header, encoding)


def _read_parquet(path: Path) -> Table:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a non-Parquet file
        raise DataError(f"{path}: not a readable Parquet file ({type(exc).__name__}); expected Parquet") from None
    return Table(path, frame.astype(str).where(frame.notna(), ""), None, True)


def _read_text_table(path: Path, sep: str, header: bool, encoding: str) -> Table:
    """A text table separated by ``sep`` (a multi-character one such as ``::`` too), every value a string."""
    text = read_text(path, (encoding,))
    body = text.replace(sep, "\t") if len(sep) > 1 else text
    try:
        frame = pd.read_csv(io.StringIO(body), sep="\t" if len(sep) > 1 else sep, header=0 if header else None,
                            dtype=str, keep_default_na=False, skip_blank_lines=True, engine="c")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; expected a table separated by {sep!r}") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: {str(exc).strip().splitlines()[-1]}; expected every line to have the same number"
                        f" of fields separated by {sep!r}") from None
    if frame.shape[1] == 1 and len(text.split("\n", 1)[0]) > 0:
        raise DataError(f"{path}: line 1: found a single column; expected columns separated by {sep!r} (set sep to "
                        "the file's separator)")
    if frame.empty:
        raise DataError(f"{path}: no rows; expected a table separated by {sep!r}")
    if header:  # column names as written, without surrounding spaces (a UTF-8 BOM is already gone: read_text)
        frame.columns = [c.strip() if isinstance(c, str) else c for c in frame.columns]
    return Table(path, frame, text, header)


STAGES = ("train", "val", "test")
PARTS = {"support": 1, "query": 2}
LABEL_FORMAT = ("'train', 'val/<scenario>' or 'test/<scenario>' (e.g. test/user-cold), optionally ending in "
                "/support or /query")


def parse_label(label: str) -> tuple[str, str, int]:
    """A split label as (stage, scenario, part): ``train`` -> (train, train, 0); ``test/warm_up`` -> (test, warm_up,
    0); ``test/user-cold/support`` -> (test, user-cold, 1).  Anything else raises ``ValueError``."""
    pieces = [p.strip() for p in str(label).strip().split("/")]
    part = 0
    if len(pieces) > 1 and pieces[-1] in PARTS:
        part = PARTS[pieces.pop()]
    stage, scenario = pieces[0], "/".join(pieces[1:])
    if stage == "train" and not scenario:
        scenario = "train"
    if stage not in STAGES or not scenario or any(not p for p in pieces):
        raise ValueError(f"{label!r} is not a split")
    return stage, scenario, part


def _times(log: Table, col: Column) -> np.ndarray:
    """[N] float64 timestamps of column ``col``: numbers as written, dates (ISO or what pandas reads) as seconds
    since 1970; ``DataError`` naming file, line and column for a value that is neither."""
    raw = log.column(col, "time")
    time = pd.to_numeric(raw, errors="coerce").to_numpy(np.float64)
    if np.isnan(time).any() and not np.isnan(time[0]):  # a column of numbers with a bad value
        row = int(np.argmax(np.isnan(time)))
        raise DataError(f"{log.where(row)}, column {col}: {raw.iloc[row]!r} is not a number; expected "
                        "a timestamp like the rows before it")
    if not np.isnan(time).any():
        return time
    time = pd.to_datetime(raw, errors="coerce", utc=True).to_numpy("datetime64[ns]").astype(np.float64)  # dates
    bad = np.isnan(time) | (time < -9e18)
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(f"{log.where(row)}, column {col}: {raw.iloc[row]!r} is neither a number "
                        "nor a date; expected a timestamp")
    return time / 1e9


def _labels(log: Table, col: Column) -> np.ndarray:
    """[N] split labels of column ``col`` (spaces removed); ``DataError`` naming file, line and column for a value
    that is no split."""
    labels = np.char.strip(log.column(col, "split").to_numpy(str))
    for value in pd.unique(labels):
        try:
            parse_label(value)
        except ValueError:
            row = int(np.argmax(labels == value))
            raise DataError(f"{log.where(row)}, column {col}: {str(value)!r} is not a split; "
                            f"expected {LABEL_FORMAT}") from None
    return labels


def _protocol(protocol: Optional[str], split_files: Optional[dict[str, str]], columns: dict[str, Column]) -> str:
    """The protocol to use: ``given`` for a log whose files state the splits (and no other), else ``user-cold``
    unless one is named."""
    labelled = bool(split_files) or columns.get("split") is not None
    if protocol is None:
        return "given" if labelled else "user-cold"
    if labelled and protocol != "given":
        raise DataError(f"interactions: {'split_files' if split_files else 'columns.split'} already split the "
                        f"data, so protocol {protocol!r} would re-split it; expected protocol: given (or none)")
    return protocol


def _check_options(columns: dict[str, Column], implicit: bool, weights: bool, negatives: Optional[int],
                   duplicates: str) -> None:
    """One-line ``DataError`` for an option value or combination ``Interactions`` cannot read."""
    unknown = sorted(set(columns) - {"user", "item", "rating", "time", "split"})
    if unknown:
        raise DataError(f"interactions: columns: unknown role(s) {', '.join(unknown)}; expected user, item, "
                        "rating, time, split")
    if duplicates not in ("error", "last"):
        raise DataError(f"interactions: duplicates: expected 'error' or 'last', got {duplicates!r}")
    if negatives is not None and negatives < 0:
        raise DataError(f"interactions: negatives must be >= 0, got {negatives}; expected a number of negatives per"
                        " interaction (now data.sampler_args.negatives)")
    if weights and not implicit:
        raise DataError("interactions: weights: true needs implicit: true; expected explicit ratings to be read "
                        "as they are")
    if weights and columns.get("rating") is None:
        raise DataError("interactions: weights: true needs a weight column (columns: {rating: <column>}); "
                        "expected the play/click count column")


def _check_split_files(split_files: Any, path: Optional[str], columns: dict[str, Column]) -> None:
    """One-line ``DataError`` unless ``split_files`` maps split labels to files and is the only way of saying
    the log and its splits."""
    if not isinstance(split_files, dict) or not split_files:
        raise DataError(f"interactions: split_files: {split_files!r} is not a mapping of splits to files; "
                        f"expected {{{LABEL_FORMAT.split(' or ')[0]}: train.csv, ...}}")
    if path is not None:
        raise DataError("interactions: both path and split_files given; expected one log (path) or one file"
                        " per split (split_files)")
    if columns.get("split") is not None:
        raise DataError("interactions: both split_files and columns.split given; expected one way of saying "
                        "the splits")
    for label in split_files:
        try:
            parse_label(label)
        except ValueError:
            raise DataError(f"interactions: split_files: {label!r} is not a split; expected {LABEL_FORMAT}") from None


def _locator(tables: list[Table], sizes: list[int]) -> Callable[[int], str]:
    """``where(row)``: a row of the concatenated tables (of ``sizes`` rows each), as its file and line."""
    offsets = np.cumsum([0] + sizes)

    def where(row: int) -> str:
        k = int(np.searchsorted(offsets, row, side="right")) - 1
        return tables[k].where(row - int(offsets[k]))

    return where


def _concatenate(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The columns of every log file (``Interactions._read_log``) one after the other; ``time`` is ``None`` unless
    every file has one (``DataError`` when only some have)."""
    if len({p["time"] is None for p in parts}) > 1:
        raise DataError("interactions: split files: some have a time column and some do not; expected the same "
                        "columns in every file")
    out = {key: np.concatenate([p[key] for p in parts]) for key in ("user", "item", "rating", "label")}
    out["time"] = np.concatenate([p["time"] for p in parts]) if parts[0]["time"] is not None else None
    return out


class Interactions(FileDataset):
    """A user-item log with optional feature tables (see module docstring)."""

    kind = "interactions"

    def __init__(self, root: Optional[str] = None, path: Optional[str] = None, format: str = "auto",
                 sep: Optional[str] = None, header: bool = True, columns: Optional[dict[str, Column]] = None,
                 implicit: bool = False, weights: bool = False, negatives: Optional[int] = None,
                 negative_seed: Optional[int] = None, rating_range: Optional[tuple[float, float]] = None,
                 encoding: str = "utf-8", duplicates: str = "error", user_features: Optional[dict[str, Any]] = None,
                 item_features: Optional[dict[str, Any]] = None, id_features: bool = False,
                 split_files: Optional[dict[str, str]] = None, protocol: Optional[str] = None,
                 cache_dir: Optional[str] = None, cache: bool = True, **protocol_options: Any) -> None:
        columns = {"user": "user", "item": "item", **({} if implicit else {"rating": "rating"}), **(columns or {})}
        super().__init__(root, _protocol(protocol, split_files, columns), cache_dir, cache, **protocol_options)
        _check_options(columns, implicit, weights, negatives, duplicates)
        if split_files is not None:
            _check_split_files(split_files, path, columns)
        # moved to the task sampler (negatives are drawn per episode, none stored); MetaDataModule moves them
        self.sampler_options = {"negatives": negatives, "negative_seed": negative_seed}
        self.options = dict(path=path if split_files is None else None, format=format, sep=sep, header=header,
                            columns=columns, implicit=implicit, weights=weights, encoding=encoding,
                            duplicates=duplicates, rating_range=list(rating_range) if rating_range else None,
                            user_features=user_features, item_features=item_features, id_features=id_features,
                            split_files=dict(split_files) if split_files else None)

    def _logs(self) -> list[tuple[Optional[str], Path]]:
        """(split label or ``None``, path) of every log file."""
        o = self.options
        if o["split_files"]:
            return [(label, require(self.root, name, f"split file {label}"))
                    for label, name in o["split_files"].items()]
        return [(None, require(self.root, o["path"] or "interactions.csv", "interactions log"))]

    def files(self) -> list[Path]:
        o = self.options
        out = [p for _, p in self._logs()]
        for side in ("user", "item"):
            spec = o[f"{side}_features"]
            if spec:
                if "path" not in spec or "id" not in spec:
                    raise DataError(f"interactions: {side}_features needs 'path' and 'id' (and 'fields')")
                out.append(require(self.root, spec["path"], f"{side} feature table"))
        return out

    def _read_log(self, log: Table, label: Optional[str]) -> dict[str, Any]:
        """One log file's columns: raw ids, ratings, times and split labels per row."""
        o, cols = self.options, self.options["columns"]
        # ids are read as strings with surrounding spaces removed (" 7" is the id "7"), as predict files are
        user_raw = np.char.strip(log.column(cols["user"], "user").to_numpy(str))
        item_raw = np.char.strip(log.column(cols["item"], "item").to_numpy(str))
        for raw, role in ((user_raw, "user"), (item_raw, "item")):
            empty = np.char.str_len(raw) == 0
            if empty.any():
                raise DataError(f"{log.where(int(np.argmax(empty)))}, column {cols[role]}: empty {role} id; expected "
                                "an id")
        rating = log.numbers(cols["rating"], "rating") if cols.get("rating") is not None else np.ones(len(user_raw))
        time = _times(log, cols["time"]) if cols.get("time") is not None else None
        if cols.get("split") is not None:
            labels = _labels(log, cols["split"])
        else:
            labels = np.full(len(user_raw), label if label is not None else "", dtype=object)
        if o["rating_range"] and not o["implicit"]:
            lo, hi = o["rating_range"]
            bad = (rating < lo) | (rating > hi)
            if bad.any():
                row = int(np.argmax(bad))
                raise DataError(f"{log.where(row)}, column {cols['rating']}: {rating[row]:g} is outside the rating "
                                f"range [{lo:g}, {hi:g}]; expected ratings in that range")
        return {"user": user_raw, "item": item_raw, "rating": rating, "time": time, "label": labels.astype(object)}

    def _read_rows(self) -> tuple[dict[str, Any], tuple[float, float], dict[str, int], np.ndarray,
                                  Callable[[int], str]]:
        """Every log file read and checked: (the kept rows' columns, the rating scale of every row read, reason ->
        rows dropped, the kept rows' positions in the logs, ``where(position)`` -> file and line)."""
        o = self.options
        logs = [(read_table(p, o["format"], o["sep"], o["header"], o["encoding"]), label) for label, p in self._logs()]
        parts = [self._read_log(log, label) for log, label in logs]
        where = _locator([log for log, _ in logs], [len(p["user"]) for p in parts])
        rows = _concatenate(parts)
        scale = self._scale(rows["rating"])  # of every row read, before duplicates are dropped
        keep, dropped = self._kept(rows, where)
        if not keep.any():
            raise DataError(f"{logs[0][0].path}: no rows left after removing duplicates and non-positive weights")
        kept = {k: (v[keep] if v is not None else None) for k, v in rows.items()}
        return kept, scale, dropped, np.flatnonzero(keep), where

    def read(self) -> tuple[RatingData, Optional[Tensor]]:
        o = self.options
        kept, scale, dropped, positions, where = self._read_rows()
        user_codes, user_ids = pd.factorize(kept["user"], sort=True)
        item_codes, item_ids = pd.factorize(kept["item"], sort=True)
        user_tables, user_schema = self._features("user", user_ids, kept["user"], positions, where)
        item_tables, item_schema = self._features("item", item_ids, kept["item"], positions, where)
        rating = kept["rating"]
        if o["implicit"]:  # interactions only: the task sampler draws negatives afresh every episode
            rating = rating if o["weights"] else np.ones(len(rating), dtype=np.float64)
            scale = (0.0, float(max(1.0, rating.max())))
        labelled = o["split_files"] or o["columns"].get("split") is not None
        state, part = self._splits(kept["label"]) if labelled else (None, None)
        data = RatingData(
            user=torch.from_numpy(user_codes.astype(np.int64)), item=torch.from_numpy(item_codes.astype(np.int64)),
            rating=torch.from_numpy(rating.astype(np.float32)),
            time=None if kept["time"] is None else torch.from_numpy(kept["time"]), user_features=user_tables,
            item_features=item_tables, schema=user_schema + item_schema, splits={},
            rating_range=(float(scale[0]), float(scale[1])), user_ids=[str(u) for u in user_ids],
            item_ids=[str(i) for i in item_ids], dropped={k: v for k, v in dropped.items() if v},
            feedback="implicit" if o["implicit"] else "explicit", part=part)
        if o["id_features"]:  # the ids themselves as categorical fields (1..n; 0 is left for unknown)
            data = with_id_features(data, ("user", "item"))
        return data, state

    def _scale(self, rating: np.ndarray) -> tuple[float, float]:
        """The rating range: ``rating_range``, else the log's lowest..highest rating ((0, inf) until implicit
        weights are known)."""
        if self.options["implicit"]:
            return 0.0, np.inf
        return self.options["rating_range"] or (rating.min(), rating.max())

    def _kept(self, rows: dict[str, Any], where: Callable[[int], str]) -> tuple[np.ndarray, dict[str, int]]:
        """(which rows to keep [N] bool, reason -> rows dropped): duplicate (user, item) rows (an error unless
        ``duplicates: last``, which keeps the last) and, for implicit data, rows of weight <= 0."""
        user_raw, item_raw = rows["user"], rows["item"]
        pairs = pd.DataFrame({"u": user_raw, "i": item_raw})
        dup = pairs.duplicated(keep="last").to_numpy()
        if dup.any() and self.options["duplicates"] == "error":
            row = int(np.argmax(pairs.duplicated(keep="first").to_numpy()))
            raise DataError(f"{where(row)}: duplicate row for user {str(user_raw[row])!r}, item "
                            f"{str(item_raw[row])!r};"
                            " expected one row per (user, item) pair (set duplicates: last to keep the last one)")
        keep = ~dup
        dropped = {"duplicate rows (duplicates: last keeps the last)": int(dup.sum())}
        if self.options["implicit"]:
            dropped["rows with weight <= 0 (implicit)"] = int((keep & (rows["rating"] <= 0)).sum())
            keep &= rows["rating"] > 0
        return keep, dropped

    def _splits(self, labels: np.ndarray) -> tuple[Tensor, Tensor]:
        """(state [N]: index into ``state_names`` = the rows' "stage/scenario", part [N] int8: 0, 1 support,
        2 query) of the rows' split labels; sets ``self.state_names``."""
        codes, uniques = pd.factorize(labels, sort=True)
        parsed = [parse_label(u) for u in uniques]
        names = sorted({f"{stage}/{scenario}" for stage, scenario, _ in parsed},
                       key=lambda n: (STAGES.index(n.split("/", 1)[0]), n))
        if not any(n.startswith("train/") for n in names):
            raise DataError(f"interactions: the splits ({', '.join(map(str, uniques))}) have no training rows; "
                            f"expected some rows labelled {LABEL_FORMAT.split(',')[0]}")
        for name in names:
            kinds = {p for stage, scenario, p in parsed if f"{stage}/{scenario}" == name}
            if 0 in kinds and len(kinds) > 1 or kinds == {1} or kinds == {2}:
                raise DataError(f"interactions: split {name}: rows marked /support or /query must be all of its "
                                f"rows, with both parts; expected {name}/support and {name}/query only (or {name} "
                                "alone)")
        state_of = np.array([names.index(f"{stage}/{scenario}") for stage, scenario, _ in parsed], dtype=np.int64)
        part_of = np.array([p for _, _, p in parsed], dtype=np.int8)
        self.state_names = tuple(names)
        return torch.from_numpy(state_of[codes]), torch.from_numpy(part_of[codes])

    def _features(self, side: str, ids: np.ndarray, raw: np.ndarray, rows: np.ndarray,
                  where: Callable[[int], str]) -> tuple[dict[str, Tensor], list[FeatureSpec]]:
        spec = self.options[f"{side}_features"]
        if not spec:
            return {}, []
        unknown_keys = sorted(set(spec) - {"path", "id", "fields", "sep", "multi_sep", "header", "format"})
        if unknown_keys:
            raise DataError(f"interactions: {side}_features: unknown key(s) {', '.join(unknown_keys)}; expected path,"
                            " id, fields, sep, multi_sep, header, format")
        table = read_table(require(self.root, spec["path"]), spec.get("format", "auto"), spec.get("sep"),
                           spec.get("header", True), self.options["encoding"])
        key = np.char.strip(table.column(spec["id"], f"{side} id").to_numpy(str))
        dup = pd.Series(key).duplicated().to_numpy()
        if dup.any():
            raise DataError(f"{table.where(int(np.argmax(dup)))}: {side} id {str(key[np.argmax(dup)])!r} appears twice; "
                            "expected one row per id")
        code = pd.Index(ids).get_indexer(key)  # -1: not in the log (ignored)
        missing = ~pd.Index(ids).isin(key)
        if missing.any():
            raw_id = str(ids[int(np.argmax(missing))])
            row = rows[int(np.argmax(raw == raw_id))]
            raise DataError(f"{where(int(row))}: {side} {raw_id!r} has no row in {table.path.name}; expected every"
                            f" {side} of the log in its feature table")
        here = code >= 0
        tables, schema = {}, []
        for name, kind in (spec.get("fields") or {}).items():
            col = table.column(name, f"{side} feature")
            if kind == "categorical":
                tables[f"{side}_{name}"], size = categorical(code[here], col.to_numpy(str)[here].tolist(), len(ids))
            elif kind == "multi":
                lists = [[v.strip() for v in s.split(spec.get("multi_sep", "|")) if v.strip()]
                         for s in col.to_numpy(str)[here]]
                tables[f"{side}_{name}"], size = multi(code[here], lists, len(ids))
            elif kind == "dense":
                values = table.numbers(name, f"{side} feature {name}")
                dense = torch.zeros(len(ids), 1)
                dense[torch.from_numpy(code[here])] = torch.from_numpy(values[here]).float()[:, None]
                tables[f"{side}_{name}"], size = dense, 1
            else:
                raise DataError(f"interactions: {side}_features.fields.{name}: kind must be categorical, multi or "
                                f"dense, got {kind!r}")
            schema.append(FeatureSpec(side, name, kind, size))
        return tables, schema
