"""The bilevel loop: inner adaptation of every task at once, and the LightningModule around it.

Inner loop (``adapt``): for each task, fast weights start at the shared initial weights and take
``steps`` gradient steps on the task's support loss; tasks run together (stacked fast weights, one
``torch.autograd.grad`` for all of them, ``vmap`` + ``functional_call`` so the model stays a plain
``nn.Module``).  Padded samples are removed by masks, so tasks with different support sizes are exact.
The speed and precision helpers it calls (task grouping, checkpointed chunks, batched MLP head, fp16 inner loss
scaling) live in ``inner_tools.py``.

Outer loop (``MetaLearner.training_step``): the algorithm's ``outer_loss`` over the adapted query losses,
returned to Lightning's automatic optimisation, so precision plugins, gradient clipping, accumulation and
DDP apply unchanged.  Second order comes for free: without ``first_order`` the inner gradients stay in the
autograd graph and the one outer backward differentiates through them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, fields
from typing import Any, Callable, Iterable, Optional, Union

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from lightning_utilities.core.apply_func import apply_to_collection
from torch import Tensor, nn
from torch.func import functional_call, vmap

from metarec_pl import divergence, provenance
from metarec_pl.algorithms.base import AdaptResult, Algorithm
from metarec_pl.losses import BUILTIN_LOSSES, Loss, masked_mse  # noqa: F401  (masked_mse: re-exported)
from metarec_pl.data.types import FeatureSpec, TaskBatch
from metarec_pl.errors import ConfigError, check_keywords
from metarec_pl.inner_tools import (KernelFirstLayer, adapt_checkpointed, cat_tasks, has_written_out_backward,
                                    inner_loss_scale, is_linear_stack, linear_stack, linear_stack_backward,
                                    select_tasks, task_groups, unscale)
from metarec_pl.metrics import RatingMetrics
from metarec_pl.models.base import RatingModel


def adapt(model: nn.Module, algorithm: Algorithm, batch: TaskBatch, steps: int, create_graph: bool,
          chunk_size: Optional[int] = None) -> AdaptResult:
    """Adapt ``model`` to every task of ``batch`` with ``steps`` inner steps; return per-task query results.

    ``create_graph=False`` treats inner gradients as constants (first order; also used at evaluation).
    Tasks are grouped by support size so that each group is padded only to its own longest support set
    (``task_groups``).  ``chunk_size`` caps the tasks adapted at once; while gradients are tracked each chunk
    is checkpointed (its inner loop is recomputed in the backward pass), so peak memory follows the chunk, not
    the batch, for about one more forward pass of compute.
    """
    groups = task_groups(batch.support.mask, chunk_size)
    if len(groups) == 1:
        return _adapt_tasks(model, algorithm, batch, steps, create_graph)
    checkpointed = chunk_size is not None and torch.is_grad_enabled()
    parts = []
    for idx in groups:
        part = select_tasks(batch, idx)
        if checkpointed:
            parts.append(adapt_checkpointed(_adapt_tasks, model, algorithm, part, steps, create_graph))
        else:
            parts.append(_adapt_tasks(model, algorithm, part, steps, create_graph))
    inverse = torch.argsort(torch.cat(groups))
    return AdaptResult(**{f.name: cat_tasks([getattr(p, f.name) for p in parts], inverse)
                          for f in fields(AdaptResult)})


def _adapt_tasks(model: nn.Module, algorithm: Algorithm, batch: TaskBatch, steps: int,
                 create_graph: bool) -> AdaptResult:
    """The vectorised inner loop over the tasks of ``batch``.

    Fast weights are stacked per task (``[tasks, *shape]``, starting as views of the shared weights); one
    ``torch.autograd.grad`` of the summed support losses gives every task's gradient at once, since tasks share
    no computation.  An ``nn.Sequential`` of ``nn.Linear`` layers and parameter-free modules (the MLP head of
    the built-in models) runs as batched matrix products; any other network runs under ``vmap``.
    When only ``head.*`` parameters adapt, the encoder runs once per task instead of once per step; with no
    inner steps (``none``, evaluation with ``eval_inner_steps: 0``) the network runs once on the whole batch.
    A Linear/ReLU head gets its inner gradients from ``linear_stack_backward`` (written out, so the outer pass
    has no double backward), and, under plain SGD in training, its first layer in kernel form (``KernelFirstLayer``).
    """
    s, q = batch.support, batch.query
    loss = algorithm.loss
    if steps == 0 and not algorithm.needs_fast_weights:  # nothing adapts: the shared weights serve every task
        pred = model(q.features)
        out = {"query_pred": pred, "query_loss": loss(pred, q.rating, q.mask)}
        if algorithm.needs_support_loss:
            out["support_loss"] = loss(model(s.features), s.rating, s.mask)
        return AdaptResult(**out)
    params = dict(model.named_parameters())
    fixed = {**{n: p for n, p in params.items() if n not in algorithm.adapted_names}, **dict(model.named_buffers())}
    tasks = len(batch)
    head_only = isinstance(model, RatingModel) and all(n.startswith("head.") for n in algorithm.adapted_names)
    if head_only:  # encoder outputs are constants of the inner loop: compute them once
        net: nn.Module = model.head
        fixed = {n[5:]: p for n, p in fixed.items() if n.startswith("head.")}
        x_support, x_query = model.encoder(batch.support.features), model.encoder(batch.query.features)
    else:
        net = model
        x_support, x_query = batch.support.features, batch.query.features
    strip = 5 if head_only else 0
    stacked = head_only and is_linear_stack(net)
    # inner gradients as plain ops (the loss's written-out derivative through the layers): no double backward
    written_out = stacked and has_written_out_backward(net) and loss.has_grad
    tracked = torch.is_grad_enabled()
    kernel = None
    # kernel form only while training: without a graph the per-task weights cost no backward, and a large query
    # (a whole catalogue in ``recommend``) makes the kernel products dearer than the copies (docs/cli.md, Latency)
    if tracked and written_out and KernelFirstLayer.fits(net, algorithm, [n[strip:] for n in algorithm.adapted_names]):
        kernel = KernelFirstLayer(net, dict(net.named_parameters()), x_support, create_graph)
        x_support, x_query = kernel.inputs(x_support), kernel.inputs(x_query)  # (output at W_0, kernel)
    state = f"head.{KernelFirstLayer.state}"
    start = 0 if kernel is None else 1  # the kernel form computes the first layer's output itself

    def predict(fast: dict[str, Tensor], x: Any, tape: Optional[list[Tensor]] = None) -> Tensor:
        weights = {n[strip:]: w for n, w in fast.items()}
        if kernel is not None:
            x = kernel.output(x, weights.pop(KernelFirstLayer.state))
        if stacked:
            out = linear_stack(net, {**fixed, **weights}, x, start, tape)
        else:
            call = lambda w, xi: functional_call(net, {**fixed, **w}, (xi,))  # noqa: E731
            out = vmap(call, randomness="different")(weights, x)
        return model.decode(out) if head_only else out

    def written_out_grads(fast: dict[str, Tensor]) -> tuple[list[Tensor], Optional[Tensor]]:
        """Support-loss gradients of the fast weights (for Z: of the first layer's output), by
        ``linear_stack_backward``, and the fp16 loss scales (``None`` without fp16)."""
        tape: list[Tensor] = []
        pred = predict(fast, x_support, tape=tape)
        d_pred = loss.grad(pred, s.rating, s.mask, step_sign)
        scale = inner_loss_scale(d_pred) if fp16 else None  # (fp16: step_sign is 1)
        d_pred = d_pred if scale is None else d_pred * scale[:, None]  # powers of two: exact
        weights = {**fixed, **{n[strip:]: w for n, w in fast.items()}}
        d_input, grads = linear_stack_backward(net, weights, tape, d_pred.unsqueeze(-1).to(pred.dtype), wanted, start)
        return [d_input if n == state else grads[n[strip:]] for n in fast], scale

    device = s.mask.device.type
    fp16 = torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.float16
    fast = {n: params[n].expand(tasks, *params[n].shape) for n in algorithm.adapted_names
            if kernel is None or n[strip:] not in kernel.names}
    if kernel is not None:
        fast[state] = kernel.start()
    broadcasts = getattr(algorithm.inner_update, "broadcasts_over_tasks", False)
    update = algorithm.inner_update if broadcasts else vmap(algorithm.inner_update)
    step_sign = 1.0  # the written-out gradients are of step_sign·loss
    if written_out:
        wanted = {"input" if n == state else n[strip:] for n in fast}
        if algorithm.plain_sgd and not fp16:  # gradients of -lr·loss, so the step is a plain sum: the outer
            step_sign = -algorithm.inner_lr  # backward multiplies no step's gradient by -lr (fp16 keeps the
            update = _add_steps  # unscaled gradient range its loss scaling is made for)
    for _ in range(steps):
        if written_out:
            with torch.set_grad_enabled(create_graph and tracked):
                grads, scale = written_out_grads(fast)
        else:
            with torch.enable_grad():
                leaves = {n: w if tracked and w.requires_grad else w.detach().requires_grad_() for n, w in fast.items()}
                pred = predict(leaves, x_support)
                losses = loss(pred, s.rating, s.mask)
                scale = inner_loss_scale(loss.grad(pred, s.rating, s.mask)) if fp16 and loss.has_grad else None
                total = (losses if scale is None else losses * scale).sum()
                grads = torch.autograd.grad(total, list(leaves.values()), create_graph=create_graph and tracked)
        if scale is not None:
            grads = unscale(grads, scale)
        grads = dict(zip(fast, grads if create_graph else [g.detach() for g in grads]))
        fast = update(fast, grads)
    query_fast = fast if algorithm.query_through_fast_weights else {n: w.detach() for n, w in fast.items()}
    pred = predict(query_fast, x_query)
    out = {"query_pred": pred, "query_loss": loss(pred, q.rating, q.mask)}
    if algorithm.needs_support_loss:
        out["support_loss"] = loss(predict(fast, x_support), s.rating, s.mask)
    if algorithm.needs_fast_weights:
        z = fast.pop(state, None)
        out["fast_weights"] = fast if z is None else {**fast, **{f"head.{n}": w for n, w in kernel.weights(z).items()}}
    return AdaptResult(**out)


def _add_steps(fast: dict[str, Tensor], steps: dict[str, Tensor]) -> dict[str, Tensor]:
    """Plain SGD when the written-out gradients already carry the factor -lr: ``w + step``."""
    return {n: w + steps[n] for n, w in fast.items()}


INNER_LOOP_OPTIONS = ("inner_steps", "inner_lr", "first_order", "adapt", "eval_inner_steps")  # MetaLearner's own


def _check_sizes(ndcg_k: Iterable[int], top_k: Iterable[int], vmap_chunk_size: Optional[int],
                 inner_steps: Optional[int], eval_inner_steps: Optional[int], inner_lr: Optional[float],
                 like_threshold: Optional[float]) -> None:
    """``ConfigError`` naming the first option of ``MetaLearner`` whose value is out of range."""
    for name, values in (("ndcg_k", ndcg_k), ("top_k", top_k)):
        if isinstance(values, (int, str)) or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1
                                                     for k in values):
            raise ConfigError(f"model.{name}: {values!r} holds a cut-off that is not a whole number >= 1; "
                              f"expected a list of cut-offs such as [5, 10]")
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


def _outside_inference_mode(batch: TaskBatch) -> TaskBatch:
    """Inference tensors cannot enter autograd; clone them (cheap: one meta-batch) so adaptation can run."""
    return apply_to_collection(batch, Tensor, lambda t: t.clone() if t.is_inference() else t)


class MetaLearner(L.LightningModule):
    """Meta-trains any registered ``network`` with any registered ``algorithm`` (chosen by short name).

    Args:
        algorithm: registered algorithm name (``metarec plugins`` lists them).
        network: registered model name.
        inner_steps / inner_lr / first_order / adapt / eval_inner_steps: inner-loop options, see ``Algorithm``
            (``None``: the algorithm's default, 5 steps of lr 0.01 unless it is a preset such as ``melu``).
        algorithm_args / network_args: further keyword arguments of the chosen classes.
        optimizer: the outer optimiser.
        ndcg_k: cut-offs of nDCG on each query set.
        vmap_chunk_size: tasks per vmap chunk (``None``: all at once); smaller trades speed for memory.
        schema: the data's feature schema; the CLI links it from ``data.schema``.
        rating_mean: initial output bias (mean training rating); the CLI links it from ``data.rating_mean``.
        num_users / num_items: id-table sizes for algorithms that keep per-id tables (``bias``, ``mf-foldin``,
            ``popularity``); the CLI links them from ``data.num_users``/``data.num_items``.
        top_k / like_threshold: cut-offs of the rankings over candidates and the "like" rating (see ``metrics``;
            ``like_threshold`` ``None``: the data module's ``like_threshold``, read when the trainer sets up:
            every interaction for implicit feedback, 4 on a 1-5 scale).
        loss: the per-task loss of the inner and the outer loop: ``mse`` (ratings), ``bce`` or ``bpr`` (implicit
            feedback: logits / ranking scores), see ``metarec_pl.losses``; an algorithm that cannot use it refuses.
        rating_levels: the discrete rating scale (e.g. 1..5), for the ``mae_rounded`` metric; the CLI links it from
            ``data.rating_levels`` (``None``: that metric is left out).
        plugin_distributions: filled in, not set: ``{"algorithm/<name>": distribution, "model/<name>": ...}`` of
            this run, kept in hparams/checkpoints/configs so a missing plugin is named on load (``provenance``).
        on_divergence: ``raise`` (stop with an error naming step, task and algorithm) or ``skip`` (drop tasks whose
            inner loop gives NaN/inf, count them in ``<stage>/skipped_tasks``); see ``metarec_pl.divergence``.
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
        schema: Optional[list[Union[FeatureSpec, dict]]] = None,
        rating_mean: Optional[float] = None,
        num_users: Optional[int] = None,
        num_items: Optional[int] = None,
        top_k: Iterable[int] = (5, 10),
        like_threshold: Optional[float] = None,
        rating_levels: Optional[list[float]] = None,
        plugin_distributions: Optional[dict[str, str]] = None,
        on_divergence: str = "raise",
        loss: str = "mse",
    ) -> None:
        super().__init__()
        if on_divergence not in divergence.POLICIES:
            raise ConfigError(f"model.on_divergence: {on_divergence!r} is not a policy; expected one of "
                              f"{', '.join(divergence.POLICIES)}")
        if schema is None:
            raise ConfigError("model.schema is missing: pass the data's schema (the metarec CLI links "
                              "data.schema to model.schema)")
        _check_sizes(ndcg_k=ndcg_k, top_k=top_k, vmap_chunk_size=vmap_chunk_size, inner_steps=inner_steps,
                     eval_inner_steps=eval_inner_steps, inner_lr=inner_lr, like_threshold=like_threshold)
        specs = [FeatureSpec(**f) if isinstance(f, dict) else f for f in schema]
        self.save_hyperparameters(ignore=["optimizer"])
        self.hparams.schema = [asdict(f) for f in specs]  # plain data in hparams.yaml and checkpoints
        algorithm_cls = provenance.lookup("algorithm", algorithm, plugin_distributions)
        network_cls = provenance.lookup("model", network, plugin_distributions)
        check_keywords(algorithm_cls, algorithm_args, "model.algorithm_args", f"algorithm '{algorithm}'",
                       reserved={k: f"model.{k}" for k in INNER_LOOP_OPTIONS})
        check_keywords(network_cls, network_args, "model.network_args", f"network '{network}'",
                       reserved={"schema": "the data (data.*)"})
        self.hparams.plugin_distributions = provenance.record(("algorithm", algorithm), ("model", network))
        self.network: nn.Module = network_cls(specs, **(network_args or {}))
        if rating_mean is not None and isinstance(self.network, RatingModel):
            self.network.rating_offset.fill_(rating_mean)
        self.algorithm: Algorithm = algorithm_cls(inner_steps=inner_steps, inner_lr=inner_lr, first_order=first_order,
                                                  adapt=adapt, eval_inner_steps=eval_inner_steps,
                                                  **(algorithm_args or {}))
        self.algorithm.num_users, self.algorithm.num_items = num_users, num_items
        self.algorithm.loss = _loss(loss, algorithm, algorithm_cls)
        self.algorithm.bind(self.network)
        self.optimizer_factory: Callable = optimizer
        self.metrics = RatingMetrics(ndcg_k=tuple(ndcg_k), top_k=tuple(top_k), like_threshold=like_threshold,
                                     rating_levels=rating_levels)
        self.skipped_tasks = 0  # tasks dropped by on_divergence="skip", all stages, this process
        self._epoch_skipped: dict[str, int] = {}  # stage -> tasks skipped / evaluated in this epoch
        self._epoch_evaluated: dict[str, int] = {}

    def setup(self, stage: str) -> None:
        """Facts of the data the metrics need and no option set: the "like" threshold (implicit: any interaction)."""
        threshold = getattr(getattr(self._trainer, "datamodule", None), "like_threshold", None)
        if self.hparams.like_threshold is None and threshold is not None:
            self.metrics.like_threshold = float(threshold)

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
        return self.optimizer_factory(self.parameters())
