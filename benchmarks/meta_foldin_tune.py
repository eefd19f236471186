"""Choose ``meta-foldin``'s options for the all-ratings MeLU table on validation data only (issue 22).

    python benchmarks/meta_foldin_tune.py --root ../shared/data/melu-ml-1m --config '{"history": 1.0}' --name h1

Trains ``meta-foldin`` (or ``--method``) as the all-ratings table does (protocol ``melu`` version 2; the row's
config in configs/benchmarks/melu-all-ratings/, its ``algorithm_args`` updated by ``--config``, the outer Adam at
``--lr``), on ``val_items: 0.2, val_items_by: newest``: the fifth of the warm items released last is held out of
training and the training users' ratings of them are the validation scenario ``item-cold`` (known users, new items,
as the test's ``item-cold``); ``warm`` are the warm validation users (new users, known items).  After every epoch
both validation MAEs are recorded; after the fit, the evaluation-time options in ``--grid`` (attribute -> values,
e.g. ``{"history": [0, 0.5, 1]}``) are tried on the last epoch's and on ``--keep``'s weights.  No test user is
looked at.  One JSON line per run is appended to ``--out``.

benchmarks/results/meta_foldin_tune_seed0.jsonl holds the runs that chose the row's settings; each ``config`` there
is relative to the row as it was then (``cold_tasks`` 0.25, ``dim`` 10, ``reg``/``ridge`` 4, ``bias_ridge`` 0.001,
``feature_ridge`` 10, no ``history``), and the learned output map of two runs (``link``) is no longer an option.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

from metarec_pl import harness

TABLE = Path(__file__).resolve().parents[1] / "configs" / "benchmarks" / "melu-all-ratings"
SCENARIOS = ("warm", "item-cold")


def validate_all(module, dm) -> dict[str, float]:
    out = harness.quiet_trainer().validate(module, dm, verbose=False)[0]
    return {k: round(v, 5) for k, v in out.items() if k.endswith("mae") or k.endswith("mae_rounded")}


def grid_values(module, dm, grid: dict[str, list]) -> list[dict]:
    rows = []
    for values in itertools.product(*grid.values()):
        for attr, v in zip(grid, values):
            setattr(module.algorithm, attr, v)
        rows.append({**dict(zip(grid, values)), **validate_all(module, dm)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default="../shared/data/melu-ml-1m")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", default="meta-foldin")
    p.add_argument("--config", default="{}", help="JSON: algorithm_args to update the row's with")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--keep", type=int, default=2, help="also try --grid on the weights after this epoch")
    p.add_argument("--lr", type=float, default=1e-3, help="outer Adam learning rate")
    p.add_argument("--grid", default="{}", help="JSON: evaluation-time attribute -> values")
    p.add_argument("--val-items", type=float, default=0.2,
                   help="share of the warm items held out of training (0: none, no item-cold curve)")
    p.add_argument("--val-items-by", choices=["newest", "random"], default="newest")
    p.add_argument("--name", default="run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/meta_foldin_tune.jsonl")
    args = p.parse_args(argv)
    harness.setup(args.threads)
    config = harness.load_table(TABLE).config(args.method)
    model = {"algorithm_args": json.loads(args.config), "optimizer": {"init_args": {"lr": args.lr}}}
    overrides = {"model": model, "data": {"candidates": None,
                                          "dataset_args": {"val_items": args.val_items,
                                                           "val_items_by": args.val_items_by}}}
    load = os.getloadavg()
    module, dm, config = harness.build(config, args.root, args.seed, overrides, where=args.method)
    epochs = args.epochs or harness.max_epochs(config)
    curves, keep = harness.ValidationCurves(SCENARIOS, echo=True), harness.KeepEpoch(args.keep)
    start = time.perf_counter()
    harness.trainer(epochs, [curves, keep], config["trainer"].get("gradient_clip_val")).fit(module, dm)
    fit_s = time.perf_counter() - start
    grid = json.loads(args.grid)
    last = grid_values(module, dm, grid) if grid else []
    kept = []
    if grid and keep.state is not None:
        module.load_state_dict(keep.state)
        kept = grid_values(module, dm, grid)
    row = dict(name=args.name, method=args.method, seed=args.seed, config=json.loads(args.config), lr=args.lr,
               epochs=epochs, fit_s=round(fit_s), load=[round(x, 2) for x in load],
               curves=curves.rows, grid_last=last, grid_keep=kept, keep=args.keep)
    with open(args.out, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    harness.run_script(main, "meta_foldin_tune")
