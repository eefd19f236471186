"""Meta-learned parameter-efficient adaptation of text-sequence: Meta-SGD on the soft prompt (and LoRA) through the
shared inner loop; its meta-gradient equals a plain per-task loop (float64, first and second order), only the
prompt and adapters move per user, and they are at most 1 % of the backbone."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from metarec_pl.algorithms.metasgd import MetaSGD
from metarec_pl.data.sequences import SequenceTask, sequence_batch
from metarec_pl.data.text import HashingEncoder
from metarec_pl.data.types import TaskBatch
from metarec_pl.losses import BCE
from metarec_pl.models.sequence import PEFT_ADAPT, TextSequenceNet, adapted_fraction

NUM_ITEMS = 40


def vectors(dim=24, n=NUM_ITEMS):
    return HashingEncoder(dim=dim).encode([f"Movie {i} ({1960 + i}). {['Drama', 'Comedy', 'War'][i % 3]}"
                                           for i in range(n)])


def setup(first_order, lora_rank=2, steps=2):
    torch.manual_seed(0)
    model = TextSequenceNet([], item_vectors=vectors(), dim=16, heads=2, max_len=8, prompt_len=3,
                            lora_rank=lora_rank).double()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("lora_B"):
                p.normal_(std=0.3)  # adapters away from their no-op start, so their gradients are not special
    alg = MetaSGD(inner_steps=steps, inner_lr=0.3, first_order=first_order, adapt=list(PEFT_ADAPT))
    alg.loss = BCE()
    alg.bind(model)
    alg.double()
    gen = torch.Generator().manual_seed(2)
    tasks = []
    for u, k in enumerate((1, 3, 5, 2)):  # unequal support sizes: padded samples and contexts
        items = torch.randperm(NUM_ITEMS, generator=gen)[:k + 1]
        tasks.append(SequenceTask(u, items[:k], items[k:]))
    batch = sequence_batch(tasks, torch.arange(NUM_ITEMS), 2, 4, gen)
    batch = TaskBatch(batch.support.to_dtype(torch.float64), batch.query.to_dtype(torch.float64), batch.key)
    return model, alg, batch


def loop_loss(model, alg, batch, first_order):
    """One task at a time, unpadded, with torch.autograd.grad: the definition of Meta-SGD."""
    params = dict(model.named_parameters())

    def bce(fast, x, y):
        s = functional_call(model, {**params, **fast}, (x,))
        return F.binary_cross_entropy_with_logits(s, y)

    losses = []
    for i in range(len(batch)):
        parts = []
        for samples in (batch.support, batch.query):
            n = int(samples.mask[i].sum())
            parts.append(({k: v[i, :n] for k, v in samples.features.items()}, samples.rating[i, :n]))
        (xs, ys), (xq, yq) = parts
        fast = {n: params[n] for n in alg.adapted_names}
        for _ in range(alg.inner_steps):
            grads = torch.autograd.grad(bce(fast, xs, ys), list(fast.values()), create_graph=not first_order)
            fast = {n: w - alg.lrs[n.replace(".", "__")] * g for (n, w), g in zip(fast.items(), grads)}
        losses.append(bce(fast, xq, yq))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("first_order", [False, True], ids=["second-order", "first-order"])
@pytest.mark.parametrize("lora_rank", [0, 2])
def test_meta_gradient_equals_a_per_task_loop(first_order, lora_rank):
    model, alg, batch = setup(first_order, lora_rank)
    expected_names = ["encoder.prompt"] + [n for n, _ in model.named_parameters() if "lora" in n]
    assert alg.adapted_names == expected_names
    assert all(("attn.q." in n or "attn.v." in n) for n in expected_names[1:])
    wrt = list(model.parameters()) + list(alg.parameters())
    vectorised = alg.run(model, batch, alg.inner_steps, create_graph=not first_order).query_loss.mean()
    g1 = torch.autograd.grad(vectorised, wrt, allow_unused=True)
    looped = loop_loss(model, alg, batch, first_order)
    g2 = torch.autograd.grad(looped, wrt, allow_unused=True)
    assert torch.allclose(vectorised, looped, atol=1e-10)
    for (name, _), a, b in zip(list(model.named_parameters()) + list(alg.named_parameters()), g1, g2):
        assert (a is None) == (b is None), name
        if a is not None:
            assert torch.allclose(a, b, atol=1e-9), name
    step_sizes = dict(alg.named_parameters())
    assert g1[len(list(model.parameters()))].abs().sum() > 0  # the prompt's step sizes are meta-learned
    assert set(step_sizes) == {"lrs." + n.replace(".", "__") for n in expected_names}


def test_second_order_differs_from_first_order():
    grads = []
    for first_order in (False, True):
        model, alg, batch = setup(first_order)
        loss = alg.run(model, batch, alg.inner_steps, create_graph=not first_order).query_loss.mean()
        grads.append(torch.autograd.grad(loss, [model.encoder.prompt])[0])
    assert not torch.allclose(grads[0], grads[1], atol=1e-8)


def test_adaptation_changes_the_query_scores_through_the_prompt_only():
    model, alg, batch = setup(False, lora_rank=0, steps=3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        adapted = alg.run(model, batch, 3, create_graph=False).query_pred
        zero_shot = model(batch.query.features)
    assert not torch.allclose(adapted, zero_shot)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())  # shared weights untouched


@pytest.mark.parametrize("prompt_len, lora_rank", [(4, 0), (4, 1), (8, 1)])
def test_at_most_one_percent_of_the_backbone_adapts_per_user(prompt_len, lora_rank):
    model = TextSequenceNet([], item_vectors=vectors(dim=384, n=50), prompt_len=prompt_len, lora_rank=lora_rank)
    alg = MetaSGD(adapt=list(PEFT_ADAPT))
    alg.bind(model)
    share = adapted_fraction(model, alg.adapted_names)
    per_user = prompt_len * 64 + lora_rank * 2 * 2 * (64 + 64)  # prompt + LoRA A, B on q and v of 2 blocks
    assert sum(dict(model.named_parameters())[n].numel() for n in alg.adapted_names) == per_user
    assert share <= 0.01, share
