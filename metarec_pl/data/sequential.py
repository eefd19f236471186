"""Protocol ``sequential-cold`` (v1): next-item cold start in time, for sequence recommenders.

Why a protocol of its own: ``user-cold`` draws held-out users at random, so a "new" user's interactions overlap
the training period and the model is trained on the future of the test users' catalogue.  Here the past trains
and the future tests, as in production:

* ``T`` = the ``quantile`` (default 0.8, the 80th percentile; ``torch.quantile``'s ``lower`` interpolation, so T
  is some user's first-interaction time) of the users' first-interaction times;
* **training** = every row with time < T (only users whose first interaction is before T have such rows);
* **cold users** = users whose first interaction is after T; seeded apart into **validation** (``val_fraction``)
  and **test** users, the two sets disjoint;
* a cold user's task = their first ``support_size`` (K) interactions in time order (the support, the only
  context the model may see) followed by the next ``query_size`` interactions whose items are neither in the
  support nor earlier in the query (normally the very next ones: MovieLens has no repeated (user, item));
  later rows of the user are dropped, so no query item is ever visible in the support context, and no cold user's
  row is in training.  Cold users with fewer than K + ``query_size`` such rows are dropped (logged).

Ties in time are broken by row order; the returned rows are in row order, and the protocol asks the sampler for
``order: time`` with ``max_support: K, query_size: Q``, which then puts exactly these K rows in the support and
these Q in the query.  Scenario name: ``sequential-cold`` (validation and test).

Registered through the ``register_protocols`` hook (``metarec_pl/builtin/protocols.py``, class ``SequentialCold`` in ``metarec_pl/data/protocols.py``).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from metarec_pl.data.types import DataError

log = logging.getLogger(__name__)

SCENARIO = "sequential-cold"


def time_cut(user: Tensor, time: Tensor, quantile: float) -> tuple[float, Tensor, Tensor]:
    """(T, first [num_users] float64 first-interaction time (inf: no row), present [num_users] bool)."""
    n = int(user.max()) + 1 if len(user) else 0
    first = torch.full((n,), float("inf"), dtype=torch.float64).scatter_reduce(0, user, time.double(), "amin")
    present = torch.isfinite(first)
    cut = float(torch.quantile(first[present], quantile, interpolation="lower"))
    return cut, first, present


def _cold_rows(rows_of_user: Tensor, item: Tensor, time: Tensor, support_size: int, query_size: int) -> Tensor:
    """The K support + Q query row indices of one cold user (row order), or an empty tensor if too few."""
    order = rows_of_user[torch.argsort(time[rows_of_user], stable=True)]  # rows_of_user ascending: ties by row
    support = order[:support_size]
    seen = set(item[support].tolist())
    query = []
    for row in order[support_size:].tolist():
        it = int(item[row])
        if it not in seen:
            query.append(row)
            seen.add(it)
            if len(query) == query_size:
                break
    if len(support) < support_size or len(query) < query_size:
        return order[:0]
    return torch.sort(torch.cat([support, torch.tensor(query, dtype=torch.long)])).values


def _check(support_size: int, query_size: int, quantile: float, val_fraction: float) -> None:
    if not (isinstance(support_size, int) and support_size >= 1):
        raise DataError(f"protocol sequential-cold: support_size must be an integer >= 1, got {support_size!r}")
    if not (isinstance(query_size, int) and query_size >= 1):
        raise DataError(f"protocol sequential-cold: query_size must be an integer >= 1, got {query_size!r}")
    if not 0.0 < quantile < 1.0:
        raise DataError(f"protocol sequential-cold: quantile must be in (0, 1), got {quantile!r}")
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"protocol sequential-cold: val_fraction must be in (0, 1), got {val_fraction!r}")


def sequential_cold(rows: Any, seed: int = 0, support_size: int = 5, query_size: int = 1, quantile: float = 0.8,
                    val_fraction: float = 0.5) -> dict[str, dict[str, Tensor]]:
    """Splits of ``rows`` (``protocols.Rows``: ``user``, ``item``, ``time`` [N]) by the rules above:
    ``{"train": {"train": rows before T}, "val"/"test": {"sequential-cold": K + Q rows of each cold user}}``.
    ``DataError`` (one line) without timestamps, for bad options, or when a part would be empty."""
    _check(support_size, query_size, quantile, val_fraction)
    if rows.time is None:
        raise DataError(f"{rows.name}: protocol 'sequential-cold' needs timestamps, and this ratings file has none")
    cut, first, present = time_cut(rows.user, rows.time, quantile)
    train = torch.nonzero(rows.time.double() < cut).flatten()
    cold = torch.nonzero(present & (first > cut)).flatten()
    by_user = torch.argsort(rows.user, stable=True)
    counts = torch.bincount(rows.user, minlength=len(first))
    groups = torch.split(by_user, counts.tolist())
    kept, parts = [], []
    for u in cold.tolist():
        picked = _cold_rows(groups[u], rows.item, rows.time, support_size, query_size)
        if len(picked):
            kept.append(u)
            parts.append(picked)
    if len(kept) < 2:
        raise DataError(f"{rows.name}: protocol sequential-cold: {len(kept)} cold user(s) (first interaction after "
                        f"T={cut:g}) have {support_size} + {query_size} interactions; expected at least 2")
    if len(kept) < len(cold):
        log.info("%s: sequential-cold: dropped %d of %d cold users with fewer than %d + %d interactions", rows.name,
                 len(cold) - len(kept), len(cold), support_size, query_size)
    perm = torch.randperm(len(kept), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = min(max(1, round(val_fraction * len(kept))), len(kept) - 1)
    val = torch.sort(torch.cat([parts[i] for i in perm[:n_val]])).values
    test = torch.sort(torch.cat([parts[i] for i in perm[n_val:]])).values
    if len(train) == 0:
        raise DataError(f"{rows.name}: protocol sequential-cold: no interaction is before T={cut:g}")
    return {"train": {"train": train}, "val": {SCENARIO: val}, "test": {SCENARIO: test}}
