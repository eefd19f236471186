"""Raw ids end to end: a log's ids (strings, non-contiguous integers, ids whose string order differs from their
numeric order) go into ``Recommender`` and ``metarec predict`` as written and come back as written (case 02);
a checkpoint from a real ``metarec fit`` serves both (case 03); a bare log trains and serves new users (case 07);
every load says in one line what it dropped."""

import csv
import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from metarec_pl.bilevel import MetaLearner
from metarec_pl.data.module import MetaDataModule
from metarec_pl.data.types import DataError
from metarec_pl.recommend import NewUser, Recommender

ROOT = Path(__file__).resolve().parents[1]


def write_log(path: Path, items, users: int = 40, per: int = 14, seed: int = 0, short_users: int = 0) -> Path:
    """user,item,rating: users "u0".., each rating ``per`` of ``items`` (raw ids as given); ``short_users`` more
    users with only 4 ratings (too few for a task)."""
    rng = random.Random(seed)
    lines = ["user,item,rating"]
    for u in range(users + short_users):
        for i in rng.sample(list(items), per if u < users else 4):
            lines.append(f"u{u},{i},{rng.randint(1, 5)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def train(tmp_path: Path, items, network: str = "mlp", **dataset_args):
    """A MAML model trained 1 epoch in-process on a log of ``items``; (Recommender, data module)."""
    write_log(tmp_path / "log.csv", items)
    L.seed_everything(0)
    dm = MetaDataModule(dataset="interactions", root=str(tmp_path),
                        dataset_args={"path": "log.csv", "cache_dir": str(tmp_path / "cache"), **dataset_args},
                        sampler_args={"query_size": 5, "min_support": 3}, tasks_per_batch=8)
    module = MetaLearner(network=network, inner_steps=1, data_info=dm.info)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, inference_mode=False)
    trainer.fit(module, dm)
    return Recommender(module, dm.data), dm


@pytest.mark.parametrize("items", [
    [str(i) for i in range(1, 41)],  # 1..40: the string order ("10" < "2") differs from the numeric order
    [str(7 + 13 * k ** 2) for k in range(40)],  # non-contiguous integers
    [f"tt{k:05d}x" for k in range(40)],  # strings
], ids=["one-to-forty", "sparse-integers", "strings"])
def test_recommender_takes_and_returns_the_logs_raw_ids(tmp_path, items):
    rec, dm = train(tmp_path, items)
    data = dm.data
    assert sorted(rec.catalogue.item_ids) == sorted(items)
    given = {items[1]: 5, items[9]: 1, items[39]: 4}
    # each raw id reaches the item whose rows carry that id in the log
    codes, _ = rec.catalogue.support(NewUser(given), 0)
    log_rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    for raw, code in zip(given, codes.tolist()):
        rows = [r for r in log_rows if r["item"] == raw]
        assert data.item_ids[code] == raw
        assert int((data.item == code).sum()) == len(rows)
    top = rec.recommend(given, k=len(items))
    assert len(top) == len(items) - 3 and {i for i, _ in top} == set(items) - set(given)
    # the same user given with integer ids (their decimal strings) where the raw ids are integers
    if items[0].isdigit():
        as_ints = {int(k): v for k, v in given.items()}
        assert [i for i, _ in rec.recommend(as_ints, k=5)] == [i for i, _ in top[:5]]
    scores = rec.score(given, [i for i, _ in top[:5]])
    assert torch.allclose(scores, torch.tensor([s for _, s in top[:5]]), atol=1e-5)


def test_unknown_raw_ids_are_one_line_errors_naming_the_id(tmp_path):
    rec, _ = train(tmp_path, [str(i) for i in range(1, 41)])
    for ratings, expected in (({"41": 4}, "new user #0: item '41' is not in the catalogue"),
                              ({"0": 4}, "new user #0: item '0' is not in the catalogue"),
                              ({"01": 4}, "new user #0: item '01' is not in the catalogue"),
                              ({None: 4}, "new user #0: item id: None (NoneType) is not an id")):
        with pytest.raises(DataError) as info:
            rec.recommend(ratings)
        assert str(info.value).startswith(expected) and "\n" not in str(info.value)
    # surrounding spaces are not part of an id, as in the log
    assert rec.recommend({" 2 ": 5, "10": 1}, k=3) == rec.recommend({"2": 5, "10": 1}, k=3)


def test_a_bare_log_trains_and_serves_new_users_with_automatic_id_features(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="metarec_pl.data"):
        rec, dm = train(tmp_path, [str(i) for i in range(1, 41)], network="melu")
    assert {(f.key, f.kind) for f in dm.schema} == {("user_id", "categorical"), ("item_id", "categorical")}
    said = [r.getMessage() for r in caplog.records if "no feature fields" in r.getMessage()]
    assert len(said) == 1 and r"using the user and item ids as features" in said[0]
    assert [r.levelno for r in caplog.records if "no feature fields" in r.getMessage()] == [logging.WARNING]
    batch = rec.catalogue.batch([NewUser({"2": 5, "3": 1})])
    assert batch.support.features["user_id"].unique().tolist() == [0]  # a new user: the unknown id
    assert len(rec.recommend({"2": 5, "3": 1}, k=4)) == 4


def test_each_load_counts_what_it_dropped_in_one_line(tmp_path, caplog):
    write_log(tmp_path / "log.csv", [str(i) for i in range(1, 41)], short_users=3)
    dm = MetaDataModule(dataset="interactions", root=str(tmp_path), dataset_args={"path": "log.csv", "cache": False},
                        sampler_args={"query_size": 5, "min_support": 3})
    with caplog.at_level(logging.INFO, logger="metarec_pl.data"):
        dm.data
    lines = [r for r in caplog.records if r.getMessage().startswith("metarec: interactions log.csv:")]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    message = lines[0].getMessage()
    assert f"{40 * 14 + 3 * 4} rows, 43 users, 40 items" in message
    assert "dropped 3 of 43 user tasks with fewer than 8 rows" in message
    # the count is the sampler's own: the tasks of every split leave out exactly 3 users
    built = sum(len(t) for stage in ("train", "val", "test") for t in dm.stage_tasks(stage).values())
    assert built == 40


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
            "METAREC_PL_CACHE": "cache"}


def test_a_checkpoint_from_metarec_fit_serves_the_api_and_predict_in_raw_ids(tmp_path, monkeypatch):
    write_log(tmp_path / "log.csv", [str(i) for i in range(1, 41)], short_users=2)
    config = {"seed_everything": 0,
              "trainer": {"max_epochs": 1, "logger": False, "enable_progress_bar": False,
                          "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                         "init_args": {"dirpath": "ck", "save_last": True}}]},
              "model": {"algorithm": "maml", "network": "mlp", "inner_steps": 1},
              "data": {"dataset": "interactions", "root": ".", "dataset_args": {"path": "log.csv"},
                       "sampler_args": {"query_size": 5, "min_support": 3}, "tasks_per_batch": 8}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    run = lambda *args: subprocess.run([sys.executable, "-m", "metarec_pl.cli", *args], cwd=tmp_path,  # noqa: E731
                                       env=_env(), capture_output=True, text=True, timeout=600)
    fit = run("fit", "--config", "cfg.yaml")
    assert fit.returncode == 0, fit.stderr[-3000:]
    # the dropped-rows line shows in the command's output; the bare log said it uses the ids as features
    assert [ln for ln in fit.stderr.splitlines() if ln.startswith("metarec: interactions log.csv:")
            and "dropped 2 of 42 user tasks with fewer than 8 rows" in ln]
    assert "no feature fields; using the user and item ids as features" in fit.stderr

    monkeypatch.chdir(tmp_path)  # the checkpoint records root "." and the cache by $METAREC_PL_CACHE, as fit saw
    monkeypatch.setenv("METAREC_PL_CACHE", str(tmp_path / "cache"))
    rec = Recommender.from_checkpoint(tmp_path / "ck" / "last.ckpt")
    expected = rec.recommend({"2": 5, "10": 1, "40": 4}, k=37)
    assert {i for i, _ in expected} == {str(i) for i in range(1, 41)} - {"2", "10", "40"}

    (tmp_path / "new.csv").write_text("\ufeffuser,item,rating\nnewbie, 2,5\nnewbie,10 ,1\nnewbie,40,4\n")
    out = run("predict", "--config", "cfg.yaml", "--ckpt_path", "ck/last.ckpt", "--data.predict_file", "new.csv",
              "--recommend.output", "recs.csv", "--recommend.top_k", "37")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "recs.csv").open()))
    assert {r["user"] for r in rows} == {"newbie"}
    assert [r["item"] for r in rows] == [i for i, _ in expected]
    assert [float(r["score"]) for r in rows] == pytest.approx([s for _, s in expected], abs=1e-4)


def test_a_bom_and_spaces_in_a_log_read_as_the_clean_log(tmp_path):
    from metarec_pl.data.interactions import Interactions

    clean = write_log(tmp_path / "clean.csv", [str(i) for i in range(1, 41)])
    lines = clean.read_text().splitlines()
    noisy = ["\ufeff user , item ,rating"] + [" " + ln.replace(",", " , ", 1) for ln in lines[1:]]
    (tmp_path / "noisy.csv").write_text("\n".join(noisy) + "\n", encoding="utf-8")
    a, b = (Interactions(root=str(tmp_path), path=p, cache=False).load() for p in ("clean.csv", "noisy.csv"))
    assert a.user_ids == b.user_ids and a.item_ids == b.item_ids
    assert torch.equal(a.user, b.user) and torch.equal(a.item, b.item) and torch.equal(a.rating, b.rating)


def test_predict_without_a_file_names_test_users_and_items_by_raw_id(tmp_path):
    from metarec_pl.predict_io import RecommendationWriter

    items = [f"tt{k:05d}x" for k in range(40)]
    rec, dm = train(tmp_path, items)
    writer = RecommendationWriter(output=str(tmp_path / "recs.csv"), top_k=3)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        inference_mode=False, callbacks=[writer])
    trainer.predict(rec.module, dm)
    rows = list(csv.DictReader((tmp_path / "recs.csv").open()))
    test_users = {dm.data.user_ids[t.key] for tasks in dm.stage_tasks("test").values() for t in tasks}
    assert rows and {r["user"] for r in rows} == test_users
    assert {r["item"] for r in rows} <= set(items)
