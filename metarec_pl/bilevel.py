"""The LightningModule around the bilevel loop.

Inner loop: ``metarec_pl.inner`` (its definition is ``metarec_pl/inner/reference.py``; ``inner/planner.py`` picks
the fast path that serves a meta-batch, ``MetaLearner(inner_path=...)`` caps it).  ``adapt`` is re-exported here.

Outer loop (``MetaLearner.training_step``): the algorithm's ``outer_loss`` over the adapted query losses,
returned to Lightning's automatic optimisation, so precision plugins, gradient clipping, accumulation and
DDP apply unchanged.  Second order comes for free: without ``first_order`` the inner gradients stay in the
autograd graph and the one outer backward differentiates through them.
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any, Callable, Iterable, Mapping, Optional, Union

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from lightning_utilities.core.apply_func import apply_to_collection
from torch import Tensor, nn

from metarec_pl import divergence, provenance
from metarec_pl.algorithms.base import INNER_LOOP_OPTIONS, MetaAlgorithm, refuse_inner_options
from metarec_pl.ckpt_options import read_checkpoint
from metarec_pl.data.info import LEGACY_FACTS, DataInfo, fold_legacy_facts
from metarec_pl.data.types import FeatureSpec, TaskBatch
from metarec_pl.errors import ConfigError, accepted_keywords, check_keywords
from metarec_pl.inner import adapt  # noqa: F401  (re-exported: the inner loop)
from metarec_pl.inner.planner import check_path
from metarec_pl.losses import BUILTIN_LOSSES, Loss, masked_mse  # noqa: F401  (masked_mse: re-exported)
from metarec_pl.metrics import RatingMetrics
from metarec_pl.models.base import RatingModel
from metarec_pl.results import AdaptResult


def _check_cut_offs(name: str, values: Any) -> None:
    """``ConfigError`` unless ``values`` (option ``model.<name>``) is a list of whole numbers >= 1."""
    if isinstance(values, (int, str)) or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1
                                                 for k in values):
        raise ConfigError(f"model.{name}: {values!r} holds a cut-off that is not a whole number >= 1; "
                          f"expected a list of cut-offs such as [5, 10]")


def _check_sizes(ndcg_k: Iterable[int], top_k: Iterable[int], vmap_chunk_size: Optional[int],
                 inner_steps: Optional[int], eval_inner_steps: Optional[int], inner_lr: Optional[float],
                 like_threshold: Optional[float]) -> None:
    """``ConfigError`` naming the first option of ``MetaLearner`` whose value is out of range."""
    for name, values in (("ndcg_k", ndcg_k), ("top_k", top_k)):
        _check_cut_offs(name, values)
    if vmap_chunk_size is not None and vmap_chunk_size < 1:
        raise ConfigError(f"model.vmap_chunk_size: {vmap_chunk_size} tasks per chunk; expected >= 1 or null (all)")
    for name, value in (("inner_steps", inner_steps), ("eval_inner_steps", eval_inner_steps)):
        if value is not None and value < 0:
            raise ConfigError(f"model.{name}: {value} steps; expected a whole number >= 0 (or null: the "
                              f"algorithm's default)")
    if inner_lr is not None and not (math.isfinite(inner_lr) and inner_lr >= 0):
        raise ConfigError(f"model.inner_lr: {inner_lr}; expected a finite learning rate >= 0")
    if like_threshold is not None and not math.isfinite(like_threshold):
        raise ConfigError(f"model.like_threshold: {like_threshold}; expected a finite rating")


def _loss(name: str, algorithm: str, algorithm_cls: type) -> Loss:
    """The loss registered as ``name``, checked against what the algorithm supports (``ConfigError`` otherwise)."""
    loss_cls = BUILTIN_LOSSES.get(name)
    if loss_cls is None:
        raise ConfigError(f"model.loss: unknown loss {name!r}; expected one of: {', '.join(sorted(BUILTIN_LOSSES))}")
    supported = getattr(algorithm_cls, "supported_losses", None)
    if supported is not None and name not in supported:
        raise ConfigError(f"model.loss: algorithm '{algorithm}' works with {', '.join(supported)} only, got "
                          f"{name!r}; expected model.loss: {supported[0]} or another algorithm")
    return loss_cls()


def _metric_names(extra_metrics: Any) -> list[str]:
    """``model.extra_metrics`` as a list of names (``ConfigError`` in one line for anything else)."""
    if extra_metrics is None:
        return []
    if isinstance(extra_metrics, str) or not all(isinstance(n, str) for n in extra_metrics):
        raise ConfigError(f"model.extra_metrics: {extra_metrics!r} is not a list of names; expected a list of "
                          "registered metric names (metarec plugins lists them)")
    return list(dict.fromkeys(extra_metrics))


def _data_info(data_info: Optional[Union[DataInfo, Mapping[str, Any]]], legacy: Mapping[str, Any]) -> DataInfo:
    """The ``DataInfo`` of ``MetaLearner(data_info=...)`` with the deprecated one-by-one facts ``legacy`` (keyword
    -> value: ``schema``, ``rating_mean``, ``rating_levels``, ``num_users``, ``num_items``; ``None``: not given)
    folded in, with a ``DeprecationWarning``; ``ConfigError`` when there is no info at all."""
    given = [k for k in LEGACY_FACTS if legacy.get(k) is not None]
    if given:
        warnings.warn(f"MetaLearner({'=..., '.join(given)}=...) is deprecated; pass "
                      f"data_info=MetaDataModule.info (or a DataInfo)", DeprecationWarning, stacklevel=3)
    info = fold_legacy_facts(data_info, legacy)
    if info is None:
        raise ConfigError("model.data_info is missing: pass the data's facts (data_info=MetaDataModule.info; the "
                          "metarec CLI links data.info to model.data_info)")
    return info


def _check_outer_update(outer_update: str, name: str, algorithm_cls: type) -> None:
    """``ConfigError`` (one line) unless ``outer_update`` is ``all``, or ``adapted`` for a gradient-based algorithm
    (only those adapt parameters)."""
    if outer_update not in ("all", "adapted"):
        raise ConfigError(f"model.outer_update: {outer_update!r}; expected 'all' or 'adapted'")
    if outer_update == "adapted" and not algorithm_cls.gradient_based:
        raise ConfigError(f"model.outer_update: 'adapted' needs an algorithm that adapts parameters; algorithm "
                          f"'{name}' adapts none; expected 'all'")


def load_network_weights(network: nn.Module, path: str) -> None:
    """``network``'s weights and buffers from the ``network.*`` entries of the checkpoint at ``path``
    (``model.init_from``); ``ConfigError`` (one line) naming the first entry it lacks or holds in another shape."""
    state = read_checkpoint(path, option="model.init_from")["state_dict"]
    saved = {k[len("network."):]: v for k, v in state.items() if k.startswith("network.")}
    for key, value in network.state_dict().items():
        if key not in saved:
            raise ConfigError(f"model.init_from: {path} has no network weight {key!r}; expected a checkpoint of the "
                              "same network with the same network_args")
        if saved[key].shape != value.shape:
            raise ConfigError(f"model.init_from: {path}: {key!r} has shape {list(saved[key].shape)}, this network's "
                              f"{list(value.shape)}; expected the same network_args")
    network.load_state_dict({k: saved[k] for k in network.state_dict()})


def _check_task_side(name: str, algorithm_cls: type, info: DataInfo) -> None:
    """``ConfigError`` when the data's tasks (``info.task_side``: user- or item-as-task) are not among those the
    algorithm serves (``task_sides``; e.g. a user fold-in needs one user per task)."""
    sides = getattr(algorithm_cls, "task_sides", ("user", "item"))
    if info.task_side is not None and info.task_side not in sides:
        raise ConfigError(f"data.sampler: gives {info.task_side}-as-task tasks, and algorithm '{name}' serves "
                          f"{' and '.join(sides)}-as-task only; expected data.sampler {sides[0]}")


def bind_algorithm(algorithm: MetaAlgorithm, network: nn.Module, info: DataInfo) -> None:
    """``algorithm.bind(network, info)``; an algorithm whose ``bind`` predates ``DataInfo`` (``bind(model)``) is
    bound the old way, with ``info`` and its id counts set as attributes first (as every algorithm gets them)."""
    algorithm.info = info
    algorithm.num_users, algorithm.num_items = info.num_users, info.num_items
    try:
        inspect.signature(algorithm.bind).bind(network, info)
    except TypeError:
        warnings.warn(f"{algorithm.name}.bind(model) is deprecated; expected bind(model, info) (a DataInfo)",
                      DeprecationWarning, stacklevel=2)
        algorithm.bind(network)
        return
    algorithm.bind(network, info)


def _outside_inference_mode(batch: TaskBatch) -> TaskBatch:
    """Inference tensors cannot enter autograd; clone them (cheap: one meta-batch) so adaptation can run."""
    return apply_to_collection(batch, Tensor, lambda t: t.clone() if t.is_inference() else t)


class MetaLearner(L.LightningModule):
    """Meta-trains any registered ``network`` with any registered ``algorithm`` (chosen by short name).

    Args:
        algorithm: registered algorithm name (``metarec plugins`` lists them).
        network: registered model name.
        inner_steps / inner_lr / first_order / adapt / eval_inner_steps: inner-loop options, see
            ``GradientAlgorithm`` (``None``: the algorithm's default, 5 steps of lr 0.01 unless it is a preset such
            as ``melu``); an algorithm without inner loop (``MetaAlgorithm``: protonet, matchingnet, the
            baselines) refuses them (``ConfigError``).
        algorithm_args / network_args: further keyword arguments of the chosen classes.
        optimizer: the outer optimiser.
        ndcg_k: cut-offs of nDCG on each query set.
        vmap_chunk_size: tasks per vmap chunk (``None``: all at once); smaller trades speed for memory.
        data_info: the data's facts (``metarec_pl.data.info.DataInfo``, or its ``to_dict()`` data): the feature
            schema the network is built on, the mean training rating (the network's initial output bias), the
            rating levels (for ``mae_rounded``), the like threshold and the id maps (``bind`` of per-id
            baselines); the CLI links it from ``data.info`` (``MetaDataModule.info``).  Kept in the hyper-parameters
            as plain data (``to_dict``), so checkpoints and ``hparams.yaml`` carry it.
        top_k / like_threshold: cut-offs of the rankings over candidates and the "like" rating (see ``metrics``;
            ``like_threshold`` ``None``: the data's, ``data_info.like_threshold``: every interaction for implicit
            feedback, 4 on a 1-5 scale).
        loss: the per-task loss of the inner and the outer loop: ``mse`` (ratings), ``bce`` or ``bpr`` (implicit
            feedback: logits / ranking scores), see ``metarec_pl.losses``; an algorithm that cannot use it refuses.
        plugin_distributions: filled in, not set: ``{"algorithm/<name>": distribution, "network/<name>": ...}`` of
            this run, kept in hparams/checkpoints/configs so a missing plugin is named on load (``provenance``).
        on_divergence: ``raise`` (stop with an error naming step, task and algorithm) or ``skip`` (drop tasks whose
            inner loop gives NaN/inf, count them in ``<stage>/skipped_tasks``); see ``metarec_pl.divergence``.
        inner_path: the fastest inner-loop path allowed (``metarec_pl.inner.planner``): ``auto`` (the fastest
            that fits), ``kernel``, ``written-out``, ``autograd`` or ``reference`` (the definition itself, no
            shortcut: a check of a new network or algorithm); every path gives the same values.
        extra_metrics: registered metrics (hook ``register_metrics``) computed on the query sets besides the
            built-in ones, logged as ``<stage>/<name>`` and ``<stage>/<scenario>/<name>`` (see ``metrics``).
        init_from: a checkpoint written by ``metarec fit`` whose network weights this fit starts from (two-stage
            training: a backbone trained first, e.g. with ``algorithm: none``, then meta-learned); read when a fit
            starts (a resumed fit then continues from its own checkpoint; test and serving never read it).
            ``CheckpointError`` / ``ConfigError`` (one line) for a missing file or a network of another shape.
        outer_update: what the outer loop updates: ``all`` (every weight and the algorithm's own parameters) or
            ``adapted`` (only the adapted parameters' initialisation and the algorithm's own, e.g. Meta-SGD's step
            sizes; the rest of the network stays as it starts, e.g. as ``init_from`` left it).
        schema / rating_mean / rating_levels / num_users / num_items: deprecated: the data's facts given one by
            one (as before ``DataInfo``, and as older checkpoints hold them), folded into ``data_info`` with a
            ``DeprecationWarning``; not options of the ``metarec`` command.
    """

    def __init__(
        self,
        algorithm: str = "maml",
        network: str = "melu",
        inner_steps: Optional[int] = None,
        inner_lr: Optional[float] = None,
        first_order: Optional[bool] = None,
        adapt: Optional[list[str]] = None,
        eval_inner_steps: Optional[int] = None,
        algorithm_args: Optional[dict[str, Any]] = None,
        network_args: Optional[dict[str, Any]] = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        ndcg_k: Iterable[int] = (3,),
        vmap_chunk_size: Optional[int] = None,
        data_info: Optional[Union[DataInfo, dict[str, Any]]] = None,
        top_k: Iterable[int] = (5, 10),
        like_threshold: Optional[float] = None,
        plugin_distributions: Optional[dict[str, str]] = None,
        on_divergence: str = "raise",
        loss: str = "mse",
        inner_path: str = "auto",
        extra_metrics: Optional[list[str]] = None,
        init_from: Optional[str] = None,
        outer_update: str = "all",
        schema: Optional[list[Union[FeatureSpec, dict]]] = None,
        rating_mean: Optional[float] = None,
        rating_levels: Optional[list[float]] = None,
        num_users: Optional[int] = None,
        num_items: Optional[int] = None,
    ) -> None:
        super().__init__()
        if on_divergence not in divergence.POLICIES:
            raise ConfigError(f"model.on_divergence: {on_divergence!r} is not a policy; expected one of "
                              f"{', '.join(divergence.POLICIES)}")
        info = _data_info(data_info, dict(schema=schema, rating_mean=rating_mean, rating_levels=rating_levels,
                                          num_users=num_users, num_items=num_items))
        _check_sizes(ndcg_k=ndcg_k, top_k=top_k, vmap_chunk_size=vmap_chunk_size, inner_steps=inner_steps,
                     eval_inner_steps=eval_inner_steps, inner_lr=inner_lr, like_threshold=like_threshold)
        check_path(inner_path)
        self.save_hyperparameters(ignore=["optimizer", "data_info", *LEGACY_FACTS])
        self.hparams.data_info = info.to_dict()  # plain data in hparams.yaml and checkpoints
        self.data_info = info
        algorithm_cls = provenance.lookup("algorithm", algorithm, plugin_distributions)
        network_cls = provenance.lookup("network", network, plugin_distributions)
        check_keywords(algorithm_cls, algorithm_args, "model.algorithm_args", f"algorithm '{algorithm}'",
                       reserved={k: f"model.{k}" for k in INNER_LOOP_OPTIONS})
        check_keywords(network_cls, network_args, "model.network_args", f"network '{network}'",
                       reserved={"schema": "the data (data.*)", "data_info": "the data (data.*)"})
        metric_classes = {name: provenance.lookup("metric", name, plugin_distributions)
                          for name in _metric_names(extra_metrics)}
        self.hparams.plugin_distributions = provenance.record(("algorithm", algorithm), ("network", network),
                                                              *(("metric", name) for name in metric_classes))
        informed = "data_info" in (accepted_keywords(network_cls) or ())  # a network built from the data's facts
        self.network: nn.Module = network_cls(list(info.schema), **(network_args or {}),
                                              **({"data_info": info} if informed else {}))
        if info.rating_mean is not None and isinstance(self.network, RatingModel):
            self.network.rating_offset.fill_(info.rating_mean)
        inner_options = dict(inner_steps=inner_steps, inner_lr=inner_lr, first_order=first_order, adapt=adapt,
                             eval_inner_steps=eval_inner_steps)
        if not algorithm_cls.gradient_based:
            refuse_inner_options(f"algorithm '{algorithm}'", inner_options)
        _check_outer_update(outer_update, algorithm, algorithm_cls)
        _check_task_side(algorithm, algorithm_cls, info)
        self.algorithm: MetaAlgorithm = algorithm_cls(**inner_options, **(algorithm_args or {}))
        if self.algorithm.gradient_based:
            self.algorithm.inner_path = inner_path
        self.algorithm.loss = _loss(loss, algorithm, algorithm_cls)
        bind_algorithm(self.algorithm, self.network, info)
        self.optimizer_factory: Callable = optimizer
        self.metrics = RatingMetrics(ndcg_k=tuple(ndcg_k), top_k=tuple(top_k),
                                     like_threshold=info.like_threshold if like_threshold is None else like_threshold,
                                     rating_levels=info.rating_levels, extra=metric_classes)
        self.skipped_tasks = 0  # tasks dropped by on_divergence="skip", all stages, this process
        self._epoch_skipped: dict[str, int] = {}  # stage -> tasks skipped / evaluated in this epoch
        self._epoch_evaluated: dict[str, int] = {}

    def setup(self, stage: str) -> None:
        """A ``data_info`` without a like threshold (built by hand) takes the data module's, if the trainer has one.
        Before a fit, an algorithm with ``fit_ratings(data, rows)`` (the baselines' ``fit: ratings`` / ``als``,
        ``meta-foldin``'s start) gets the data module's training rows, every one of them, not capped tasks; before any
        stage, one with ``remember_ratings(data, rows)`` (``meta-foldin``'s ``history``) gets them too."""
        datamodule = getattr(self._trainer, "datamodule", None)
        threshold = getattr(datamodule, "like_threshold", None)
        if self.hparams.like_threshold is None and self.data_info.like_threshold is None and threshold is not None:
            self.metrics.like_threshold = float(threshold)
        data = getattr(datamodule, "data", None)
        takers = [getattr(self.algorithm, "fit_ratings", None) if stage == "fit" else None,
                  getattr(self.algorithm, "remember_ratings", None)]  # every stage: a checkpoint loaded to test too
        takers = [take for take in takers if take is not None]
        if data is not None and takers:
            rows = torch.cat(list(data.splits["train"].values()))  # once, for both
            for take in takers:
                take(data, rows)
        if stage == "fit" and self.hparams.init_from:  # before a resumed fit's own checkpoint is restored
            load_network_weights(self.network, self.hparams.init_from)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        """Predictions of the meta-learned (unadapted) network."""
        return self.network(features)

    def adapt(self, batch: TaskBatch, steps: Optional[int] = None, create_graph: bool = False) -> AdaptResult:
        steps = self.algorithm.eval_inner_steps if steps is None else steps
        return self.algorithm.run(self.network, batch, steps, create_graph, self.hparams.vmap_chunk_size)

    def _drop_diverged(self, batch: TaskBatch, bad: Tensor, stage: str, batch_idx: int) -> Optional[TaskBatch]:
        """Raise ``DivergenceError``, or (``skip``) count the diverged tasks and return the others (None: none left)."""
        if self.hparams.on_divergence == "skip":
            self.skipped_tasks += int(bad.sum())
            self._epoch_skipped[stage] = self._epoch_skipped.get(stage, 0) + int(bad.sum())
            self.log(f"{stage}/skipped_tasks", float(bad.sum()), reduce_fx="sum", on_step=False, on_epoch=True,
                     batch_size=len(batch))
            return None if bad.all() else divergence.select(batch, ~bad) if bad.any() else batch
        where = (f"at training step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx})"
                 if stage == "train" else f"in {stage} batch {batch_idx} (epoch {self.current_epoch})")
        sampler = getattr(getattr(self._trainer, "datamodule", None), "sampler", None)
        kind = getattr(sampler, "group_by", "task")
        raise divergence.DivergenceError(divergence.message(self.hparams.algorithm, where, batch, bad, kind))

    def on_train_batch_start(self, batch: TaskBatch, batch_idx: int) -> None:
        """The network records the feature values it trains on (``RatingModel.observe``)."""
        if isinstance(self.network, RatingModel):
            self.network.observe(batch.support.features, batch.query.features)

    def training_step(self, batch: TaskBatch, batch_idx: int) -> Optional[Tensor]:
        result = self.adapt(batch, self.algorithm.inner_steps, create_graph=not self.algorithm.first_order)
        bad = divergence.diverged(result.query_pred, batch.query.mask, result.query_loss)
        if self.hparams.on_divergence == "skip" or bad.any():
            kept = self._drop_diverged(batch, bad, "train", batch_idx)
            if kept is None:
                return None  # every task diverged: Lightning skips this optimizer step
            if bad.any():  # one NaN task poisons the shared meta-gradient: adapt the others again
                batch = kept
                result = self.adapt(batch, self.algorithm.inner_steps, create_graph=not self.algorithm.first_order)
        loss = self.algorithm.outer_loss(result, batch, dict(self.network.named_parameters()))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        self.log("train/query_mse", result.query_loss.mean().detach(), batch_size=len(batch))
        return loss

    def adapted_predictions(self, batch: TaskBatch) -> Tensor:
        """Query predictions after each task's adaptation, building no autograd graph.  Works inside Lightning's
        inference mode too: ``inference_mode(False)`` turns gradient tracking back on, so ``no_grad`` follows it."""
        with torch.inference_mode(False), torch.no_grad():
            return self.adapt(_outside_inference_mode(batch)).query_pred

    def _evaluate(self, batch: TaskBatch, stage: str, batch_idx: int = 0) -> None:
        adapted = self.adapted_predictions(batch)
        bad = divergence.diverged(adapted, batch.query.mask)
        if self.hparams.on_divergence == "skip" or bad.any():
            kept = self._drop_diverged(batch, bad, stage, batch_idx)
            if kept is None:
                return
            if bad.any():
                batch, adapted = kept, adapted[~bad]
        self.metrics.update(stage, batch.scenario, adapted, batch)  # in the trainer's own (inference) mode
        self._epoch_evaluated[stage] = self._epoch_evaluated.get(stage, 0) + len(batch)
        if self.algorithm.gradient_based:
            self.metrics.update(stage, batch.scenario, self.network(batch.query.features), batch, zero_shot=True)

    def validation_step(self, batch: TaskBatch, batch_idx: int) -> None:
        self._evaluate(batch, "val", batch_idx)

    def test_step(self, batch: TaskBatch, batch_idx: int) -> None:
        self._evaluate(batch, "test", batch_idx)

    def predict_step(self, batch: TaskBatch, batch_idx: int) -> dict[str, Any]:
        pred = self.adapted_predictions(batch)
        return {"scenario": batch.scenario, "key": batch.key, "item": batch.query.item,
                "mask": batch.query.mask, "prediction": pred.float()}

    def _start_evaluation(self, stage: str) -> None:
        self.metrics.clear(stage)  # metric states are created in this epoch's (inference) mode
        self._epoch_skipped[stage] = self._epoch_evaluated[stage] = 0

    def _check_evaluated(self, stage: str) -> None:
        """``DivergenceError`` when ``on_divergence: skip`` dropped every task of this evaluation: there is no
        metric to log (a monitored ``val/mae`` would be missing), so say why instead."""
        skipped = self._epoch_skipped.get(stage, 0)
        if skipped and not self._epoch_evaluated.get(stage, 0):
            raise divergence.DivergenceError(
                f"{self.hparams.algorithm}: every {stage} task diverged (NaN/inf) and was skipped "
                f"(model.on_divergence: skip, {skipped} tasks), so no {stage} metric was computed (a monitored "
                f"{stage}/mae would be missing); expected a lower model.inner_lr or model.inner_steps")

    def on_validation_epoch_start(self) -> None:
        self._start_evaluation("val")

    def on_test_epoch_start(self) -> None:
        self._start_evaluation("test")

    def on_validation_epoch_end(self) -> None:
        self._check_evaluated("val")
        self.log_dict(self.metrics.compute("val"), sync_dist=False)

    def on_test_epoch_end(self) -> None:
        self._check_evaluated("test")
        self.log_dict(self.metrics.compute("test"), sync_dist=False)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.hparams.outer_update == "adapted":  # the rest of the network is frozen: no gradient computed for it
            names = set(self.algorithm.adapted_names)
            for n, p in self.network.named_parameters():
                p.requires_grad_(n in names)
            shared = [p for n, p in self.network.named_parameters() if n in names]
            return self.optimizer_factory(shared + list(self.algorithm.parameters()))
        return self.optimizer_factory(self.parameters())
