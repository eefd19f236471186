"""Biased matrix factorisation by alternating least squares over every training rating, and a ridge map from item
features to item factors for items no training rating names: what ``mf-foldin`` (``fit: als``) is and where
``meta-foldin`` starts.

r̂ = μ + b_u + b_i + <p_u, q_i>; each half-step solves, per user (item), the ridge regression of its ratings minus
μ and the other side's bias on ``[1, q_i]`` (``[1, p_u]``) with penalty ``lam`` on the factors and ``BIAS_RIDGE``
on the bias (the independent reference ``shared/reference/melu_mf_foldin.py`` does the same; Hu/Koren-style ALS,
Zhou et al., "Large-scale parallel collaborative filtering for the Netflix prize", 2008).  All users (items) are
solved at once: their Gram matrices are summed per id with ``index_add_`` in chunks of rows, then one batched
``torch.linalg.solve``.

Cold items: ``[q_i, b_i]`` of the trained items regressed on their features (``feature_design``: one-hot
categorical values, mean-pooled multi-valued ids, dense values, and an intercept), ridge ``feature_ridge``,
solved in the dual (n_items × n_items), so vocabularies of any size cost nothing; the primal weights ``W`` are
returned too, laid out as ``ItemFeatureMap``'s tables so a network can start from them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from metarec_pl.data.types import FeatureSpec, RatingData

BIAS_RIDGE = 1e-3  # the (almost) unpenalised intercept of every per-id solve
CHUNK = 1 << 17  # rows per Gram-matrix chunk: [CHUNK, d + 1, d + 1] float64 at a time


@dataclass
class MFSolution:
    """What ``als`` returns: ``mu`` (the mean training rating), ``users`` [num_users, d + 1] = [p_u, b_u],
    ``items`` [num_items, d + 1] = [q_i, b_i] (zeros for an id no training rating names), ``trained``
    [num_items] bool."""

    mu: float
    users: Tensor
    items: Tensor
    trained: Tensor


def _solve_side(keys: Tensor, other: Tensor, target: Tensor, num: int, lam: float) -> Tensor:
    """Per key, the ridge solution ``w`` of ``target ≈ w · [other_row, 1]`` over its rows: [num, d + 1]."""
    x = torch.cat([other, torch.ones_like(other[:, :1])], 1)  # [N, d + 1]
    dim = x.shape[1]
    gram = torch.zeros(num, dim, dim, dtype=torch.float64)
    rhs = torch.zeros(num, dim, dtype=torch.float64)
    for start in range(0, len(keys), CHUNK):
        xs, ks = x[start:start + CHUNK], keys[start:start + CHUNK]
        gram.index_add_(0, ks, xs[:, :, None] * xs[:, None, :])
        rhs.index_add_(0, ks, xs * target[start:start + CHUNK, None])
    penalty = torch.full((dim,), float(lam), dtype=torch.float64)
    penalty[-1] = BIAS_RIDGE
    return torch.linalg.solve(gram + torch.diag(penalty), rhs)


def als(user: Tensor, item: Tensor, rating: Tensor, num_users: int, num_items: int, dim: int = 10,
        lam: float = 4.0, iters: int = 12, seed: int = 0) -> MFSolution:
    """Biased MF of the rows (``user``, ``item``, ``rating``: [N]) by ``iters`` ALS sweeps (users, then items),
    factors drawn N(0, 0.1²) from ``seed``; float64 throughout."""
    user, item, rating = user.long(), item.long(), rating.double()
    mu = float(rating.mean())
    gen = torch.Generator().manual_seed(seed)
    p = torch.zeros(num_users, dim + 1, dtype=torch.float64)
    q = torch.zeros(num_items, dim + 1, dtype=torch.float64)
    p[:, :dim] = torch.randn(num_users, dim, generator=gen, dtype=torch.float64) * 0.1
    q[:, :dim] = torch.randn(num_items, dim, generator=gen, dtype=torch.float64) * 0.1
    for _ in range(iters):
        p = _solve_side(user, q[item, :dim], rating - mu - q[item, dim], num_users, lam)
        q = _solve_side(item, p[user, :dim], rating - mu - p[user, dim], num_items, lam)
    trained = torch.bincount(item, minlength=num_items) > 0
    q[~trained] = 0.0
    seen = torch.bincount(user, minlength=num_users) > 0
    p[~seen] = 0.0
    return MFSolution(mu, p, q, trained)


def item_fields(schema: list[FeatureSpec]) -> list[FeatureSpec]:
    """The item fields ``ItemFeatureMap`` reads, in its order (the id field left out)."""
    return [f for f in schema if f.side == "item" and not f.is_id]


def feature_design(data: RatingData, fields: list[FeatureSpec]) -> sp.csr_matrix:
    """[num_items, Σ field sizes + 1] sparse design: per field its ``ItemFeatureMap`` encoding (categorical:
    one-hot of the value; multi: 1/m at each of the m present ids; dense: the values), last column 1."""
    n = data.num_items
    blocks = []
    for f in fields:
        x = data.item_features[f.key]
        if f.kind == "categorical":
            blocks.append(sp.csr_matrix((np.ones(n), (np.arange(n), x.numpy())), shape=(n, f.size)))
        elif f.kind == "multi":
            present = (x > 0).double()
            weight = present / present.sum(1, keepdim=True).clamp_min(1.0)
            rows = np.repeat(np.arange(n), x.shape[1])
            blocks.append(sp.csr_matrix((weight.flatten().numpy(), (rows, x.flatten().numpy())), shape=(n, f.size)))
        else:
            blocks.append(sp.csr_matrix(x.double().numpy()))
    blocks.append(sp.csr_matrix(np.ones((n, 1))))
    return sp.hstack(blocks, format="csr")


def feature_map(design: sp.csr_matrix, targets: Tensor, trained: Tensor, ridge: float) -> Tensor:
    """Primal weights W [columns, d + 1] of the ridge regression of ``targets[trained]`` on ``design[trained]``
    (penalty ``ridge`` on every column), solved in the dual: W = Fᵀ (F Fᵀ + ridge I)⁻¹ T."""
    idx = torch.nonzero(trained).flatten().numpy()
    f = design[idx]
    kernel = torch.from_numpy((f @ f.T).toarray()).double()
    alpha = torch.linalg.solve(kernel + ridge * torch.eye(len(idx), dtype=torch.float64), targets[idx].double())
    return torch.from_numpy(np.asarray(f.T @ alpha.numpy()))


def field_tables(weights: Tensor, fields: list[FeatureSpec]) -> tuple[dict[str, Tensor], Tensor]:
    """``feature_map``'s W cut into ``ItemFeatureMap``'s tables (key -> [size, d + 1]; a dense field's as its
    ``nn.Linear`` weight, [d + 1, size]) and the intercept [d + 1]."""
    tables, at = {}, 0
    for f in fields:
        block = weights[at:at + f.size]
        tables[f.key] = block.T.contiguous() if f.kind == "dense" else block.clone()
        at += f.size
    return tables, weights[at].clone()
