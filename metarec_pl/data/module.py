"""The LightningDataModule: a registered data set + a registered task sampler -> task loaders per stage."""

from __future__ import annotations

import inspect
import logging
import typing
from dataclasses import replace
from typing import Any, Optional, Sequence, Union

import lightning as L
import pydantic
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from metarec_pl import plugins
from metarec_pl.data.base import chunk_seed
from metarec_pl.data.candidates import CandidateCollator, CandidateSource, check_pool_size, touched_items
from metarec_pl.data.info import MAX_RATING_LEVELS, DataInfo  # noqa: F401  (MAX_RATING_LEVELS: re-exported)
from metarec_pl.data.resume import ResumableDataLoader
from metarec_pl.predict_io import new_user_loader, read_new_users
from metarec_pl.data.types import (DataError, FeatureSpec, RatingData, Task, TaskCollator, with_id_features,
                                   without_features)

log = logging.getLogger(__name__)
report_log = logging.getLogger("metarec_pl.data")  # WARNING lines show in `metarec` output by default (stderr)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _plain(value: Any) -> bool:
    """Whether ``value`` is what a config file can hold (None, bool, number, string, list or mapping of those)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _check_keys(cls: Any, args: dict, where: str, fixed: dict[str, Any]) -> None:
    """``DataError`` for a key of ``args`` that ``cls`` does not take (or that ``fixed`` sets)."""
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key in args:
        if not isinstance(key, str) or key in fixed or (key not in params and not takes_any):
            named = [n for n, p in params.items() if p.kind not in (inspect.Parameter.VAR_KEYWORD,
                                                                     inspect.Parameter.VAR_POSITIONAL)
                     and n not in fixed]
            raise DataError(f"{where}: unknown option {key!r} for {getattr(cls, '__name__', cls)}; expected some of: "
                            f"{', '.join(named)}")


def _checked_value(hint: Any, key: str, value: Any, where: str) -> Any:
    """``value`` validated (and coerced, lax mode) by pydantic against the annotation ``hint``; left as it is when
    the hint or the value cannot be checked; ``DataError`` when it has the wrong type."""
    if hint is None or hint is Any or not _plain(value):  # Python objects given in code: the class's call
        return value
    try:
        adapter = pydantic.TypeAdapter(hint)
    except Exception:  # a type pydantic cannot check (e.g. a Protocol): left to the class
        return value
    try:
        return adapter.validate_python(value)
    except pydantic.ValidationError as exc:
        msg = exc.errors()[0]["msg"]
        raise DataError(f"{where}.{key}: {value!r} is the wrong type ({msg}); expected {_type_name(hint)}") from None


def construct(cls: Any, args: Optional[dict[str, Any]], where: str, **fixed: Any) -> Any:
    """``cls(**fixed, **args)`` with one-line ``DataError``s for a user's mistakes in ``args`` (``where`` names
    them, e.g. ``data.dataset_args``): not a mapping, an unknown key, or a value of the wrong type for the
    parameter's annotation (checked with pydantic in lax mode, so ``"4"`` is read as 4 but ``"four"`` is refused).
    ``ValueError``s the class raises itself become ``DataError``s as they are."""
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise DataError(f"{where}: {args!r} is not a mapping; expected {{option: value, ...}}")
    _check_keys(cls, args, where, fixed)
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation that does not resolve: no type checks
        hints = {}
    checked = {key: _checked_value(hints.get(key), key, value, where) for key, value in args.items()}
    try:
        return cls(**fixed, **checked)
    except DataError:
        raise
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def drop_report(name: str, data: RatingData, sampler: Any) -> tuple[int, str]:
    """(number of things dropped, one line): what reading dropped (``data.dropped``), rows in no split of the
    protocol, and per split the groups (users or items) the task sampler drops for having too few rows."""
    parts = [f"{n} {reason}" for reason, n in data.dropped.items() if n]
    total = sum(data.dropped.values())
    in_split = torch.zeros(len(data.user), dtype=torch.bool)
    for scenarios in data.splits.values():
        for rows in scenarios.values():
            in_split[rows] = True
    outside = int((~in_split).sum())
    if outside:
        parts.append(f"{outside} of {len(data.user)} rows in no split of the protocol (filtered out or held back)")
        total += outside
    too_small = getattr(sampler, "too_small", None)
    if too_small is not None:
        small, groups, where = 0, 0, []
        for stage, scenarios in data.splits.items():
            for scenario, rows in scenarios.items():
                d, g = too_small(data, rows)
                small, groups = small + d, groups + g
                if d:
                    where.append(f"{stage}/{scenario} {d}")
        side = getattr(sampler, "group_by", "group")
        if small:
            parts.append(f"{small} of {groups} {side} tasks with fewer than {sampler.min_rows} rows "
                         f"(query_size + min_support; {', '.join(where)})")
            total += small
    size = f"{len(data.user)} rows, {len(torch.unique(data.user))} users, {len(torch.unique(data.item))} items"
    line = f"metarec: {name}: {size}; " + (f"dropped {'; '.join(parts)}" if parts else "nothing dropped")
    return total, line


class ScenarioBatchSampler(Sampler[list[int]]):
    """Batches of task indices that never mix scenarios; shuffled (seeded, new order each epoch) or in order.

    Distributed (``num_replicas``/``rank`` given, or read from ``torch.distributed`` when it is initialised):
    every rank builds the same batches (same seed and epoch) and keeps its share of each, tasks
    ``rank, rank + num_replicas, ...``, so the ranks together see every task exactly once, and one step on R ranks
    with b tasks each is one step on R*b tasks (DDP averages the ranks' gradients; exact when every batch
    splits evenly).  A training batch (``shuffle``) with fewer tasks than ranks is dropped, since every rank must
    take part in every step; an evaluation batch is not, and the ranks without a share of it skip it.
    """

    def __init__(self, tasks: list[Task], batch_size: int, shuffle: bool, generator: torch.Generator,
                 num_replicas: Optional[int] = None, rank: Optional[int] = None, with_epoch: bool = False) -> None:
        if (num_replicas is None) != (rank is None) or (num_replicas is not None and not 0 <= rank < num_replicas):
            raise ValueError(f"ScenarioBatchSampler: need both num_replicas and rank with 0 <= rank < num_replicas, "
                             f"got num_replicas={num_replicas}, rank={rank}")
        self.batch_size, self.shuffle = batch_size, shuffle
        self.num_replicas, self.rank = num_replicas, rank
        self.with_epoch = with_epoch  # yield (task index, epoch) pairs, for ``Episodes``
        self.seed, self.epoch = generator.initial_seed(), 0
        self.start = 0  # batches of this epoch to skip (set by ``ResumableDataLoader`` at every epoch's start)
        self.groups: dict[str, list[int]] = {}
        for i, t in enumerate(tasks):
            self.groups.setdefault(t.scenario, []).append(i)

    def replicas(self) -> tuple[int, int]:
        """(number of ranks, this rank)."""
        if self.num_replicas is not None:
            return self.num_replicas, self.rank
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size(), torch.distributed.get_rank()
        return 1, 0

    def _kept(self, size: int) -> bool:
        """Whether this rank gets a share of a batch of ``size`` tasks."""
        replicas, rank = self.replicas()
        return size >= replicas if self.shuffle else size > rank

    def __iter__(self):
        # a generator of this (seed, epoch) made here: a DataLoader with workers calls ``iter`` twice per epoch
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        batches = []
        for idx in self.groups.values():
            if self.shuffle:
                idx = [idx[i] for i in torch.randperm(len(idx), generator=generator).tolist()]
            batches += [idx[i:i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        replicas, rank = self.replicas()
        if replicas > 1:
            batches = [b[rank::replicas] for b in batches if self._kept(len(b))]
        if self.with_epoch:
            batches = [[(i, self.epoch) for i in b] for b in batches]
        return iter(batches[self.start:])

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each epoch: the order then depends only on (seed, epoch), so a fit resumed
        mid-epoch (``data/resume.py``) sees the same order as an uninterrupted one."""
        self.epoch = epoch

    @property
    def sampler(self) -> "ScenarioBatchSampler":
        """Lightning calls ``set_epoch`` on ``loader.batch_sampler.sampler`` (torch's ``BatchSampler`` layout)."""
        return self

    def __len__(self) -> int:
        sizes = [min(self.batch_size, len(idx) - i) for idx in self.groups.values()
                 for i in range(0, len(idx), self.batch_size)]
        return sum(self._kept(n) for n in sizes) if self.replicas()[0] > 1 else len(sizes)


class Episodes(Dataset):
    """Training tasks whose support/query split (``resplit``) and sampled negatives are drawn anew every epoch
    (episodic training).

    Index ``(i, epoch)`` gives task ``i`` split by a generator seeded from (seed, epoch, i); epoch 0 keeps the
    split drawn at construction.  A chunk task of a heavy group (``Task.chunk``) is seeded by (seed, epoch, key)
    instead, the same for every chunk task of that group, so they deal one shuffle into disjoint parts.  The epoch
    travels with the index (``ScenarioBatchSampler(with_epoch=True)``), so worker processes, every DDP rank and a
    resumed fit draw the same splits and negatives.
    """

    def __init__(self, tasks: list[Task], sampler: Any, seed: int, resplit: bool = True) -> None:
        self.tasks, self.sampler, self.seed, self.resplit = tasks, sampler, seed, resplit

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, index: tuple[int, int]) -> Task:
        i, epoch = index
        task = self.tasks[i]
        if epoch == 0:
            return task
        seed = chunk_seed(self.seed, epoch, task.key) if task.chunk else hash((self.seed, epoch, i))
        return self.sampler.episode(task, seed, resplit=self.resplit)


class MetaDataModule(L.LightningDataModule):
    """Tasks for meta-training and evaluation.

    Args:
        dataset: registered data set name (``metarec plugins`` lists them).
        root: folder holding the data set's files (not needed by ``synthetic``).
        dataset_args: further keyword arguments of the data set.
        sampler: registered task sampler name (``user``: user-as-task, ``item``: item-as-task).
        sampler_args: keyword arguments of the sampler (``query_size``, ``min_support``, ``max_support``, ``order``,
            ``negatives`` per support/query row (default 4 for implicit data, 0 explicit), ``negative_sampling``
            ``uniform``/``popularity``, ``negative_seed``; see ``data/negatives.py``).
        tasks_per_batch: tasks in one meta-batch.
        eval_tasks_per_batch: tasks per batch at validation/test/predict (default: ``tasks_per_batch``).
        num_workers: DataLoader worker processes.
        seed: seed of the support/query splits.
        candidates: at validation and test, append to each user's query set this many items the user never
            touched (or ``"all"`` of them), the ``pool`` ranking of the top-k metrics; ``None``: none (see
            ``data/candidates.py``).
        full_catalogue: at validation and test, append every item of the task's scenario the user never touched
            (the ``full`` ranking: the full catalogue minus training, support and query items), beside the
            ``candidates`` pool when that is given too.
        predict_file: CSV/JSON of new users' ratings; ``metarec predict`` then recommends for them from the whole
            catalogue (see ``metarec_pl/predict_io.py``); ``None``: predict ranks the test tasks' query items.
        id_features: add the ids of these sides (``["item"]``, ``["user", "item"]``) as categorical fields, so
            the network learns a vector per training item (user); unseen ids stay neutral (zero vectors).
        resample_splits: draw each training task's support/query split anew every epoch (``order: random``;
            a ``time`` split is fixed by the timestamps).  ``False``: every epoch reuses the first split, so the
            outer loss sees the same ``query_size`` ratings of each user every time.
        drop_features: leave these fields out: keys (``["user_zip"]``) or whole sides (``["user"]``); applied
            before ``id_features``, so ``drop_features: [user]`` with ``id_features: [item]`` keeps item id + content.
        test_scenarios: test only these scenarios (``None``: all).  Tasks and candidate pools are drawn for the
            whole test split first, so each scenario's numbers equal those of a full test.  An attribute too, so a
            script can test one model on some scenarios and another model on the rest.
    """

    def __init__(self, dataset: str = "synthetic", root: Optional[str] = None,
                 dataset_args: Optional[dict[str, Any]] = None, sampler: str = "user",
                 sampler_args: Optional[dict[str, Any]] = None, tasks_per_batch: int = 32,
                 eval_tasks_per_batch: Optional[int] = None, num_workers: int = 0, seed: int = 0,
                 candidates: Optional[Union[int, str]] = None, predict_file: Optional[str] = None,
                 id_features: Sequence[str] = (), resample_splits: bool = True,
                 drop_features: Sequence[str] = (), test_scenarios: Optional[Sequence[str]] = None,
                 full_catalogue: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.test_scenarios = test_scenarios
        self.predict_users: Optional[list] = None  # the NewUsers read from predict_file, by task key
        if candidates is not None:
            check_pool_size(candidates)
        if not isinstance(full_catalogue, bool):
            raise DataError(f"data.full_catalogue: {full_catalogue!r} is not a boolean; expected true or false")
        if isinstance(id_features, str) or not set(id_features) <= {"user", "item"}:
            raise DataError(f"data.id_features: {id_features!r} is not a list of sides; expected a list of "
                            "'user' and/or 'item'")
        if isinstance(test_scenarios, str):
            raise DataError(f"data.test_scenarios: {test_scenarios!r} is not a list; expected a list of test scenario "
                            "names (e.g. ['item-cold'])")
        if isinstance(drop_features, str):
            raise DataError(f"data.drop_features: {drop_features!r} is not a list; expected a list of field keys "
                            "(e.g. ['user_zip']) or sides ('user', 'item')")
        dataset_cls, sampler_cls = plugins.get_dataset(dataset), plugins.get_task_sampler(sampler)
        self.dataset = construct(dataset_cls, dataset_args, "data.dataset_args", root=root)
        self.sampler = construct(sampler_cls, sampler_args, "data.sampler_args")
        if predict_file is not None and hasattr(self.sampler, "collator"):
            raise DataError(f"data.predict_file: sampler {sampler!r} builds its own samples, not rows of new users' "
                            "ratings; expected no predict_file (predict ranks the test tasks)")
        self._move_sampler_options(dataset, sampler_args or {})
        needed = getattr(self.dataset, "sampler_order", None)  # e.g. protocol temporal: support before query
        if needed is not None and getattr(self.sampler, "order", needed) != needed:
            raise DataError(f"data set '{dataset}': its protocol needs sampler_args.order: {needed}, "
                            f"got {getattr(self.sampler, 'order', None)!r}")
        self._data: Optional[RatingData] = None
        self._info: Optional[DataInfo] = None
        self.tasks: dict[str, dict[str, list[Task]]] = {}
        self._pools: dict[str, CandidateCollator] = {}  # stage -> collator with its candidates' sources

    def _move_sampler_options(self, dataset: str, sampler_args: dict[str, Any]) -> None:
        """Deprecated data set options that belong to the sampler now (``interactions``' ``negatives``,
        ``negative_seed``: negatives are drawn per episode, no longer stored): moved to the sampler with a warning;
        given in both places with different values, one line."""
        moved = getattr(self.dataset, "sampler_options", None) or {}
        for key, value in moved.items():
            if value is None:
                continue
            if key in sampler_args and sampler_args[key] != value:
                raise DataError(f"data.dataset_args.{key}: {value!r} contradicts data.sampler_args.{key}: "
                                f"{sampler_args[key]!r}; expected it only in data.sampler_args")
            if not hasattr(self.sampler, key):
                raise DataError(f"data.dataset_args.{key}: sampler {self.hparams.sampler!r} draws no negatives; "
                                f"expected no {key} option")
            setattr(self.sampler, key, value)
            report_log.warning("metarec: data.dataset_args.%s of %s is deprecated (negatives are drawn afresh by "
                               "the task sampler every episode, none stored); moved to data.sampler_args.%s: %s",
                               key, dataset, key, value)

    @property
    def data(self) -> RatingData:
        """The data set, loaded once: ``drop_features``, then ``id_features``.  A data set with no feature fields
        at all (e.g. a bare ``user,item,rating`` log) gets its user and item ids as fields automatically, said
        in one logged line; each load logs one line counting what was dropped (WARNING when anything was)."""
        if self._data is None:
            loaded = self.dataset.load()
            data = without_features(loaded, tuple(self.hparams.drop_features))
            data = with_id_features(data, tuple(self.hparams.id_features))
            if not loaded.schema and not data.schema:
                data = with_id_features(data, ("user", "item"))
                report_log.warning("metarec: %s has no feature fields; using the user and item ids as features "
                                   "(as with data.id_features: [user, item]); new users get the unknown id",
                                   self._name())
            dropped, line = drop_report(self._name(), data, self.sampler)
            report_log.log(logging.WARNING if dropped else logging.INFO, "%s", line)
            self._data = data
        return self._data

    def _name(self) -> str:
        """The data set and its main file, for messages (``interactions log.csv``)."""
        path = getattr(self.dataset, "options", {}).get("path") if isinstance(getattr(self.dataset, "options", None),
                                                                              dict) else None
        return f"{self.hparams.dataset} {path}" if path else str(self.hparams.dataset)

    @property
    def schema(self) -> list[FeatureSpec]:
        return self.data.schema

    @property
    def info(self) -> DataInfo:
        """The facts a model is built from (``DataInfo.of`` the loaded data with this sampler's negatives): schema,
        feedback kind, rating range / mean / levels, like threshold, id maps, and the sampler's task side (user- or
        item-as-task).  Measured once; the CLI links it to ``model.data_info``."""
        if self._info is None:
            side = getattr(self.sampler, "group_by", None)
            facts = getattr(self.sampler, "info_facts", None)  # a sampler that changes the targets says how
            self._info = DataInfo.of(self.data, self.num_negatives).with_facts(
                task_side=side if side in ("user", "item") else None, **(facts(self.data) if facts else {}))
        return self._info

    @property
    def feedback(self) -> str:
        """``"explicit"`` (ratings) or ``"implicit"`` (interactions only; negatives are sampled per episode)."""
        return self.data.feedback

    @property
    def num_negatives(self) -> int:
        """Sampled negatives per support/query row (``sampler_args.negatives``; default 4 implicit, 0 explicit)."""
        count = getattr(self.sampler, "num_negatives", None)
        return int(count(self.data)) if count is not None else 0

    @property
    def like_threshold(self) -> float:
        """``info.like_threshold``: the target at or above which a sample is a "like" (implicit: 0.5; explicit:
        4 on 1..5 stars, see ``DataInfo.of``)."""
        return self.info.like_threshold

    @property
    def rating_mean(self) -> float:
        """``info.rating_mean``: the mean training target, sampled negatives (0) counted in."""
        return self.info.rating_mean

    @property
    def rating_levels(self) -> Optional[list[float]]:
        """``info.rating_levels`` as a list: the distinct training targets of a discrete scale, else ``None``."""
        levels = self.info.rating_levels
        return None if levels is None else list(levels)

    @property
    def num_users(self) -> int:
        return self.data.num_users

    @property
    def num_items(self) -> int:
        return self.data.num_items

    def stage_tasks(self, stage: str) -> dict[str, list[Task]]:
        """Scenario -> tasks of a split (``train``, ``val`` or ``test``), built once."""
        if stage not in self.tasks:
            splits = self.data.splits.get(stage, {})
            self.tasks[stage] = {
                scenario: [replace(t, scenario=scenario) for t in self.sampler.tasks(
                    self.data, rows, seed=self.hparams.seed + i, name=f"{self.hparams.dataset}/{stage}/{scenario}")]
                for i, (scenario, rows) in enumerate(splits.items())
            }
            expand = getattr(self.sampler, "training_tasks", None)  # heavy users -> bounded chunk tasks
            if stage == "train" and expand is not None:
                self.tasks[stage] = {scenario: expand(tasks, self.hparams.seed)
                                     for scenario, tasks in self.tasks[stage].items()}
            for scenario, tasks in self.tasks[stage].items():
                log.info("%s/%s: %d tasks", stage, scenario, len(tasks))
        return self.tasks[stage]

    def _loader(self, stage: str, batch: int, shuffle: bool) -> DataLoader:
        """One loader over every scenario of ``stage`` (at test: of ``test_scenarios``); each batch holds tasks of
        one scenario only."""
        scenarios = self._chosen_scenarios(stage)
        tasks = [t for scenario_tasks in scenarios.values() for t in scenario_tasks]
        gen = torch.Generator().manual_seed(self.hparams.seed)
        negatives = any(t.negatives_from is not None for t in tasks)
        episodic = stage == "train" and (self.hparams.resample_splits or negatives)
        sampler = ScenarioBatchSampler(tasks, batch, shuffle, gen, with_epoch=episodic)
        ranked = stage in ("val", "test") and (self.hparams.candidates or self.hparams.full_catalogue)
        own = getattr(self.sampler, "collator", None)  # a sampler whose samples are not (user, item) rows
        if own is not None and (self.hparams.candidates or self.hparams.full_catalogue):
            raise DataError(f"data.candidates / data.full_catalogue: sampler {self.hparams.sampler!r} ranks its "
                            "own candidates (the full catalogue and a sampled pool); expected neither option")
        collate = own(self.data, stage, self.hparams.seed) if own is not None else (
            self._candidate_collator(stage) if ranked else None)
        dataset = (Episodes(tasks, self.sampler, self.hparams.seed, resplit=self.hparams.resample_splits)
                   if episodic else tasks)
        group_by = getattr(self.sampler, "group_by", "user")
        return ResumableDataLoader(dataset, batch_sampler=sampler,
                                   collate_fn=collate or TaskCollator(self.data, group_by=group_by),
                                   num_workers=self.hparams.num_workers,
                                   persistent_workers=self.hparams.num_workers > 0)

    def _chosen_scenarios(self, stage: str) -> dict[str, list]:
        """The tasks of ``stage`` per scenario; at test, of ``test_scenarios`` only (``DataError`` naming a scenario
        the data set does not have)."""
        scenarios = self.stage_tasks(stage)
        if stage != "test" or self.test_scenarios is None:
            return scenarios
        unknown = sorted(set(self.test_scenarios) - set(scenarios))
        if unknown:
            raise DataError(f"data.test_scenarios: no test scenario {', '.join(map(repr, unknown))}; this data "
                            f"set's are: {', '.join(scenarios)}")
        return {k: v for k, v in scenarios.items() if k in self.test_scenarios}

    def _candidate_collator(self, stage: str) -> CandidateCollator:
        """The candidates of every user-as-task of ``stage`` (``candidates`` pool and/or ``full_catalogue``): one
        source per scenario, built once; pools seeded per (seed, scenario, user)."""
        option = "data.candidates" if self.hparams.candidates else "data.full_catalogue"
        if self.sampler.group_by != "user":
            raise DataError(f"{option}: top-k candidate pools need user-as-task tasks, but sampler "
                            f"{self.hparams.sampler!r} groups by {self.sampler.group_by}")
        if stage not in self._pools:
            splits = self.data.splits.get(stage, {})
            touched = touched_items(self.data)
            sources = {scenario: CandidateSource(torch.unique(self.data.item[rows]), touched,
                                                 self.hparams.candidates, bool(self.hparams.full_catalogue),
                                                 seed=self.hparams.seed + 7919 + i)
                       for i, (scenario, rows) in enumerate(splits.items())}
            self._pools[stage] = CandidateCollator(self.data, sources=sources)
        return self._pools[stage]

    def _eval_batch(self) -> int:
        return self.hparams.eval_tasks_per_batch or self.hparams.tasks_per_batch

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.hparams.tasks_per_batch, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self._eval_batch(), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self._eval_batch(), shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        if self.hparams.predict_file:
            self.predict_users = read_new_users(self.hparams.predict_file, profile_fields=[
                f.name for f in self.data.schema if f.side == "user" and not f.is_id])
            return new_user_loader(self.data, self.predict_users, self._eval_batch())
        return self._loader("test", self._eval_batch(), shuffle=False)
