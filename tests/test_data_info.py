"""``DataInfo``: the data module measures the facts a model needs once (schema, feedback kind, rating scale / mean /
levels, like threshold, id maps); the CLI hands them to the model in one link, checkpoints keep them as plain data
(``metarec fit`` -> ``metarec test`` / ``Recommender.from_checkpoint``), and the deprecated one-by-one keywords
build the same model."""

import json
import logging
import warnings

import pytest
import torch
import yaml

import metarec_pl
from _cli_helpers import run
from metarec_pl.algorithms.base import Algorithm
from metarec_pl.bilevel import MetaLearner
from metarec_pl.data.info import DataInfo, IdMap
from metarec_pl.data.module import MetaDataModule
from metarec_pl.data.types import DataError
from metarec_pl.errors import ConfigError
from metarec_pl.recommend import Recommender
from metarec_pl.testing import registered, tiny_batch, tiny_data

USERS = ["zoe", "amy", "bob", "cal", "dee", "eve", "fay", "gus", "hal", "ivy", "jon", "kim"]  # raw ids, unsorted
ITEMS = [f"m{k}" for k in range(1, 31)]  # "m10" sorts before "m2": codes follow the string order


def log_rows(items=ITEMS):
    """(user, item, rating, split): the first 8 users train (ratings 1, 3, 4, 5: no 2), the last 4 are test users
    (they rate 2s too), so facts measured on the training rows differ from the whole log's."""
    rows = []
    for u, user in enumerate(USERS):
        train = u < 8
        for k in range(14):
            item = items[(5 * u + 2 * k) % len(items)]
            rating = [1, 3, 4, 5][(u + k) % 4] if train else [2, 3, 4, 5, 1][(u + k) % 5]
            rows.append((user, item, rating, "train" if train else "test/user-cold"))
    return rows


def write_log(path, rows, implicit=False):
    head = "user,item,set" if implicit else "user,item,rating,set"
    lines = [f"{u},{i},{s}" if implicit else f"{u},{i},{r},{s}" for u, i, r, s in rows]
    path.write_text("\n".join([head, *lines]) + "\n")
    return path


def data_module(tmp_path, name="log.csv", implicit=False):
    return MetaDataModule(dataset="interactions", root=str(tmp_path),
                          dataset_args={"path": name, "columns": {"split": "set"}, "implicit": implicit,
                                        "cache": False},
                          sampler_args={"query_size": 4, "min_support": 3}, tasks_per_batch=4)


def test_info_of_an_explicit_log_holds_its_facts(tmp_path):
    rows = log_rows()
    write_log(tmp_path / "log.csv", rows)
    info = data_module(tmp_path).info
    train = [r for _, _, r, s in rows if s == "train"]
    assert info.feedback == "explicit"
    assert info.rating_levels == (1.0, 3.0, 4.0, 5.0)  # the training ratings' scale: no 2
    assert info.rating_mean == pytest.approx(sum(train) / len(train))
    assert info.rating_range == (1.0, 5.0) and info.like_threshold == 4.0  # the log's own scale, lo + 0.75 (hi - lo)
    assert (info.num_users, info.num_items) == (len(USERS), len({i for _, i, _, _ in rows}))
    assert info.raw_ids("user") == sorted(USERS) and info.code_of("user", "amy") == 0
    assert info.raw_ids("item") == sorted({i for _, i, _, _ in rows})
    assert info.code_of("item", "m10") == sorted({i for _, i, _, _ in rows}).index("m10")
    assert info.code_of("item", "m99") is None
    assert [f.key for f in info.schema] == ["user_id", "item_id"]  # a bare log: its ids are its fields
    assert info.users.ids.startswith("sha256:") and info.items.ids.startswith("sha256:")


def test_info_of_an_implicit_log_counts_the_sampled_negatives(tmp_path):
    write_log(tmp_path / "clicks.csv", log_rows(), implicit=True)
    dm = data_module(tmp_path, "clicks.csv", implicit=True)
    info = dm.info
    assert dm.num_negatives == 4  # the sampler's default for implicit data
    assert info.feedback == "implicit" and info.rating_range == (0.0, 1.0)
    assert info.rating_mean == pytest.approx(1 / (1 + 4)) and info.rating_levels == (0.0, 1.0)
    assert info.like_threshold == 0.5
    assert (dm.rating_mean, dm.rating_levels, dm.like_threshold) == (info.rating_mean, [0.0, 1.0], 0.5)


def test_id_maps_tell_other_ids_apart_and_survive_plain_data(tmp_path):
    write_log(tmp_path / "log.csv", log_rows())
    write_log(tmp_path / "renamed.csv", log_rows([f"x{k}" for k in range(1, 31)]))
    info, again = data_module(tmp_path).info, data_module(tmp_path).info
    other = data_module(tmp_path, "renamed.csv").info
    assert info == again and info.changed_ids(again) == []
    assert other.num_items == info.num_items and info.changed_ids(other) == ["item"]
    plain = json.loads(json.dumps(info.to_dict()))  # what hparams.yaml and checkpoints hold
    assert yaml.safe_load(yaml.safe_dump(plain)) == plain
    read = DataInfo.from_dict(plain)
    assert read == info and read.changed_ids(info) == []
    with pytest.raises(DataError, match="holds no raw ids"):  # a checkpoint keeps the digest, not the ids
        read.raw_ids("item")
    codes = DataInfo(info.schema, users=IdMap.of(3, None))
    assert codes.raw_ids("user") == ["0", "1", "2"] and codes.code_of("user", "2") == 2
    with pytest.raises(ConfigError, match="unknown key 'ratings'"):
        DataInfo.from_dict({**plain, "ratings": 1})


def fitted(tmp_path):
    """``metarec fit`` (in-process, the real CLI) of ``mf-foldin`` (per-id tables) on the log; the config path and the
    last checkpoint.  ``renamed.yaml``: the same but on a log whose item ids are others."""
    write_log(tmp_path / "log.csv", log_rows())
    write_log(tmp_path / "renamed.csv", log_rows([f"x{k}" for k in range(1, 31)]))
    config = {
        "seed_everything": 0,
        "trainer": {"max_epochs": 1, "logger": False, "enable_progress_bar": False, "enable_model_summary": False,
                    "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                   "init_args": {"dirpath": "ck", "save_last": True}}]},
        "model": {"algorithm": "mf-foldin", "network": "mlp", "algorithm_args": {"dim": 4}},
        "data": {"dataset": "interactions", "root": str(tmp_path),
                 "dataset_args": {"path": "log.csv", "columns": {"split": "set"}, "cache": False},
                 "sampler_args": {"query_size": 4, "min_support": 3}, "tasks_per_batch": 4},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    config["data"]["dataset_args"]["path"] = "renamed.csv"
    (tmp_path / "renamed.yaml").write_text(yaml.safe_dump(config))
    out = run(["fit", "--config", str(path)], cwd=tmp_path)
    assert out.code == 0, out.err[-3000:]
    return path, tmp_path / "ck" / "last.ckpt"


def legacy_copy(ckpt, path):
    """The checkpoint as written before DataInfo: the facts one by one in the hyper-parameters."""
    old = torch.load(ckpt, weights_only=True)
    info = old["hyper_parameters"].pop("data_info")
    old["hyper_parameters"].update(schema=info["schema"], rating_mean=info["rating_mean"],
                                   rating_levels=info["rating_levels"], num_users=info["users"]["size"],
                                   num_items=info["items"]["size"])
    torch.save(old, path)
    return path


def test_a_cli_checkpoint_carries_the_info_to_test_and_the_recommender(tmp_path):
    config, ckpt = fitted(tmp_path)
    info = data_module(tmp_path).info
    saved = torch.load(ckpt, weights_only=True)["hyper_parameters"]
    assert not set(saved) & {"schema", "rating_mean", "rating_levels", "num_users", "num_items"}  # one object
    assert DataInfo.from_dict(saved["data_info"]) == info

    tested = run(["test", "--config", str(config), "--ckpt_path", str(ckpt)], cwd=tmp_path)
    assert tested.code == 0, tested.err[-3000:]
    assert "other" not in tested.err  # the same ids: no warning
    rec = Recommender.from_checkpoint(ckpt)
    assert rec.module.data_info == info and rec.module.algorithm.info == info
    assert rec.module.algorithm.user_factors.num_embeddings == info.num_users  # per-id tables sized by the info
    recs = rec.recommend({"m1": 5, "m3": 1, "m10": 4}, k=5)
    assert len(recs) == 5 and {i for i, _ in recs} <= set(info.raw_ids("item")) - {"m1", "m3", "m10"}

    old = legacy_copy(ckpt, tmp_path / "old.ckpt")  # written before DataInfo: loads and gives the same numbers
    tested_old = run(["test", "--config", str(config), "--ckpt_path", str(old)], cwd=tmp_path)
    assert tested_old.code == 0, tested_old.err[-3000:]
    assert tested_old.metric("test/mae") == tested.metric("test/mae")
    with pytest.warns(DeprecationWarning, match="deprecated; pass data_info"):
        rec_old = Recommender.from_checkpoint(old)
    assert rec_old.recommend({"m1": 5, "m3": 1, "m10": 4}, k=5) == recs
    assert rec_old.module.data_info.num_users == info.num_users


def test_a_checkpoint_meeting_other_ids_says_so_in_one_line(tmp_path, caplog):
    _, ckpt = fitted(tmp_path)
    with caplog.at_level(logging.WARNING, logger="metarec_pl.data"):
        out = run(["test", "--config", str(tmp_path / "renamed.yaml"), "--ckpt_path", str(ckpt)], cwd=tmp_path)
    assert out.code == 0, out.err[-3000:]
    said = [r.getMessage() for r in caplog.records if "was trained on data with other" in r.getMessage()]
    assert said == [f"metarec: {ckpt} was trained on data with other item ids (items: 30 then, 30 now); id fields "
                    f"and per-id tables now refer to other items"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="metarec_pl.data"):
        Recommender.from_checkpoint(ckpt, data=str(tmp_path / "renamed.yaml"))  # the Python API says the same
        Recommender.from_checkpoint(ckpt)  # the data recorded in the checkpoint: its own ids, nothing said
    said = [r.getMessage() for r in caplog.records if "was trained on data with other" in r.getMessage()]
    assert said == ["metarec: the recommender's model was trained on data with other item ids (items: 30 then, 30 "
                    "now); id fields and per-id tables now refer to other items"]


def test_the_deprecated_keywords_give_the_same_model_as_the_info(tmp_path):
    write_log(tmp_path / "log.csv", log_rows())
    dm = data_module(tmp_path)
    torch.manual_seed(0)
    new = MetaLearner(algorithm="mf-foldin", network="mlp", data_info=dm.info)
    torch.manual_seed(0)
    with pytest.warns(DeprecationWarning, match=r"MetaLearner\(schema=..., rating_mean=..., rating_levels=..., "
                                                r"num_users=..., num_items=...\) is deprecated"):
        old = MetaLearner(algorithm="mf-foldin", network="mlp", schema=dm.schema, rating_mean=dm.rating_mean,
                          rating_levels=dm.rating_levels, num_users=dm.num_users, num_items=dm.num_items)
    assert new.state_dict().keys() == old.state_dict().keys()
    assert all(torch.equal(v, old.state_dict()[k]) for k, v in new.state_dict().items())
    assert old.data_info.schema == new.data_info.schema and old.data_info.rating_mean == new.data_info.rating_mean
    assert (old.algorithm.num_users, old.algorithm.num_items) == (dm.num_users, dm.num_items)
    assert torch.equal(old.metrics.rating_levels, new.metrics.rating_levels)
    batch = next(iter(dm.test_dataloader()))
    new.eval(), old.eval()
    assert torch.equal(new.adapted_predictions(batch), old.adapted_predictions(batch))
    # the saved hyper-parameters hold the one object either way
    assert "schema" not in old.hparams and old.hparams.data_info["rating_mean"] == dm.rating_mean


def test_facts_given_both_ways_must_agree_and_some_info_is_needed(tmp_path):
    data = tiny_data()
    info = DataInfo.of(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        agreeing = MetaLearner(data_info=info, rating_mean=info.rating_mean)
        assert agreeing.data_info == info
        with pytest.raises(ConfigError, match=r"rating_mean given twice with different values"):
            MetaLearner(data_info=info, rating_mean=1.0)
        with pytest.raises(ConfigError, match="without a schema"):
            MetaLearner(rating_mean=3.5)
    with pytest.raises(ConfigError, match=r"^model.data_info is missing: pass the data's facts"):
        MetaLearner()


def test_bind_hands_the_info_to_algorithms_old_and_new():
    data = tiny_data(implicit=True)
    info = DataInfo.of(data)
    proto = MetaLearner(algorithm="protonet", data_info=info)  # no rating_range given: the data's levels
    assert proto.algorithm.info is info and proto.algorithm.levels.tolist() == [0.0, 1.0]
    explicit = MetaLearner(algorithm="protonet", data_info=DataInfo.of(tiny_data()))
    assert explicit.algorithm.levels.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]

    seen = {}

    class OldStyle(Algorithm):  # a plugin written before DataInfo: bind(model)
        def bind(self, model):
            super().bind(model)
            seen.update(info=self.info, users=self.num_users)

    class Plugin:
        @metarec_pl.hookimpl
        def register_algorithms(self, register):
            register("old-style", OldStyle)

    with registered(Plugin(), distribution="old-style-dist"):
        with pytest.warns(DeprecationWarning, match=r"OldStyle.bind\(model\) is deprecated"):
            module = MetaLearner(algorithm="old-style", data_info=info)
    assert seen == {"info": info, "users": info.num_users} and module.algorithm.adapted_names
    assert module.adapt(tiny_batch(data, implicit=True)).query_pred.isfinite().all()
