"""How much of a movie's mean rating can its content predict, from the MeLU fields, from the text vector, or both?

A ceiling for what text features can do for cold items through the item's main effect (its bias): training
ratings only (no test user, no cold item is read); every movie with >= ``--min-ratings`` training ratings gets its
bias (mean rating minus the global mean); the movies are split in two halves by a seeded permutation; a ridge
regression from content to bias is fitted on one half and its R² measured on the other, for a few ridge strengths
(and, for both blocks together, a few relative scales of the text block).  The grid is reported whole: it is a
measurement of signal, not a model choice.

    .venv/bin/python benchmarks/text_signal.py --root ../shared/data/melu-ml-1m   # needs the text extra's cache
"""

from __future__ import annotations

import argparse
import json

import torch

from metarec_pl.data.module import MetaDataModule
from metarec_pl.models.mlp import DenseFeatures

STATE_FILES = {"warm": ["warm_state.reconstructed.json", "warm_state_y.json"]}


def held_out_r2(x: torch.Tensor, y: torch.Tensor, fit: torch.Tensor, judge: torch.Tensor, ridge: float) -> float:
    x = torch.cat([x, torch.ones(len(x), 1)], 1).double()
    w = torch.linalg.solve(x[fit].T @ x[fit] + ridge * torch.eye(x.shape[1], dtype=torch.double), x[fit].T @ y[fit])
    residual = ((x[judge] @ w - y[judge]) ** 2).sum()
    return float(1 - residual / ((y[judge] - y[fit].mean()) ** 2).sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="../shared/data/melu-ml-1m")
    p.add_argument("--min-ratings", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    dm = MetaDataModule(dataset="text", root=args.root, dataset_args=dict(
        base="melu-movielens-1m", base_args=dict(protocol="melu", state_files=STATE_FILES), sides=["item"]))
    data = dm.data
    rows = torch.cat(list(data.splits["train"].values()))
    item, rating = data.item[rows], data.rating[rows].double()
    count = torch.bincount(item, minlength=data.num_items)
    total = torch.bincount(item, weights=rating - rating.mean(), minlength=data.num_items)
    items = torch.nonzero(count >= args.min_ratings).flatten()
    bias = total[items] / count[items]
    perm = torch.randperm(len(items), generator=torch.Generator().manual_seed(args.seed))
    fit, judge = perm[: len(items) // 2], perm[len(items) // 2:]
    # design matrices by the mlp encoder: categorical one-hot, multi-valued a 0/1 bag, dense as is
    fields = DenseFeatures([f for f in data.schema if f.side == "item" and f.key != "item_text"])(
        {k: v[items] for k, v in data.item_features.items()})
    text = data.item_features["item_text"][items].float()
    r2 = lambda x, lam: round(held_out_r2(x, bias, fit, judge, lam), 3)  # noqa: E731
    report = {"movies": len(items), "bias_std": round(float(bias.std()), 3),
              "fields": {lam: r2(fields, lam) for lam in (1, 10, 100, 1000)},
              "text": {lam: r2(text, lam) for lam in (1, 10, 100, 1000)},
              "both": {f"text x{c}, ridge {lam}": r2(torch.cat([fields, c * text], 1), lam)
                       for c in (0.03, 0.1, 0.3, 1.0) for lam in (3, 10, 30, 100)}}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
