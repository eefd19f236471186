"""The on-disk cache of prepared data sets (Hugging Face ``datasets`` Arrow files), and the base class of every
data set that reads files.

The cache key is a hash of the data set class, ``CACHE_VERSION``, the protocol's name and version, every option,
and the *content* (blake2b) of every input file: a changed file or option gets a new entry, never a stale one.
An entry is a ``DatasetDict`` (rows, feature tables, splits, item texts) written by ``save_to_disk`` into a
temporary folder and renamed into place, so a failure leaves no half-written entry.  Old entries are not pruned.

Location: ``cache_dir`` option, else ``$METAREC_PL_CACHE``, else ``~/.cache/metarec_pl``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import torch
import datasets
from datasets import Dataset, DatasetDict, load_from_disk
from datasets.table import InMemoryTable
from torch import Tensor

from metarec_pl.data import protocols
from metarec_pl.data.base import RatingDataset
from metarec_pl.data.types import FeatureSpec, RatingData

log = logging.getLogger(__name__)

CACHE_VERSION = 1
CACHE_ENV = "METAREC_PL_CACHE"


def cache_root(cache_dir: Optional[str] = None) -> Path:
    return Path(cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "metarec_pl")


def file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def cache_key(kind: str, options: dict[str, Any], files: list[Path]) -> str:
    ident = {"kind": kind, "cache_version": CACHE_VERSION, "options": options,
             "files": [[p.name, file_digest(p)] for p in files]}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _column(t: Tensor) -> pa.Array:
    a = t.numpy()
    if a.ndim == 1:
        return pa.array(a)
    return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])


def _table(columns: dict[str, Tensor]) -> Dataset:
    return Dataset(InMemoryTable(pa.table({k: _column(v) for k, v in columns.items()} or {"_": pa.array([0])})))


def _tensor(column) -> Tensor:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_fixed_size_list(column.type):
        width = column.type.list_size
        return torch.from_numpy(np.array(column.flatten().to_numpy()).reshape(-1, width))
    return torch.from_numpy(np.array(column.to_numpy(zero_copy_only=False)))


def _save_parts(path: Path, parts: dict[str, Dataset]) -> None:
    DatasetDict(parts).save_to_disk(str(path))


def save(data: RatingData, path: Path) -> None:
    rows = {"user": data.user, "item": data.item, "rating": data.rating}
    if data.time is not None:
        rows["time"] = data.time
    splits = [(stage, scenario, idx) for stage, s in data.splits.items() for scenario, idx in s.items()]
    split_table = Dataset(InMemoryTable(pa.table({
        "stage": [s for s, _, _ in splits], "scenario": [c for _, c, _ in splits],
        "rows": pa.array([idx.numpy() for _, _, idx in splits], type=pa.list_(pa.int64()))})))
    text = data.item_text or {}
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        _save_parts(path, {
        "rows": _table(rows), "user_features": _table(data.user_features),
        "item_features": _table(data.item_features), "splits": split_table,
        "item_text": Dataset(InMemoryTable(pa.table({"item": pa.array(list(text), pa.int64()),
                                                      "text": pa.array(list(text.values()), pa.string())}))),
        })
    finally:
        if bars:
            datasets.enable_progress_bars()
    meta = {"schema": [asdict(f) for f in data.schema], "rating_range": list(data.rating_range)}
    (path / "metarec_meta.json").write_text(json.dumps(meta))


def load(path: Path) -> RatingData:
    parts = load_from_disk(str(path))
    meta = json.loads((path / "metarec_meta.json").read_text())
    table = {name: parts[name].data.table for name in parts}

    def columns(name: str) -> dict[str, Tensor]:
        return {c: _tensor(table[name].column(c)) for c in table[name].column_names if c != "_"}

    rows = columns("rows")
    splits: dict[str, dict[str, Tensor]] = {}
    s = table["splits"].to_pydict() if table["splits"].num_rows else {"stage": [], "scenario": [], "rows": []}
    for i, (stage, scenario) in enumerate(zip(s["stage"], s["scenario"])):
        splits.setdefault(stage, {})[scenario] = _tensor(table["splits"].column("rows")[i].values)
    text = table["item_text"].to_pydict()
    return RatingData(
        user=rows["user"], item=rows["item"], rating=rows["rating"], time=rows.get("time"),
        user_features=columns("user_features"), item_features=columns("item_features"),
        schema=[FeatureSpec(**f) for f in meta["schema"]], splits=splits,
        rating_range=tuple(meta["rating_range"]), item_text=dict(zip(text["item"], text["text"])) or None,
    )


def cached(kind: str, options: dict[str, Any], files: list[Path], build, cache_dir: Optional[str] = None,
           enabled: bool = True) -> RatingData:
    """The cached result of ``build()`` for these options and file contents; built and stored on a miss."""
    if not enabled:
        return build()
    root = cache_root(cache_dir)
    path = root / f"{kind}-{cache_key(kind, options, files)}"
    if (path / "metarec_meta.json").is_file():
        log.info("%s: loading cached %s", kind, path)
        return load(path)
    data = build()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{kind}-", dir=root))
    try:
        save(data, tmp)
        try:
            os.replace(tmp, path)
        except OSError:  # another process stored the same entry first
            if not (path / "metarec_meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s: cached in %s", kind, path)
    return data


class FileDataset(RatingDataset):
    """A data set read from files under ``root`` and split by a named protocol, with a cached result.

    Subclasses implement ``files()`` (every input file) and ``read()`` (-> ``RatingData`` without splits, and the
    rows' state labels if the data set has them).  Options a subclass keeps in ``self.options`` are part of the
    cache key; ``protocol_options`` (e.g. ``seed``, ``val_fraction``) are the protocol's.
    """

    kind = "file"
    state_names: tuple[str, ...] = ()

    def __init__(self, root: Optional[str] = None, protocol: str = "user-cold", cache_dir: Optional[str] = None,
                 cache: bool = True, **protocol_options: Any) -> None:
        super().__init__(root)
        self.protocol = protocols.get(protocol, protocol_options)
        self.protocol_options = protocol_options
        self.cache_dir, self.use_cache = cache_dir, cache
        self.options: dict[str, Any] = {}

    @property
    def sampler_order(self) -> Optional[str]:
        """The task order the protocol needs (``temporal``: ``time``); checked by ``MetaDataModule``."""
        return self.protocol.sampler_order

    def files(self) -> list[Path]:
        raise NotImplementedError

    def read(self) -> tuple[RatingData, Optional[Tensor]]:
        raise NotImplementedError

    def item_times(self) -> Optional[Tensor]:
        """[num_items] release time of each item id (larger = later, NaN unknown), for protocols that hold out
        the newest items; ``None`` when the files have none."""
        return None

    def build(self) -> RatingData:
        data, state = self.read()
        rows = protocols.Rows(data.user, data.item, data.time, state, self.state_names, name=self.kind,
                              item_time=self.item_times())
        data.splits = protocols.make_splits(self.protocol.name, rows, self.protocol_options)
        return data

    def load(self) -> RatingData:
        options = {"options": self.options, "protocol": [self.protocol.name, self.protocol.version],
                   "protocol_options": self.protocol_options}
        return cached(self.kind, options, self.files(), self.build, self.cache_dir, self.use_cache)
