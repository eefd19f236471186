"""W&B through Lightning's WandbLogger, offline (no network, no account): a short fit writes a run whose files hold
the resolved config, the plugin versions, per-step and per-scenario metrics; the table/plot helpers log too."""

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
wandb = pytest.importorskip("wandb")


def test_offline_fit_writes_config_metrics_and_plugin_versions(tmp_path):
    config = yaml.safe_load((ROOT / "configs/quickstart.yaml").read_text())
    config["trainer"].update(max_epochs=2, default_root_dir=str(tmp_path / "runs"), enable_progress_bar=False,
                             log_every_n_steps=1, callbacks=[])
    config["data"]["dataset_args"].update(num_users=100, num_items=80, min_ratings=30, max_ratings=50)
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    out = subprocess.run([sys.executable, "-m", "metarec_pl.cli", "fit", "--config", "small.yaml",
                          "--config", str(ROOT / "configs/wandb.yaml"), "--trainer.logger.init_args.save_dir", "wb"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = sorted((tmp_path / "wb/wandb").glob("offline-run-*"))
    assert len(runs) == 1
    config, summary, history = read_run(runs[0])

    assert config["config"]["model"]["algorithm"] == "maml"
    assert config["config"]["data"]["dataset_args"]["num_users"] == 100
    assert config["plugins"]["algorithm/maml"].startswith("metarec_pl ")
    assert config["inner_lr"] == 0.05  # the model's hyper-parameters too

    for key in ("train/loss", "train/tasks_per_s", "val/mae", "val/user-cold/mae", "epoch"):
        assert key in summary, key
    assert summary["train/tasks_per_s"] > 0
    steps = [row for row in history if "train/loss" in row]
    assert len(steps) == 2 * 3  # every meta-step of both epochs (70 training users / 32 per batch = 3)
    assert len([row for row in history if "val/user-cold/mae" in row]) == 2  # per scenario, per epoch


def wandb_records(path: Path) -> list[bytes]:
    """The records of a .wandb transaction log (LevelDB log format: 32 KiB blocks, 7-byte record headers)."""
    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, out, parts = 7, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:  # full record
            out.append(chunk)
        elif kind in (2, 3):  # first / middle fragment
            parts = chunk if kind == 2 else parts + chunk
        elif kind == 4:  # last fragment
            out.append(parts + chunk)
    return out


def read_run(run_dir: Path) -> tuple[dict, dict, list[dict]]:
    """(config, summary, history rows) of an offline run, from its .wandb file (offline runs keep them there)."""
    from wandb.proto import wandb_internal_pb2

    def items(entries) -> dict:
        return {e.key or "/".join(e.nested_key): json.loads(e.value_json) for e in entries}

    config, summary, history = {}, {}, []
    for data in wandb_records(next(run_dir.glob("*.wandb"))):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "config":
            config.update(items(record.config.update))
        elif kind == "summary":
            summary.update(items(record.summary.update))
        elif kind == "history":
            history.append(items(record.history.item))
    return config, summary, history


def test_table_and_plot_helpers(tmp_path, monkeypatch):
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    from metarec_pl.tracking import log_line_plot, log_table

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    wb, csv_logger = WandbLogger(project="t", save_dir=str(tmp_path)), CSVLogger(str(tmp_path), name="csv")
    rows = [["maml", "user-cold", 0.73], ["none", "user-cold", 0.88]]
    log_table([wb, csv_logger], "results/table", ["algorithm", "scenario", "mae"], rows)
    log_line_plot([wb, csv_logger], "results/mae_vs_k", [1, 5, 10], {"maml": [0.9, 0.8, 0.7]}, xname="K")
    run_dir = Path(wb.experiment.dir).parent
    wb.experiment.finish()
    table_csv = Path(csv_logger.log_dir) / "results_table.csv"
    assert table_csv.read_text().splitlines() == ["algorithm,scenario,mae", "maml,user-cold,0.73",
                                                  "none,user-cold,0.88"]
    assert (Path(csv_logger.log_dir) / "results_mae_vs_k.csv").read_text().splitlines()[1:] == [
        "1,0.9", "5,0.8", "10,0.7"]
    deadline = time.time() + 60  # the wandb service may still be writing the run file after finish() returns
    while "results/mae_vs_k_table/path" not in (summary := read_run(run_dir)[1]) and time.time() < deadline:
        time.sleep(0.5)
    assert summary["results/table/_type"] == "table-file"
    table = json.loads((run_dir / "files" / summary["results/table/path"]).read_text())
    assert table == {"columns": ["algorithm", "scenario", "mae"], "data": rows}
    plot = json.loads((run_dir / "files" / summary["results/mae_vs_k_table/path"]).read_text())
    assert plot["data"] == [[1, "maml", 0.9], [5, "maml", 0.8], [10, "maml", 0.7]]
