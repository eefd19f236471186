"""The LightningDataModule: a registered data set + a registered task sampler -> task loaders per stage."""

from __future__ import annotations

import logging
from typing import Any, Optional

import lightning as L
import torch
from torch.utils.data import DataLoader

from metarec_pl import plugins
from metarec_pl.data.types import FeatureSpec, RatingData, Task, TaskCollator

log = logging.getLogger(__name__)


class MetaDataModule(L.LightningDataModule):
    """Tasks for meta-training and evaluation.

    Args:
        dataset: registered data set name (``metarec plugins`` lists them).
        root: folder holding the data set's files (not needed by ``synthetic``).
        dataset_args: further keyword arguments of the data set.
        sampler: registered task sampler name (``user``: user-as-task, ``item``: item-as-task).
        sampler_args: keyword arguments of the sampler (``query_size``, ``min_support``, ``max_support``, ``order``).
        tasks_per_batch: tasks in one meta-batch.
        eval_tasks_per_batch: tasks per batch at validation/test/predict (default: ``tasks_per_batch``).
        num_workers: DataLoader worker processes.
        seed: seed of the support/query splits.
    """

    def __init__(self, dataset: str = "synthetic", root: Optional[str] = None,
                 dataset_args: Optional[dict[str, Any]] = None, sampler: str = "user",
                 sampler_args: Optional[dict[str, Any]] = None, tasks_per_batch: int = 32,
                 eval_tasks_per_batch: Optional[int] = None, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        dataset_cls, sampler_cls = plugins.get_dataset(dataset), plugins.get_task_sampler(sampler)
        self.dataset = dataset_cls(root=root, **(dataset_args or {}))
        self.sampler = sampler_cls(**(sampler_args or {}))
        self._data: Optional[RatingData] = None
        self.tasks: dict[str, dict[str, list[Task]]] = {}

    @property
    def data(self) -> RatingData:
        if self._data is None:
            self._data = self.dataset.load()
        return self._data

    @property
    def schema(self) -> list[FeatureSpec]:
        return self.data.schema

    def stage_tasks(self, stage: str) -> dict[str, list[Task]]:
        """Scenario -> tasks of a split (``train``, ``val`` or ``test``), built once."""
        if stage not in self.tasks:
            splits = self.data.splits.get(stage, {})
            self.tasks[stage] = {
                scenario: self.sampler.tasks(self.data, rows, seed=self.hparams.seed + i,
                                             name=f"{self.hparams.dataset}/{stage}/{scenario}")
                for i, (scenario, rows) in enumerate(splits.items())
            }
            for scenario, tasks in self.tasks[stage].items():
                log.info("%s/%s: %d tasks", stage, scenario, len(tasks))
        return self.tasks[stage]

    def _loaders(self, stage: str, batch: int, shuffle: bool) -> list[DataLoader]:
        loaders = []
        for scenario, tasks in self.stage_tasks(stage).items():
            gen = torch.Generator().manual_seed(self.hparams.seed)
            loaders.append(DataLoader(tasks, batch_size=batch, shuffle=shuffle, generator=gen,
                                      collate_fn=TaskCollator(self.data, scenario),
                                      num_workers=self.hparams.num_workers,
                                      persistent_workers=self.hparams.num_workers > 0))
        return loaders

    def _eval_batch(self) -> int:
        return self.hparams.eval_tasks_per_batch or self.hparams.tasks_per_batch

    def train_dataloader(self) -> DataLoader:
        return self._loaders("train", self.hparams.tasks_per_batch, shuffle=True)[0]

    def val_dataloader(self) -> list[DataLoader]:
        return self._loaders("val", self._eval_batch(), shuffle=False)

    def test_dataloader(self) -> list[DataLoader]:
        return self._loaders("test", self._eval_batch(), shuffle=False)

    def predict_dataloader(self) -> list[DataLoader]:
        return self._loaders("test", self._eval_batch(), shuffle=False)
