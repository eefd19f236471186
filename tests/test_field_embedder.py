"""``FieldEmbedder``: broadcast inputs (a catalogue scored for many users) give what materialised inputs give, and
feature values never seen in training stay neutral at evaluation."""

import torch

from metarec_pl.data.types import with_id_features
from metarec_pl.models.base import FieldEmbedder
from metarec_pl.models.melu import MeLUNet


def test_broadcast_features_give_the_same_encodings_and_ratings(tiny_world):
    _, data = tiny_world
    data = with_id_features(data, ("item",))
    torch.manual_seed(0)
    net = MeLUNet(data.schema, embedding_dim=8, hidden=(16,)).eval()
    users, items = torch.tensor([0, 7, 9]), torch.arange(data.num_items)
    grid_u, grid_i = users[:, None].expand(3, len(items)), items[None, :].expand(3, len(items))
    materialised = data.features(grid_u.contiguous(), grid_i.contiguous())
    broadcast = {k: (t[users][:, None].expand(3, len(items), *t.shape[1:]) if k.startswith("user_")
                     else t[items][None].expand(3, len(items), *t.shape[1:]))
                 for k, t in {**data.user_features, **data.item_features}.items()}
    assert all(v.stride(0) == 0 or v.stride(1) == 0 for v in broadcast.values())
    assert torch.equal(net.encoder(broadcast), net.encoder(materialised))
    assert torch.equal(net(broadcast), net(materialised))


def test_project_dense_maps_each_dense_field_to_the_embedding_width(tiny_world):
    _, data = tiny_world
    data.item_features["item_text"] = torch.randn(data.num_items, 12)
    from metarec_pl.data.types import FeatureSpec

    schema = [*data.schema, FeatureSpec("item", "text", "dense", 12)]
    try:
        plain, projected = MeLUNet(schema, embedding_dim=4), MeLUNet(schema, embedding_dim=4, project_dense=True)
        assert projected.encoder.out_dim == plain.encoder.out_dim - 12 + 4
        items = torch.arange(6)
        feats = data.features(torch.zeros_like(items), items)
        assert projected(feats).shape == (6,)
        out = projected.encoder(feats)[:, -4:]  # the text field is last: its projection
        assert torch.allclose(out, projected.encoder.projections["item_text"](feats["item_text"]))
    finally:
        del data.item_features["item_text"]


def test_values_never_observed_in_training_are_neutral_at_evaluation(tiny_world):
    """An actor seen only in cold movies must not bring its random initial vector into a prediction."""
    _, data = tiny_world
    torch.manual_seed(0)
    enc = FieldEmbedder(data.schema, 4)
    fields = {f.key: f for f in data.schema}
    decade, genre = fields["item_decade"], fields["item_genre"]
    seen_items = torch.arange(0, 5)
    enc.observe(data.features(torch.zeros_like(seen_items), seen_items))
    seen_decades = set(data.item_features["item_decade"][seen_items].tolist())
    seen_genres = set(data.item_features["item_genre"][seen_items].flatten().tolist()) - {0}
    # an item whose decade was never observed, and one with a mix of observed and unobserved genres
    decades = set(range(decade.size)) - seen_decades
    genres = set(range(1, genre.size)) - seen_genres
    assert decades and genres, "the fixture must leave some values unobserved"
    feats = data.features(torch.zeros(2, dtype=torch.long), torch.tensor([0, 1]))
    feats["item_decade"] = torch.tensor([min(decades), min(seen_decades)])
    feats["item_genre"] = torch.tensor([[min(genres), min(seen_genres)], [min(seen_genres), 0]])
    start = sum(4 if f.kind != "dense" else f.size for f in data.schema[:data.schema.index(decade)])
    gstart = sum(4 if f.kind != "dense" else f.size for f in data.schema[:data.schema.index(genre)])
    trained = enc(feats)  # training mode: nothing is masked
    assert torch.equal(trained[0, start:start + 4], enc.tables["item_decade"].weight[min(decades)])
    enc.eval()
    out = enc(feats)
    assert torch.all(out[0, start:start + 4] == 0)  # unobserved decade: zero vector
    assert torch.equal(out[1, start:start + 4], enc.tables["item_decade"].weight[min(seen_decades)])
    known = enc.tables["item_genre"].weight[min(seen_genres)]
    torch.testing.assert_close(out[0, gstart:gstart + 4], known)  # the mean over the observed genre only
    torch.testing.assert_close(out[1, gstart:gstart + 4], known)
    fresh = FieldEmbedder(data.schema, 4).eval()  # nothing observed yet: nothing masked
    assert torch.count_nonzero(fresh(feats)[0, start:start + 4]) == 4


def test_training_observes_exactly_the_training_values():
    import lightning as L

    from metarec_pl import MetaLearner
    from metarec_pl.data.module import MetaDataModule

    dm = MetaDataModule(dataset_args=dict(num_users=60, num_items=50, min_ratings=15, max_ratings=25),
                        sampler_args=dict(query_size=4, min_support=2), tasks_per_batch=8)
    module = MetaLearner(algorithm="maml", adapt=["head.*"], inner_steps=1,
                         data_info=dm.info, network_args=dict(embedding_dim=4, hidden=[8]))
    L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0).fit(module, dm)
    enc, data = module.network.encoder, dm.data
    rows = torch.cat([torch.cat([t.support, t.query]) for t in dm.stage_tasks("train")["train"]])
    feats = data.features(data.user[rows], data.item[rows])
    for key, offset in enc.offsets.items():
        size = enc.tables[key].num_embeddings
        expected = torch.zeros(size, dtype=torch.bool)
        expected[feats[key].unique()] = True
        assert torch.equal(enc.seen[offset:offset + size], expected), key
