"""metatl (MetaTL-style, Wang et al. 2021): the score is the translation distance with a relation vector read from the
history's transitions, padding and vmap change nothing, and one inner step of the shared loop moves only the
relation, by -lr times its support gradient, lowering the support loss."""

import pytest
import torch
from torch.func import functional_call, vmap

import metarec_pl
from metarec_pl.algorithms.maml import MAML
from metarec_pl.data.sequences import CANDIDATE, HISTORY, SequenceTask, sequence_batch
from metarec_pl.data.types import TaskBatch
from metarec_pl.errors import ConfigError
from metarec_pl.losses import BCE
from metarec_pl.models.metatl import METATL_ADAPT, MetaTLNet

NUM_ITEMS = 25


def network(**kw):
    torch.manual_seed(0)
    model = MetaTLNet([], item_vectors=torch.randn(NUM_ITEMS, 12), dim=8, **kw).double()
    with torch.no_grad():  # away from the zero starts, so every term takes part
        model.encoder.relation.normal_()
        if model.encoder.bias is not None:
            model.encoder.bias.normal_()
    return model


def by_hand(model, items, candidate):
    """gamma - ||e(last) + relation + mean_t MLP([e_t; e_t+1]) - e(candidate)|| + bias, unpadded."""
    e = model.encoder.items()
    pairs = [model.encoder.pair(torch.cat([e[a], e[b]])) for a, b in zip(items, items[1:])]
    r = model.encoder.relation + (torch.stack(pairs).mean(0) if pairs else 0.0)
    head = e[items[-1]] if items else model.encoder.start
    return model.head.gamma - (head + r - e[candidate]).norm() + model.encoder.bias[candidate]


def test_score_is_the_translation_distance_for_padded_histories():
    model = network()
    histories = [[3, 5, 7], [2], []]
    width = 4
    h = torch.zeros(3, width, dtype=torch.long)
    for i, items in enumerate(histories):
        h[i, :len(items)] = torch.tensor(items) + 1
    c = torch.tensor([4, 9, 1])
    out = model({HISTORY: h, CANDIDATE: c})
    for i, items in enumerate(histories):
        assert out[i].item() == pytest.approx(by_hand(model, items, int(c[i])).item(), abs=1e-7)
    params = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    mapped = vmap(lambda x: functional_call(model, params, (x,)))({HISTORY: h[:, None], CANDIDATE: c[:, None]})
    assert torch.allclose(mapped[:, 0], out, atol=1e-10)
    every = model.score_all(h)
    assert every.shape == (3, NUM_ITEMS) and torch.allclose(every[torch.arange(3), c], out, atol=1e-10)


def test_one_inner_step_moves_only_the_relation_by_its_support_gradient():
    model = network()
    alg = MAML(inner_steps=1, inner_lr=0.5, first_order=True, adapt=list(METATL_ADAPT))
    alg.loss = BCE()
    alg.bind(model)
    assert alg.adapted_names == ["encoder.relation"]
    gen = torch.Generator().manual_seed(3)
    tasks = [SequenceTask(u, *torch.randperm(NUM_ITEMS, generator=gen)[:4].split([3, 1])) for u in range(2)]
    batch = sequence_batch(tasks, torch.arange(NUM_ITEMS), 3, 5, gen)
    batch = TaskBatch(batch.support.to_dtype(torch.float64), batch.query.to_dtype(torch.float64), batch.key)
    alg.needs_fast_weights = True
    fast = alg.run(model, batch, 1, create_graph=False).fast_weights
    assert set(fast) == {"encoder.relation"}
    for i in range(2):
        s = batch.support
        rel = model.encoder.relation.detach().clone().requires_grad_()

        def support_loss(r):
            out = functional_call(model, {"encoder.relation": r}, ({k: v[i] for k, v in s.features.items()},))
            return alg.loss(out, s.rating[i], s.mask[i])

        (grad,) = torch.autograd.grad(support_loss(rel), rel)
        assert torch.allclose(fast["encoder.relation"][i], rel - 0.5 * grad, atol=1e-10)
        assert support_loss(fast["encoder.relation"][i]) < support_loss(rel)


def test_registered_and_bad_arguments_are_one_line():
    assert metarec_pl.get_model("metatl") is MetaTLNet
    ids = MetaTLNet([], num_items=NUM_ITEMS, dim=4)  # the paper's id embeddings
    assert ids.score_all(torch.tensor([[1, 2]])).shape == (1, NUM_ITEMS)
    with pytest.raises(ConfigError, match="metatl: give network_args.item_vectors"):
        MetaTLNet([])
    with pytest.raises(ConfigError, match="metatl: dim must be an integer >= 1"):
        MetaTLNet([], num_items=3, dim=0)
