import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
torch.set_num_threads(2)

from metarec_pl.data.synthetic import SyntheticWorld  # noqa: E402
from metarec_pl.data.types import Task, TaskBatch, TaskCollator  # noqa: E402


@pytest.fixture(scope="session")
def tiny_world():
    """A small synthetic world and its data (fast to build)."""
    world = SyntheticWorld(num_users=120, num_items=80, min_ratings=15, max_ratings=40, seed=3)
    return world, world.load()


def unequal_batch(data, support_sizes=(3, 9, 17, 30), query_size=6) -> TaskBatch:
    """A meta-batch whose tasks have different support sizes (so padding and masks matter)."""
    tasks, counts = [], torch.bincount(data.user)
    for size in support_sizes:
        user = next(u for u in range(len(counts)) if counts[u] >= size + query_size and u not in [t.key for t in tasks])
        rows = torch.nonzero(data.user == user).flatten()
        tasks.append(Task(user, rows[:size], rows[size:size + query_size]))
    return TaskCollator(data)(tasks)
