"""The bilevel loop: inner adaptation of every task at once, and the LightningModule around it.

Inner loop (``adapt``): for each task, fast weights start at the shared initial weights and take
``steps`` gradient steps on the task's support loss; tasks run together under ``torch.func.vmap``, with
``torch.func.grad`` for the per-task gradients and ``functional_call`` so the model stays a plain
``nn.Module``.  Padded samples are removed by masks, so tasks with different support sizes are exact.

Outer loop (``MetaLearner.training_step``): the algorithm's ``outer_loss`` over the adapted query losses,
returned to Lightning's automatic optimisation, so precision plugins, gradient clipping, accumulation and
DDP apply unchanged.  Second order comes for free: without ``first_order`` the inner gradients stay in the
autograd graph and the one outer backward differentiates through them.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable, Iterable, Optional, Union

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from lightning_utilities.core.apply_func import apply_to_collection
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from metarec_pl import plugins, provenance
from metarec_pl.algorithms.base import AdaptResult, Algorithm
from metarec_pl.data.types import FeatureSpec, TaskBatch
from metarec_pl.metrics import RatingMetrics
from metarec_pl.models.base import RatingModel


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the real (mask = 1) samples of the last dimension."""
    err = (pred.float() - target) ** 2 * mask
    return err.sum(-1) / mask.sum(-1).clamp_min(1.0)


def adapt(model: nn.Module, algorithm: Algorithm, batch: TaskBatch, steps: int, create_graph: bool,
          chunk_size: Optional[int] = None) -> AdaptResult:
    """Adapt ``model`` to every task of ``batch`` with ``steps`` inner steps; return per-task query results.

    ``create_graph=False`` treats inner gradients as constants (first order; also used at evaluation).
    When only ``head.*`` parameters adapt, the encoder runs once per task instead of once per step.
    """
    params = dict(model.named_parameters())
    fixed = {**{n: p for n, p in params.items() if n not in algorithm.adapted_names}, **dict(model.named_buffers())}
    fast0 = {n: params[n] for n in algorithm.adapted_names}
    head_only = isinstance(model, RatingModel) and all(n.startswith("head.") for n in fast0)
    if head_only:  # encoder outputs are constants of the inner loop: compute them once, outside vmap
        net: nn.Module = model.head
        fixed = {n[5:]: p for n, p in fixed.items() if n.startswith("head.")}
        x_support, x_query = model.encoder(batch.support.features), model.encoder(batch.query.features)
    else:
        net = model
        x_support, x_query = batch.support.features, batch.query.features
    strip = 5 if head_only else 0

    def predict(fast: dict[str, Tensor], x: Any) -> Tensor:
        out = functional_call(net, {**fixed, **{n[strip:]: w for n, w in fast.items()}}, (x,))
        return model.decode(out) if head_only else out

    def loss(fast: dict[str, Tensor], x: Any, y: Tensor, m: Tensor) -> Tensor:
        return masked_mse(predict(fast, x), y, m)

    def one_task(xs: Any, ys: Tensor, ms: Tensor, xq: Any, yq: Tensor, mq: Tensor) -> dict[str, Any]:
        fast = fast0
        for _ in range(steps):
            grads = grad(loss)(fast, xs, ys, ms)
            if not create_graph:
                grads = {n: g.detach() for n, g in grads.items()}
            fast = algorithm.inner_update(fast, grads)
        query_fast = fast if algorithm.query_through_fast_weights else {n: w.detach() for n, w in fast.items()}
        pred = predict(query_fast, xq)
        out = {"query_pred": pred, "query_loss": masked_mse(pred, yq, mq)}
        if algorithm.needs_support_loss:
            out["support_loss"] = loss(fast, xs, ys, ms)
        if algorithm.needs_fast_weights:
            out["fast_weights"] = fast
        return out

    s, q = batch.support, batch.query
    out = vmap(one_task, randomness="different", chunk_size=chunk_size)(x_support, s.rating, s.mask,
                                                                         x_query, q.rating, q.mask)
    return AdaptResult(**out)


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
        top_k / like_threshold: cut-offs of the candidate-pool metrics and the "like" rating (see ``metrics``).
        plugin_distributions: filled in, not set: ``{"algorithm/<name>": distribution, "model/<name>": ...}`` of
            this run, kept in hparams/checkpoints/configs so a missing plugin is named on load (``provenance``).
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
        like_threshold: float = 4.0,
        plugin_distributions: Optional[dict[str, str]] = None,
    ) -> None:
        super().__init__()
        if schema is None:
            raise ValueError("MetaLearner: schema is missing: pass the data's schema (the metarec CLI links "
                             "data.schema to model.schema)")
        specs = [FeatureSpec(**f) if isinstance(f, dict) else f for f in schema]
        self.save_hyperparameters(ignore=["optimizer"])
        self.hparams.schema = [asdict(f) for f in specs]  # plain data in hparams.yaml and checkpoints
        algorithm_cls = provenance.lookup("algorithm", algorithm, plugin_distributions)
        network_cls = provenance.lookup("model", network, plugin_distributions)
        self.hparams.plugin_distributions = provenance.record(("algorithm", algorithm), ("model", network))
        self.network: nn.Module = network_cls(specs, **(network_args or {}))
        if rating_mean is not None and isinstance(self.network, RatingModel):
            self.network.rating_offset.fill_(rating_mean)
        self.algorithm: Algorithm = algorithm_cls(inner_steps=inner_steps, inner_lr=inner_lr, first_order=first_order,
                                                  adapt=adapt, eval_inner_steps=eval_inner_steps,
                                                  **(algorithm_args or {}))
        self.algorithm.num_users, self.algorithm.num_items = num_users, num_items
        self.algorithm.bind(self.network)
        self.optimizer_factory: Callable = optimizer
        self.metrics = RatingMetrics(ndcg_k=tuple(ndcg_k), top_k=tuple(top_k), like_threshold=like_threshold)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        """Predictions of the meta-learned (unadapted) network."""
        return self.network(features)

    def adapt(self, batch: TaskBatch, steps: Optional[int] = None, create_graph: bool = False) -> AdaptResult:
        steps = self.algorithm.eval_inner_steps if steps is None else steps
        return self.algorithm.run(self.network, batch, steps, create_graph, self.hparams.vmap_chunk_size)

    def training_step(self, batch: TaskBatch, batch_idx: int) -> Tensor:
        result = self.adapt(batch, self.algorithm.inner_steps, create_graph=not self.algorithm.first_order)
        loss = self.algorithm.outer_loss(result, batch, dict(self.network.named_parameters()))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        self.log("train/query_mse", result.query_loss.mean().detach(), batch_size=len(batch))
        return loss

    def _evaluate(self, batch: TaskBatch, stage: str) -> None:
        with torch.inference_mode(False), torch.no_grad():
            adapted = self.adapt(_outside_inference_mode(batch)).query_pred
        self.metrics.update(stage, batch.scenario, adapted, batch)  # in the trainer's own (inference) mode
        if self.algorithm.gradient_based:
            self.metrics.update(stage, batch.scenario, self.network(batch.query.features), batch, zero_shot=True)

    def validation_step(self, batch: TaskBatch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: TaskBatch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: TaskBatch, batch_idx: int) -> dict[str, Any]:
        with torch.inference_mode(False), torch.no_grad():
            batch = _outside_inference_mode(batch)
            pred = self.adapt(batch).query_pred
        return {"scenario": batch.scenario, "key": batch.key, "item": batch.query.item,
                "mask": batch.query.mask, "prediction": pred.float()}

    def on_validation_epoch_start(self) -> None:
        self.metrics.clear("val")  # metric states are created in this epoch's (inference) mode

    def on_test_epoch_start(self) -> None:
        self.metrics.clear("test")

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.metrics.compute("val"), sync_dist=False)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.metrics.compute("test"), sync_dist=False)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.parameters())
