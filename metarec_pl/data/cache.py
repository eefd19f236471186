"""The on-disk cache of prepared data sets (Arrow IPC files), and the base class of every data set that reads files.

The cache key is a hash of the data set class, ``CACHE_VERSION``, the protocol's name and version, every option,
and the *content* (blake2b) of every input file: a changed file or option gets a new entry, never a stale one.
An entry is a folder of Arrow IPC files, one per part (``rows``, ``user_features``, ``item_features``, ``splits``,
``item_text``, ``user_ids``, ``item_ids``; a part may have zero rows, e.g. no item texts) plus
``metarec_meta.json`` (schema, rating range, what reading dropped), written into a temporary folder and renamed
into place, so a failure leaves no half-written entry.  Old entries are not pruned.

Location: ``cache_dir`` option, else ``$METAREC_PL_CACHE``, else ``~/.cache/metarec_pl``.
"""

from __future__ import annotations

import hashlib
import inspect
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
from torch import Tensor

from metarec_pl.data import protocols
from metarec_pl.data.base import RatingDataset
from metarec_pl.data.types import DataError, FeatureSpec, RatingData

log = logging.getLogger(__name__)

CACHE_VERSION = 3  # 2: Arrow IPC files per part, raw id maps, dropped-row counts; 3: feedback, parts, no negatives
CACHE_ENV = "METAREC_PL_CACHE"
PARTS = ("rows", "user_features", "item_features", "splits", "item_text", "user_ids", "item_ids")


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


def _tensor(column) -> Tensor:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_fixed_size_list(column.type):
        width = column.type.list_size
        values = np.asarray(column.flatten().to_numpy(zero_copy_only=False))
        return torch.from_numpy(values.reshape(-1, width).copy())
    return torch.from_numpy(np.array(column.to_numpy(zero_copy_only=False)))


def _write(path: Path, table: pa.Table) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def _read(path: Path) -> pa.Table:
    with pa.memory_map(str(path), "r") as source:
        return pa.ipc.open_file(source).read_all()


def _ids(ids) -> pa.Table:
    return pa.table({"raw": pa.array([] if ids is None else list(ids), pa.string())})


def save(data: RatingData, path: Path) -> None:
    """Write ``data`` into the folder ``path`` (every part, even one with zero rows, as an Arrow IPC file)."""
    rows = {"user": data.user, "item": data.item, "rating": data.rating}
    if data.time is not None:
        rows["time"] = data.time
    if data.part is not None:
        rows["part"] = data.part
    splits = [(stage, scenario, idx) for stage, s in data.splits.items() for scenario, idx in s.items()]
    text = data.item_text or {}
    parts = {
        "rows": pa.table({k: _column(v) for k, v in rows.items()}),
        "user_features": pa.table({k: _column(v) for k, v in data.user_features.items()}),
        "item_features": pa.table({k: _column(v) for k, v in data.item_features.items()}),
        "splits": pa.table({"stage": pa.array([s for s, _, _ in splits], pa.string()),
                            "scenario": pa.array([c for _, c, _ in splits], pa.string()),
                            "rows": pa.array([idx.numpy() for _, _, idx in splits], type=pa.list_(pa.int64()))}),
        "item_text": pa.table({"item": pa.array(list(text), pa.int64()),
                               "text": pa.array(list(text.values()), pa.string())}),
        "user_ids": _ids(data.user_ids), "item_ids": _ids(data.item_ids),
    }
    for name, table in parts.items():
        _write(path / f"{name}.arrow", table)
    meta = {"schema": [asdict(f) for f in data.schema], "rating_range": list(data.rating_range),
            "has_item_text": data.item_text is not None, "has_ids": [data.user_ids is not None,
                                                                     data.item_ids is not None],
            "dropped": data.dropped, "feedback": data.feedback}
    (path / "metarec_meta.json").write_text(json.dumps(meta))


def load(path: Path) -> RatingData:
    """The ``RatingData`` stored by ``save`` in ``path``."""
    meta = json.loads((path / "metarec_meta.json").read_text())
    table = {name: _read(path / f"{name}.arrow") for name in PARTS}

    def columns(name: str) -> dict[str, Tensor]:
        return {c: _tensor(table[name].column(c)) for c in table[name].column_names}

    rows = columns("rows")
    splits: dict[str, dict[str, Tensor]] = {}
    s = table["splits"].to_pydict()
    for i, (stage, scenario) in enumerate(zip(s["stage"], s["scenario"])):
        splits.setdefault(stage, {})[scenario] = _tensor(table["splits"].column("rows")[i].values).long()
    text = table["item_text"].to_pydict()
    ids = [table[f"{side}_ids"].column("raw").to_pylist() if has else None
           for side, has in zip(("user", "item"), meta["has_ids"])]
    return RatingData(
        user=rows["user"], item=rows["item"], rating=rows["rating"], time=rows.get("time"),
        user_features=columns("user_features"), item_features=columns("item_features"),
        schema=[FeatureSpec(**f) for f in meta["schema"]], splits=splits,
        rating_range=tuple(meta["rating_range"]),
        item_text=dict(zip(text["item"], text["text"])) if meta["has_item_text"] else None,
        user_ids=ids[0], item_ids=ids[1], dropped=dict(meta["dropped"]), feedback=meta["feedback"],
        part=rows.get("part"),
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
    """A data set read from files under ``root``, split by a named protocol, with a cached result: the base of every
    built-in file data set and the one to subclass for a new file format (docs/plugins.md has a tutorial).

    A subclass sets ``kind`` (a short name: the cache folder's prefix and the name in messages) and implements
    ``files()`` (every input file: their contents are part of the cache key, so an edited file is never served
    stale) and ``read()`` -> ``(RatingData with splits={}, state)``: ``state`` is ``None`` or ``[N]`` long labels
    indexing ``state_names`` (e.g. MeLU's warm/cold state files), which protocols such as ``melu`` and ``given``
    read.  Options the subclass keeps in ``self.options`` (plain data) are part of the cache key too; every other
    keyword argument (``seed``, ``val_fraction``, ...) goes to the protocol, chosen by ``protocol`` (any registered
    name, ``metarec plugins`` lists them).  ``load()`` = the cache entry for (class kind, options, protocol name and
    version, file contents), else ``build()`` = ``read()`` + the protocol's split, stored.  Bad files or options:
    raise ``DataError`` (one line naming file, line and column and what was expected).

    Args:
        root: the folder holding the files.
        protocol: the registered protocol that decides the splits (default ``user-cold``).
        cache_dir: the cache folder (default ``$METAREC_PL_CACHE``, else ``~/.cache/metarec_pl``).
        cache: ``False`` reads the files every time.
        **protocol_options: the protocol's options; an unknown one is a one-line ``DataError`` naming both this
            class's options and the protocol's.
    """

    kind = "file"
    state_names: tuple[str, ...] = ()

    def __init__(self, root: Optional[str] = None, protocol: str = "user-cold", cache_dir: Optional[str] = None,
                 cache: bool = True, **protocol_options: Any) -> None:
        super().__init__(root)
        self.protocol = protocols.lookup(protocol)
        taken = list(self.protocol.options())
        unknown = [k for k in protocol_options if k not in taken]
        if unknown:  # a key neither the data set nor its protocol takes: one line
            own = [n for n, p in inspect.signature(type(self)).parameters.items()
                   if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n != "root"]
            raise DataError(
                f"data.dataset_args: unknown option {unknown[0]!r} for data set {type(self).__name__}: neither "
                f"its own ({', '.join(own)}) nor its protocol's (protocol {protocol!r}: unknown option(s) "
                f"{', '.join(map(str, unknown))}; expected some of: {', '.join(taken)})")
        self.protocol_options = protocol_options
        self.cache_dir, self.use_cache = cache_dir, cache
        self.options: dict[str, Any] = {}

    @property
    def sampler_order(self) -> Optional[str]:
        """The task order the protocol needs (``temporal``: ``time``); checked by ``MetaDataModule``."""
        return self.protocol.sampler_order

    def files(self) -> list[Path]:
        """Every input file (their contents are hashed into the cache key); ``DataError`` for a missing one."""
        raise NotImplementedError

    def read(self) -> tuple[RatingData, Optional[Tensor]]:
        """The data without splits (``splits={}``) and the rows' ``[N]`` state labels (``None``: none)."""
        raise NotImplementedError

    def item_times(self) -> Optional[Tensor]:
        """[num_items] release time of each item id (larger = later, NaN unknown), for protocols that hold out
        the newest items; ``None`` when the files have none."""
        return None

    def build(self) -> RatingData:
        data, state = self.read()
        rows = protocols.Rows(data.user, data.item, data.time, state, self.state_names, name=self.kind,
                              item_time=self.item_times())
        data.splits = protocols.make_splits(self.protocol, rows, self.protocol_options)
        return data

    def load(self) -> RatingData:
        options = {"options": self.options, "protocol": [self.protocol.name, self.protocol.version],
                   "protocol_options": self.protocol_options}
        return cached(self.kind, options, self.files(), self.build, self.cache_dir, self.use_cache)
