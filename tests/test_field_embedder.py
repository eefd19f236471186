"""``FieldEmbedder`` on broadcast inputs (a catalogue scored for many users) equals it on materialised inputs."""

import torch

from metarec_pl.data.types import with_id_features
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
