"""text-sequence: masked causal attention under vmap equals a per-example loop (padded histories included), the
frozen text table stays out of every graph, unseen items are scorable, and next-item batches carry no query item
in any context."""

import pytest
import torch
from torch.func import functional_call, vmap

import metarec_pl
from metarec_pl.data.sequences import CANDIDATE, HISTORY, SequenceTask, sequence_batch, training_windows
from metarec_pl.data.text import HashingEncoder
from metarec_pl.data.types import DataError
from metarec_pl.errors import ConfigError
from metarec_pl.models.sequence import IdSequenceNet, TextSequenceNet

NUM_ITEMS = 30


def item_vectors(n=NUM_ITEMS):
    genres = ["Comedy", "Drama", "Action", "Horror"]
    texts = [f"Movie {i} ({1950 + i}). {genres[i % 4]}|{genres[(i * 3) % 4]}" for i in range(n)]
    return HashingEncoder(dim=24).encode(texts)


def network(**kw):
    torch.manual_seed(0)
    return TextSequenceNet([], item_vectors=item_vectors(), dim=16, heads=2, max_len=8, **kw).double()


def padded(items, width):
    out = torch.zeros(width, dtype=torch.long)
    out[:len(items)] = torch.tensor(items) + 1
    return out


@pytest.mark.parametrize("lora_rank", [0, 2])
def test_vmap_over_padded_histories_equals_a_per_example_loop(lora_rank):
    model = network(prompt_len=3, lora_rank=lora_rank)
    with torch.no_grad():  # non-zero LoRA B, so the adapters take part
        for n, p in model.named_parameters():
            if n.endswith("lora_B") or n == "encoder.bias":
                p.normal_()
    gen = torch.Generator().manual_seed(1)
    lengths = [[0, 1, 5], [8, 2, 3], [4, 4, 0]]  # tasks x samples: history lengths, padding to 8
    hist = [[torch.randint(NUM_ITEMS, (n,), generator=gen).tolist() for n in row] for row in lengths]
    cand = torch.randint(NUM_ITEMS, (3, 3), generator=gen)
    features = {HISTORY: torch.stack([torch.stack([padded(h, 8) for h in row]) for row in hist]), CANDIDATE: cand}
    params = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    batched = vmap(lambda x: functional_call(model, params, (x,)))(features)
    assert batched.shape == (3, 3)
    for i in range(3):
        for j in range(3):
            alone = {HISTORY: padded(hist[i][j], max(1, len(hist[i][j])))[None], CANDIDATE: cand[i, j][None]}
            assert torch.allclose(model(alone)[0], batched[i, j], atol=1e-10), (i, j)
    # and the whole batch without vmap (leading dims [3, 3]) gives the same
    assert torch.allclose(model(features), batched, atol=1e-10)


def test_state_after_a_prefix_ignores_later_items():
    model = network()
    full = torch.tensor([[3, 7, 9, 2, 0, 0]])  # codes + 1
    prefix = torch.tensor([[3, 7, 0, 0, 0, 0]])
    # the output at the prefix's last position reads no later item: a causal model
    assert torch.allclose(model.state(prefix), model.state(full[:, :2]), atol=1e-10)
    assert not torch.allclose(model.state(prefix), model.state(full), atol=1e-6)


def test_frozen_table_is_a_buffer_out_of_every_graph_and_unseen_items_score():
    model = network(prompt_len=2)
    assert "encoder.items.item_table" in dict(model.named_buffers())
    assert all("item_table" not in n for n, _ in model.named_parameters())
    x = {HISTORY: torch.tensor([[1, 2, 0]]), CANDIDATE: torch.tensor([NUM_ITEMS - 1])}  # never trained: scorable
    score = model(x)
    score.sum().backward()
    assert torch.isfinite(score).all() and not model.encoder.items.item_table.requires_grad
    assert model.encoder.prompt.grad is not None and model.encoder.prompt.grad.abs().sum() > 0
    assert model.item_vectors().shape == (NUM_ITEMS, 17)
    assert torch.allclose(model.state(x[HISTORY]) @ model.item_vectors()[NUM_ITEMS - 1], score)


def test_registered_and_bad_arguments_are_one_line():
    assert metarec_pl.get_model("text-sequence") is TextSequenceNet
    with pytest.raises(ConfigError, match="no item text vectors: expected network_args.item_vectors \\(a "
                                          "\\[num_items, text_dim\\] tensor\\) or data with the dense item "
                                          "feature 'item_text'"):
        TextSequenceNet([])
    with pytest.raises(ConfigError, match="dim 15 is not divisible by heads 2"):
        TextSequenceNet([], item_vectors=item_vectors(), dim=15)
    with pytest.raises(ConfigError, match="prompt_len must be an integer >= 0"):
        TextSequenceNet([], item_vectors=item_vectors(), prompt_len=-1)
    assert metarec_pl.get_model("id-sequence") is IdSequenceNet
    with pytest.raises(ConfigError, match="id-sequence: num_items must be an integer >= 1, got None"):
        IdSequenceNet([])


@pytest.mark.parametrize("kind", ["text", "id"])
def test_score_all_equals_forward_of_each_candidate(kind):
    torch.manual_seed(0)
    if kind == "id":  # SASRec-style: learned id embeddings, no text table, no prompt
        model = IdSequenceNet([], num_items=NUM_ITEMS, dim=16, heads=2, max_len=8).double()
        assert "encoder.items.embedding" in dict(model.named_parameters())
        assert not dict(model.named_buffers()).keys() & {"encoder.items.item_table"}
        assert model.encoder.prompt.numel() == 0
    else:
        model = network(prompt_len=2)
    history = torch.tensor([[4, 9, 0], [7, 0, 0]])
    every = model.score_all(history)
    assert every.shape == (2, NUM_ITEMS)
    for i in range(2):
        one = model({HISTORY: history[i].expand(NUM_ITEMS, -1), CANDIDATE: torch.arange(NUM_ITEMS)})
        assert torch.allclose(every[i], one, atol=1e-10)


def test_blind_support_negatives_avoid_only_the_support():
    pool = torch.arange(6)
    task = SequenceTask(0, torch.tensor([0, 1]), torch.tensor([2]))
    # 2 x 2 support negatives among the 4 items outside the support: the query item 2 must be one of them
    batch = sequence_batch([task], pool, 2, 3, torch.Generator().manual_seed(0), blind_support=True)
    s, q = batch.support, batch.query
    support_neg = set(s.features[CANDIDATE][0][(s.rating[0] == 0) & (s.mask[0] > 0)].tolist())
    assert support_neg == {2, 3, 4, 5}
    query_neg = set(q.features[CANDIDATE][0][(q.rating[0] == 0) & (q.mask[0] > 0)].tolist())
    assert query_neg == {3, 4, 5}  # the query's negatives still avoid the support and the query
    # the default keeps support negatives off the query too, so 4 of them cannot be drawn from {3, 4, 5}
    with pytest.raises(DataError, match="3 candidate items left, 4 needed"):
        sequence_batch([task], pool, 2, 3, torch.Generator().manual_seed(0))
    # and the user's other known items (exclude) stay off the query's negatives only
    batch = sequence_batch([task], torch.arange(9), 1, 2, torch.Generator().manual_seed(1),
                           exclude={0: torch.tensor([6, 7, 8])}, blind_support=True)
    q = batch.query
    assert not set(q.features[CANDIDATE][0][q.rating[0] == 0].tolist()) & {0, 1, 2, 6, 7, 8}


def test_next_item_batch_contexts_hold_only_earlier_support_items():
    tasks = [SequenceTask(5, torch.tensor([1, 2, 3]), torch.tensor([4, 6])), SequenceTask(7, torch.tensor([9]),
                                                                                       torch.tensor([8]))]
    batch = sequence_batch(tasks, torch.arange(NUM_ITEMS), 2, 3, torch.Generator().manual_seed(0))
    s, q = batch.support, batch.query
    assert s.features[HISTORY].shape == (2, 9, 3) and q.features[HISTORY].shape == (2, 8, 3)
    assert s.rating[0].tolist() == [1, 0, 0] * 3 and s.mask[1].tolist() == [1, 1, 1] + [0] * 6
    # support item t is scored after items 1..t-1; every query sample after the whole support, never a query item
    assert s.features[HISTORY][0, 3].tolist() == [2, 0, 0] and s.features[CANDIDATE][0, 3] == 2
    assert (q.features[HISTORY][0, :8] == torch.tensor([2, 3, 4])).all()
    queried = set(q.features[CANDIDATE][0][q.rating[0] > 0].tolist())
    assert queried == {4, 6} and not queried & set((q.features[HISTORY][0].flatten() - 1).tolist())
    negatives = q.features[CANDIDATE][0][(q.rating[0] == 0) & (q.mask[0] > 0)]
    assert len(set(negatives.tolist())) == 6 and not set(negatives.tolist()) & {1, 2, 3, 4, 6}


def test_training_windows_start_first_or_random():
    seqs = {0: torch.arange(10), 1: torch.arange(20, 26)}
    first = training_windows(seqs, [0, 1], 3, 1, torch.Generator().manual_seed(0), start="first")
    assert first[0].support.tolist() == [0, 1, 2] and first[0].query.tolist() == [3]
    for _ in range(5):
        (w,) = training_windows(seqs, [0], 3, 2, torch.Generator().manual_seed(_))
        assert w.query.tolist() == list(range(int(w.support[0]) + 3, int(w.support[0]) + 5))
