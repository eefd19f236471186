"""The ``metarec`` entry point end to end: fit, test from the checkpoint, plugins, bad names."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def metarec(*args, cwd, env=None, timeout=600):
    cmd = [sys.executable, "-m", "metarec_pl.cli", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def small_config(tmp_path):
    """The quickstart config, shrunk to a few seconds of work."""
    config = yaml.safe_load((ROOT / "configs/quickstart.yaml").read_text())
    config["trainer"].update(max_epochs=2, default_root_dir=str(tmp_path / "runs"), enable_progress_bar=False)
    config["data"]["dataset_args"].update(num_users=150, num_items=100, min_ratings=30, max_ratings=60)
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def printed_metric(stdout: str, name: str) -> float:
    """A value of Lightning's printed results table."""
    match = re.search(rf"[│|]\s*{re.escape(name)}\s*[│|]\s*([-0-9.eE+]+)\s*[│|]", stdout)
    assert match, f"{name} not printed"
    return float(match.group(1))


def test_fit_then_test_and_predict_from_its_checkpoints(small_config, tmp_path):
    """The real command: both checkpoints of the shipped config serve `test` and `predict`; with
    `--model.eval_inner_steps 0` the adapted metric is the zero-shot one."""
    fit = metarec("fit", "--config", str(small_config), cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    folder = tmp_path / "runs/quickstart/checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt"]
    test = metarec("test", "--config", str(small_config), "--ckpt_path", str(folder / "last.ckpt"), cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    for name in ("test/mae", "test/mae_rounded", "test/rmse", "test/ndcg@3", "test/mae_zero_shot", "test/user-cold/mae",
                 "test/item-cold/mae", "test/user+item-cold/mae"):
        assert name in test.stdout, name
    zero = metarec("test", "--config", str(small_config), "--ckpt_path", str(folder / "best.ckpt"),
                   "--model.eval_inner_steps", "0", cwd=tmp_path)
    assert zero.returncode == 0, zero.stderr[-3000:]
    assert printed_metric(zero.stdout, "test/mae") == printed_metric(zero.stdout, "test/mae_zero_shot")
    assert printed_metric(test.stdout, "test/mae") != printed_metric(test.stdout, "test/mae_zero_shot")
    predict = metarec("predict", "--config", str(small_config), "--ckpt_path", str(folder / "best.ckpt"),
                      "--recommend.output", "recs.csv", "--recommend.top_k", "3", cwd=tmp_path)
    assert predict.returncode == 0, predict.stderr[-3000:]
    rows = (tmp_path / "recs.csv").read_text().splitlines()
    assert rows[0] == "user,rank,item,score" and len(rows) > 3


def test_print_config_round_trips(small_config, tmp_path):
    printed = metarec("fit", "--config", str(small_config), "--print_config", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr[-2000:]
    saved = tmp_path / "printed.yaml"
    saved.write_text(printed.stdout)
    again = metarec("fit", "--config", str(saved), "--print_config", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert yaml.safe_load(again.stdout) == yaml.safe_load(printed.stdout)
    assert yaml.safe_load(printed.stdout)["model"]["algorithm"] == "maml"


def test_plugins_lists_every_builtin(tmp_path):
    out = metarec("plugins", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = {tuple(line.split()[:3]) for line in out.stdout.splitlines()[1:]}
    for kind, name in [("algorithm", "maml"), ("algorithm", "fomaml"), ("algorithm", "metasgd"),
                       ("algorithm", "reptile"), ("algorithm", "anil"), ("algorithm", "none"),
                       ("network", "melu"), ("network", "mlp"), ("sampler", "user"), ("sampler", "item"),
                       ("dataset", "synthetic"), ("protocol", "user-cold"), ("protocol", "melu")]:
        assert (kind, name, "metarec_pl") in rows


def test_unknown_algorithm_fails_in_one_line(small_config, tmp_path):
    out = metarec("fit", "--config", str(small_config), "--model.algorithm", "mamll", cwd=tmp_path)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and lines[0].startswith("metarec: error: unknown algorithm 'mamll'; available: anil, ")
    available = lines[0].split("available: ", 1)[1].split(", ")
    assert available == sorted(available) and {"maml", "fomaml", "metasgd", "reptile", "none"} <= set(available)
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()  # nothing half-written
