"""MAE versus support size K on the ``user-cold`` protocol: docs/results_mae_vs_k.png and docs/results_mae_vs_k.md.

    python benchmarks/mae_vs_k.py --root ../shared/data/melu-ml-1m
    python benchmarks/mae_vs_k.py --render --raw benchmarks/results/mae_vs_k.json   # page + plot from saved numbers

Data: the MeLU release under the ``user-cold`` protocol (users split train/val/test; test users never trained on),
keeping users with >= 60 ratings so every K up to 50 plus a 10-rating query fits.  Each method is fitted once
(training tasks: 10 query ratings, 5..50 support ratings), its evaluation-time knob chosen on the validation users
(as in ``melu_table.py``), then tested with exactly K support ratings per test user for each K.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


from metarec_pl import harness
from metarec_pl.data.module import MetaDataModule
from metarec_pl.tracking import log_line_plot

TABLE = Path(__file__).resolve().parents[1] / "configs" / "benchmarks" / "melu"  # the MeLU table's rows

KS = (5, 10, 20, 30, 50)
DEFAULT_METHODS = ("bias", "mf-foldin", "finetune", "maml", "metasgd")


def data_overrides(k=None) -> dict:
    """The MeLU table row's data changed to this page's: protocol ``user-cold`` on users with >= 60 ratings, 5-50
    support ratings in training (``k=None``), exactly ``k`` at test; no candidate pool."""
    support = dict(min_support=5, max_support=50) if k is None else dict(min_support=k, max_support=k)
    return {"data": {"dataset_args": {"protocol": "user-cold", "min_ratings": 60}, "sampler_args": support,
                     "candidates": None}}


def test_module(config: dict, root: str, seed: int, k: int) -> MetaDataModule:
    """The data module of the K = ``k`` test."""
    return MetaDataModule(**{**harness.merged(config, data_overrides(k))["data"], "root": root, "seed": seed})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="../shared/data/melu-ml-1m")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    p.add_argument("--epoch-scale", type=float, default=0.4, help="of the MeLU table's most epochs (10 -> 4)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--png", default="docs/results_mae_vs_k.png")
    p.add_argument("--raw", default="runs/mae_vs_k/results.json")
    p.add_argument("--md", default="docs/results_mae_vs_k.md", help="the markdown page with the table and the plot")
    p.add_argument("--render", action="store_true", help="only rewrite --md and --png from --raw")
    p.add_argument("--wandb", metavar="PROJECT", default=None,
                   help="also log the curves as a W&B line plot to this project (offline with WANDB_MODE=offline)")
    args = p.parse_args()
    harness.setup(args.threads)
    if args.render:
        saved = json.loads(Path(args.raw).read_text())
        results = {name: {int(k): v for k, v in by_k.items()} for name, by_k in saved["results"].items()}
        publish(args, results, saved["command"], saved.get("seconds", {}))
        return
    table = harness.load_table(TABLE)
    results: dict[str, dict[int, float]] = {}
    seconds: dict[str, float] = {}
    for name in args.methods:
        module, dm, config = harness.build(table.config(name), args.root, args.seed, data_overrides())
        start = time.perf_counter()
        harness.trainer(harness.max_epochs(config, args.epoch_scale),
                        gradient_clip_val=config["trainer"].get("gradient_clip_val")).fit(module, dm)
        chosen = harness.run_select(module, dm, table.rows[name].select)
        results[name] = {}
        for k in KS:
            results[name][k] = harness.run_test(module, test_module(config, args.root, args.seed, k))[
                "test/user-cold/mae"]
        seconds[name] = time.perf_counter() - start
        print(f"{name:10s} {seconds[name]:6.1f}s chosen {chosen} "
              + " ".join(f"K={k}: {v:.4f}" for k, v in results[name].items()), flush=True)
    raw = Path(args.raw)
    raw.parent.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join(sys.argv)
    raw.write_text(json.dumps(dict(command=command, results=results, seconds=seconds), indent=1))
    publish(args, results, command, seconds)


def publish(args: argparse.Namespace, results: dict[str, dict[int, float]], command: str,
            seconds: dict[str, float]) -> None:
    """The PNG plot, the markdown page, and (``--wandb``) a W&B line plot."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, by_k in results.items():
        ax.plot(list(by_k), list(by_k.values()), marker="o", label=name)
    ax.set_xlabel("support ratings per test user (K)")
    ax.set_ylabel("MAE on 10 query ratings")
    ax.set_title("user-cold protocol (MeLU release, users with ≥ 60 ratings)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.png, dpi=120)
    if args.wandb:
        logger = harness.wandb_logger(args.wandb, "mae-vs-k")
        log_line_plot(logger, "results/mae_vs_k", list(KS), {n: [by_k[k] for k in KS] for n, by_k in results.items()},
                      xname="K", title="MAE vs support size K (user-cold)")
        logger.experiment.finish()
    lines = ["# Results: MAE versus support size K", "",
             f"Generated by `{command}` (seed {args.seed}); raw numbers in `{args.raw}`.", "",
             "Data: the MeLU release under the `user-cold` protocol (train / val / test users; test users never "
             "trained on), users with ≥ 60 ratings. Each method is fitted once on tasks with 5–50 support and 10 "
             "query ratings, its evaluation-time knob chosen on the validation users, then tested with exactly K "
             "support ratings per test user. Network and training settings as in the MeLU table "
             "(`configs/benchmarks/melu/`), trained for 0.4 of its 10 epochs (4), no epoch selection. MAE on the "
             "10 query ratings of each test user.", "",
             f"![MAE vs K]({Path(args.png).name})", "",
             "| method | " + " | ".join(f"K={k}" for k in KS) + " | fit + tests, s |",
             "|---|" + "---|" * (len(KS) + 1)]
    for name, by_k in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{by_k[k]:.4f}" for k in KS)
                     + f" | {seconds.get(name, float('nan')):.0f} |")
    Path(args.md).write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-len(results) - 2:]))


if __name__ == "__main__":
    harness.run_script(main, "mae_vs_k")
