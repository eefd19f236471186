"""Recommending for brand-new users: the same adaptation as evaluation, rated items excluded, batched users equal
one-at-a-time, bad input in one line, and ``metarec predict`` from a CSV/JSON file."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from metarec_pl.bilevel import MetaLearner
from metarec_pl.data.module import MetaDataModule
from metarec_pl.data.types import DataError, Task, TaskCollator
from metarec_pl.recommend import NewUser, Recommender

ROOT = Path(__file__).resolve().parents[1]
WORLD = dict(num_users=150, num_items=100, min_ratings=30, max_ratings=60, seed=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A MAML/MeLU model trained for 2 epochs on a small world, saved by a Trainer; its checkpoint path."""
    L.seed_everything(0)
    dm = MetaDataModule(dataset_args=WORLD, sampler_args={"query_size": 10, "min_support": 3}, tasks_per_batch=32)
    module = MetaLearner(network_args={"embedding_dim": 8, "hidden": [32]}, inner_steps=3, inner_lr=0.05,
                         adapt=["head.*"], data_info=dm.info)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, inference_mode=False)
    trainer.fit(module, dm)
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    trainer.save_checkpoint(path)
    return path, dm


def test_recommendations_match_the_evaluation_inner_loop(trained):
    path, dm = trained
    rec = Recommender.from_checkpoint(path)  # the catalogue from the data module recorded in the checkpoint
    data, task = dm.data, dm.stage_tasks("test")["user-cold"][0]
    items, ratings = data.item[task.support].tolist(), data.rating[task.support].tolist()
    profile = {f.name: int(data.user_features[f.key][task.key]) for f in data.schema if f.side == "user"}

    # score(): the adapted predictions of the query items equal MetaLearner.predict_step's on the same task
    module = MetaLearner.load_from_checkpoint(path).eval()
    batch = TaskCollator(data)([Task(task.key, task.support, task.query)])
    expected = module.predict_step(batch, 0)["prediction"][0]
    got = rec.score(list(zip(items, ratings)), data.item[task.query].tolist(), profile)
    assert torch.allclose(got, expected, atol=1e-5)

    # recommend(): the k best unrated catalogue items (raw ids: the synthetic world's are its codes as strings)
    top = rec.recommend(dict(zip(items, ratings)), profile, k=5)
    assert len(top) == 5 and all(isinstance(i, str) for i, _ in top)
    assert not {str(i) for i in items} & {i for i, _ in top}
    assert [s for _, s in top] == sorted([s for _, s in top], reverse=True)
    unrated = [i for i in rec.catalogue.item_ids if i not in {str(i) for i in items}]
    all_scores = rec.score(dict(zip(items, ratings)), unrated, profile)
    assert torch.allclose(torch.tensor([s for _, s in top]), all_scores.topk(5).values, atol=1e-5)


def test_adaptation_uses_the_ratings_and_the_profile(trained):
    rec = Recommender.from_checkpoint(trained[0])
    items = rec.catalogue.items[:6].tolist()
    lover, hater = {i: 5.0 for i in items}, {i: 1.0 for i in items}
    probe = rec.catalogue.items[10:30].tolist()
    assert rec.score(lover, probe).mean() > rec.score(hater, probe).mean() + 0.1
    assert not torch.equal(rec.score(lover, probe, {"age": 0}), rec.score(lover, probe, {"age": 6}))


def test_scoring_builds_no_autograd_graph(trained, monkeypatch):
    rec = Recommender.from_checkpoint(trained[0])
    adapt, grad_mode = rec.module.adapt, []
    record = lambda *a, **k: grad_mode.append(torch.is_grad_enabled()) or adapt(*a, **k)  # noqa: E731
    monkeypatch.setattr(rec.module, "adapt", record)
    rec.score({i: 4.0 for i in rec.catalogue.items[:5].tolist()}, rec.catalogue.items[5:40].tolist())
    assert grad_mode == [False]


def test_batched_users_equal_one_at_a_time(trained):
    rec = Recommender.from_checkpoint(trained[0], batch_size=4)  # 10 users -> 3 unequal batches
    gen = torch.Generator().manual_seed(1)
    users = []
    for u in range(10):
        items = rec.catalogue.items[torch.randperm(len(rec.catalogue.items), generator=gen)[: 2 + u]]
        users.append(NewUser({int(i): float(torch.randint(1, 6, (), generator=gen)) for i in items}, {"region": u}))
    together = rec.recommend_many(users, k=4)
    alone = [rec.recommend(u.ratings, u.profile, k=4) for u in users]
    for a, b in zip(together, alone):
        assert [i for i, _ in a] == [i for i, _ in b]
        assert torch.allclose(torch.tensor([s for _, s in a]), torch.tensor([s for _, s in b]), atol=1e-5)


@pytest.mark.parametrize("ratings, profile, expected", [
    ({}, None, "new user #0: no ratings; expected at least one (item, rating) pair"),
    ({100000: 4}, None, "new user #0: item '100000' is not in the catalogue; expected one of the 100 item ids"),
    ({3: 7}, None, "new user #0: item '3' has rating 7; expected a rating in [1, 5]"),
    ({3: float("nan")}, None, "new user #0: item '3' has rating nan; expected a rating in [1, 5]"),
    ([(3, 4), ("3", 5)], None, "new user #0: item '3' is rated more than once; expected each item once"),
    ({"x": 4}, None, "new user #0: item 'x' is not in the catalogue"),
    ({None: 4}, None, "new user #0: item id: None (NoneType) is not an id; expected a string or an integer"),
    ({3.0: 4}, None, "new user #0: item id: 3.0 (float) is not an id"),
    ({3: 4}, {"sex": 1}, "new user #0: unknown profile field 'sex'; expected one of: gender, age, occupation, region"),
    ({3: 4}, {"age": 7}, "new user #0: profile field 'age' = 7; expected an id in [0, 7)"),
])
def test_bad_input_is_one_line(trained, ratings, profile, expected):
    rec = Recommender.from_checkpoint(trained[0])
    with pytest.raises(DataError) as info:
        rec.recommend(ratings, profile)
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)


def test_catalogue_from_a_config_file_must_match_the_schema(trained, tmp_path):
    path, _ = trained
    config = tmp_path / "other.yaml"
    config.write_text(yaml.safe_dump({"data": {"dataset": "synthetic", "dataset_args": WORLD}}))
    assert len(Recommender.from_checkpoint(path, config).catalogue.items) == 100
    with pytest.raises(DataError, match="feature schema differs"):
        Recommender(MetaLearner.load_from_checkpoint(path), _world_without_region())


def _world_without_region():
    from dataclasses import replace

    data = MetaDataModule(dataset_args=WORLD).data
    return replace(data, schema=[f for f in data.schema if f.name != "region"])


def test_metarec_predict_writes_top_k_from_csv_and_json(trained, tmp_path):
    path, _ = trained
    (tmp_path / "new.csv").write_text("user,item,rating,age\nann,1,5,2\nann,2,1,2\nann,3,4,2\nbob,10,3,5\n")
    (tmp_path / "new.json").write_text(json.dumps([{"user": "cy", "ratings": {"4": 5, "5": 2}, "profile": {"age": 1}}]))
    config = {"model": {"network_args": {"embedding_dim": 8, "hidden": [32]}, "adapt": ["head.*"]},
              "data": {"dataset_args": WORLD}, "trainer": {"logger": False, "enable_progress_bar": False}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for source, output in (("new.csv", "recs.csv"), ("new.json", "recs.json")):
        out = subprocess.run([sys.executable, "-m", "metarec_pl.cli", "predict", "--config", "c.yaml",
                              "--ckpt_path", str(path), "--data.predict_file", source, "--recommend.output", output,
                              "--recommend.top_k", "3"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
    rec = Recommender.from_checkpoint(path)
    rows = list(csv.DictReader((tmp_path / "recs.csv").open()))
    assert [(r["user"], r["rank"]) for r in rows] == [("ann", "1"), ("ann", "2"), ("ann", "3"),
                                                      ("bob", "1"), ("bob", "2"), ("bob", "3")]
    ann = rec.recommend({1: 5, 2: 1, 3: 4}, {"age": 2}, k=3)
    assert [r["item"] for r in rows[:3]] == [i for i, _ in ann]
    assert [float(r["score"]) for r in rows[:3]] == pytest.approx([s for _, s in ann], abs=1e-4)
    cy = json.loads((tmp_path / "recs.json").read_text())["cy"]
    assert [i for i, _ in cy] == [i for i, _ in rec.recommend({4: 5, 5: 2}, {"age": 1}, k=3)]

    (tmp_path / "bad.csv").write_text("user,item,rating\nann,1,5\nann,99999,4\n")
    out = subprocess.run([sys.executable, "-m", "metarec_pl.cli", "predict", "--config", "c.yaml", "--ckpt_path",
                          str(path), "--data.predict_file", "bad.csv", "--recommend.output", "bad_out.csv"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith(
        "metarec: error: bad.csv: line 3: new user 'ann': item '99999' is not in the catalogue")
    assert not (tmp_path / "bad_out.csv").exists()
