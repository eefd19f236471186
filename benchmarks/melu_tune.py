"""Choose, on validation data only, the training epoch whose model serves new items in the MeLU table.

    python benchmarks/melu_tune.py --root ../shared/data/melu-ml-1m        # every trained method, seed 0

Each row of the MeLU table (``configs/benchmarks/melu/``) is trained as in the table, but on the ``melu`` protocol with
``val_items: 0.2, val_items_by: newest``: the fifth of the warm items released last is held out of training, and
the training users' ratings of them form a validation scenario ``item-cold`` (the test's new items are later
releases still; random held-out items were far easier: MAE ~0.80 against ~0.88 on the test's new items).
After every epoch the validation MAE on warm validation users and on the held-out items is recorded.  On these
curves warm users keep gaining from more epochs while held-out items do not, so the table keeps two checkpoints per
method: the best epoch on warm validation users (chosen in the table's own run) for ``warm`` and ``user-cold``, and
``cold_epoch`` (chosen here, the epoch with the lowest held-out-item MAE) for ``item-cold`` and
``user+item-cold``.  No test user is used.
Output: the curves and choices as JSON (``--out``), and the ``cold_epoch`` values to copy into the table's
``table.yaml``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import sys
import time
from pathlib import Path

from metarec_pl import harness

TABLE = Path(__file__).resolve().parents[1] / "configs" / "benchmarks" / "melu"  # the MeLU table's rows
VAL_ITEMS, VAL_ITEMS_BY = 0.2, "newest"


def held_out_items(config: dict) -> dict:
    """Overrides that hold ``VAL_ITEMS`` of the warm items out of training as validation items (the protocol's
    options sit in ``base_args`` when the row wraps its data set in ``text``); no candidate pool."""
    protocol = dict(val_items=VAL_ITEMS, val_items_by=VAL_ITEMS_BY)
    args = {"base_args": protocol} if config["data"]["dataset"] == "text" else protocol
    return {"data": {"dataset_args": args, "candidates": None}}


def tune_one(name: str, seed: int, root: str) -> dict:
    config = harness.load_table(TABLE).config(name)
    module, dm, config = harness.build(config, root, seed, held_out_items(config))
    curves = harness.ValidationCurves(("warm", "item-cold"))
    start = time.perf_counter()
    harness.trainer(harness.max_epochs(config), [curves],
                    gradient_clip_val=config["trainer"].get("gradient_clip_val")).fit(module, dm)
    rows = curves.rows
    best = {sc: min(rows, key=lambda r: r[sc])["epoch"] for sc in ("warm", "item-cold")}
    return dict(method=name, seed=seed, fit_s=time.perf_counter() - start, curves=rows,
                best_warm_epoch=best["warm"], cold_epoch=best["item-cold"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="../shared/data/melu-ml-1m")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", nargs="+", default=None,
                   help="default: every method trained for more than 1 epoch, without the '+text' rows")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/melu_tune.json")
    args = p.parse_args()
    harness.setup(args.threads)
    table = harness.load_table(TABLE)
    trained = [m for m in table.rows if harness.max_epochs(table.config(m)) > 1]
    methods = args.methods or [m for m in trained if table.rows[m].by_default]
    unknown = [m for m in methods if m not in trained]
    if unknown:
        sys.exit(f"melu_tune: unknown or untrained method(s) {', '.join(unknown)}; expected some of: "
                 f"{', '.join(trained)}")
    results = []
    with concurrent.futures.ProcessPoolExecutor(args.jobs, multiprocessing.get_context("spawn"),
                                                initializer=harness.setup, initargs=(args.threads,)) as pool:
        jobs = [pool.submit(tune_one, m, args.seed, args.root) for m in methods]
        for job in concurrent.futures.as_completed(jobs):
            r = job.result()
            print(f"{r['method']:22s} fit {r['fit_s']:5.0f}s  best warm epoch {r['best_warm_epoch']:2d}  "
                  f"cold_epoch {r['cold_epoch']:2d}  " + " ".join(
                      f"{c['warm']:.3f}/{c['item-cold']:.3f}" for c in r["curves"]), flush=True)
            results.append(r)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(dict(command="python " + " ".join(sys.argv), val_items=VAL_ITEMS,
                                              val_items_by=VAL_ITEMS_BY,
                                              results=sorted(results, key=lambda r: methods.index(r["method"]))),
                                         indent=1))
    print("cold_epoch per method:", json.dumps({r["method"]: r["cold_epoch"] for r in results}))


if __name__ == "__main__":
    harness.run_script(main, "melu_tune")
