"""Latency of recommending for a new user: adapt on their ratings + score and rank the whole catalogue (CPU).

    .venv/bin/python benchmarks/recommend_latency.py --dataset movielens-1m --root ../shared/data/ml-1m
    .venv/bin/python benchmarks/recommend_latency.py            # synthetic world with 3,700 items

Prints the median (and p90) wall time of ``Recommender.recommend`` for one user with ``--ratings`` ratings, and
the time per user when ``--batch`` users go through ``recommend_many`` together.  Without ``--ckpt`` the model is
the quickstart's MAML/MeLU, untrained: latency does not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from metarec_pl.bilevel import MetaLearner
from metarec_pl.data.module import MetaDataModule
from metarec_pl.recommend import NewUser, Recommender


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--root", default=None)
    p.add_argument("--dataset-args", default=None, help="JSON; synthetic default: 3,700 items")
    p.add_argument("--ckpt", default=None)
    p.add_argument("--ratings", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--k", type=int, default=10)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset_args = json.loads(args.dataset_args) if args.dataset_args else (
        {"num_users": 1000, "num_items": 3700, "seed": 0} if args.dataset == "synthetic" else {})
    dm = MetaDataModule(dataset=args.dataset, root=args.root, dataset_args=dataset_args)
    if args.ckpt:
        rec = Recommender.from_checkpoint(args.ckpt, dm, batch_size=args.batch)
    else:
        torch.manual_seed(0)
        module = MetaLearner(network_args={"embedding_dim": 16, "hidden": [64, 64]}, inner_steps=5, inner_lr=0.05,
                             adapt=["head.*"], data_info=dm.info)
        rec = Recommender(module, dm.data, batch_size=args.batch)
    catalogue = rec.catalogue.items
    gen = torch.Generator().manual_seed(0)
    users = [NewUser({int(i): float(torch.randint(1, 6, (), generator=gen))
                      for i in catalogue[torch.randperm(len(catalogue), generator=gen)[: args.ratings]]})
             for _ in range(args.batch)]
    single = timed(lambda: rec.recommend(users[0].ratings, k=args.k), args.repeats)
    batched = timed(lambda: rec.recommend_many(users, k=args.k), max(3, args.repeats // 10))
    result = {
        "dataset": args.dataset, "items": len(catalogue), "ratings_per_user": args.ratings,
        "threads": torch.get_num_threads(), "model": "checkpoint" if args.ckpt else "quickstart maml/melu (untrained)",
        "one_user_median_ms": round(1e3 * statistics.median(single), 2),
        "one_user_p90_ms": round(1e3 * sorted(single)[int(0.9 * len(single))], 2),
        "batch": args.batch,
        "batched_per_user_median_ms": round(1e3 * statistics.median(batched) / args.batch, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
