"""``DenseFeatures`` (the ``mlp`` encoder): one-hot / multi-hot / dense columns in schema order."""

import pytest
import torch
import torch.nn.functional as F

from metarec_pl.data.types import FeatureSpec
from metarec_pl.models.mlp import DenseFeatures


def per_field(schema, features):
    """The definition: a one-hot per categorical field, a multi-hot without the padding column 0 per multi-valued
    field, dense fields as they are, concatenated in schema order."""
    parts = []
    for f in schema:
        x = features[f.key]
        if f.kind == "categorical":
            parts.append(F.one_hot(x, f.size).float())
        elif f.kind == "multi":
            parts.append(F.one_hot(x, f.size).float().amax(-2)[..., 1:])
        else:
            parts.append(x.float())
    return torch.cat(parts, -1)


def test_columns_follow_the_schema_for_every_kind_of_field():
    schema = [FeatureSpec("user", "age", "categorical", 4), FeatureSpec("item", "text", "dense", 3),
              FeatureSpec("item", "genre", "multi", 6), FeatureSpec("item", "year", "categorical", 5)]
    gen = torch.Generator().manual_seed(0)
    features = {"user_age": torch.randint(0, 4, (2, 7), generator=gen),
                "item_text": torch.randn(2, 7, 3, generator=gen),
                "item_genre": torch.randint(0, 6, (2, 7, 4), generator=gen),  # 0: padding; repeats allowed
                "item_year": torch.randint(0, 5, (2, 7), generator=gen)}
    features["item_genre"][0, 0] = 0  # a sample without any genre
    encoder = DenseFeatures(schema)
    out = encoder(features)
    assert out.shape == (2, 7, encoder.out_dim) == (2, 7, 4 + 3 + 5 + 5)
    assert torch.equal(out, per_field(schema, features))
    assert out[0, 0, 7:12].sum() == 0


def test_an_id_outside_its_field_is_one_clear_error():
    schema = [FeatureSpec("user", "age", "categorical", 4), FeatureSpec("item", "genre", "multi", 6)]
    encoder = DenseFeatures(schema)
    good = {"user_age": torch.tensor([[0, 3]]), "item_genre": torch.tensor([[[1, 5], [0, 0]]])}
    encoder(good)
    with pytest.raises(ValueError, match=r"'user_age' has id 4, expected ids in \[0, 4\)"):
        encoder({**good, "user_age": torch.tensor([[0, 4]])})  # would land in the genre columns
    with pytest.raises(ValueError, match=r"'item_genre' has id 6"):
        encoder({**good, "item_genre": torch.tensor([[[1, 6], [0, 0]]])})
