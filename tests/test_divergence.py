"""A diverging inner loop stops with an error naming step, task and algorithm; or (skip) its tasks are dropped,
counted, and leave the meta-update of the other tasks exactly as if they had not been in the batch."""

import copy
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import unequal_batch
from metarec_pl import divergence
from metarec_pl.bilevel import MetaLearner
from metarec_pl.data.info import DataInfo
from metarec_pl.data.types import TaskBatch

ROOT = Path(__file__).resolve().parents[1]


def learner(data, **kwargs) -> MetaLearner:
    torch.manual_seed(0)
    args = dict(network="melu", network_args={"embedding_dim": 4, "hidden": [8]}, inner_steps=3, inner_lr=0.05,
                optimizer=lambda p: torch.optim.SGD(p, lr=0.1), data_info=DataInfo(data.schema, rating_mean=3.5))
    return MetaLearner(**{**args, **kwargs})


def fit(module: MetaLearner, batches: list[TaskBatch], epochs: int = 1) -> L.Trainer:
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, inference_mode=False)
    trainer.fit(module, DataLoader(batches, batch_size=None))
    return trainer


def poisoned(batch: TaskBatch, task: int) -> TaskBatch:
    """A copy of ``batch`` whose task ``task`` has a NaN support rating (its inner loop yields NaN)."""
    bad = copy.deepcopy(batch)
    bad.support.rating[task, 0] = float("nan")
    return bad


def test_exploding_inner_loop_raises_naming_step_task_algorithm(tiny_world):
    _, data = tiny_world
    batch = unequal_batch(data)
    with pytest.raises(divergence.DivergenceError) as info:
        fit(learner(data, inner_lr=1e12, inner_steps=5), [batch])
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("maml: inner loop diverged")
    assert "at training step 0 (epoch 0, batch 0)" in msg
    assert f"on task {int(batch.key[0])} of scenario 'default'" in msg


def test_skip_drops_only_the_diverged_tasks_and_counts_them(tiny_world):
    _, data = tiny_world
    batch = unequal_batch(data)
    keep = torch.tensor([True, False, True, True])

    clean = learner(data)
    fit(clean, [divergence.select(batch, keep)])

    skipping = learner(data, on_divergence="skip")
    trainer = fit(skipping, [poisoned(batch, 1)])
    assert skipping.skipped_tasks == 1
    assert float(trainer.callback_metrics["train/skipped_tasks"]) == 1.0
    for (name, a), b in zip(clean.named_parameters(), skipping.parameters()):
        assert torch.isfinite(b).all(), name
        assert torch.allclose(a, b, atol=1e-6), name  # the NaN task left no trace in the meta-update

    raising = learner(data)
    with pytest.raises(divergence.DivergenceError, match=f"on task {int(batch.key[1])} "):
        fit(raising, [poisoned(batch, 1)])


def test_skip_a_batch_that_diverged_entirely(tiny_world):
    _, data = tiny_world
    batch = unequal_batch(data)
    module = learner(data, on_divergence="skip", inner_lr=1e12, inner_steps=5)
    before = [p.detach().clone() for p in module.parameters()]
    fit(module, [batch], epochs=2)
    assert module.skipped_tasks == 2 * len(batch)
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters()))  # no step was taken


def test_cli_reports_divergence_in_one_line(tmp_path):
    env = {"PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "metarec_pl.cli", "fit", "--config", str(ROOT / "configs/quickstart.yaml"),
         "--model.inner_lr", "1e12", "--trainer.default_root_dir", str(tmp_path), "--trainer.callbacks", "[]",
         "--trainer.enable_progress_bar", "false", "--trainer.logger", "false", "--trainer.num_sanity_val_steps", "0",
         "--data.dataset_args.num_users", "60", "--data.dataset_args.num_items", "50",
         "--data.dataset_args.max_ratings", "40"],
        cwd=tmp_path, env={**__import__("os").environ, **env}, capture_output=True, text=True, timeout=600)
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("metarec: error:")]
    assert len(errors) == 1 and "maml: inner loop diverged" in errors[0] and "training step 0" in errors[0]
    assert "Traceback" not in out.stderr
