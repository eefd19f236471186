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
