"""Pieces the fast paths share: what the network runs on (the whole model, or its head on encoder outputs
computed once), predictions on stacked fast weights, the step, and the query-side results."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from torch import Tensor, nn
from torch.func import functional_call, vmap

from metarec_pl.data.types import TaskBatch
from metarec_pl.inner.kernel import KernelFirstLayer
from metarec_pl.inner.linear_stack import linear_stack
from metarec_pl.results import AdaptResult

Predict = Callable[..., Tensor]  # (fast weights by model name, inputs, tape=None) -> predictions [tasks, n]


@dataclass
class View:
    """What the inner loop runs: ``net`` on ``x_support``/``x_query`` with the constant weights ``fixed`` (names
    relative to ``net``); ``strip`` characters of an adapted name make it relative; ``decode`` maps the
    net's output to predictions (``None``: it is the prediction)."""

    net: nn.Module
    fixed: dict[str, Tensor]
    x_support: Any
    x_query: Any
    strip: int = 0
    decode: Optional[Callable[[Tensor], Tensor]] = None


def view(model: nn.Module, algorithm: Any, batch: TaskBatch, head_only: bool) -> View:
    """The whole ``model`` on the features, or (``head_only``: only ``head.*`` adapts) ``model.head`` on the
    encoder outputs, which are constants of the inner loop and so are computed once per task, not once per step."""
    params = dict(model.named_parameters())
    fixed = {**{n: p for n, p in params.items() if n not in algorithm.adapted_names}, **dict(model.named_buffers())}
    if not head_only:
        return View(model, fixed, batch.support.features, batch.query.features)
    fixed = {n[5:]: p for n, p in fixed.items() if n.startswith("head.")}
    x_support, x_query = model.encoder(batch.support.features), model.encoder(batch.query.features)
    return View(model.head, fixed, x_support, x_query, 5, model.decode)


def predictor(v: View, stacked: bool, kernel: Optional[KernelFirstLayer] = None) -> Predict:
    """Predictions on stacked fast weights: batched matrix products (``stacked``: a linear stack, see
    ``linear_stack``; with ``kernel`` its first layer in kernel form) or ``vmap(functional_call)``."""
    start = 0 if kernel is None else 1  # the kernel form computes the first layer's output itself

    def predict(fast: dict[str, Tensor], x: Any, tape: Optional[list[Tensor]] = None) -> Tensor:
        weights = {n[v.strip:]: w for n, w in fast.items()}
        if kernel is not None:
            x = kernel.output(x, weights.pop(KernelFirstLayer.state))
        if stacked:
            out = linear_stack(v.net, {**v.fixed, **weights}, x, start, tape)
        else:
            call = lambda w, xi: functional_call(v.net, {**v.fixed, **w}, (xi,))  # noqa: E731
            out = vmap(call, randomness="different")(weights, x)
        return out if v.decode is None else v.decode(out)

    return predict


def stacked_start(model: nn.Module, names: list[str], tasks: int) -> dict[str, Tensor]:
    """Fast weights before the first step: views [tasks, *shape] of the shared weights ``names``."""
    params = dict(model.named_parameters())
    return {n: params[n].expand(tasks, *params[n].shape) for n in names}


def step_function(algorithm: Any) -> Callable[[dict[str, Tensor], dict[str, Tensor]], dict[str, Tensor]]:
    """``algorithm.inner_update`` on stacked weights: called once when marked ``broadcasts_over_tasks``, else
    under ``vmap`` (one task at a time)."""
    if getattr(algorithm.inner_update, "broadcasts_over_tasks", False):
        return algorithm.inner_update
    return vmap(algorithm.inner_update)


def add_steps(fast: dict[str, Tensor], steps: dict[str, Tensor]) -> dict[str, Tensor]:
    """Plain SGD when the written-out gradients already carry the factor -lr: ``w + step``."""
    return {n: w + steps[n] for n, w in fast.items()}


def finish(algorithm: Any, batch: TaskBatch, v: View, fast: dict[str, Tensor], predict: Predict,
           weights: Callable[[dict[str, Tensor]], dict[str, Tensor]] = dict) -> AdaptResult:
    """The query predictions and losses (and, when the algorithm asks, the final support loss and the adapted
    weights, ``weights(fast)`` by parameter name) of the adapted ``fast`` weights."""
    s, q, loss = batch.support, batch.query, algorithm.loss
    seen = fast if algorithm.query_through_fast_weights else {n: w.detach() for n, w in fast.items()}
    pred = predict(seen, v.x_query)
    out = {"query_pred": pred, "query_loss": loss(pred, q.rating, q.mask)}
    if algorithm.needs_support_loss:
        out["support_loss"] = loss(predict(fast, v.x_support), s.rating, s.mask)
    if algorithm.needs_fast_weights:
        out["fast_weights"] = weights(fast)
    return AdaptResult(**out)
