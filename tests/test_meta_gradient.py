"""The vectorised meta-gradient equals a plain per-task loop (float64) for every algorithm."""

import pytest
import torch
from torch.func import functional_call

from conftest import unequal_batch
from metarec_pl.bilevel import MetaLearner
from metarec_pl.data.types import TaskBatch

SUPPORT_SIZES = (3, 9, 17, 30)


def to_double(batch: TaskBatch) -> TaskBatch:
    return TaskBatch(batch.support.to_dtype(torch.float64), batch.query.to_dtype(torch.float64), batch.key)


def task_slices(batch: TaskBatch, i: int):
    """Task i without padding: (support features, ratings), (query features, ratings)."""
    out = []
    for s in (batch.support, batch.query):
        n = int(s.mask[i].sum())
        out.append(({k: v[i, :n] for k, v in s.features.items()}, s.rating[i, :n]))
    return out


def reference_loss(module: MetaLearner, batch: TaskBatch):
    """A plain Python loop over tasks with torch.autograd.grad: the definition of each algorithm."""
    model, alg = module.network, module.algorithm
    params = dict(model.named_parameters())
    name = module.hparams.algorithm
    mse = lambda fast, x, y: ((functional_call(model, {**params, **fast}, (x,)) - y) ** 2).mean()  # noqa: E731
    if name == "none":
        errs = []
        for i in range(len(batch)):
            for x, y in task_slices(batch, i):
                errs.append((model(x) - y) ** 2)
        return torch.cat(errs).mean(), {}
    query_losses, pseudo = [], {n: torch.zeros_like(params[n]) for n in alg.adapted_names}
    for i in range(len(batch)):
        (xs, ys), (xq, yq) = task_slices(batch, i)
        fast = {n: params[n] for n in alg.adapted_names}
        for _ in range(alg.inner_steps):
            grads = torch.autograd.grad(mse(fast, xs, ys), list(fast.values()), create_graph=not alg.first_order)
            lrs = {n: (alg.lrs[n.replace(".", "__")] if name == "metasgd" else alg.inner_lr) for n in fast}
            fast = {n: w - lrs[n] * g for (n, w), g in zip(fast.items(), grads)}
        if name == "reptile":
            for n in fast:
                pseudo[n] += (params[n] - fast[n]).detach() / len(batch)
            fast = {n: w.detach() for n, w in fast.items()}
        query_losses.append(mse(fast, xq, yq))
    return torch.stack(query_losses).mean(), pseudo


def meta_grads(module: MetaLearner, batch: TaskBatch, reference: bool) -> dict[str, torch.Tensor]:
    module.zero_grad()
    params = dict(module.named_parameters())
    if reference:
        loss, pseudo = reference_loss(module, batch)
        grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()), allow_unused=True)
                         if loss.requires_grad else [None] * len(params)))
        for n, g in pseudo.items():
            key = "network." + n
            grads[key] = g if grads[key] is None else grads[key] + g
        return {n: torch.zeros_like(params[n]) if g is None else g for n, g in grads.items()}
    module.training_step(batch, 0).backward()
    return {n: torch.zeros_like(p) if p.grad is None else p.grad.clone() for n, p in params.items()}


def rel_err(a: dict, b: dict) -> float:
    num = sum(((a[n] - b[n]) ** 2).sum() for n in a) ** 0.5
    den = sum((b[n] ** 2).sum() for n in b) ** 0.5
    return float(num / den)


CASES = [
    ("maml", ["*"]), ("maml", ["head.*"]), ("fomaml", ["*"]), ("metasgd", ["head.*"]), ("metasgd", ["*"]),
    ("reptile", ["head.*"]), ("anil", None), ("none", None),
]


@pytest.mark.parametrize("algorithm,adapt", CASES)
@pytest.mark.parametrize("network", ["melu", "mlp"])
def test_vectorised_meta_gradient_matches_per_task_loop(tiny_world, algorithm, adapt, network):
    _, data = tiny_world
    torch.manual_seed(0)
    module = MetaLearner(algorithm=algorithm, network=network, adapt=adapt, inner_steps=3, inner_lr=0.05,
                         network_args={"hidden": [16, 8]}, schema=data.schema, rating_mean=3.5).double()
    batch = to_double(unequal_batch(data, SUPPORT_SIZES))
    vectorised, reference = meta_grads(module, batch, False), meta_grads(module, batch, True)
    assert sum(float(g.abs().sum()) for g in reference.values()) > 0
    assert rel_err(vectorised, reference) < 1e-6


def test_padding_does_not_change_the_meta_gradient(tiny_world):
    """The same tasks padded to a wider batch (an extra long task) give the same per-task losses."""
    _, data = tiny_world
    module = MetaLearner(algorithm="maml", adapt=["*"], inner_steps=2, schema=data.schema).double()
    short = to_double(unequal_batch(data, (3, 9)))
    wide = to_double(unequal_batch(data, (3, 9, 30)))
    a = module.adapt(short, steps=2).query_loss
    b = module.adapt(wide, steps=2).query_loss[:2]
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_second_order_differs_from_first_order(tiny_world):
    _, data = tiny_world
    batch = to_double(unequal_batch(data, SUPPORT_SIZES))
    grads = {}
    for first_order in (False, True):
        torch.manual_seed(0)
        module = MetaLearner(algorithm="maml", adapt=["*"], first_order=first_order, inner_steps=3, inner_lr=0.05,
                             schema=data.schema, rating_mean=3.5).double()
        grads[first_order] = meta_grads(module, batch, False)
    assert rel_err(grads[True], grads[False]) > 1e-3
