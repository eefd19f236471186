"""Peak memory of one second-order meta-step of ``text-sequence`` on many users at once: the meta-learned soft
prompt (Meta-SGD on ``encoder.prompt``, optionally LoRA) against full-parameter MAML of the same backbone.

    python benchmarks/sequence_memory.py --users 256

Each configuration runs in a fresh process (CPU, float32): it builds the backbone (384-d item vectors: random
stand-ins of the MiniLM table's shape; memory does not depend on their values) and one meta-batch of ``--users``
next-item tasks (K support items with 4 negatives each, a query item with 20 negatives), then records the peak
resident memory (``ru_maxrss``) before and after one meta-step (inner loop, query loss, backward).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from metarec_pl.algorithms.maml import MAML
from metarec_pl.algorithms.metasgd import MetaSGD
from metarec_pl.data.sequences import SequenceTask, sequence_batch
from metarec_pl.losses import BCE
from metarec_pl.models.sequence import PEFT_ADAPT, TextSequenceNet

ITEMS = 1683


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(mode: str, users: int, k: int, steps: int, lora_rank: int) -> dict:
    torch.manual_seed(0)
    model = TextSequenceNet([], item_vectors=torch.randn(ITEMS, 384), lora_rank=lora_rank)
    if mode == "prompt":
        alg = MetaSGD(inner_steps=steps, inner_lr=0.1, first_order=False, adapt=list(PEFT_ADAPT))
    else:
        alg = MAML(inner_steps=steps, inner_lr=0.01, first_order=False, adapt=["*"])
    alg.loss = BCE()
    alg.bind(model)
    gen = torch.Generator().manual_seed(0)
    tasks = []
    for u in range(users):
        items = torch.randperm(ITEMS - 1, generator=gen)[:k + 1] + 1
        tasks.append(SequenceTask(u, items[:k], items[k:]))
    batch = sequence_batch(tasks, torch.arange(1, ITEMS), 4, 20, gen)
    before = peak_mib()
    started = time.time()
    loss = alg.run(model, batch, steps, create_graph=True).query_loss.mean()
    loss.backward()
    adapted = sum(dict(model.named_parameters())[n].numel() for n in alg.adapted_names)
    return {"mode": mode, "users": users, "k": k, "inner_steps": steps, "lora_rank": lora_rank,
            "adapted_per_user": adapted, "backbone_params": sum(p.numel() for p in model.parameters()),
            "peak_before_mib": before, "peak_mib": peak_mib(), "step_s": time.time() - started}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=256)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--inner_steps", type=int, default=2)
    p.add_argument("--lora_rank", type=int, default=0)
    p.add_argument("--modes", nargs="+", default=["prompt", "full"])
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        torch.set_num_threads(1)
        print(json.dumps(one(args.one, args.users, args.k, args.inner_steps, args.lora_rank)))
        return
    for mode in args.modes:
        out = subprocess.run([sys.executable, __file__, "--one", mode, "--users", str(args.users), "--k", str(args.k),
                              "--inner_steps", str(args.inner_steps), "--lora_rank", str(args.lora_rank)],
                             capture_output=True, text=True, check=True)
        print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
