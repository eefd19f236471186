"""The MeLU table: every method trained and evaluated on the ``melu`` protocol, written to docs/results.md.

    python benchmarks/melu_table.py --root ../shared/data/melu-ml-1m              # 3 seeds, 2 methods at a time
    python benchmarks/melu_table.py --root ../shared/data/melu-ml-1m --seeds 0    # one seed (the time budget)
    python benchmarks/melu_table.py --render --wandb PROJECT                      # re-render; log a wandb.Table
    python benchmarks/melu_table.py --variant all-ratings --seeds 0 1 2           # protocol melu v2 (issue 22)

Each row is a ``metarec fit`` config in ``configs/benchmarks/melu/`` (``--variant all-ratings``:
``configs/benchmarks/melu-all-ratings/``), listed with its table-only settings (``cold_epoch``, ``select``) in that
folder's ``table.yaml``; ``metarec_pl.harness`` builds each through the ``metarec`` command's parser.
Each method: fit on the training users (``melu`` protocol: MeLU's warm state split into train / val / held-out warm
users) for up to ``epochs`` epochs, validating after each: the epoch with the lowest validation MAE (Lightning's
``ModelCheckpoint``) serves known items (``warm``, ``user-cold``), the weights after ``cold_epoch`` epochs (chosen on
held-out validation items by ``melu_tune.py``) serve new items (``item-cold``, ``user+item-cold``); every
evaluation-time knob listed in ``select`` is chosen on the validation users (never on test users); then ``test`` on
the four scenarios with 100 sampled unrated candidates per user for the top-k metrics.
Raw numbers go to ``runs/melu_table/results.json``; ``--render`` rewrites the markdown from it without training.

``--variant all-ratings``: protocol ``melu`` version 2 (the same validation and test users, training on every warm
rating of every other warm user: 4,302 users, 616,188 ratings at seed 0 against 2,123 users, 97,555 ratings in
version 1), heavy users dealt into tasks of at most 100 ratings afresh every epoch (``sampler_args.chunk_rows:
100``), the baselines fitted on every training rating directly (``fit: ratings`` / ``fit: als``), and a compact
set of rows.
Raw numbers go to ``runs/melu_table/all_ratings.json``; its section of ``docs/results.md`` (between the
``ALL_RATINGS`` markers) is rewritten, the paper-comparable table around it kept as it is.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import statistics
import time
from pathlib import Path
from typing import Optional

from metarec_pl import harness, plugins
from metarec_pl.errors import ConfigError
from metarec_pl.tracking import log_table

SCENARIOS = ("warm", "user-cold", "item-cold", "user+item-cold")
NEW_ITEM_SCENARIOS = ("item-cold", "user+item-cold")  # served by the ``cold_epoch`` model where a row has one
PAPER_MAE = {"warm": 0.7567, "user-cold": 0.7854, "item-cold": 0.9275, "user+item-cold": 0.9235}  # MeLU-5
TARGET_MAE = {"warm": 0.68, "user-cold": 0.67, "item-cold": 0.83, "user+item-cold": 0.83}
TARGET_NDCG3 = {"warm": 0.91, "user-cold": 0.915, "item-cold": 0.83, "user+item-cold": 0.83}
META = ("maml", "melu", "fomaml", "metasgd", "anil", "reptile", "protonet", "matchingnet", "matchingnet-residual",
        "tanp", "meta-foldin")
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "benchmarks"
# variant -> the folder of its rows: one `metarec fit` config per row plus table.yaml (cold_epoch, select)
VARIANTS = {"paper": CONFIGS / "melu", "all-ratings": CONFIGS / "melu-all-ratings"}
ALL_TARGET_MAE = {"warm": 0.69, "user-cold": 0.68, "item-cold": 0.85, "user+item-cold": 0.85}


def run_one(name: str, seed: int, root: str, candidates, epoch_scale: float, variant: str = "paper") -> dict:
    """Row ``name`` of ``variant`` on ``seed``: fit (the best warm-validation epoch kept, ``cold_epoch``'s weights
    kept for new items), knobs chosen on validation users, then the test scenarios."""
    table = harness.load_table(VARIANTS[variant])
    row = table.rows[name]
    began = time.perf_counter()
    overrides = {} if candidates is None else {"data": {"candidates": candidates}}
    module, dm, config = harness.build(table.config(name), root, seed, overrides, where=str(row.config_path))
    epochs = harness.max_epochs(config, epoch_scale)
    cold_epoch = min(row.cold_epoch, epochs) if row.cold_epoch else None
    start = time.perf_counter()
    best_epoch, _, cold_state = harness.fit_best(module, dm, epochs, cold_epoch,
                                                 gradient_clip_val=config["trainer"].get("gradient_clip_val"))
    train_s = time.perf_counter() - start
    chosen = harness.run_select(module, dm, row.select)
    val_mae = harness.validate(module, dm)
    start = time.perf_counter()
    if cold_state is None:
        test = harness.run_test(module, dm)
    else:  # new items: the model of ``cold_epoch`` (chosen on held-out items, melu_tune.py); pooled values dropped
        known_items = [sc for sc in SCENARIOS if sc not in NEW_ITEM_SCENARIOS]
        test = {k: v for k, v in harness.run_test(module, dm, known_items).items() if k.split("/")[1] in known_items}
        module.load_state_dict(cold_state)
        test.update({k: v for k, v in harness.run_test(module, dm, NEW_ITEM_SCENARIOS).items()
                     if k.split("/")[1] in NEW_ITEM_SCENARIOS})
    return dict(method=name, seed=seed, epochs=epochs, best_epoch=best_epoch, cold_epoch=cold_epoch, train_s=train_s,
                test_s=time.perf_counter() - start, val_mae=val_mae, chosen=chosen, test=test,
                skipped_tasks=module.skipped_tasks, total_s=time.perf_counter() - began)


def raw_note(meta: dict) -> str:
    """`` (raw numbers: `PATH`)`` when the page was rendered from a saved file."""
    return f" (raw numbers: `{meta['raw']}`)" if meta.get("raw") else ""


def render(results: list[dict], meta: dict) -> str:
    methods = list(dict.fromkeys(r["method"] for r in results))
    seeds = sorted({r["seed"] for r in results})
    by = lambda m: [r for r in results if r["method"] == m]  # noqa: E731
    get = lambda m, key: [r["test"][key] for r in by(m) if key in r["test"]]  # noqa: E731
    lines = ["# Results: the MeLU table", "",
             f"Generated by `{meta['command']}`{raw_note(meta)} on {meta['when']} ({meta['machine']}); seeds {seeds}; "
             f"load average before the run: {meta['load']}.", "", *([meta["note"], ""] if meta.get("note") else []),
             "Protocol `melu` (data set `melu-movielens-1m`, MeLU's state files with the reconstructed warm state): "
             "MeLU's warm users (13–100 ratings) split 80/10/10 into training / validation / held-out warm users; "
             "test scenarios `warm` (held-out warm users), `user-cold`, `item-cold`, `user+item-cold` (MeLU's "
             "state files). Tasks: 10 random query ratings per user, the rest (≥ 3) support; training users get a "
             "new random split every epoch (episodic training). Every evaluation-time knob (`bias` shrinkage, "
             "`mf-foldin` ridge, `finetune` step size) was chosen on the "
             "validation users; nothing was tuned on test users. Each method trains for at most the epochs listed "
             "under Run details. Two checkpoints of the one run serve the scenarios: for known items (`warm`, "
             "`user-cold`) the epoch with the lowest MAE on the warm validation users; for new items (`item-cold`, "
             "`user+item-cold`) the weights after `cold_epoch` epochs, chosen once per method by "
             "`benchmarks/melu_tune.py` as the epoch with the lowest MAE on held-out validation *items* (protocol "
             "options `val_items: 0.2, val_items_by: newest`: the fifth of the warm items released last left out "
             "of training, rated by training users; seed 0). The other training hyper-parameters are fixed, not "
             "tuned (each row's `metarec fit` config: `configs/benchmarks/melu/<row>.yaml`). "
             "Network for all neural methods: MeLU's (32-d field embeddings, decision layers 64×64) plus a 32-d "
             "item-id embedding (`data.id_features: [item]`; zero for items never seen in training, dropped for "
             "half the training samples: `id_dropout: 0.5`); the gradient-based meta-learners adapt the decision "
             "layers (`head.*`; `anil` only the output layer, `head.4.*`) with 5 local steps and meta-learn the "
             "embeddings, as MeLU does.", "",
             "Metrics: MAE/RMSE over all query ratings; nDCG@k ranks each user's 10 query items (graded relevance "
             "= rating); `MAE (rounded)`: the MAE of each prediction rounded to the nearest star (1–5), the "
             "best point prediction for absolute error on a discrete scale (the median), shown beside the MAE "
             "of the raw predictions, which stays the number compared with the paper and the targets; `like acc` "
             "= accuracy of (prediction ≥ 4) vs (rating ≥ 4); `hit@10`/`nDCG@10 (pool)`: "
             "each user's query positives (rating ≥ 4) ranked among 100 sampled items that user never rated "
             "(drawn from the scenario's items). Mean ± std over seeds. `train s`: wall-clock fit time (with the "
             "validation after every epoch) on "
             f"{meta['threads']} CPU thread(s)"
             + (f", {meta['jobs']} methods running side by side" if meta.get("jobs", 1) > 1 else "") + ".", ""]
    for sc in SCENARIOS:
        lines += [f"## {sc}", "",
                  "| method | MAE | MAE (rounded) | MeLU-5 paper MAE | RMSE | nDCG@1 | nDCG@3 | nDCG@5 | like acc "
                  "| hit@10 (pool) | nDCG@10 (pool) | train s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for m in methods:
            cell = lambda k: harness.mean_std(get(m, f"test/{sc}/{k}"))  # noqa: E731
            mae = "(scores, not ratings)" if m == "popularity" else cell("mae")
            rmse = "–" if m == "popularity" else cell("rmse")
            rounded = "–" if m == "popularity" else cell("mae_rounded")
            lines.append(f"| {m} | {mae} | {rounded} | {PAPER_MAE[sc] if m in ('melu', 'maml') else ''} | {rmse} | "
                         f"{cell('ndcg@1')} | {cell('ndcg@3')} | {cell('ndcg@5')} | {cell('like_acc')} | "
                         f"{cell('pool/hit@10')} | {cell('pool/ndcg@10')} | "
                         f"{statistics.fmean(r['train_s'] for r in by(m)):.0f} |")
        lines.append("")
    lines += targets(results, methods), ""
    lines += ["## Run details", "", "| method | most epochs | epoch kept for old items (best on warm validation "
              "users), per seed | epoch for new items (`cold_epoch`, melu_tune.py) | val MAE (warm val users) "
              "| knobs chosen on validation | tasks skipped (inner loop diverged), per seed |",
              "|---|---|---|---|---|---|---|"]
    for m in methods:
        rs = by(m)
        kept = ", ".join(str(r.get("best_epoch", r["epochs"])) for r in rs)
        cold = rs[0].get("cold_epoch") or "same"
        lines.append(f"| {m} | {rs[0]['epochs']} | {kept} | {cold} | {harness.mean_std([r['val_mae'] for r in rs])} | "
                     f"{'; '.join(json.dumps(r['chosen']) for r in rs) or '–'} | "
                     f"{', '.join(str(r.get('skipped_tasks', 0)) for r in rs)} |")
    total = sum(r["train_s"] + r["test_s"] for r in results) / max(1, len(seeds))
    wall = meta.get("wall_s")
    timing = (f"Wall-clock time per seed (all methods, {meta['jobs']} at a time, {meta['threads']} thread(s) each): "
              f"{', '.join(f'seed {k}: {v:.0f} s' for k, v in wall.items())} (budget: 600 s on 2 cores); the sum of "
              f"the methods' fit + test times is {total:.0f} s per seed." if wall else
              f"Total fit + test time per seed: {total:.0f} s (budget: 600 s on 2 cores).")
    lines += ["", timing, "",
              "## More results", "", "- MAE versus support size K: [results_mae_vs_k.md](results_mae_vs_k.md) "
              "(`benchmarks/mae_vs_k.py`).", "- With and without frozen text-encoder item features: "
              "[text.md](text.md#results-on-the-melu-protocol) (rows `maml+text`, `anil+text`, `metasgd+text` of this "
              "script).", "- An independent untuned MF cross-check on this split: `benchmarks/mf_reference.py`.",
              "- How this table came to be (earlier runs, what was tried and dropped): [history.md](history.md)."]
    return "\n".join(lines) + "\n"


def targets(results: list[dict], methods: list[str]) -> str:
    metas = [m for m in methods if m in META]
    if not metas:
        return "No meta-learner in this run."
    avg = lambda m, k: statistics.fmean(r["test"][k] for r in results if r["method"] == m)  # noqa: E731
    has = lambda m, k: all(k in r["test"] for r in results if r["method"] == m)  # noqa: E731
    rounded = lambda m, sc: (f"{avg(m, f'test/{sc}/mae_rounded'):.4f}"  # noqa: E731
                             if has(m, f"test/{sc}/mae_rounded") else "–")
    out = ["## Targets (measured, met or not)", "",
           "| scenario | best meta-learner (MAE) | MAE | target | nDCG@3 | target | beats bias & mf-foldin (MAE) "
           "| MAE gap to the better baseline, paired by seed | its MAE (rounded), for reference |",
           "|---|---|---|---|---|---|---|---|---|"]
    for sc in SCENARIOS:
        key = f"test/{sc}/mae"
        best = min(metas, key=lambda m: avg(m, key))
        mae, ndcg = avg(best, key), avg(best, f"test/{sc}/ndcg@3")
        baselines = [b for b in ("bias", "mf-foldin") if b in methods]
        beats = ("yes" if mae < min(avg(b, key) for b in baselines) else "no") if baselines else "–"
        gap = harness.paired_gap(results, best, min(baselines, key=lambda b: avg(b, key)), key) if baselines else "–"
        out.append(f"| {sc} | {best} | {mae:.4f} | "
                   f"≤ {TARGET_MAE[sc]} ({'met' if mae <= TARGET_MAE[sc] else 'missed'}) | {ndcg:.4f} | "
                   f"≥ {TARGET_NDCG3[sc]} ({'met' if ndcg >= TARGET_NDCG3[sc] else 'missed'}) | "
                   f"{beats} | {gap} | {rounded(best, sc)} |")
    return "\n".join(out)


TABLE_METRICS = ("mae", "mae_rounded", "rmse", "ndcg@1", "ndcg@3", "ndcg@5", "like_acc", "pool/hit@10",
                 "pool/ndcg@10")
ALL_BEGIN, ALL_END = "<!-- ALL_RATINGS:BEGIN -->", "<!-- ALL_RATINGS:END -->"
REFERENCE_USER_COLD = 0.6990  # ../shared/reference/melu_mf_foldin.py, all warm ratings, K=10 LAM=4, unclipped, seed 0


def seed_values(results: list[dict], method: str, key: str) -> dict[int, float]:
    return {r["seed"]: r["test"][key] for r in results if r["method"] == method and key in r["test"]}


def _mean(results: list[dict], method: str, key: str) -> float:
    return statistics.fmean(seed_values(results, method, key).values())


def _target_row(results: list[dict], sc: str, metas: list[str], baselines: list[str]) -> str:
    """One scenario's row: the best meta-learner, the better baseline, the paired gap per seed."""
    key = f"test/{sc}/mae"
    best = min(metas, key=lambda m: _mean(results, m, key))
    base = min(baselines, key=lambda b: _mean(results, b, key))
    a, b = seed_values(results, best, key), seed_values(results, base, key)
    gaps = {seed: a[seed] - b[seed] for seed in sorted(a.keys() & b.keys())}
    lower, mae = sum(g < 0 for g in gaps.values()), _mean(results, best, key)
    met = "met" if mae <= ALL_TARGET_MAE[sc] else "missed"
    per_seed = ", ".join(f"seed {seed}: {g:+.4f}" for seed, g in gaps.items())
    every = "yes" if gaps and lower == len(gaps) else "no"
    return (f"| {sc} | {best} | {mae:.4f} | ≤ {ALL_TARGET_MAE[sc]} ({met}) | {base} | {_mean(results, base, key):.4f} "
            f"| {per_seed} | {lower}/{len(gaps)} | {every} |")


def all_ratings_targets(results: list[dict], methods: list[str]) -> list[str]:
    """The issue-22 targets: per scenario the best meta-learner (lowest mean MAE), the better of bias and mf-foldin,
    the gap per seed (paired), the MAE target; then mf-foldin against the independent reference."""
    metas = [m for m in methods if m in META]
    baselines = [b for b in ("bias", "mf-foldin") if b in methods]
    out = ["| scenario | best meta-learner | its MAE | MAE target | better of bias and mf-foldin | its MAE | gap "
           "(meta − baseline) per seed | lower on | beats it on every seed |", "|---|---|---|---|---|---|---|---|---|"]
    if metas and baselines:
        out += [_target_row(results, sc, metas, baselines) for sc in SCENARIOS]
    if "mf-foldin" in methods:
        uc = seed_values(results, "mf-foldin", "test/user-cold/mae")
        mean = statistics.fmean(uc.values())
        met = "met" if abs(mean - REFERENCE_USER_COLD) <= 0.01 else "missed"
        out += ["", f"`mf-foldin` on user-cold: {mean:.4f} (per seed: " + ", ".join(f"{v:.4f}" for v in uc.values())
                + f") against the reference's {REFERENCE_USER_COLD} (`../shared/reference/melu_mf_foldin.py`, K=10, "
                f"LAM=4, its own query draw): gap {mean - REFERENCE_USER_COLD:+.4f}, target within 0.01: {met}."]
    return out


def _cell(results: list[dict], method: str, key: str) -> str:
    if method == "popularity" and key.endswith(("mae", "rmse", "mae_rounded")):
        return "(scores)"
    return harness.mean_std([r["test"][key] for r in results if r["method"] == method and key in r["test"]])


def _side_by_side(results: list[dict], methods: list[str], paper: Optional[list[dict]]) -> list[str]:
    """MAE per scenario, the paper-comparable table's beside the all-ratings one."""
    in_paper = {r["method"] for r in paper or []}
    lines = ["### MAE beside the paper-comparable table", "",
             "| method | " + " | ".join(f"{sc}: paper-comparable | {sc}: all ratings" for sc in SCENARIOS) + " |",
             "|---|" + "---|" * (2 * len(SCENARIOS))]
    for m in methods:
        row = [(_cell(paper, m, f"test/{sc}/mae") if m in in_paper else "–") + " | "
               + _cell(results, m, f"test/{sc}/mae") for sc in SCENARIOS]
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    return lines


def _timing(results: list[dict], methods: list[str], seeds: list[int], wall: dict) -> list[str]:
    lines = ["### Time per seed, split by method", "",
             "Seconds per method (fit with validation after every epoch, knob selection on validation, test), "
             "methods running side by side; the wall clock is the whole seed's (budget: 1,200 s on 2 cores).", "",
             "| method | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|" + "---|" * len(seeds)]
    for m in methods:
        per = {r["seed"]: r.get("total_s", r["train_s"] + r["test_s"]) for r in results if r["method"] == m}
        lines.append(f"| {m} | " + " | ".join(f"{per[s]:.0f}" if s in per else "–" for s in seeds) + " |")
    lines.append("| **wall clock, whole seed** | "
                 + " | ".join(f"**{wall[str(s)]:.0f}**" if str(s) in wall else "–" for s in seeds) + " |")
    return lines


def _run_details(results: list[dict], methods: list[str]) -> list[str]:
    lines = ["### Run details", "", "| method | most epochs | epoch kept (best on warm validation users), per seed "
             "| epoch for new items (`cold_epoch`) | val MAE (warm val users) | knobs chosen on validation |",
             "|---|---|---|---|---|---|"]
    for m in methods:
        rs = [r for r in results if r["method"] == m]
        lines.append(f"| {m} | {rs[0]['epochs']} | {', '.join(str(r.get('best_epoch')) for r in rs)} | "
                     f"{rs[0].get('cold_epoch') or 'same'} | {harness.mean_std([r['val_mae'] for r in rs])} | "
                     f"{'; '.join(json.dumps(r['chosen']) for r in rs)} |")
    return lines


ALL_RATINGS_PROTOCOL = (
    "The same validation users, held-out warm users and test scenarios as the paper-comparable table below (users "
    "with 13–100 ratings in each state, same seeds, same query draws), but training holds every warm rating of "
    "every other warm user (protocol option `version: 2`; seed 0: 4,302 users, 616,188 ratings, against 2,123 "
    "users, 97,555 ratings in version 1). A user with more than 100 training ratings is dealt into ceil(n / 100) "
    "tasks every epoch (`sampler_args.chunk_rows: 100`: a fresh seeded shuffle per epoch, each part's first 10 "
    "ratings its query, the rest its support), so every training rating is in one task of every epoch; the 250 "
    "warm users with fewer than 13 ratings make no task (the baselines still count their ratings). `bias` and "
    "`popularity` count every training rating (`fit: ratings`), `mf-foldin` is ALS over every training rating "
    "(`fit: als`: k = 10, penalty 4, 12 sweeps, the fold-in bias almost unpenalised, as the reference; new items "
    "by a ridge map of their features, penalty 10 chosen on held-out validation items where the reference uses "
    "3). `maml` and `metasgd` keep the paper table's network and inner loop. `meta-foldin` (docs/algorithms.md) "
    "starts from ALS as `mf-foldin`'s but with penalty 12 (chosen on validation users), meta-learns the item "
    "vectors, the content map, the prior mean (from the user's fields) and the prior precision of the fold-in, "
    "and folds a user known from training (item-cold) in from that user's training ratings too. Every knob in "
    "Run details was chosen on validation users or held-out validation items, none on test users.")


def render_all_ratings(results: list[dict], meta: dict, paper: Optional[list[dict]]) -> str:
    """The all-ratings section of docs/results.md (between ``ALL_BEGIN`` and ``ALL_END``): MAE beside the
    paper-comparable table's (``paper``: its raw results), the per-scenario metrics, the targets, time per method."""
    methods = list(dict.fromkeys(r["method"] for r in results))
    seeds = sorted({r["seed"] for r in results})
    lines = [ALL_BEGIN, "## All warm ratings: protocol `melu` version 2 (issue 22)", "",
             f"Generated by `{meta['command']}`{raw_note(meta)} on {meta['when']} ({meta['machine']}); seeds {seeds}; "
             f"load average "
             f"before the run: {meta['load']}; {meta['jobs']} methods at a time, {meta['threads']} thread(s) each.",
             "", *([meta["note"], ""] if meta.get("note") else []), ALL_RATINGS_PROTOCOL, "",
             *_side_by_side(results, methods, paper), "", "### All ratings, per scenario (mean ± std over seeds)", ""]
    for sc in SCENARIOS:
        lines += [f"{sc}:", "", "| method | MAE | MAE (rounded) | RMSE | nDCG@1 | nDCG@3 | nDCG@5 | like acc | "
                  "hit@10 (pool) | nDCG@10 (pool) |", "|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {m} | " + " | ".join(_cell(results, m, f"test/{sc}/{k}") for k in TABLE_METRICS) + " |"
                  for m in methods] + [""]
    lines += ["### Targets (measured, met or not)", "", *all_ratings_targets(results, methods), "",
              *_timing(results, methods, seeds, meta.get("wall_s", {})), "", *_run_details(results, methods), "",
              "*The paper-comparable tables (protocol `melu` version 1, every method) follow, as they were.*"]
    return "\n".join(lines + [ALL_END]) + "\n"


def with_section(page: str, section: str) -> str:
    """``page`` with its all-ratings section replaced by ``section`` (put before the first ``## `` heading when it
    has none)."""
    if ALL_BEGIN in page and ALL_END in page:
        head, rest = page.split(ALL_BEGIN, 1)
        return head + section.rstrip("\n") + rest.split(ALL_END, 1)[1]
    at = page.find("\n## ")
    return page + "\n" + section if at < 0 else page[:at + 1] + section + "\n" + page[at + 1:]


def kept_section(page: str) -> str:
    """The all-ratings section of ``page`` (empty when none), so re-rendering the paper table keeps it."""
    if ALL_BEGIN in page and ALL_END in page:
        return ALL_BEGIN + page.split(ALL_BEGIN, 1)[1].split(ALL_END, 1)[0] + ALL_END + "\n"
    return ""


def log_to_wandb(project: str, results: list[dict], meta: dict) -> None:
    """One row per (method, seed, scenario) as a ``wandb.Table`` (``metarec_pl.tracking.log_table``)."""
    logger = harness.wandb_logger(project, "melu-table", config=meta)
    rows = [[r["method"], r["seed"], sc, r["train_s"], *[r["test"].get(f"test/{sc}/{k}") for k in TABLE_METRICS]]
            for r in results for sc in SCENARIOS]
    log_table(logger, "results/melu_table", ["method", "seed", "scenario", "train_s", *TABLE_METRICS], rows)
    logger.experiment.finish()
    print(f"logged {len(rows)} rows to W&B project {project} (run files under runs/wandb)")


def raw_path(args: argparse.Namespace) -> Path:
    """``--raw``, else the variant's default under runs/melu_table/."""
    default = "runs/melu_table/all_ratings.json" if args.variant == "all-ratings" else "runs/melu_table/results.json"
    return Path(args.raw or default)


def write_page(args: argparse.Namespace, results: list[dict], meta: dict) -> None:
    """Write ``args.out``: the paper-comparable table (keeping the all-ratings section), or (``--variant
    all-ratings``) only the all-ratings section of the existing page."""
    out = Path(args.out)
    page = out.read_text() if out.exists() else ""
    if args.variant == "all-ratings":
        paper_raw = Path(args.paper_raw)
        paper = json.loads(paper_raw.read_text())["results"] if paper_raw.exists() else None
        out.write_text(with_section(page, render_all_ratings(results, meta, paper)))
        return
    section = kept_section(page)
    out.write_text(with_section(render(results, meta), section) if section else render(results, meta))


def chosen_rows(variant: str, named: Optional[list[str]]) -> list[str]:
    """The rows to run: ``named``, else every row run by default; each must be in the table and its algorithm
    registered (``ConfigError`` otherwise)."""
    table = harness.load_table(VARIANTS[variant])
    registered = {r.name for r in plugins.registrations() if r.kind == "algorithm"}
    available = [m for m in table.rows if table.config(m)["model"]["algorithm"] in registered]
    methods = named or [m for m in available if table.rows[m].by_default]
    unknown = [m for m in methods if m not in available]
    if unknown:
        raise ConfigError(f"unknown or unregistered row(s) {', '.join(unknown)} of {table.folder}; expected some "
                          f"of: {', '.join(available)}")
    return methods


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="../shared/data/melu-ml-1m")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=None,
                   help="default: every method whose algorithm is registered, without the '+text' rows")
    p.add_argument("--epoch-scale", type=float, default=1.0, help="multiplies every method's epochs")
    p.add_argument("--candidates", default=None,
                   help="unrated items per user for the top-k metrics, or 'all' (default: the configs', 100)")
    p.add_argument("--jobs", type=int, default=2, help="methods trained at the same time, one process each")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--out", default="docs/results.md")
    p.add_argument("--raw", default=None, help="default: runs/melu_table/results.json (all-ratings: all_ratings.json)")
    p.add_argument("--variant", choices=list(VARIANTS), default="paper",
                   help="paper: the paper-comparable table; all-ratings: protocol melu v2, its section of --out")
    p.add_argument("--paper-raw", default="benchmarks/results/melu_table.json",
                   help="all-ratings: the paper-comparable table's raw results, shown beside it")
    p.add_argument("--render", action="store_true", help="only rewrite --out from --raw")
    p.add_argument("--note", default="", help="a paragraph added under the header (e.g. what this run left out)")
    p.add_argument("--wandb", metavar="PROJECT", default=None,
                   help="also log the results as a wandb.Table to this W&B project (offline with WANDB_MODE=offline)")
    args = p.parse_args()
    harness.setup(args.threads)
    raw = raw_path(args)
    if args.render:
        saved = json.loads(raw.read_text())
        write_page(args, saved["results"], {**saved["meta"], "note": args.note, "raw": str(raw)})
        print(f"wrote {args.out} from {raw}")
        if args.wandb:
            log_to_wandb(args.wandb, saved["results"], saved["meta"])
        return
    methods = chosen_rows(args.variant, args.methods)
    candidates = args.candidates if args.candidates in (None, "all") else int(args.candidates)
    meta = harness.provenance(threads=args.threads, jobs=args.jobs, note=args.note, raw=str(raw))
    results, meta["wall_s"] = [], {}
    with concurrent.futures.ProcessPoolExecutor(args.jobs, multiprocessing.get_context("spawn"),
                                                initializer=harness.setup, initargs=(args.threads,)) as pool:
        for seed in args.seeds:
            start = time.perf_counter()
            jobs = [pool.submit(run_one, name, seed, args.root, candidates, args.epoch_scale, args.variant)
                    for name in methods]
            for job in concurrent.futures.as_completed(jobs):
                r = job.result()
                print(f"seed {seed} {r['method']:12s} fit {r['train_s']:6.1f}s val {r['val_mae']:.4f} "
                      + " ".join(f"{sc} {r['test'].get(f'test/{sc}/mae', float('nan')):.4f}" for sc in SCENARIOS),
                      flush=True)
            results += [job.result() for job in jobs]  # in method order
            meta["wall_s"][str(seed)] = round(time.perf_counter() - start, 1)
            raw.parent.mkdir(parents=True, exist_ok=True)
            raw.write_text(json.dumps(dict(meta=meta, results=results), indent=1))
    write_page(args, results, meta)
    print(f"wrote {args.out}")
    if args.wandb:
        log_to_wandb(args.wandb, results, meta)


if __name__ == "__main__":
    harness.run_script(main, "melu_table")
