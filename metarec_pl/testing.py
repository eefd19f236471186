"""Testing helpers for plugin authors: test a plugin the way the core tests its own.

* ``tiny_data()`` / ``tiny_batch()``: a seeded, file-free world and a padded meta-batch whose tasks have unequal
  support sizes (so masks matter), explicit (1-5) or implicit (0/1) feedback.
* ``registered(plugin)``: a context manager that registers a plugin object for the duration of a block.
* ``metarec_plugin``: the same as a pytest fixture (a factory; every plugin is unregistered after the test).
  Use it with ``from metarec_pl.testing import metarec_plugin  # noqa: F401`` in your ``conftest.py``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from typing import Callable, Iterator, Optional, Sequence

import torch

from metarec_pl import plugins
from metarec_pl.data.synthetic import SyntheticWorld
from metarec_pl.data.types import RatingData, Task, TaskBatch, TaskCollator


def tiny_data(num_users: int = 40, num_items: int = 30, implicit: bool = False, seed: int = 0) -> RatingData:
    """A small synthetic world (every user has 12-20 ratings); ``implicit``: ratings >= 4 become interactions (1)
    and the others stand for sampled negatives (0), as a task sampler would add them to a batch, with
    ``feedback="implicit"`` (a loaded implicit data set stores interactions only, see ``data/negatives.py``)."""
    data = SyntheticWorld(num_users=num_users, num_items=num_items, min_ratings=12, max_ratings=20,
                          seed=seed).load()
    if implicit:
        data = replace(data, rating=(data.rating >= 4).float(), rating_range=(0.0, 1.0), feedback="implicit")
    return data


def tiny_batch(data: Optional[RatingData] = None, support_sizes: Sequence[int] = (2, 5, 9),
               query_size: int = 3, implicit: bool = False) -> TaskBatch:
    """One meta-batch of user tasks (distinct users, in id order), task i with ``support_sizes[i]`` support rows."""
    data = tiny_data(implicit=implicit) if data is None else data
    counts = torch.bincount(data.user)
    tasks: list[Task] = []
    for size in support_sizes:
        user = next((u for u in range(len(counts)) if counts[u] >= size + query_size and u not in {t.key for t in tasks}), None)
        if user is None:
            raise ValueError(f"tiny_batch: no unused user has {size + query_size} ratings "
                             f"(support {size} + query {query_size})")
        rows = torch.nonzero(data.user == user).flatten()
        tasks.append(Task(user, rows[:size], rows[size:size + query_size]))
    return TaskCollator(data)(tasks)


@contextmanager
def registered(plugin: object, name: Optional[str] = None, distribution: str = "(test)") -> Iterator[str]:
    """Register ``plugin`` (an object or module with ``@hookimpl`` functions) inside the block; yields its name."""
    registered_name = plugins.register_plugin(plugin, name=name, distribution=distribution)
    try:
        yield registered_name
    finally:
        plugins.unregister_plugin(registered_name)


try:
    import pytest
except ImportError:  # pytest is a test-time dependency only
    pass
else:
    @pytest.fixture()
    def metarec_plugin() -> Iterator[Callable[..., str]]:
        """``metarec_plugin(MyPlugin(), distribution="my-dist")`` registers a plugin until the test ends."""
        names: list[str] = []

        def register(plugin: object, name: Optional[str] = None, distribution: str = "(test)") -> str:
            names.append(plugins.register_plugin(plugin, name=name, distribution=distribution))
            return names[-1]

        yield register
        for registered_name in reversed(names):
            plugins.unregister_plugin(registered_name)
