"""Which fields a model sees: ids as features (``with_id_features`` / ``data.id_features``, and how
``FieldEmbedder`` treats id fields) and fields left out (``without_features`` / ``data.drop_features``)."""

import pytest
import torch

from metarec_pl.data.module import MetaDataModule
from metarec_pl.data.types import DataError, with_id_features, without_features
from metarec_pl.models.base import FieldEmbedder
from metarec_pl.models.melu import MeLUNet


def test_with_id_features_adds_ids_as_categorical_fields(tiny_world):
    _, data = tiny_world
    out = with_id_features(data, ("user", "item"))
    assert torch.equal(out.user_features["user_id"], torch.arange(1, data.num_users + 1))
    assert torch.equal(out.item_features["item_id"], torch.arange(1, data.num_items + 1))
    added = {f.key: f for f in out.schema[len(data.schema):]}
    assert added["user_id"].size == data.num_users + 1 and added["item_id"].size == data.num_items + 1
    assert "item_id" not in data.item_features and len(data.schema) + 2 == len(out.schema)  # input untouched
    feats = out.features(torch.tensor([[0, 5]]), torch.tensor([[7, 2]]))
    assert feats["item_id"].tolist() == [[8, 3]] and feats["user_id"].tolist() == [[1, 6]]


def test_with_id_features_rejects_bad_sides_and_existing_fields(tiny_world):
    _, data = tiny_world
    with pytest.raises(DataError, match="'movie' is not a side"):
        with_id_features(data, ("movie",))
    with pytest.raises(DataError, match="already has a field 'item_id'"):
        with_id_features(with_id_features(data, ("item",)), ("item",))


def test_data_module_option_and_one_line_error():
    dm = MetaDataModule(dataset="synthetic", dataset_args=dict(num_users=60, num_items=40, min_ratings=10, max_ratings=20, seed=1),
                        id_features=["item"])
    assert dm.schema[-1].key == "item_id" and dm.schema[-1].size == dm.num_items + 1
    with pytest.raises(DataError, match="data.id_features: 'item' is not a list of sides"):
        MetaDataModule(dataset="synthetic", id_features="item")


def test_without_features_drops_keys_and_whole_sides(tiny_world):
    _, data = tiny_world
    keys = [f.key for f in data.schema]
    out = without_features(data, ("user_age", "item_genre"))
    assert [f.key for f in out.schema] == [k for k in keys if k not in ("user_age", "item_genre")]
    assert "user_age" not in out.user_features and "item_genre" not in out.item_features
    assert "user_age" in data.user_features and len(data.schema) == len(keys)  # input untouched
    no_user = without_features(data, ("user",))
    assert all(f.side == "item" for f in no_user.schema) and not no_user.user_features
    assert no_user.num_users == data.num_users and no_user.splits is data.splits
    feats = no_user.features(torch.tensor([1, 2]), torch.tensor([3, 4]))
    assert set(feats) == {f.key for f in no_user.schema}


def test_drop_features_option_runs_before_id_features_and_fails_in_one_line():
    world = dict(num_users=60, num_items=40, min_ratings=10, max_ratings=20, seed=1)
    dm = MetaDataModule(dataset_args=world, id_features=["user", "item"], drop_features=["user", "item_decade"])
    assert [f.key for f in dm.schema] == ["item_director", "item_genre", "user_id", "item_id"]
    with pytest.raises(DataError, match=r"^drop_features: 'user_zip' is neither a side nor a field of this data "
                                        r"set; expected 'user', 'item' or one of \['user_gender'"):
        MetaDataModule(dataset_args=world, drop_features=["user_zip"]).schema
    with pytest.raises(DataError, match="data.drop_features: 'user' is not a list"):
        MetaDataModule(dataset_args=world, drop_features="user")


def test_unseen_ids_stay_zero_and_seen_ids_learn(tiny_world):
    _, data = tiny_world
    data = with_id_features(data, ("item",))
    torch.manual_seed(0)
    net = MeLUNet(data.schema, embedding_dim=8, hidden=(16,))
    table = net.encoder.tables["item_id"].weight
    assert torch.count_nonzero(table) == 0
    other = net.encoder.tables["item_genre"].weight
    assert other[1:].std() > 0.5 and torch.count_nonzero(other[0]) == 0  # normal init; padding row zero
    seen = torch.tensor([3, 4, 10])
    feats = data.features(torch.zeros_like(seen), seen)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        ((net(feats) - 4.0) ** 2).mean().backward()
        opt.step()
    changed = torch.nonzero(table.detach().abs().sum(1)).flatten()
    assert changed.tolist() == (seen + 1).tolist()  # rows of the ids looked up, nothing else


def test_id_dropout_zeroes_id_vectors_in_training_only(tiny_world):
    _, data = tiny_world
    data = with_id_features(data, ("item",))
    enc = FieldEmbedder(data.schema, 4, id_dropout=0.5)
    with torch.no_grad():
        enc.tables["item_id"].weight.fill_(1.0)
    items = torch.arange(data.num_items).repeat(50)
    feats = data.features(torch.zeros_like(items), items)
    id_part = lambda out: out[:, -4:]  # noqa: E731  (item_id is the last field)
    torch.manual_seed(0)
    dropped = (id_part(enc(feats)).abs().sum(1) == 0).float().mean()
    assert 0.45 < dropped < 0.55
    enc.eval()
    assert torch.all(id_part(enc(feats)) == 1.0)
    with pytest.raises(ValueError, match="id_dropout: 1.0 is not a probability"):
        FieldEmbedder(data.schema, 4, id_dropout=1.0)


def test_a_new_user_gets_the_unknown_user_id(tiny_world):
    from metarec_pl.recommend import Catalogue, NewUser

    _, data = tiny_world
    catalogue = Catalogue(with_id_features(data, ("user", "item")))
    assert catalogue.default_profile["user_id"].item() == 0
    batch = catalogue.batch([NewUser({int(data.item[0]): 4.0})])
    assert torch.all(batch.support.features["user_id"] == 0) and torch.all(batch.query.features["user_id"] == 0)
    assert torch.equal(batch.query.features["item_id"][0], catalogue.items + 1)
