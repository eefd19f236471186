"""Named, versioned cold-start protocols: rows -> ``RatingData.splits`` (stage -> scenario -> row indices).

Protocols are a plugin kind (``Protocol``, hook ``register_protocols``): the built-ins below register through
``metarec_pl.builtin.protocols`` as a third-party protocol does through its own entry point.

A protocol is what a config states and a result cites (``user-cold/v1 seed=0``); its version is part of the data
cache key, so changing a protocol's rules means bumping its version.  Validation always comes from training
users (or, for ``item-cold``, training users on held-out items), never from test users.  The support/query split
inside each task is the task sampler's job (``data.sampler_args``).

* ``melu``: MeLU's state files.  Per state, users with ``min_ratings``..``max_ratings`` ratings in that state
  (13..100) are kept.  Warm users are split into train / val / held-out warm test; test scenarios ``warm``,
  ``user-cold``, ``item-cold``, ``user+item-cold``.  MeLU's tasks: ``sampler_args: {query_size: 10, min_support: 3}``.
  ``val_items`` (a fraction, default 0) holds that share of the warm items out of training and adds the
  validation scenario ``item-cold``: the training users' ratings of those items (users with ``min_ratings`` or
  more), so choices about new items are made on validation data too; the test scenarios are unchanged.
  ``val_items_by``: ``random`` (a seeded random share) or ``newest`` (the latest releases, as MeLU's new items
  are; needs the data set's item release times).
  ``version``: ``1`` (default; MeLU's paper: the 13..100 filter applies to training too) or ``2`` (all warm
  ratings): the validation and held-out warm users are exactly those of version 1 (filtered users, same split),
  and training holds every warm rating of every other warm user, however few or many ratings they have (MeLU's
  ML-1M: 4,832 warm users, 640,448 ratings, against 2,653 users and 121,811 ratings filtered).  Pair it with the
  sampler's ``chunk_rows`` so a heavy user's history becomes several bounded tasks.
* ``user-cold``: users split train/val/test; test users never appear in training.  K-shot evaluation:
  ``sampler_args: {min_support: K, max_support: K, query_size: Q}``.
* ``item-cold``: items ordered by ``by`` (``count``: fewest ratings first, ``time``: latest first appearance
  first, ``random``); the coldest ``test_fraction`` are test items, the next ``val_fraction`` val items; no
  rating of either is ever in training.
* ``given``: the splits a data set's files state (``interactions``' ``split_files`` or ``columns.split``): each
  label ``stage/scenario`` becomes ``splits[stage][scenario]`` as written; ``min_ratings`` / ``max_ratings``
  (default none) filter users per split only when given.
* ``temporal``: users split as in ``user-cold`` and each task's support = the user's earliest ratings, query = the
  latest (preference drift); needs timestamps and ``sampler_args.order: time``.
* ``sequential-cold``: training = rows before the time cut T (80th percentile of users' first interactions);
  users first seen after T are cold (validation apart from test), each with their first K rows as support and the
  next Q as query (``metarec_pl/data/sequential.py``); ``sampler_args: {order: time, max_support: K, query_size: Q}``.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
from torch import Tensor

from metarec_pl import plugins
from metarec_pl.data import sequential
from metarec_pl.data.types import DataError

log = logging.getLogger(__name__)

Splits = dict[str, dict[str, Tensor]]
MELU_STATES = ("warm", "user-cold", "item-cold", "user+item-cold")


@dataclass(frozen=True)
class Rows:
    """What a protocol sees: the rows' user, item, optional time and optional state label (index into
    ``state_names``)."""

    user: Tensor
    item: Tensor
    time: Optional[Tensor] = None
    state: Optional[Tensor] = None
    state_names: tuple[str, ...] = ()
    name: str = "data"  # for messages
    item_time: Optional[Tensor] = None  # [num_items] release time of each item id (larger = later; NaN: unknown)


def _rows(mask: Tensor) -> Tensor:
    return torch.nonzero(mask).flatten()


def _keep_users(rows: Rows, candidates: Tensor, min_ratings: Optional[int], max_ratings: Optional[int],
                where: str) -> Tensor:
    """``candidates`` (row indices) of users whose number of rows among ``candidates`` is within bounds."""
    if min_ratings is None and max_ratings is None:
        return candidates
    users = rows.user[candidates]
    counts = torch.bincount(users)  # ids are non-negative; bincount avoids a sort
    present = counts > 0
    ok = present.clone()
    if min_ratings is not None:
        ok &= counts >= min_ratings
    if max_ratings is not None:
        ok &= counts <= max_ratings
    dropped, total = int((present & ~ok).sum()), int(present.sum())
    if dropped:
        log.info("%s: %s: filtered out %d of %d users with fewer than %s or more than %s ratings", rows.name, where,
                 dropped, total, min_ratings, max_ratings)
    if not ok.any():
        seen = counts[present]
        raise DataError(f"{rows.name}: {where}: no user is left after keeping users with {min_ratings}..{max_ratings}"
                        f" ratings ({total} users had {int(seen.min()) if total else 0}..{int(seen.max()) if total else 0})")
    return candidates[ok[users]]


def _split_ids(ids: Tensor, fractions: list[float], seed: int, what: str) -> list[Tensor]:
    """Seeded random split of ``ids`` into parts of the given fractions plus the rest (first)."""
    if any(f < 0 for f in fractions) or sum(fractions) >= 1:
        raise DataError(f"{what}: fractions {fractions} must be >= 0 and sum to less than 1")
    perm = ids[torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed))]
    sizes = [round(f * len(ids)) for f in fractions]
    if any(f > 0 and s == 0 for f, s in zip(fractions, sizes)) or sum(sizes) >= len(ids):
        raise DataError(f"{what}: {len(ids)} ids are too few to split by {fractions}")
    parts, at = [], 0
    for s in sizes:
        parts.append(perm[at:at + s])
        at += s
    return [perm[at:]] + parts


def _member(values: Tensor, members: Tensor) -> Tensor:
    """``values`` in ``members`` (non-negative ids), by table look-up (far faster than ``torch.isin``)."""
    size = max([0] + [int(t.max()) for t in (values, members) if len(t)]) + 1
    table = torch.zeros(size, dtype=torch.bool)
    table[members] = True
    return table[values]


def _ids(values: Tensor) -> Tensor:
    """The distinct non-negative ids, ascending."""
    return torch.nonzero(torch.bincount(values)).flatten() if len(values) else values


def _of_users(rows: Rows, candidates: Tensor, users: Tensor) -> Tensor:
    return candidates[_member(rows.user[candidates], users)]


def user_cold(rows: Rows, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.1,
              min_ratings: Optional[int] = None, max_ratings: Optional[int] = None) -> Splits:
    every = _keep_users(rows, torch.arange(len(rows.user)), min_ratings, max_ratings, "user-cold")
    train, val, test = _split_ids(_ids(rows.user[every]), [val_fraction, test_fraction], seed, "user-cold")
    return {"train": {"train": _of_users(rows, every, train)}, "val": {"user-cold": _of_users(rows, every, val)},
            "test": {"user-cold": _of_users(rows, every, test)}}


def temporal(rows: Rows, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.1,
             min_ratings: Optional[int] = None, max_ratings: Optional[int] = None) -> Splits:
    if rows.time is None:
        raise DataError(f"{rows.name}: protocol 'temporal' needs timestamps, and this ratings file has none")
    splits = user_cold(rows, seed, val_fraction, test_fraction, min_ratings, max_ratings)
    return {"train": splits["train"], "val": {"temporal": splits["val"]["user-cold"]},
            "test": {"temporal": splits["test"]["user-cold"]}}


def item_cold(rows: Rows, seed: int = 0, by: str = "count", val_fraction: float = 0.1, test_fraction: float = 0.2,
              min_ratings: Optional[int] = None, max_ratings: Optional[int] = None) -> Splits:
    every = _keep_users(rows, torch.arange(len(rows.user)), min_ratings, max_ratings, "item-cold")
    item = rows.item[every]
    items = _ids(item)
    gen = torch.Generator().manual_seed(seed)
    shuffle = torch.randperm(len(items), generator=gen)  # random order, also the tie-break below
    if by == "count":
        counts = torch.bincount(item)[items]
        order = shuffle[torch.argsort(counts[shuffle], stable=True)]
    elif by == "time":
        if rows.time is None:
            raise DataError(f"{rows.name}: protocol 'item-cold' with by=time needs timestamps, and this ratings file "
                            "has none (use by: count or by: random)")
        first = torch.full((int(items.max()) + 1,), float("inf"), dtype=torch.float64)
        first = first.scatter_reduce(0, item, rows.time[every].double(), reduce="amin")[items]
        order = shuffle[torch.argsort(-first[shuffle], stable=True)]
    elif by == "random":
        order = shuffle
    else:
        raise DataError(f"protocol item-cold: by must be 'count', 'time' or 'random', got {by!r}")
    n_test, n_val = round(test_fraction * len(items)), round(val_fraction * len(items))
    if n_test < 1 or n_val < 1 or n_test + n_val >= len(items):
        raise DataError(f"protocol item-cold: {len(items)} items are too few to split by val_fraction={val_fraction},"
                        f" test_fraction={test_fraction}")
    test_items, val_items = items[order[:n_test]], items[order[n_test:n_test + n_val]]
    in_test, in_val = _member(item, test_items), _member(item, val_items)
    return {"train": {"train": every[~in_test & ~in_val]}, "val": {"item-cold": every[in_val]},
            "test": {"item-cold": every[in_test]}}


def melu(rows: Rows, seed: int = 0, val_fraction: float = 0.1, warm_test_fraction: float = 0.1,
         min_ratings: Optional[int] = 13, max_ratings: Optional[int] = 100, val_items: float = 0.0,
         val_items_by: str = "random", version: int = 1) -> Splits:
    if rows.state is None or tuple(rows.state_names) != MELU_STATES:
        raise DataError(f"{rows.name}: protocol 'melu' needs MeLU's state files (data set melu-movielens-1m)")
    if val_items_by not in ("random", "newest"):
        raise DataError(f"protocol melu: val_items_by must be 'random' or 'newest', got {val_items_by!r}")
    if val_items and val_items_by == "newest" and rows.item_time is None:
        raise DataError(f"{rows.name}: protocol melu: val_items_by 'newest' needs item release times, and this data "
                        "set has none; use 'random'")
    if version not in (1, 2):
        raise DataError(f"protocol melu: version must be 1 (the 13..100 filter on training too) or 2 (training on "
                        f"every warm rating), got {version!r}")
    state = {name: _keep_users(rows, _rows(rows.state == i), min_ratings, max_ratings, name)
             for i, name in enumerate(MELU_STATES)}
    warm = state.pop("warm")
    train, val, test = _split_ids(_ids(rows.user[warm]), [val_fraction, warm_test_fraction], seed, "melu warm")
    if version == 2:  # every warm user but the validation and held-out ones, every rating of theirs
        every_warm = _rows(rows.state == MELU_STATES.index("warm"))
        held = torch.cat([val, test])
        train_rows = every_warm[~_member(rows.user[every_warm], held)]
    else:
        train_rows = _of_users(rows, warm, train)
    splits = {"train": {"train": train_rows}, "val": {"warm": _of_users(rows, warm, val)},
              "test": {"warm": _of_users(rows, warm, test), **state}}
    if val_items:  # validation on new items: the training users' ratings of held-out warm items
        warm_items = _ids(rows.item[warm])
        _, held_out = _split_ids(warm_items, [val_items], seed + 1, "melu val_items")  # checks the fraction
        if val_items_by == "newest":  # as many items, the latest releases (unknown times count as oldest)
            when = rows.item_time[warm_items].nan_to_num(nan=-float("inf"))
            held_out = warm_items[torch.argsort(when, descending=True, stable=True)[:len(held_out)]]
        train_rows = splits["train"]["train"]
        cold = train_rows[_member(rows.item[train_rows], held_out)]
        splits["val"]["item-cold"] = _keep_users(rows, cold, min_ratings, None, "melu val_items")
        for stage, scenario in (("train", "train"), ("val", "warm")):
            idx = splits[stage][scenario]
            splits[stage][scenario] = idx[~_member(rows.item[idx], held_out)]
    return splits


def given(rows: Rows, seed: int = 0, min_ratings: Optional[int] = None, max_ratings: Optional[int] = None) -> Splits:
    """The splits the files state: ``rows.state_names[k]`` = ``"stage/scenario"`` of the rows with state ``k``."""
    if rows.state is None or not rows.state_names or not all("/" in n for n in rows.state_names):
        raise DataError(f"{rows.name}: protocol 'given' needs split labels (interactions: split_files or "
                        "columns.split); expected a data set whose files state the splits")
    splits: Splits = {}
    for k, label in enumerate(rows.state_names):
        stage, scenario = label.split("/", 1)
        splits.setdefault(stage, {})[scenario] = _keep_users(rows, _rows(rows.state == k), min_ratings, max_ratings,
                                                             label)
    return splits


class Protocol:
    """A named, versioned rule that splits a data set's rows into ``RatingData.splits`` (stage -> scenario -> row
    indices): the ``protocol`` option of every file data set (``FileDataset``), registered through the
    ``register_protocols`` hook; the built-ins below register the same way.

    A subclass implements ``split(rows, seed=0, **options)``: ``rows`` is a ``Rows`` (the data set's user, item,
    optional time and state label per row); every other keyword argument, with its default, is an option a config
    may give in ``data.dataset_args`` (``options()`` lists them; an unknown one is a one-line ``DataError``).  It
    returns ``{"train": {"train": idx}, "val": {scenario: idx}, "test": {scenario: idx}}`` of ``[n]`` long row
    indices; a split left empty is a one-line ``DataError``.  Validation rows should come from training users or
    items, never from test ones.  Bad input (a data set without what the protocol needs): raise ``DataError``.

    ``version`` is part of the data cache key: bump it whenever the rules change, so no stale split is reused.
    ``sampler_order``: the task order the protocol needs from the sampler (``"time"`` for ``temporal``), checked by
    ``MetaDataModule``.  Built with no argument; ``name`` is the name it was registered under.
    """

    version: ClassVar[int] = 1
    sampler_order: ClassVar[Optional[str]] = None
    name: str = ""

    def split(self, rows: Rows, seed: int = 0) -> Splits:
        raise NotImplementedError

    def options(self) -> dict[str, object]:
        """Option names and defaults (the keyword arguments of ``split`` after ``rows``)."""
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return {n: p.default for n, p in inspect.signature(self.split).parameters.items()
                if n != "rows" and p.kind in kinds}


class MeLUStates(Protocol):
    """``melu``: MeLU's state files (module docstring)."""

    split = staticmethod(melu)


class UserCold(Protocol):
    """``user-cold``: users split train / val / test (module docstring)."""

    split = staticmethod(user_cold)


class ItemCold(Protocol):
    """``item-cold``: the coldest items held out (module docstring)."""

    split = staticmethod(item_cold)


class Temporal(Protocol):
    """``temporal``: users split as in ``user-cold``, each task's support before its query (module docstring)."""

    sampler_order = "time"
    split = staticmethod(temporal)


class SequentialCold(Protocol):
    """``sequential-cold``: next-item cold start in time, for sequence recommenders (``metarec_pl/data/sequential.py``)."""
    sampler_order = "time"
    split = staticmethod(sequential.sequential_cold)


class Given(Protocol):
    """``given``: the splits the files state (module docstring)."""

    split = staticmethod(given)


def lookup(name: str) -> Protocol:
    """The protocol registered as ``name`` (built-in or from a plugin); ``DataError`` in one line when no plugin
    registered it (the choices listed) or its reference does not import."""
    try:
        cls = plugins.get("protocol", name)
    except plugins.UnknownPluginError as exc:
        raise DataError(f"data.dataset_args.protocol: {exc}") from None
    protocol = cls()
    protocol.name = name
    return protocol


def make_splits(protocol: Protocol, rows: Rows, options: dict) -> Splits:
    """``protocol.split(rows, **options)``, with a one-line ``DataError`` for a split it left empty."""
    splits = protocol.split(rows, **options)
    for stage, scenarios in splits.items():
        for scenario, idx in scenarios.items():
            if len(idx) == 0:
                raise DataError(f"{rows.name}: protocol {protocol.name!r} left no rows in {stage}/{scenario}")
    return splits
