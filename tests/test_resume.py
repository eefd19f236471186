"""Exact resume: a fit killed (SIGKILL) mid-epoch and resumed with ``--ckpt_path last`` ends where an
uninterrupted fit with the same seeds ends: same weights, same final validation metrics (CPU)."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 7  # 105 training users / 16 tasks per batch
KILL_AT_STEP = 10  # epoch 1, batch 3: mid-epoch, right after a step checkpoint
EPOCHS = 2


def write_config(run_dir: Path, pause_marker: Path | None = None) -> Path:
    config = yaml.safe_load((ROOT / "configs/quickstart.yaml").read_text())
    callbacks = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                  "init_args": {"dirpath": str(run_dir / "checkpoints"), "every_n_train_steps": 2,
                                "save_last": True}}]
    if pause_marker is not None:
        callbacks.append({"class_path": "_pause_callback.PauseAtStep",
                          "init_args": {"step": KILL_AT_STEP, "marker": str(pause_marker)}})
    config["trainer"].update(max_epochs=EPOCHS, default_root_dir=str(run_dir), enable_progress_bar=False,
                             callbacks=callbacks, log_every_n_steps=1,
                             logger={"class_path": "lightning.pytorch.loggers.CSVLogger",
                                     "init_args": {"save_dir": str(run_dir), "name": "csv"}})
    config["data"]["dataset_args"].update(num_users=150, num_items=100, min_ratings=30, max_ratings=60)
    config["data"]["tasks_per_batch"] = 16
    path = run_dir / "config.yaml"
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def start_fit(config: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    return subprocess.Popen([sys.executable, "-m", "metarec_pl.cli", "fit", "--config", str(config), *extra],
                            cwd=config.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]


def final_val_metrics(run_dir: Path) -> dict[str, float]:
    """The validation metrics of the last epoch, over every CSV log of the run (a resumed fit logs anew)."""
    rows = [row for f in sorted(run_dir.rglob("metrics.csv")) for row in csv.DictReader(f.open())]
    val = [row for row in rows if row.get("val/mae")]
    last = max(val, key=lambda row: int(row["epoch"]))
    return {k: float(v) for k, v in last.items() if k.startswith("val/") and v}


def test_killed_fit_resumes_exactly(tmp_path):
    straight = tmp_path / "straight"
    uninterrupted = start_fit(write_config(straight))

    killed = tmp_path / "killed"
    marker = tmp_path / "paused.txt"
    proc = start_fit(write_config(killed, pause_marker=marker))
    deadline = time.time() + 300
    while not marker.exists():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, "the fit never reached the kill step"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert marker.read_text().strip() == f"epoch 1 batch {KILL_AT_STEP - STEPS_PER_EPOCH}"  # mid-epoch
    last = torch.load(killed / "checkpoints/last.ckpt", weights_only=False)
    assert last["global_step"] == KILL_AT_STEP and last["epoch"] == 1

    finish(start_fit(write_config(killed), "--ckpt_path", "last"))
    finish(uninterrupted)

    a = torch.load(straight / "checkpoints/last.ckpt", weights_only=False)
    b = torch.load(killed / "checkpoints/last.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"] == EPOCHS * STEPS_PER_EPOCH
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), name
    metrics_a, metrics_b = final_val_metrics(straight), final_val_metrics(killed)
    assert "val/mae" in metrics_a and metrics_a == metrics_b
