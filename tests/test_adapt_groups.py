"""Grouping tasks by support size and checkpointed chunks change speed and memory, never the result."""

import torch

from conftest import unequal_batch
from metarec_pl.bilevel import MetaLearner
from metarec_pl.data.info import DataInfo
from metarec_pl.inner_tools import task_groups
from test_meta_gradient import rel_err, to_double

SIZES = (3, 30, 4, 28, 5, 26, 3, 29)


def grads(module: MetaLearner, batch, chunk_size):
    module.zero_grad()
    module.hparams.vmap_chunk_size = chunk_size
    result = module.adapt(batch, 2, create_graph=True)
    module.algorithm.outer_loss(result, batch, dict(module.network.named_parameters())).backward()
    return result.query_pred.detach(), {n: p.grad.clone() for n, p in module.named_parameters()}


def test_groups_and_checkpointed_chunks_give_the_same_meta_gradient(tiny_world):
    _, data = tiny_world
    batch = to_double(unequal_batch(data, SIZES))
    torch.manual_seed(0)
    module = MetaLearner(algorithm="maml", adapt=["*"], inner_steps=2, inner_lr=0.05,
                         data_info=DataInfo(data.schema, rating_mean=3.5)).double()
    pred, whole = grads(module, batch, len(SIZES))  # one group, batch order
    for chunk in (None, 3, 1):
        p, g = grads(module, batch, chunk)
        torch.testing.assert_close(p, pred, rtol=1e-10, atol=1e-12)  # per-task order restored
        assert rel_err(g, whole) < 1e-10


def test_automatic_groups_follow_support_size():
    lengths = torch.tensor([50] * 8 + [5] * 56)  # 64 tasks, most of them short
    mask = (torch.arange(50) < lengths[:, None]).float()
    groups = task_groups(mask)
    assert len(groups) > 1
    assert sorted(torch.cat(groups).tolist()) == list(range(64))
    assert set(range(8)) <= set(groups[-1].tolist())  # the long tasks share the widest group
