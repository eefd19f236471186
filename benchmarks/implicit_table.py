"""The implicit-feedback table: ML-1M as clicks (rating >= 4 = an interaction), new users and new items, ranking.

    python benchmarks/implicit_table.py --root ../shared/data/ml-1m                 # 3 seeds, every method
    python benchmarks/implicit_table.py --root ../shared/data/ml-1m --seeds 0       # one seed (the time budget)
    python benchmarks/implicit_table.py --render                                   # rewrite the page from the JSON

The usual conversion (e.g. NCF, He et al. 2017; BPR-style benchmarks): every rating >= 4 of ML-1M is an interaction,
the rest are dropped; the clicks are written to a scratch folder (never into the repository) and read by the
``interactions`` data set (``implicit: true``; item features: the movie's genres, plus the item id).  Protocols
``user-cold`` (10 % of users validation, 10 % test; never in training) and ``item-cold`` (``by: count``: the 20 %
of items with the fewest interactions are test items, the next 10 % validation items).  A task is a user: up to
``--support`` interactions adapt, 10 more are the query; 4 negatives per interaction are sampled afresh every
training episode (fixed for evaluation), never an item the user interacted with.

Evaluation, at validation and test, before (``_zero_shot``) and after adaptation: each task's query interactions
ranked (a) among EVERY item of the scenario the user never touched (``data.full_catalogue``: recall@20, nDCG@20)
and (b) among 100 sampled untouched items (``data.candidates: 100``: hit@10).  Each method trains for at most
``epochs`` epochs; the epoch with the best validation full-catalogue recall@20 is kept (validation users / items
only; no test user is looked at).  Raw numbers go to benchmarks/results/implicit_table.json, the page to
docs/results_implicit.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from metarec_pl.bilevel import MetaLearner
from metarec_pl.data.module import MetaDataModule

SCENARIOS = {"user-cold": dict(protocol="user-cold"),
             "item-cold": dict(protocol="item-cold", by="count", test_fraction=0.2, val_fraction=0.1)}
MONITOR = "val/full/recall@20"
HEAD = ["head.*"]
# name -> MetaLearner kwargs and most epochs; "algorithm" when the row's name is not the registered algorithm's
METHODS: dict[str, dict] = {
    "popularity": dict(model={}, epochs=1),
    "implicit-als": dict(model=dict(algorithm_args=dict(factors=64, regularization=0.05, iterations=15)), epochs=1),
    "implicit-bpr": dict(model=dict(algorithm_args=dict(factors=64, regularization=0.01, iterations=100)), epochs=1),
}
for _algo, _adapt in (("maml", HEAD), ("metasgd", HEAD), ("anil", ["head.4.*"])):
    for _loss in ("bce", "bpr"):
        METHODS[f"{_algo}+{_loss}"] = dict(algorithm=_algo, epochs=6,
                                           model=dict(loss=_loss, adapt=_adapt, inner_steps=3, inner_lr=0.1))
GRADIENT_BASED = tuple(m for m in METHODS if "+" in m)
COMMON = dict(network="melu", network_args=dict(embedding_dim=32, hidden=[64, 64]), ndcg_k=[5], top_k=[10, 20])
SHOWN = ("full/recall@20", "full/ndcg@20", "pool/hit@10")


def clicks(root: Path, folder: Path) -> None:
    """ML-1M's ratings >= 4 as ``clicks.csv`` (user,item) and the movies' genres as ``movies.csv``, in ``folder``."""
    ratings = pd.read_csv(root / "ratings_no_timestamps.dat", sep="::", engine="python", header=None,
                          names=["user", "item", "rating"])
    ratings[ratings.rating >= 4][["user", "item"]].to_csv(folder / "clicks.csv", index=False)
    movies = pd.read_csv(root / "movies.dat", sep="::", engine="python", header=None, encoding="latin-1",
                         names=["item", "title", "genres"])
    movies[["item", "genres"]].to_csv(folder / "movies.csv", index=False)


def data_module(folder: Path, scenario: str, seed: int, support: int) -> MetaDataModule:
    return MetaDataModule(
        dataset="interactions", root=str(folder), seed=seed, candidates=100, full_catalogue=True,
        dataset_args=dict(path="clicks.csv", implicit=True, seed=seed, **SCENARIOS[scenario],
                          item_features=dict(path="movies.csv", id="item", fields={"genres": "multi"})),
        sampler="user", sampler_args=dict(query_size=10, min_support=3, max_support=support, negatives=4),
        tasks_per_batch=32, eval_tasks_per_batch=64, id_features=["item"])


def build(name: str, dm: MetaDataModule, lr: float) -> MetaLearner:
    spec = METHODS[name]
    return MetaLearner(algorithm=spec.get("algorithm", name), data_info=dm.info,
                       optimizer=lambda p: torch.optim.Adam(p, lr=lr), **{**COMMON, **spec["model"]})


def quiet_trainer(**kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                     inference_mode=False, **kwargs)


def run_one(name: str, scenario: str, seed: int, dm: MetaDataModule, epochs: int, lr: float) -> dict:
    L.seed_everything(seed, verbose=False)
    module = build(name, dm, lr)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        best = ModelCheckpoint(dirpath=tmp, monitor=MONITOR, mode="max", save_top_k=1, save_weights_only=True)
        quiet_trainer(max_epochs=epochs, callbacks=[best], num_sanity_val_steps=0, gradient_clip_val=1.0).fit(module, dm)
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=False)
    module.load_state_dict(state["state_dict"])
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    test = quiet_trainer().test(module, dm, verbose=False)[0]
    return dict(method=name, scenario=scenario, seed=seed, epochs=epochs, best_epoch=state["epoch"] + 1,
                val=float(best.best_model_score), train_s=train_s, test_s=time.perf_counter() - start,
                test={k: v for k, v in test.items() if f"/{scenario}/" in k})


def mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    m = statistics.fmean(values)
    return f"{m:.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else f"{m:.4f}"


def cell(results: list[dict], method: str, scenario: str, key: str) -> list[float]:
    return [r["test"][f"test/{scenario}/{key}"] for r in results
            if r["method"] == method and r["scenario"] == scenario and f"test/{scenario}/{key}" in r["test"]]


def targets(results: list[dict], scenario: str) -> list[str]:
    """The issue's targets for ``scenario``, measured: the best meta-learner's recall@20 >= 1.05 x both baselines on
    every seed; adaptation raises recall@20 over zero-shot for every gradient-based learner."""
    key = "full/recall@20"
    metas = [m for m in GRADIENT_BASED if cell(results, m, scenario, key)]
    bases = [b for b in ("popularity", "implicit-als", "implicit-bpr") if cell(results, b, scenario, key)]
    if not metas or not bases:
        return []
    best = max(metas, key=lambda m: statistics.fmean(cell(results, m, scenario, key)))
    by_seed = lambda m: {r["seed"]: r["test"][f"test/{scenario}/{key}"] for r in results  # noqa: E731
                         if r["method"] == m and r["scenario"] == scenario}
    ours = by_seed(best)
    rival = max(bases, key=lambda b: statistics.fmean(cell(results, b, scenario, key)))
    wins = [s for s in ours if all(ours[s] >= 1.05 * by_seed(b).get(s, float("inf")) for b in bases)]
    raised = [m for m in metas if all(a > z for a, z in zip(cell(results, m, scenario, key),
                                                            cell(results, m, scenario, key + "_zero_shot")))]
    return [f"- **{scenario}**: best meta-learner `{best}` recall@20 {mean_std(list(ours.values()))}; the better "
            f"baseline `{rival}` {mean_std(cell(results, rival, scenario, key))}; ≥ 5 % (relative) above every "
            f"baseline on {len(wins)}/{len(ours)} seeds ({'met' if len(wins) == len(ours) else 'missed'}). "
            f"Adaptation raises recall@20 over zero-shot on every seed for {len(raised)}/{len(metas)} gradient-based "
            f"learners ({', '.join(sorted(set(metas) - set(raised))) or 'all'}"
            f"{' did not' if set(metas) - set(raised) else ''})."]


def render(results: list[dict], meta: dict) -> str:
    methods = list(dict.fromkeys(r["method"] for r in results))
    seeds = sorted({r["seed"] for r in results})
    lines = ["# Results: implicit feedback (ML-1M as clicks)", "",
             f"Generated by `{meta['command']}` on {meta['when']} ({meta['machine']}); seeds {seeds}; "
             f"{meta['threads']} torch thread(s); load average before the run: {meta['load']}.", "",
             *([meta["note"], ""] if meta.get("note") else []),
             __doc__.split("\n\n", 2)[2].strip().replace("\n", " "), "",
             "Gradient-based learners (`maml`, `metasgd`, `anil`) use MeLU's network (32-d field embeddings for the "
             "item id and genres, decision layers 64×64), adapt the decision layers (`anil`: the output layer) with "
             f"3 inner steps of lr 0.1 on the support's interactions and sampled negatives, with the loss named "
             f"after `+` (`bce`: binary cross-entropy on logits; `bpr`: pairwise BPR); outer Adam lr {meta['lr']}. "
             "`implicit-als` / `implicit-bpr`: the `implicit` package's ALS / BPR on every training interaction, a "
             "new user folded in by ALS's least-squares user step on their support interactions. `popularity`: "
             "training interaction counts. Nothing was tuned on test users; the settings are fixed, not tuned.", ""]
    for sc in SCENARIOS:
        lines += [f"## {sc}", "", "| method | recall@20 (full) | zero-shot | nDCG@20 (full) | zero-shot | hit@10 "
                  "(pool of 100) | zero-shot | epoch kept | train s |", "|---|---|---|---|---|---|---|---|---|"]
        for m in methods:
            rs = [r for r in results if r["method"] == m and r["scenario"] == sc]
            if not rs:
                continue
            cells = []
            for key in SHOWN:
                cells += [mean_std(cell(results, m, sc, key)), mean_std(cell(results, m, sc, key + "_zero_shot"))]
            lines.append(f"| {m} | {' | '.join(cells)} | {', '.join(str(r['best_epoch']) for r in rs)} | "
                         f"{statistics.fmean(r['train_s'] for r in rs):.0f} |")
        lines.append("")
    lines += ["## Targets (measured, met or not)", ""]
    for sc in SCENARIOS:
        lines += targets(results, sc)
    wall = meta.get("wall_s", {})
    lines += ["", "Wall-clock time per seed (every method, both scenarios, one at a time): "
              + ", ".join(f"seed {k}: {v:.0f} s" for k, v in wall.items()) + " (target: ≤ 1200 s on 2 cores)."]
    return "\n".join(lines) + "\n"


def save(raw: Path, meta: dict, results: list[dict]) -> None:
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps(dict(meta=meta, results=results), indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="../shared/data/ml-1m")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    p.add_argument("--support", type=int, default=20, help="most support interactions per task")
    p.add_argument("--epoch-scale", type=float, default=1.0, help="multiplies every method's epochs")
    p.add_argument("--lr", type=float, default=1e-3, help="outer Adam learning rate")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="docs/results_implicit.md")
    p.add_argument("--raw", default="benchmarks/results/implicit_table.json")
    p.add_argument("--render", action="store_true", help="only rewrite --out from --raw")
    p.add_argument("--note", default=None, help="with --render: a paragraph under the header (how the run went)")
    args = p.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    raw = Path(args.raw)
    if args.render:
        saved = json.loads(raw.read_text())
        note = {"note": args.note} if args.note is not None else {}
        Path(args.out).write_text(render(saved["results"], {**saved["meta"], **note}))
        return
    meta = dict(command="python " + " ".join(sys.argv), when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                machine=f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
                load=" ".join(f"{x:.2f}" for x in os.getloadavg()), threads=args.threads, lr=args.lr, wall_s={})
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        clicks(Path(args.root), folder)
        for seed in args.seeds:
            start = time.perf_counter()
            for scenario in args.scenarios:
                dm = data_module(folder, scenario, seed, args.support)
                for name in args.methods:
                    epochs = max(1, round(METHODS[name]["epochs"] * args.epoch_scale))
                    r = run_one(name, scenario, seed, dm, epochs, args.lr)
                    results.append(r)
                    print(f"seed {seed} {scenario:9s} {name:14s} fit {r['train_s']:6.1f}s epoch {r['best_epoch']} "
                          + " ".join(f"{k} {r['test'].get(f'test/{scenario}/{k}', float('nan')):.4f}" for k in SHOWN),
                          flush=True)
                    save(raw, meta, results)  # after every method: a run cut short keeps what finished
            meta["wall_s"][str(seed)] = round(time.perf_counter() - start, 1)
            save(raw, meta, results)
    Path(args.out).write_text(render(results, meta))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
