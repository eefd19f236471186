"""The MeLU ML-1M release loader on generated files in the release's formats."""

import json

import pytest
import torch

from _datasets_fixtures import MELU_VOCAB, write_melu
from metarec_pl.data.melu_release import MeLUMovieLens1M
from metarec_pl.data.types import DataError


@pytest.fixture
def root(tmp_path):
    return write_melu(tmp_path / "melu", warm_name="warm_state.rebuilt.json")


WARM = {"warm": ["warm_state.rebuilt.json", "warm_state_y.json"]}


def test_reads_every_state_and_codes_features_by_the_vocabularies(root):
    data = MeLUMovieLens1M(root=str(root), state_files=WARM, cache=False).load()
    expected = set()
    for stem in ("warm_state.rebuilt", "user_cold_state", "item_cold_state", "user_and_item_cold_state"):
        x = json.loads((root / f"{stem}.json").read_text())
        y = json.loads((root / f"{stem.replace('.rebuilt', '')}_y.json").read_text())
        expected |= {(int(u), int(i), float(r)) for u in x for i, r in zip(x[u], y[u])}
    assert set(zip(data.user.tolist(), data.item.tolist(), data.rating.tolist())) == expected
    code = lambda field, value: MELU_VOCAB[field].index(value) + 1  # noqa: E731
    assert data.user_features["user_zipcode"][3] == code("zipcode", "12345")  # "12345-1234": first 5 characters
    assert data.user_features["user_gender"][2] == code("gender", "M")
    assert sorted(data.item_features["item_director"][1].tolist()) == sorted([code("director", "Ann Lee"),
                                                                             code("director", "Bo Chan")])
    genre5 = data.item_features["item_genre"][5]
    assert genre5[genre5 > 0].tolist() == [code("genre", "nan")]  # "N/A" is MeLU's "nan"
    assert data.item_features["item_rate"][4] == code("rate", MELU_VOCAB["rate"][4 % 3])
    assert data.item_text[2] == "Film 2 (1992). Plot of film 2."
    kinds = {f.key: f.kind for f in data.schema}
    assert kinds["item_actor"] == "multi" and kinds["user_age"] == "categorical"


def test_missing_warm_state_names_the_option_and_the_candidates(root):
    with pytest.raises(DataError, match=r"warm_state.json: file not found .*state_files.warm .*warm_state.rebuilt.json"):
        MeLUMovieLens1M(root=str(root)).load()


@pytest.mark.parametrize("edit, message", [
    (lambda r: (r / "user_cold_state_y.json").write_text(json.dumps(
        {u: v[:-1] for u, v in json.loads((r / "user_cold_state_y.json").read_text()).items()})),
     r"user_cold_state_y.json: user \d+: \d+ ratings for the \d+ items user_cold_state.json lists"),
    (lambda r: (r / "item_cold_state.json").write_text('{"1": ["121",\n ]}'),
     r"item_cold_state.json: line 2, column 2: invalid JSON"),
    (lambda r: (r / "m_actor.txt").write_text("Cy Doe\nnan\n"),
     r"movies_extrainfos.dat: line 1, column actor: 'Ed Poe' is not in m_actor.txt"),
    (lambda r: ((r / "item_cold_state.json").write_text('{"1": ["999"]}'),
                (r / "item_cold_state_y.json").write_text('{"1": [3]}')),
     r"item_cold_state.json: item 999 is not in movies_extrainfos.dat"),
    (lambda r: ((r / "item_cold_state.json").write_text('{"1": ["121", "122"]}'),
                (r / "item_cold_state_y.json").write_text('{"1": [3, 7]}')),
     r"item_cold_state_y.json: user 1, position 1: rating 7 is outside \[1, 5\]"),
])
def test_bad_release_files_are_one_line(root, edit, message):
    edit(root)
    with pytest.raises(DataError, match=message) as err:
        MeLUMovieLens1M(root=str(root), state_files=WARM, cache=False).load()
    assert "\n" not in str(err.value)


def test_duplicates_keep_last_or_error(root):
    x = json.loads((root / "user_cold_state.json").read_text())
    y = json.loads((root / "user_cold_state_y.json").read_text())
    u = next(iter(x))
    x[u].append(x[u][0])
    y[u].append(5 if y[u][0] != 5 else 1)
    (root / "user_cold_state.json").write_text(json.dumps(x))
    (root / "user_cold_state_y.json").write_text(json.dumps(y))
    with pytest.raises(DataError, match=rf"user_cold_state.json: user {u}, item {x[u][0]}: duplicate rating"):
        MeLUMovieLens1M(root=str(root), state_files=WARM, duplicates="error", cache=False).load()
    data = MeLUMovieLens1M(root=str(root), state_files=WARM, cache=False).load()
    row = (data.user == int(u)) & (data.item == int(x[u][0]))
    assert int(row.sum()) == 1 and data.rating[row].item() == y[u][-1]
    assert not torch.equal(data.rating[row], torch.tensor([float(y[u][0])]))
