"""Adaptation runs at validation/test/predict whatever the trainer's inference_mode."""

import lightning as L
import pytest

from metarec_pl.bilevel import MetaLearner
from metarec_pl.data.module import MetaDataModule


@pytest.fixture(scope="module")
def setup():
    L.seed_everything(0)
    dm = MetaDataModule(dataset_args=dict(num_users=150, num_items=100, min_ratings=30, max_ratings=60),
                        sampler_args=dict(query_size=10, min_support=3), tasks_per_batch=16)
    module = MetaLearner(algorithm="maml", adapt=["head.*"], inner_steps=3, inner_lr=0.05, data_info=dm.info)
    return dm, module


@pytest.mark.parametrize("inference_mode", [True, False])
def test_validation_adapts_under_either_inference_mode(setup, inference_mode):
    dm, module = setup
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                        inference_mode=inference_mode)
    out = trainer.validate(module, dm, verbose=False)[0]
    assert out["val/mae"] != out["val/mae_zero_shot"]  # adaptation really ran
    assert out["val/mae"] == pytest.approx(trainer.validate(module, dm, verbose=False)[0]["val/mae"])


def test_predict_returns_adapted_query_predictions(setup):
    dm, module = setup
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, inference_mode=True)
    batches = trainer.predict(module, dm)
    first = batches[0]
    assert first["prediction"].shape == first["item"].shape == first["mask"].shape
    assert sum(len(b["key"]) for b in batches) == sum(len(t) for t in dm.stage_tasks("test").values())
