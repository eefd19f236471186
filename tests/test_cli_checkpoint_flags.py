"""Options given with ``--ckpt_path`` take effect or are refused in one line; every checkpoint ``metarec fit``
writes loads through ``metarec test`` / ``metarec predict``; ``last.ckpt`` follows every epoch; a fit does not
overwrite another run's checkpoints (docs/cli.md, "Checkpoints")."""

import shutil

import pytest
import torch
import yaml

from _cli_helpers import listing, run, small_quickstart

EPOCHS = 3


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One fit of the shipped quickstart config (small world, 3 short epochs).  Its best-checkpoint callback
    monitors ``epoch`` (mode min), so best.ckpt stays at epoch 0 while training goes on: the case where
    Lightning's ``save_last`` would leave last.ckpt behind."""
    tmp = tmp_path_factory.mktemp("fit")
    path = small_quickstart(tmp, max_epochs=EPOCHS)
    config = yaml.safe_load(path.read_text())
    best = next(cb for cb in config["trainer"]["callbacks"] if cb["init_args"].get("monitor"))
    best["init_args"]["monitor"] = "epoch"
    path.write_text(yaml.safe_dump(config))
    result = run(["fit", "--config", str(path)], cwd=tmp)
    assert result.code == 0, result.err[-3000:]
    return tmp, path, tmp / "runs/checkpoints"


def test_last_checkpoint_is_written_every_epoch(fitted):
    _, _, ckpts = fitted
    last = torch.load(ckpts / "last.ckpt", weights_only=True)
    best = torch.load(ckpts / "best.ckpt", weights_only=True)
    assert last["epoch"] == EPOCHS - 1 and last["global_step"] == 2 * EPOCHS
    assert best["epoch"] == 0  # the monitored value never improved after epoch 0
    assert sorted(p.name for p in ckpts.iterdir()) == ["best.ckpt", "last.ckpt"]


def test_eval_inner_steps_zero_gives_the_zero_shot_metric(fitted):
    tmp, config, ckpts = fitted
    zero = run(["test", "--config", str(config), "--ckpt_path", str(ckpts / "last.ckpt"),
                "--model.eval_inner_steps", "0"], cwd=tmp)
    assert zero.code == 0, zero.err[-3000:]
    assert zero.metric("test/mae") == zero.metric("test/mae_zero_shot")
    assert zero.metric("test/user-cold/mae") == zero.metric("test/user-cold/mae_zero_shot")
    adapted = run(["test", "--config", str(config), "--ckpt_path", str(ckpts / "last.ckpt")], cwd=tmp)
    assert adapted.code == 0, adapted.err[-3000:]
    assert adapted.metric("test/mae") != adapted.metric("test/mae_zero_shot")  # 5 inner steps do adapt
    assert adapted.metric("test/mae_zero_shot") == zero.metric("test/mae_zero_shot")


def test_evaluation_options_take_effect(fitted):
    tmp, config, ckpts = fitted
    out = run(["test", "--config", str(config), "--ckpt_path", str(ckpts / "best.ckpt"), "--model.ndcg_k", "[2, 4]",
               "--model.like_threshold", "5.0"], cwd=tmp)
    assert out.code == 0, out.err[-3000:]
    assert "test/ndcg@2 " in out.out and "test/ndcg@4 " in out.out and "test/ndcg@3 " not in out.out
    base = run(["test", "--config", str(config), "--ckpt_path", str(ckpts / "best.ckpt")], cwd=tmp)
    assert base.metric("test/like_acc") != out.metric("test/like_acc")  # another "like" threshold
    assert base.metric("test/mae") == out.metric("test/mae")


def test_left_out_options_come_from_the_checkpoint(fitted):
    """No config at all: the model's and the data's options are the checkpoint's, so the numbers are the same."""
    tmp, config, ckpts = fitted
    alone = run(["test", "--ckpt_path", str(ckpts / "last.ckpt"), "--trainer.logger", "false",
                 "--trainer.enable_progress_bar", "false", "--seed_everything", "0"], cwd=tmp)
    assert alone.code == 0, alone.err[-3000:]
    full = run(["test", "--config", str(config), "--ckpt_path", str(ckpts / "last.ckpt")], cwd=tmp)
    assert alone.metric("test/mae") == full.metric("test/mae")


@pytest.mark.parametrize("option, value, words", [
    ("--model.algorithm", "reptile", ["model.algorithm", "'reptile'", "'maml'"]),
    ("--model.network", "mlp", ["model.network", "'mlp'", "'melu'"]),
    ("--model.network_args", "{embedding_dim: 8, hidden: [64, 64]}", ["model.network_args", "'embedding_dim': 8",
                                                                       "'embedding_dim': 16"]),
    ("--model.adapt", "['*']", ["model.adapt", "['*']", "['head.*']"]),
    ("--model.algorithm_args", "{foo: 1}", ["model.algorithm_args"]),
])
def test_structural_options_that_contradict_the_checkpoint_are_refused(fitted, option, value, words):
    tmp, config, ckpts = fitted
    before = listing(tmp)
    out = run(["test", "--config", str(config), "--ckpt_path", str(ckpts / "last.ckpt"), option, value], cwd=tmp)
    assert out.code == 2 and len(out.error_lines) == 1, out.err[-3000:]
    assert all(w in out.error_lines[0] for w in words), out.error_lines[0]
    assert "Traceback" not in out.err and listing(tmp) == before


def test_structural_options_equal_to_the_checkpoints_are_accepted(fitted):
    tmp, config, ckpts = fitted
    out = run(["test", "--config", str(config), "--ckpt_path", str(ckpts / "last.ckpt"), "--model.algorithm", "maml",
               "--model.network_args", "{embedding_dim: 16}"], cwd=tmp)  # hidden: [64, 64] is melu's default
    assert out.code == 0, out.err[-3000:]


def _bad_checkpoint(kind, tmp, ckpts):
    path = tmp / f"bad-{kind}.ckpt"
    if kind == "missing":
        return tmp / "no-such.ckpt", "does not exist"
    if kind == "folder":
        return ckpts, "is a folder"
    if kind == "truncated":
        data = (ckpts / "last.ckpt").read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path, "not a readable checkpoint"
    if kind == "text":
        path.write_text("user,item,rating\n1,2,3\n")
        return path, "not a readable checkpoint"
    if kind == "no-state":
        torch.save({"epoch": 1}, path)
        return path, "not a Lightning checkpoint"
    ckpt = torch.load(ckpts / "last.ckpt", weights_only=True)
    if kind == "other-shape":  # a checkpoint without hyper-parameters, of another network width
        ckpt.pop("hyper_parameters"), ckpt.pop("datamodule_hyper_parameters")
        weight = next(k for k in ckpt["state_dict"] if k.startswith("network.head") and k.endswith("weight"))
        ckpt["state_dict"][weight] = torch.zeros(3, 3)
        torch.save(ckpt, path)
        return path, f"parameter '{weight}' has shape [3, 3]"
    ckpt["hyper_parameters"]["data_info"]["schema"][0]["size"] += 1  # "other-data": the data's schema differs
    torch.save(ckpt, path)
    return path, "was trained on other data"


@pytest.mark.parametrize("subcommand", ["test", "predict"])
@pytest.mark.parametrize("kind", ["missing", "folder", "truncated", "text", "no-state", "other-shape", "other-data"])
def test_bad_checkpoints_are_one_line(fitted, tmp_path, subcommand, kind):
    tmp, config, ckpts = fitted
    path, words = _bad_checkpoint(kind, tmp_path, ckpts)
    before = listing(tmp)
    out = run([subcommand, "--config", str(config), "--ckpt_path", str(path)], cwd=tmp)
    assert out.code == 2 and len(out.error_lines) == 1, out.err[-3000:]
    assert words in out.error_lines[0] and str(path) in out.error_lines[0], out.error_lines[0]
    assert "Traceback" not in out.err and listing(tmp) == before


@pytest.mark.parametrize("name", ["best.ckpt", "last.ckpt"])
def test_every_checkpoint_of_fit_serves_test_and_predict(fitted, tmp_path, name):
    tmp, config, ckpts = fitted
    test = run(["test", "--config", str(config), "--ckpt_path", str(ckpts / name)], cwd=tmp)
    assert test.code == 0, test.err[-3000:]
    assert 0 < test.metric("test/user-cold/mae") < 4
    recs = tmp_path / "recs.csv"
    predict = run(["predict", "--config", str(config), "--ckpt_path", str(ckpts / name),
                   "--recommend.output", str(recs), "--recommend.top_k", "3"], cwd=tmp)
    assert predict.code == 0, predict.err[-3000:]
    rows = recs.read_text().splitlines()
    assert rows[0] == "user,rank,item,score" and len(rows) > 3


def test_a_second_fit_into_the_same_checkpoint_folder_is_refused(fitted, tmp_path):
    tmp, config, ckpts = fitted
    work = tmp_path / "work"
    shutil.copytree(ckpts, work / "runs/checkpoints")
    text = config.read_text().replace(str(tmp), str(work))
    (work / "small.yaml").write_text(text)
    before = listing(work)
    again = run(["fit", "--config", "small.yaml"], cwd=work)
    assert again.code == 2 and len(again.error_lines) == 1, again.err[-3000:]
    line = again.error_lines[0]
    assert "already holds checkpoints" in line and "best.ckpt, last.ckpt" in line and "--overwrite_checkpoints" in line
    assert listing(work) == before
    old = (work / "runs/checkpoints/last.ckpt").read_bytes()
    resumed = run(["fit", "--config", "small.yaml", "--ckpt_path", "last", "--trainer.max_epochs", str(EPOCHS + 1)],
                  cwd=work)
    assert resumed.code == 0, resumed.err[-3000:]
    assert torch.load(work / "runs/checkpoints/last.ckpt", weights_only=True)["epoch"] == EPOCHS
    assert (work / "runs/checkpoints/last.ckpt").read_bytes() != old
    forced = run(["fit", "--config", "small.yaml", "--overwrite_checkpoints", "true", "--trainer.max_epochs", "1"],
                 cwd=work)
    assert forced.code == 0, forced.err[-3000:]
    assert torch.load(work / "runs/checkpoints/last.ckpt", weights_only=True)["epoch"] == 0
