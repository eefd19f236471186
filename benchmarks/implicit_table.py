"""The implicit-feedback table: ML-1M as clicks (rating >= 4 = an interaction), new users and new items, ranking.

    python benchmarks/implicit_table.py --root ../shared/data/ml-1m                 # 3 seeds, every method
    python benchmarks/implicit_table.py --root ../shared/data/ml-1m --seeds 0       # one seed (the time budget)
    python benchmarks/implicit_table.py --render                                   # rewrite the page from the JSON

The usual conversion (e.g. NCF, He et al. 2017; BPR-style benchmarks): every rating >= 4 of ML-1M is an interaction,
the rest are dropped; the clicks are written to a scratch folder (never into the repository) and read by the
``interactions`` data set (``implicit: true``; item features: the movie's genres, plus the item id).  Protocols
``user-cold`` (10 % of users validation, 10 % test; never in training) and ``item-cold`` (``by: count``: the 20 %
of items with the fewest interactions are test items, the next 10 % validation items).  A task is a user: up to
20 interactions adapt (``sampler_args.max_support``), 10 more are the query; 4 negatives per interaction are sampled afresh every
training episode (fixed for evaluation), never an item the user interacted with.

Evaluation, at validation and test, before (``_zero_shot``) and after adaptation: each task's query interactions
ranked (a) among EVERY item of the scenario the user never touched (``data.full_catalogue``: recall@20, nDCG@20)
and (b) among 100 sampled untouched items (``data.candidates: 100``: hit@10).  Each method trains for at most
``epochs`` epochs; the epoch with the best validation full-catalogue recall@20 is kept (validation users / items
only; no test user is looked at).  Each row is a ``metarec fit`` config, ``configs/benchmarks/implicit/<row>.yaml``
(the scenarios and the validation metric: that folder's ``table.yaml``).  Raw numbers go to
benchmarks/results/implicit_table.json, the page to docs/results_implicit.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from metarec_pl import harness

FOLDER = Path(__file__).resolve().parents[1] / "configs" / "benchmarks" / "implicit"  # the rows and table.yaml


@functools.cache
def table() -> harness.Table:
    """The rows (one ``metarec fit`` config each), scenarios and validation metric of the table."""
    return harness.load_table(FOLDER)


def gradient_based() -> list[str]:
    """The rows named ``<algorithm>+<loss>``: the gradient-based meta-learners."""
    return [m for m in table().rows if "+" in m]
SHOWN = ("full/recall@20", "full/ndcg@20", "pool/hit@10")


def clicks(root: Path, folder: Path) -> None:
    """ML-1M's ratings >= 4 as ``clicks.csv`` (user,item) and the movies' genres as ``movies.csv``, in ``folder``."""
    ratings = pd.read_csv(root / "ratings_no_timestamps.dat", sep="::", engine="python", header=None,
                          names=["user", "item", "rating"])
    ratings[ratings.rating >= 4][["user", "item"]].to_csv(folder / "clicks.csv", index=False)
    movies = pd.read_csv(root / "movies.dat", sep="::", engine="python", header=None, encoding="latin-1",
                         names=["item", "title", "genres"])
    movies[["item", "genres"]].to_csv(folder / "movies.csv", index=False)


def run_one(name: str, scenario: str, seed: int, folder: Path, epoch_scale: float) -> dict:
    """Row ``name`` under ``scenario`` on the clicks in ``folder``: fit, keep the epoch with the best validation
    ``table().monitor``, test."""
    rows = table()
    overrides = harness.merged(rows.scenarios[scenario], {"data": {"dataset_args": {"seed": seed}}})
    module, dm, config = harness.build(rows.config(name), folder, seed, overrides,
                                       where=str(rows.rows[name].config_path))
    epochs = harness.max_epochs(config, epoch_scale)
    start = time.perf_counter()
    best_epoch, val, _ = harness.fit_best(module, dm, epochs, monitor=rows.monitor, mode=rows.mode,
                                          gradient_clip_val=config["trainer"].get("gradient_clip_val"))
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    test = harness.run_test(module, dm)
    return dict(method=name, scenario=scenario, seed=seed, epochs=epochs, best_epoch=best_epoch, val=val,
                train_s=train_s, test_s=time.perf_counter() - start,
                test={k: v for k, v in test.items() if f"/{scenario}/" in k})


def cell(results: list[dict], method: str, scenario: str, key: str) -> list[float]:
    return [r["test"][f"test/{scenario}/{key}"] for r in results
            if r["method"] == method and r["scenario"] == scenario and f"test/{scenario}/{key}" in r["test"]]


def targets(results: list[dict], scenario: str) -> list[str]:
    """The issue's targets for ``scenario``, measured: the best meta-learner's recall@20 >= 1.05 x both baselines on
    every seed; adaptation raises recall@20 over zero-shot for every gradient-based learner."""
    key = "full/recall@20"
    metas = [m for m in gradient_based() if cell(results, m, scenario, key)]
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
    return [f"- **{scenario}**: best meta-learner `{best}` recall@20 {harness.mean_std(list(ours.values()))}; the better "
            f"baseline `{rival}` {harness.mean_std(cell(results, rival, scenario, key))}; ≥ 5 % (relative) above every "
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
    for sc in table().scenarios:
        lines += [f"## {sc}", "", "| method | recall@20 (full) | zero-shot | nDCG@20 (full) | zero-shot | hit@10 "
                  "(pool of 100) | zero-shot | epoch kept | train s |", "|---|---|---|---|---|---|---|---|---|"]
        for m in methods:
            rs = [r for r in results if r["method"] == m and r["scenario"] == sc]
            if not rs:
                continue
            cells = []
            for key in SHOWN:
                cells += [harness.mean_std(cell(results, m, sc, key)), harness.mean_std(cell(results, m, sc, key + "_zero_shot"))]
            lines.append(f"| {m} | {' | '.join(cells)} | {', '.join(str(r['best_epoch']) for r in rs)} | "
                         f"{statistics.fmean(r['train_s'] for r in rs):.0f} |")
        lines.append("")
    lines += ["## Targets (measured, met or not)", ""]
    for sc in table().scenarios:
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
    p.add_argument("--methods", nargs="+", default=None, help="rows of the table (default: every row)")
    p.add_argument("--scenarios", nargs="+", default=None, help="scenarios of the table (default: every one)")
    p.add_argument("--epoch-scale", type=float, default=1.0, help="multiplies every method's epochs")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="docs/results_implicit.md")
    p.add_argument("--raw", default="benchmarks/results/implicit_table.json")
    p.add_argument("--render", action="store_true", help="only rewrite --out from --raw")
    p.add_argument("--note", default=None, help="with --render: a paragraph under the header (how the run went)")
    p.add_argument("--write-clicks", metavar="FOLDER", default=None,
                   help="only write clicks.csv and movies.csv into FOLDER (the data of `metarec fit --config "
                        "configs/benchmarks/implicit/<row>.yaml`: data.root runs/implicit_clicks)")
    args = p.parse_args()
    harness.setup(args.threads)
    if args.write_clicks:
        Path(args.write_clicks).mkdir(parents=True, exist_ok=True)
        clicks(Path(args.root), Path(args.write_clicks))
        print(f"wrote {args.write_clicks}/clicks.csv and movies.csv")
        return
    raw = Path(args.raw)
    if args.render:
        saved = json.loads(raw.read_text())
        note = {"note": args.note} if args.note is not None else {}
        Path(args.out).write_text(render(saved["results"], {**saved["meta"], **note}))
        return
    args.methods = harness.chosen(args.methods, list(table().rows), "row")
    args.scenarios = harness.chosen(args.scenarios, list(table().scenarios), "scenario")
    lr = table().config(gradient_based()[0])["model"]["optimizer"]["init_args"]["lr"]
    meta = harness.provenance(threads=args.threads, lr=lr, wall_s={})
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        clicks(Path(args.root), folder)
        for seed in args.seeds:
            start = time.perf_counter()
            for scenario in args.scenarios:
                for name in args.methods:
                    r = run_one(name, scenario, seed, folder, args.epoch_scale)
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
    harness.run_script(main, "implicit_table")
