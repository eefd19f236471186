"""The vectorised meta-gradient equals a plain per-task loop (float64) for every algorithm."""

from dataclasses import replace

import pytest
import torch
from torch.func import functional_call

from conftest import unequal_batch
from metarec_pl import divergence
from metarec_pl.algorithms.base import Algorithm, broadcasts_over_tasks
from metarec_pl.bilevel import MetaLearner
from metarec_pl.data.info import DataInfo
from metarec_pl.data.types import TaskBatch
from metarec_pl.inner import plan

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
    ("maml", ["*"]), ("maml", ["head.*"]), ("fomaml", ["*"]), ("fomaml", ["head.*"]), ("metasgd", ["head.*"]),
    ("metasgd", ["*"]), ("melu", None), ("maml", ["head.0.*", "head.4.*"]), ("maml", ["head.0.weight"]),
    ("reptile", ["head.*"]), ("anil", None), ("none", None),
]


@pytest.mark.parametrize("algorithm,adapt", CASES)
@pytest.mark.parametrize("network", ["melu", "mlp"])
def test_vectorised_meta_gradient_matches_per_task_loop(tiny_world, algorithm, adapt, network):
    _, data = tiny_world
    torch.manual_seed(0)
    inner = {} if algorithm == "none" else dict(adapt=adapt, inner_steps=3, inner_lr=0.05)  # none: no inner loop
    module = MetaLearner(algorithm=algorithm, network=network, network_args={"hidden": [16, 8]},
                         data_info=DataInfo(data.schema, rating_mean=3.5), **inner).double()
    batch = to_double(unequal_batch(data, SUPPORT_SIZES))
    vectorised, reference = meta_grads(module, batch, False), meta_grads(module, batch, True)
    assert sum(float(g.abs().sum()) for g in reference.values()) > 0
    assert rel_err(vectorised, reference) < 1e-10


def test_padding_does_not_change_the_meta_gradient(tiny_world):
    """The same tasks padded to a wider batch (an extra long task) give the same per-task losses."""
    _, data = tiny_world
    module = MetaLearner(algorithm="maml", adapt=["*"], inner_steps=2, data_info=DataInfo(data.schema)).double()
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
                             data_info=DataInfo(data.schema, rating_mean=3.5)).double()
        grads[first_order] = meta_grads(module, batch, False)
    assert rel_err(grads[True], grads[False]) > 1e-3


def test_an_unmarked_inner_update_sees_one_task_at_a_time(tiny_world):
    """A plugin's ``inner_update`` without ``broadcasts_over_tasks`` runs under vmap: here a step normalised by
    the task's own gradient norm, which would mix tasks if it were called on the stacked weights."""
    class NormalisedStep(Algorithm):
        def inner_update(self, fast, grads):
            norm = sum((g ** 2).sum() for g in grads.values()) ** 0.5
            return {n: w - self.inner_lr * grads[n] / norm for n, w in fast.items()}

    _, data = tiny_world
    torch.manual_seed(0)
    module = MetaLearner(algorithm="maml", adapt=["head.*"], inner_steps=2, inner_lr=0.5,
                         data_info=DataInfo(data.schema, rating_mean=3.5)).double()
    module.algorithm.inner_update = NormalisedStep.inner_update.__get__(module.algorithm)
    batch = to_double(unequal_batch(data, SUPPORT_SIZES))
    together = module.adapt(batch, steps=2).query_loss
    alone = torch.cat([module.adapt(one_task(batch, i), steps=2).query_loss for i in range(len(batch))])
    torch.testing.assert_close(together, alone, rtol=1e-10, atol=1e-12)
    marked = broadcasts_over_tasks(NormalisedStep.inner_update)
    module.algorithm.inner_update = marked.__get__(module.algorithm)  # wrongly marked: the tasks now mix
    assert not torch.allclose(module.adapt(batch, steps=2).query_loss, alone)


def one_task(batch: TaskBatch, i: int) -> TaskBatch:
    keep = torch.zeros(len(batch), dtype=torch.bool)
    keep[i] = True
    return divergence.select(batch, keep)


@pytest.mark.parametrize("algorithm,adapt,expected", [
    ("maml", ["head.*"], True), ("fomaml", ["head.*"], True), ("melu", None, True), ("maml", ["*"], False),
    ("metasgd", ["head.*"], False), ("reptile", ["head.*"], False), ("anil", None, True),
    ("maml", ["head.0.weight"], False),
])
def test_kernel_first_layer_is_planned_exactly_where_it_applies(tiny_world, algorithm, adapt, expected):
    """The planner picks the kernel form where it applies (plain SGD on an adapted first layer of an MLP head,
    query through the adapted weights), so the meta-gradient test above checks that path."""
    _, data = tiny_world
    module = MetaLearner(algorithm=algorithm, network="melu", adapt=adapt, inner_steps=2,
                         data_info=DataInfo(data.schema))
    assert (plan(module.network, module.algorithm, unequal_batch(data, SUPPORT_SIZES), 2).path == "kernel") is expected


def test_kernel_first_layer_is_not_planned_without_gradients(tiny_world):
    """Evaluation (no graph) forms the per-task weights instead: cheaper when the query is a whole catalogue."""
    _, data = tiny_world
    module = MetaLearner(algorithm="maml", network="melu", adapt=["head.*"], inner_steps=2,
                         data_info=DataInfo(data.schema))
    batch = unequal_batch(data, SUPPORT_SIZES)
    assert plan(module.network, module.algorithm, batch, 2).path == "kernel"
    with torch.no_grad():
        assert plan(module.network, module.algorithm, batch, 2).path == "written-out"


@pytest.mark.parametrize("algorithm", ["maml", "metasgd", "fomaml"])
def test_autograd_inner_gradients_on_a_linear_head_are_exact(tiny_world, algorithm):
    """The autograd path on a Linear stack head (what a head of other parameter-free layers than ReLU takes:
    double backward), allowed as the fastest with ``inner_path="autograd"``: still exact."""
    _, data = tiny_world
    torch.manual_seed(0)
    module = MetaLearner(algorithm=algorithm, network="melu", adapt=["head.*"], inner_steps=3, inner_lr=0.05,
                         network_args={"hidden": [16, 8]}, data_info=DataInfo(data.schema, rating_mean=3.5),
                         inner_path="autograd").double()
    batch = to_double(unequal_batch(data, SUPPORT_SIZES))
    chosen = plan(module.network, module.algorithm, batch, 3, "autograd")
    assert (chosen.path, chosen.head_only, chosen.stacked) == ("autograd", True, True)
    assert rel_err(meta_grads(module, batch, False), meta_grads(module, batch, True)) < 1e-10


def task_loss(name: str, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One task's loss on its real samples, written from the definitions (not from metarec_pl.losses)."""
    if name == "mse":
        return ((pred - y) ** 2).mean()
    if name == "bce":
        return torch.nn.functional.binary_cross_entropy_with_logits(pred, (y > 0).to(pred.dtype))
    pos, neg = pred[y > 0], pred[y <= 0]  # bpr: every (interaction, negative) pair
    pairs = pos[:, None] - neg[None, :]
    return -torch.nn.functional.logsigmoid(pairs).mean() if pairs.numel() else pred.sum() * 0.0


def reference_loss_with(module: MetaLearner, batch: TaskBatch, loss: str) -> torch.Tensor:
    model, alg = module.network, module.algorithm
    params = dict(model.named_parameters())
    f = lambda fast, x, y: task_loss(loss, functional_call(model, {**params, **fast}, (x,)), y)  # noqa: E731
    query_losses = []
    for i in range(len(batch)):
        (xs, ys), (xq, yq) = task_slices(batch, i)
        fast = {n: params[n] for n in alg.adapted_names}
        for _ in range(alg.inner_steps):
            grads = torch.autograd.grad(f(fast, xs, ys), list(fast.values()), create_graph=not alg.first_order)
            lrs = {n: (alg.lrs[n.replace(".", "__")] if module.hparams.algorithm == "metasgd" else alg.inner_lr)
                   for n in fast}
            fast = {n: w - lrs[n] * g for (n, w), g in zip(fast.items(), grads)}
        query_losses.append(f(fast, xq, yq))
    return torch.stack(query_losses).mean()


def implicit(batch: TaskBatch) -> TaskBatch:
    """The batch as implicit feedback: ratings >= 4 are interactions (1), the rest negatives (0)."""
    s, q = batch.support, batch.query
    return TaskBatch(replace(s, rating=(s.rating >= 4).to(s.rating) * s.mask),
                     replace(q, rating=(q.rating >= 4).to(q.rating) * q.mask), batch.key)


@pytest.mark.parametrize("loss", ["bce", "bpr", "mse"])
@pytest.mark.parametrize("algorithm,adapt,network", [
    ("maml", ["*"], "melu"), ("maml", ["head.*"], "melu"), ("fomaml", ["head.*"], "mlp"),
    ("metasgd", ["head.*"], "mlp"), ("maml", ["head.0.weight"], "mlp"),
])
def test_meta_gradient_matches_per_task_loop_for_each_loss(tiny_world, loss, algorithm, adapt, network):
    _, data = tiny_world
    torch.manual_seed(0)
    module = MetaLearner(algorithm=algorithm, network=network, adapt=adapt, inner_steps=3, inner_lr=0.05, loss=loss,
                         network_args={"hidden": [16, 8]}, data_info=DataInfo(data.schema)).double()
    batch = implicit(to_double(unequal_batch(data, SUPPORT_SIZES)))
    assert 0 < float(batch.support.rating.sum()) < float(batch.support.mask.sum())  # both kinds present
    module.zero_grad()
    module.training_step(batch, 0).backward()
    vectorised = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    params = dict(module.named_parameters())
    reference = dict(zip(params, torch.autograd.grad(reference_loss_with(module, batch, loss), list(params.values()),
                                                     allow_unused=True)))
    reference = {n: g for n, g in reference.items() if g is not None}
    assert set(vectorised) == set(reference) and sum(float(g.abs().sum()) for g in reference.values()) > 0
    assert rel_err(vectorised, reference) < 1e-10


def test_a_loss_an_algorithm_cannot_use_is_refused_in_one_line(tiny_world):
    _, data = tiny_world
    with pytest.raises(ValueError, match="model.loss: algorithm 'protonet' works with mse only"):
        MetaLearner(algorithm="protonet", loss="bpr", data_info=DataInfo(data.schema))
    with pytest.raises(ValueError, match="model.loss: algorithm 'mf-foldin' works with mse only"):
        MetaLearner(algorithm="mf-foldin", loss="bce", data_info=DataInfo.of(data))
    with pytest.raises(ValueError, match="model.loss: unknown loss 'hinge'"):
        MetaLearner(algorithm="maml", loss="hinge", data_info=DataInfo(data.schema))
