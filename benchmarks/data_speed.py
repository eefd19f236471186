"""Data speed on the real files: cold vs cached load + building every task, and data loading vs training step.

    .venv/bin/python benchmarks/data_speed.py [--data ../shared/data] [--threads 2] [--steps 20]

1. For each data set (MeLU release with protocol ``melu``, ML-1M and ML-100K with ``user-cold``): load into an
   empty cache ("cold": parse + protocol + write the Arrow cache) and build every task of every stage with
   ``UserTaskSampler(query_size=10, min_support=3)``; then the same from the cache ("cached").
2. On ``melu``: per meta-batch of 32 tasks, the time the DataLoader takes to hand over a collated batch vs the
   time of one MAML training step (MeLU network, 5 inner steps, second order, decision layers adapted).
Prints one line per measurement; numbers go to docs/data.md.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch

from metarec_pl.bilevel import MetaLearner
from metarec_pl.data.base import UserTaskSampler
from metarec_pl.data.melu_release import MeLUMovieLens1M
from metarec_pl.data.module import MetaDataModule
from metarec_pl.data.movielens import MovieLens1M, MovieLens100K

MELU_ARGS = {"state_files": {"warm": ["warm_state.reconstructed.json", "warm_state_y.json"]}}


class Clock:
    """Wall time and this process's CPU time (all threads): on a machine shared with other jobs the CPU time is
    what the work itself costs, the wall time also counts waiting for a core."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def __call__(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def load_and_build(cls, root: str, cache_dir: str, **kw) -> tuple[tuple[float, float], tuple[float, float], int]:
    clock = Clock()
    data = cls(root=root, cache_dir=cache_dir, **kw).load()
    loaded = clock()
    sampler = UserTaskSampler(query_size=10, min_support=3)
    tasks = sum(len(sampler.tasks(data, rows, seed=i)) for stage in data.splits.values()
                for i, rows in enumerate(stage.values()))
    return loaded, clock(), tasks


def step_vs_loading(root: str, cache_dir: str, steps: int) -> tuple[float, float]:
    dm = MetaDataModule("melu-movielens-1m", root=root, dataset_args={"cache_dir": cache_dir, **MELU_ARGS},
                        sampler_args={"query_size": 10, "min_support": 3}, tasks_per_batch=32)
    model = MetaLearner(algorithm="maml", network="melu", inner_steps=5, inner_lr=0.05, adapt=["head.*"],
                        network_args={"embedding_dim": 32, "hidden": [64, 64]}, data_info=dm.info)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader, load_s, step_s = iter(dm.train_dataloader()), 0.0, 0.0
    for _ in range(steps):
        t0 = time.process_time()
        batch = next(loader)
        t1 = time.process_time()
        result = model.adapt(batch, model.algorithm.inner_steps, create_graph=True)
        loss = model.algorithm.outer_loss(result, batch, dict(model.network.named_parameters()))
        opt.zero_grad()
        loss.backward()
        opt.step()
        t2 = time.process_time()
        load_s, step_s = load_s + t1 - t0, step_s + t2 - t1
    return load_s / steps, step_s / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.disable(logging.INFO)
    data = Path(args.data)
    cases = [("melu-movielens-1m/melu", MeLUMovieLens1M, data / "melu-ml-1m", MELU_ARGS),
             ("movielens-1m/user-cold", MovieLens1M, data / "ml-1m", {}),
             ("movielens-100k/user-cold", MovieLens100K, data / "ml-100k", {})]
    with tempfile.TemporaryDirectory() as cache_dir:
        for name, cls, root, kw in cases:
            cold_load, cold_all, tasks = load_and_build(cls, str(root), cache_dir, **kw)
            warm_load, warm_all, _ = load_and_build(cls, str(root), cache_dir, **kw)
            f = lambda t: f"{t[0]:.2f} s wall / {t[1]:.2f} s cpu"  # noqa: E731
            print(f"{name}: {tasks} tasks | cold: load {f(cold_load)}, load+tasks {f(cold_all)} | cached: load "
                  f"{f(warm_load)}, load+tasks {f(warm_all)} | load speed-up {cold_load[1] / warm_load[1]:.1f}x cpu, "
                  f"{cold_load[0] / warm_load[0]:.1f}x wall")
        load_s, step_s = step_vs_loading(str(data / "melu-ml-1m"), cache_dir, args.steps)
        print(f"melu training (cpu time), 32 tasks/batch, {args.threads} threads: data loading {1000 * load_s:.1f} ms/batch, "
              f"MAML step {1000 * step_s:.1f} ms/batch -> loading is {100 * load_s / (load_s + step_s):.1f} % of a step")


if __name__ == "__main__":
    main()
